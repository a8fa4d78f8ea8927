"""Short content hashes: of a scene file (what a job's run state compares to decide that a scene
changed), of training files and of training arrays (recorded in checkpoints)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

import numpy as np

MIB = 1 << 20


def update_with_file(h, path: str, *, name: bool = False, mtime: bool = True, tail: bool = True) -> None:
    """Feed ``h`` what identifies a file without reading it all: its size (and modification time),
    its first MiB and, with ``tail``, its last MiB (cheap on archives of large scenes). An
    unreadable file feeds its error number, so it hashes differently from any readable one."""
    if name:
        h.update(os.path.basename(path).encode())
    try:
        st = os.stat(path)
        h.update((f"{st.st_size}:{st.st_mtime_ns}" if mtime else str(st.st_size)).encode())
        with open(path, "rb") as f:
            h.update(f.read(MIB))
            if tail and st.st_size > 2 * MIB:
                f.seek(-MIB, os.SEEK_END)
                h.update(f.read(MIB))
    except OSError as exc:
        h.update(f"unreadable:{exc.errno}".encode())


def files_fingerprint(paths: Iterable[str]) -> str:
    """A short hash of training files: each one's name, size and first MiB."""
    h = hashlib.sha256()
    for path in paths:
        update_with_file(h, path, name=True, mtime=False, tail=False)
    return h.hexdigest()[:16]


def arrays_fingerprint(items: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """A short hash of training data held in memory: ids, images and masks."""
    h = hashlib.sha256()
    for pid, image, mask in items:
        h.update(pid.encode())
        h.update(np.ascontiguousarray(image).tobytes())
        h.update(np.ascontiguousarray(mask).tobytes())
    return h.hexdigest()[:16]
