"""Per-batch results of a scene kept on disk, so a run that dies mid-scene resumes where it was.

A :class:`TileCache` is a folder (in the tile store) belonging to one scene *and* one model and
parameter set: its name carries their hashes, so results of another model or setting are never
reused. Each finished batch of tiles is one JSON file, written to a temporary name and renamed;
geometries are WKB (hex). Nothing here is pickled, so a cache written by one worker is safe to
read in another process or on another machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence

import shapely

from geoseg.faults import fault_point
from geoseg.inference.tiling import Tile
from geoseg.inference.vectorize import InstancePart, SemanticPiece
from geoseg.io.atomic import atomic_path

_KINDS = {"instance": InstancePart, "semantic": SemanticPiece}


@dataclasses.dataclass(frozen=True)
class TileCache:
    """A folder of finished batches. Picklable: Dask tasks receive it and write into it."""

    folder: str

    def _path(self, tiles: Sequence[Tile]) -> str:
        sig = ";".join(f"{t.index}:{t.bounds}" for t in tiles)
        return os.path.join(self.folder, hashlib.sha256(sig.encode()).hexdigest()[:24] + ".json")

    def load(self, tiles: Sequence[Tile]):
        """The cached :class:`~geoseg.inference.tasks.BatchResult` fields of ``tiles``, or None."""
        try:
            with open(self._path(tiles), encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):  # missing, or unreadable: compute again
            return None
        cls = _KINDS[doc["kind"]] if doc.get("kind") in _KINDS else None
        parts = []
        for rec in doc["parts"]:
            rec = dict(rec)
            rec["geometry"] = shapely.from_wkb(bytes.fromhex(rec["geometry"]))
            parts.append(cls(**rec))
        return parts, doc["tiles_run"], doc["tiles_skipped"], doc["model_seconds"]

    def save(self, tiles: Sequence[Tile], result) -> None:
        os.makedirs(self.folder, exist_ok=True)
        kind = "semantic" if result.parts and isinstance(result.parts[0], SemanticPiece) else "instance"
        parts = []
        for p in result.parts:
            rec = dataclasses.asdict(p)
            rec["geometry"] = shapely.to_wkb(p.geometry, hex=True)
            rec = {k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
            parts.append(rec)
        doc = {
            "kind": kind,
            "parts": parts,
            "tiles_run": result.tiles_run,
            "tiles_skipped": result.tiles_skipped,
            "model_seconds": result.model_seconds,
        }
        # not synced: a batch torn by a power cut reads as missing and is computed again
        with atomic_path(self._path(tiles), durable=False) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        fault_point("batch-cached")
