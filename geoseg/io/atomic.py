"""Atomic, durable writes: every file geoseg writes goes to a hidden temporary name beside its
destination, is flushed to disk and renamed into place, and the rename itself is flushed, so a
reader, a rerun after a crash or a machine back from a power cut sees the old file or the new one,
whole, never half a file."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from geoseg.errors import OutputError
from geoseg.faults import fault_point


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (hidden, same extension) to write to; when the block
    succeeds it is synced to disk and renamed to ``path`` (and the folder synced, so the rename
    survives a power cut), otherwise it is removed, with any GDAL/SQLite side files.

    ``durable=False`` skips the two syncs (the rename stays atomic): for files that are only a
    cache, which a reader treats as absent when a power cut left them empty or torn.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("whole")
    >>> sorted(p.name for p in d.iterdir()), (d / "a.txt").read_text()
    (['a.txt'], 'whole')
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        fault_point("output-temp-written")
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}.aux.xml")):
            leftover.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename, a new or removed file in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # a file system that cannot sync folders has nothing more to flush
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    """Flush a finished temporary file's data to disk. It is opened anew because its writer (GDAL,
    pyogrio, safetensors...) has closed its own handle by now; Linux syncs a file through any
    descriptor. A temporary the block never created is left to os.replace to report."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):  # a folder's files would each need their own sync
            os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, data: dict, *, overwrite: bool) -> None:
    """Write ``data`` as indented JSON atomically; an existing file only with ``overwrite``."""
    check_writable(path, overwrite=overwrite)
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def check_writable(path: str | os.PathLike, *, overwrite: bool) -> None:
    """Fail early, before any work, if ``path`` exists (without overwrite) or has no folder."""
    if str(path) == "-":
        return
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputError(f"output '{p}': already exists (use --overwrite to replace it)")
    if p.is_dir():
        raise OutputError(f"output '{p}': is a directory")
    if not p.parent.exists():
        raise OutputError(f"output '{p}': folder '{p.parent}' does not exist")
