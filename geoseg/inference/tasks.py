"""Tiled inference over a scene with Dask, then merging and georeferencing.

The graph has one task per batch of tiles. A task receives the scene's path (a :class:`SceneRef`),
the model spec and tile windows; it opens the scene itself, reads only its windows, skips tiles
that are all nodata, runs the model (loaded once per worker process) and returns polygons in
scene pixel space. Merging, georeferencing and measuring happen once per scene on the results,
which are small, so peak memory depends on the tile and batch size, not on the scene size.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import geopandas as gpd
import numpy as np
import shapely

from geoseg.errors import GeosegError, ModelError
from geoseg.inference.merge import MergedObject
from geoseg.inference.tilecache import TileCache
from geoseg.inference.tiling import Tile, TileGrid
from geoseg.inference.vectorize import instance_parts, semantic_pieces
from geoseg.io.gdal import gdal_env
from geoseg.io.scene import NoCRSWarning, Scene, SceneRef
from geoseg.models.segmenter import ModelSpec, Segmenter, get_segmenter


@dataclass(frozen=True)
class PredictOptions:
    """Knobs of :func:`predict_scene`. ``tile_size``/``overlap`` None: the model's own, else 512/64."""

    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    min_area: float | None = None  # pixels, on merged objects; None: the model's own (else 0)
    object_limits: bool = True  # drop objects outside the checkpoint's object_limits (sizes)
    # metres per pixel to read the scene at; None: the model's max_gsd, for scenes coarser than
    # that; 0: the scene's own grid
    gsd: float | None = None
    rotated_view: bool | None = None  # also see tiles turned 45 degrees; None: the model's setting
    # a part ending within this many pixels of a tile edge that cuts the scene may go on beyond it
    # (a soft mask often stops short of the edge): it counts as cut when a neighbouring tile sees
    # the object continue past that edge. None: a quarter of the overlap, at least 4
    edge_margin: int | None = None
    iou_threshold: float = 0.5
    ios_threshold: float = 0.5
    workers: int = 1
    # where the model runs: auto (a GPU where the worker has one), cpu, cuda or cuda:N
    device: str = "auto"


@dataclass
class BatchResult:
    parts: list = field(default_factory=list)
    tiles_run: int = 0
    tiles_skipped: int = 0
    model_seconds: float = 0.0


@dataclass
class SceneResult:
    """What :func:`predict_scene` returns: features in the scene CRS and run statistics."""

    features: gpd.GeoDataFrame
    stats: dict


_thread_state = threading.local()


def apply_worker_threads() -> None:
    """In a dask.distributed worker, give torch in this (executor) thread the thread count the
    worker plug-in chose; elsewhere a no-op."""
    wanted = os.environ.get("GEOSEG_TORCH_THREADS")
    torch = sys.modules.get("torch")
    # torch.get_num_threads() reports the process-wide setting even where OpenMP still has this
    # thread's own default (1 in dask workers, which set OMP_NUM_THREADS=1): set it once per thread
    if wanted and torch is not None and getattr(_thread_state, "torch_threads", None) != wanted:
        torch.set_num_threads(int(wanted))
        _thread_state.torch_threads = wanted


def run_batch(
    scene_ref: SceneRef,
    model: ModelSpec,
    tiles: Sequence[Tile],
    tile_shape: tuple[int, int],
    opts: PredictOptions,
    cache: TileCache | None = None,
) -> BatchResult:
    """One Dask task: read ``tiles`` of the scene, run the model, vectorise. Runs in a worker.

    With a ``cache``, a batch finished before (by an earlier, interrupted run) is read back
    instead of computed, and a newly finished batch is kept there.
    """
    if cache is not None:
        cached = cache.load(tiles)
        if cached is not None:
            parts, run, skipped, seconds = cached
            return BatchResult(parts, run, skipped, seconds)
    error = None
    try:
        result = _run_batch(scene_ref, model, tiles, tile_shape, opts)
    except GeosegError as exc:
        error = type(exc)(str(exc))
    if error is not None:  # raised outside the handler: no GDAL cause or context, which may not
        raise error  # survive the trip from a worker process back to the client
    if cache is not None:
        cache.save(tiles, result)
    return result


def _run_batch(
    scene_ref: SceneRef,
    model: ModelSpec,
    tiles: Sequence[Tile],
    tile_shape: tuple[int, int],
    opts: PredictOptions,
) -> BatchResult:
    seg = get_segmenter(model, opts.device)
    apply_worker_threads()
    result = BatchResult()
    _, todo, batch = read_tiles(scene_ref, tiles, tile_shape)
    result.tiles_skipped = len(tiles) - len(todo)
    if not todo:
        return result
    t0 = time.perf_counter()
    if opts.rotated_view is None:
        preds = seg.predict(batch)
    else:
        preds = seg.predict(batch, rotated_view=opts.rotated_view)
    result.model_seconds = time.perf_counter() - t0
    result.tiles_run = len(todo)
    with gdal_env():  # one GDAL environment for all the polygonising below, not one per mask
        _vectorize(result, seg, preds, [tiles[i] for i in todo], opts)
    return result


def read_tiles(
    scene_ref: SceneRef, tiles: Sequence[Tile], tile_shape: tuple[int, int]
) -> tuple[list[np.ndarray], list[int], np.ndarray | None]:
    """Read ``tiles`` in a worker: ``(arrays, todo, batch)`` where ``todo`` indexes the tiles with
    any data and ``batch`` stacks those, padded with NaN to ``tile_shape`` (None if there are none).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoCRSWarning)
        with scene_ref.open() as scene:
            arrays = [scene.read(t.window) for t in tiles]
    todo = [i for i, a in enumerate(arrays) if not np.isnan(a).all()]
    if not todo:
        return arrays, todo, None
    th, tw = tile_shape
    batch = np.full((len(todo), arrays[0].shape[0], th, tw), np.nan, dtype=np.float32)
    for slot, i in enumerate(todo):
        _, h, w = arrays[i].shape
        batch[slot, :, :h, :w] = arrays[i]
    return arrays, todo, batch


def _vectorize(
    result: BatchResult, seg: Segmenter, preds, tiles: Sequence[Tile], opts: PredictOptions
) -> None:
    for slot, tile in enumerate(tiles):
        if seg.task == "instance":
            result.parts.extend(
                instance_parts(
                    preds[slot],
                    tile,
                    score_threshold=opts.score_threshold,
                    mask_threshold=opts.mask_threshold,
                    near_margin=opts.edge_margin,
                )
            )
        else:
            result.parts.extend(semantic_pieces(preds[slot], tile, list(seg.classes)))


def predict_scene(
    scene: str | SceneRef,
    model: ModelSpec | str,
    opts: PredictOptions = PredictOptions(),
    *,
    progress=None,
    scheduler=None,
    cache: TileCache | None = None,
) -> SceneResult:
    """Segment a whole scene tile by tile and merge the results into georeferenced features.

    Instance models give whole objects (merged across tiles); semantic models give outlines of
    blended, stitched classes (as :func:`geoseg.inference.blend.predict_blended`). Both run on
    :mod:`geoseg.inference.engine`.

    Parameters
    ----------
    scene
        A path, or a :class:`SceneRef` (bands and CRS override).
    model
        A :class:`ModelSpec` or a spec string (checkpoint path or ``module:factory``).
    opts
        Tiling, batching and merge settings.
    progress
        Optional callable ``progress(done, total)`` called as batches finish.
    scheduler
        A ``dask.distributed.Client`` to run on; None runs on local threads (``opts.workers``).
    cache
        A :class:`~geoseg.inference.tilecache.TileCache` keeping finished batches, so that a run
        interrupted mid-scene does not compute them again.
    """
    from geoseg.inference.engine import run_scene

    outcome = run_scene(scene, model, opts, progress=progress, scheduler=scheduler, cache=cache)
    return SceneResult(outcome.features, outcome.stats)


def resolve_gsd(ref: SceneRef, seg: Segmenter, opts: PredictOptions, native: float | None) -> SceneRef:
    """The scene as the model should see it: resampled to ``opts.gsd``; by default (None) to the
    checkpoint's ``max_gsd`` when the scene (``native`` metres per pixel) is coarser than that (a
    finer scene is read as it is); ``opts.gsd == 0`` keeps the scene's own grid."""
    if opts.gsd == 0:
        return replace(ref, gsd=None)
    if opts.gsd is not None:
        if seg.task != "instance":
            raise ModelError(
                "resampling (--gsd) is for instance models: semantic masks keep the scene's grid"
            )
        return replace(ref, gsd=float(opts.gsd))
    ceiling = (getattr(seg, "metadata", None) or {}).get("max_gsd")
    if not ceiling or seg.task != "instance":
        return ref
    if native is None or native <= float(ceiling) * 1.01:  # within 1 %: the same grid
        return ref
    return replace(ref, gsd=float(ceiling))


def apply_object_limits(features: gpd.GeoDataFrame, seg: Segmenter, opts: PredictOptions):
    """Drop whole objects whose measures fall outside the checkpoint's ``object_limits`` (e.g.
    ``{"length_m": [80, 420], "beam_m": [12, 72]}``: the sizes it was trained on, with a margin).
    Objects without a measure (no CRS) are kept. Returns the features, renumbered, and the count
    dropped."""
    limits = (getattr(seg, "metadata", None) or {}).get("object_limits") if opts.object_limits else None
    if not limits or not len(features):
        return features, 0
    keep = np.ones(len(features), bool)
    for column, (lo, hi) in limits.items():
        if column in features:
            values = features[column].astype("Float64")
            keep &= ~((values < lo) | (values > hi)).fillna(False).to_numpy(bool)
    if keep.all():
        return features, 0
    kept = features[keep].reset_index(drop=True)
    kept["id"] = np.arange(1, len(kept) + 1, dtype=np.int64)
    return kept, int((~keep).sum())


def resolve_min_area(opts: PredictOptions, seg: Segmenter) -> float:
    """``opts.min_area``, or when that is None the checkpoint's ``min_area`` (else 0)."""
    if opts.min_area is not None:
        return float(opts.min_area)
    return float((getattr(seg, "metadata", None) or {}).get("min_area", 0.0))


def drop_small(objects: list[MergedObject], min_area: float) -> list[MergedObject]:
    """Drop objects, and parts of multi-part objects, smaller than ``min_area`` pixels."""
    return split_small(objects, min_area)[0]


def split_small(objects: list[MergedObject], min_area: float) -> tuple[list[MergedObject], list]:
    """``objects`` without their parts under ``min_area`` pixels, and those parts (polygons)."""
    kept, dropped = [], []
    for o in objects:
        parts = shapely.get_parts(o.geometry)
        big = [p for p in parts if p.area >= min_area]
        dropped.extend((p, o.label) for p in parts if p.area < min_area)
        if big:
            geom = big[0] if len(big) == 1 else shapely.MultiPolygon(big)
            kept.append(MergedObject(geom, o.score, o.label, o.parts))
    return kept, dropped


def check_bands(scene: Scene, seg: Segmenter, model: ModelSpec) -> None:
    if scene.count != seg.in_channels:
        raise ModelError(
            f"scene '{scene.path}': {scene.count} band(s) selected but model '{model.name}' "
            f"expects {seg.in_channels} (choose bands with --bands)"
        )


def make_grid(scene: Scene, seg: Segmenter, opts: PredictOptions) -> TileGrid:
    size = opts.tile_size or getattr(seg, "tile_size", None) or 512
    overlap = opts.overlap if opts.overlap is not None else getattr(seg, "overlap", None)
    overlap = 64 if overlap is None else overlap
    stride = int(getattr(seg, "stride", 1) or 1)
    try:
        return TileGrid(
            scene.height, scene.width, size=size, overlap=overlap, transform=scene.transform,
            align=stride,
        )  # fmt: skip
    except ValueError as exc:
        raise ModelError(f"tiling of '{scene.path}': {exc}") from exc
