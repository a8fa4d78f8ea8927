"""Self-describing checkpoints: safetensors weights plus JSON metadata. Loading never unpickles.

The metadata lives in the safetensors header under the key ``"geoseg"`` as one JSON document;
every key is documented in ``docs/models.md`` (``tests/test_docs.py`` checks that none is missing).
:data:`REQUIRED` lists the keys every checkpoint has.
"""

from __future__ import annotations

import importlib
import json
import os
import struct
from collections.abc import Callable
from typing import Any

from geoseg.errors import CheckpointError
from geoseg.io.atomic import atomic_path

FORMAT = "geoseg-checkpoint/1"
REQUIRED = ("format", "architecture", "config", "task", "classes", "in_channels", "geoseg_version")

#: name -> builder(metadata, state_dict) -> segmenter
_ARCHITECTURES: dict[str, Callable[[dict, dict], Any]] = {}


def register_architecture(name: str):
    """Decorator registering ``builder(metadata, state_dict) -> segmenter`` under ``name``."""

    def deco(fn):
        _ARCHITECTURES[name] = fn
        return fn

    return deco


def architectures() -> list[str]:
    _load_builtin_architectures()
    return sorted(_ARCHITECTURES)


#: modules whose import registers geoseg's own architectures (imported when a checkpoint needs one)
BUILTIN_ARCHITECTURES = ("geoseg.models.maskrcnn", "geoseg.models.pointwise", "geoseg.models.unet")


def _load_builtin_architectures() -> None:
    for name in BUILTIN_ARCHITECTURES:
        importlib.import_module(name)


def read_metadata(path: str | os.PathLike) -> dict:
    """Return a checkpoint's metadata without building the model. Raises CheckpointError."""
    path = str(path)
    _refuse_non_safetensors(path)
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("geoseg")
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint '{path}': unreadable safetensors file ({exc})") from exc
    if raw is None:
        raise CheckpointError(f"checkpoint '{path}': has no geoseg metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint '{path}': metadata is not valid JSON ({exc})") from exc
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint '{path}': metadata lacks {', '.join(missing)}")
    if meta["format"] != FORMAT:
        raise CheckpointError(f"checkpoint '{path}': unknown format {meta['format']!r}")
    return meta


def load_checkpoint(path: str | os.PathLike, *, device: str | None = None):
    """Build the segmenter a checkpoint describes, with its weights."""
    path = str(path)
    meta = read_metadata(path)
    _load_builtin_architectures()
    arch = meta["architecture"]
    if arch not in _ARCHITECTURES:
        raise CheckpointError(
            f"checkpoint '{path}': unknown architecture {arch!r} (known: {', '.join(architectures())})"
        )
    from safetensors.torch import load_file

    state = load_file(path, device="cpu")
    try:
        seg = _ARCHITECTURES[arch](meta, state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint '{path}': weights do not fit {arch} ({exc})") from exc
    seg.name = os.path.basename(path)
    if device:
        seg.to(device)
    return seg


def save_checkpoint(path: str | os.PathLike, state_dict: dict, metadata: dict) -> None:
    """Write weights and metadata atomically (temporary file in the same folder, then rename)."""
    from safetensors.torch import save_file

    from geoseg import __version__

    meta = {"format": FORMAT, "geoseg_version": __version__, **metadata}
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint '{path}': metadata lacks {', '.join(missing)}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"geoseg": json.dumps(meta, sort_keys=True)})


def _refuse_non_safetensors(path: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise CheckpointError(f"checkpoint '{path}': cannot be read ({exc.strerror})") from exc
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:4] == b"PK\x03\x04":
        raise CheckpointError(
            f"checkpoint '{path}': is a pickle/torch.save file; geoseg loads only safetensors "
            "checkpoints and never unpickles"
        )
    if len(head) < 9:
        raise CheckpointError(f"checkpoint '{path}': too short to be a safetensors file")
    (n,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or n > os.path.getsize(path):
        raise CheckpointError(f"checkpoint '{path}': not a safetensors file")
