"""The tasks a run is made of, as they run on a worker (or a thread of this process): reading
a batch of tiles, the forward pass, polygonising, and each scene's reduction (the instance merge, or
the chain of stitch steps of a semantic scene), which writes the scene's files.

Each task takes and returns picklable values only: scene references, model specs, tile windows,
and results small enough to travel between dask workers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geoseg.errors import GeosegError
from geoseg.faults import fault_point
from geoseg.inference.blend import Stitcher, class_names, classify
from geoseg.inference.complete import complete_objects
from geoseg.inference.complete import settings as completion_settings
from geoseg.inference.features import to_features
from geoseg.inference.merge import MergedObject, dissolve_semantic, merge_instances, simplify_objects
from geoseg.inference.options import PredictOptions
from geoseg.inference.tilecache import TileCache
from geoseg.inference.tiling import Tile
from geoseg.inference.vectorize import instance_parts, label_pieces, mask_windows, semantic_pieces
from geoseg.io.gdal import gdal_env
from geoseg.io.georef import lonlat_footprint
from geoseg.io.refs import SceneRef
from geoseg.io.scene import Scene
from geoseg.io.vectors import write_features
from geoseg.models.segmenter import ModelSpec, Segmenter, get_segmenter, model_metadata, to_numpy
from geoseg.runtime import task_threads

if TYPE_CHECKING:
    from geoseg.inference.plan import SceneWork


@dataclass
class BatchResult:
    parts: list = field(default_factory=list)
    tiles_run: int = 0
    tiles_skipped: int = 0
    model_seconds: float = 0.0


_thread_state = threading.local()


def apply_worker_threads() -> None:
    """In a dask.distributed worker, give torch in this (executor) thread the thread count the
    worker plug-in chose; elsewhere a no-op."""
    wanted = task_threads()
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


def run_batches(
    scene_ref: SceneRef,
    model: ModelSpec,
    batches: Sequence[Sequence[Tile]],
    tile_shape: tuple[int, int],
    opts: PredictOptions,
    cache: TileCache | None = None,
) -> BatchResult:
    """Consecutive batches of one image as one task (a chunk): each gives what :func:`run_batch`
    gives (and is kept in ``cache`` by itself), and is polygonised while the next one is read and
    run (:func:`_run_pipelined`); their parts and counts come back together. A task's fixed cost
    (its trip through the scheduler, its arguments and result) is then paid once for the chunk."""
    out = BatchResult()
    for r in _run_pipelined([(scene_ref, tiles) for tiles in batches], model, tile_shape, opts, cache):
        out.parts.extend(r.parts)
        out.tiles_run += r.tiles_run
        out.tiles_skipped += r.tiles_skipped
        out.model_seconds += r.model_seconds
    return out


def run_scene_instances(work: SceneWork) -> SceneOutcome:
    """A whole instance scene as one task: every batch (:func:`run_batch`), then the reduction
    (:func:`reduce_instances`), where the parts are; for scenes of a few batches, on a cluster whose
    workers each have a scene of their own to run."""
    jobs = [(work.images[image], tiles) for image, tiles in work.batches()]
    results = _run_pipelined(jobs, work.model, work.grid.tile_shape, work.opts, work.cache)
    return reduce_instances(work, *results)


@functools.cache
def _vectoriser() -> ThreadPoolExecutor:
    """The thread that polygonises a chunk's batches, one per process, made when first needed."""
    return ThreadPoolExecutor(1, thread_name_prefix="geoseg-vectorise")


def _run_pipelined(jobs: list, model: ModelSpec, tile_shape, opts, cache) -> list[BatchResult]:
    """Batches ``jobs`` (``(scene_ref, tiles)``) one after another: each is read and run through
    the model on this thread while a helper thread polygonises the one before, so that a model
    that keeps its caller waiting (a GPU) is given its next batch at once, as this process's own
    runner does it; what :func:`run_batch` returns, batch by batch."""
    pool = _vectoriser()
    pending: list[Future] = []
    try:
        for ref, tiles in jobs:
            kept = cache.load(tiles) if cache is not None else None
            if kept is not None:
                pending.append(_finished(BatchResult(*kept)))
                continue
            try:
                seg, result, todo, preds = _infer_batch(ref, model, tiles, tile_shape, opts)
            except GeosegError as exc:
                error = type(exc)(str(exc))  # raised outside the handler, as run_batch does
            else:
                pending.append(pool.submit(_finish_batch, seg, result, todo, preds, tiles, opts, cache))
                continue
            raise error
        try:
            return [f.result() for f in pending]
        except GeosegError as exc:
            error = type(exc)(str(exc))
        raise error
    finally:
        for f in pending:
            f.cancel()


def _finished(value) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


def _run_batch(
    scene_ref: SceneRef,
    model: ModelSpec,
    tiles: Sequence[Tile],
    tile_shape: tuple[int, int],
    opts: PredictOptions,
) -> BatchResult:
    seg, result, todo, preds = _infer_batch(scene_ref, model, tiles, tile_shape, opts)
    return _finish_batch(seg, result, todo, preds, tiles, opts)


def _infer_batch(scene_ref: SceneRef, model: ModelSpec, tiles, tile_shape, opts) -> tuple:
    """Read a batch and run the model: ``(segmenter, result so far, todo, predictions)``."""
    seg = get_segmenter(model, opts.device)
    apply_worker_threads()
    result = BatchResult()
    _, todo, batch = read_tiles(scene_ref, tiles, tile_shape)
    result.tiles_skipped = len(tiles) - len(todo)
    if not todo:
        return seg, result, todo, None
    t0 = time.perf_counter()
    if opts.rotated_view is None:
        preds = seg.predict(batch)
    else:
        preds = seg.predict(batch, rotated_view=opts.rotated_view)
    result.model_seconds = time.perf_counter() - t0
    result.tiles_run = len(todo)
    return seg, result, todo, preds


def _finish_batch(seg, result: BatchResult, todo, preds, tiles, opts, cache=None) -> BatchResult:
    """Polygonise a batch's predictions into ``result``; keep it in ``cache`` when given."""
    if todo:
        with gdal_env():  # one GDAL environment for all the polygonising below, not one per mask
            _vectorize(result, seg, preds, [tiles[i] for i in todo], opts)
    if cache is not None:
        cache.save(tiles, result)
    return result


def read_tiles(
    scene_ref: SceneRef, tiles: Sequence[Tile], tile_shape: tuple[int, int]
) -> tuple[list[np.ndarray], list[int], np.ndarray | None]:
    """Read ``tiles`` in a worker: ``(arrays, todo, batch)`` where ``todo`` indexes the tiles with
    any data and ``batch`` stacks those, padded with NaN to ``tile_shape`` (None if there are none).
    """
    with _reading(scene_ref) as scene, gdal_env():  # one GDAL environment for the batch's reads
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


class _OpenScenes(threading.local):
    """The rasters a thread has open for reading, least recently used first: a worker thread
    reads a scene batch after batch, and opening it for each one (GDAL's open, the header, and for
    a remote COG its HTTP requests) cost more than the reading."""

    keep = 2  # a thread reads one scene at a time, two where scenes overlap

    def __init__(self) -> None:
        self.scenes: OrderedDict = OrderedDict()


_open_scenes = _OpenScenes()


@contextlib.contextmanager
def _reading(ref: SceneRef):
    """``with _reading(ref) as scene``: the scene ``ref`` opens (warned of once, when the scene was
    planned), kept open for this thread's next batch of it. A local file is reopened when it
    changed (its size, modification time or inode); slices are opened each time; a scene whose
    read failed is closed."""
    cache = _open_scenes.scenes
    key = (ref, _signature(ref.path))
    for stale in [k for k in cache if k[0] == ref and k != key]:  # the file changed
        cache.pop(stale).close()
    scene = cache.pop(key, None) or ref.open(warn=False)
    try:
        yield scene
    except BaseException:
        scene.close()
        raise
    if not isinstance(scene, Scene):
        scene.close()
        return
    cache[key] = scene
    while len(cache) > _OpenScenes.keep:
        cache.popitem(last=False)[1].close()


def _signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # a URI GDAL opens (/vsis3/..., https://...)
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


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


@dataclass
class RawInstances:
    """A forward pass's instance predictions, to be polygonised by another task: each mask cut to
    its window (:func:`geoseg.inference.vectorize.mask_windows`), so a batch is the size of its objects, not
    of K full-tile masks per tile; or the batch's result kept from an interrupted run."""

    todo: list[int]  # which tiles of the batch had data
    preds: list[dict]
    tiles_skipped: int
    model_seconds: float
    cached: Any = None  # geoseg.inference.tasks.BatchResult


@dataclass
class ReadBatch:
    """A batch's tiles read ahead of its forward pass (:func:`read_batch`)."""

    todo: list[int]
    batch: np.ndarray | None
    cached: Any = None  # the batch's result kept from an interrupted run: nothing was read


def read_batch(ref: SceneRef, tiles: Sequence[Tile], tile_shape, cache=None) -> ReadBatch:
    """Read one batch's tiles (a CPU task: in this process it runs while the model works on the
    batch before)."""

    if cache is not None:
        kept = cache.load(tiles)
        if kept is not None:
            return ReadBatch([], None, cached=BatchResult(*kept))
    try:
        _, todo, batch = read_tiles(ref, tiles, tile_shape)
    except GeosegError as exc:
        raise type(exc)(str(exc)) from None  # no GDAL cause: it may not survive the trip home
    return ReadBatch(todo, batch)


def infer_instances(
    ref: SceneRef, model: ModelSpec, tiles: Sequence[Tile], tile_shape, opts, cache=None,
    read: ReadBatch | None = None,
) -> RawInstances:  # fmt: skip
    """A forward pass over one batch (the task that needs the GPU), on the tiles ``read`` ahead
    of it, or read here."""

    read = read if read is not None else read_batch(ref, tiles, tile_shape, cache)
    if read.cached is not None:
        return RawInstances([], [], 0, 0.0, cached=read.cached)
    seg = get_segmenter(model, opts.device)
    apply_worker_threads()
    todo, batch = read.todo, read.batch
    del read
    if not todo:
        return RawInstances([], [], len(tiles), 0.0)
    t0 = time.perf_counter()
    if opts.rotated_view is None:
        preds = seg.predict(batch)
    else:
        preds = seg.predict(batch, rotated_view=opts.rotated_view)
    seconds = time.perf_counter() - t0
    out = []
    for slot, p in zip(range(len(todo)), preds, strict=False):
        tile = tiles[todo[slot]]
        h, w = int(tile.window.height), int(tile.window.width)
        rec = {k: to_numpy(v) for k, v in p.items() if k != "masks"}
        rec["mask_crops"] = mask_windows(p, h, w, score_threshold=opts.score_threshold,
                                         mask_threshold=opts.mask_threshold)  # fmt: skip
        out.append(rec)
    del preds, batch  # the full masks go now, not when the next batch's do
    return RawInstances(todo, out, len(tiles) - len(todo), seconds)


def vectorise_instances(raw: RawInstances, tiles: Sequence[Tile], opts, cache=None):
    """Polygons of one batch's predictions (a CPU task); kept in ``cache`` when given."""

    if raw.cached is not None:
        return raw.cached
    result = BatchResult(tiles_run=len(raw.todo), tiles_skipped=raw.tiles_skipped)
    result.model_seconds = raw.model_seconds
    with gdal_env():
        for slot, i in enumerate(raw.todo):
            result.parts.extend(
                instance_parts(raw.preds[slot], tiles[i], score_threshold=opts.score_threshold,
                               mask_threshold=opts.mask_threshold, near_margin=opts.edge_margin)
            )  # fmt: skip
    if cache is not None:
        cache.save(tiles, result)
    return result


# -- running tiles --------------------------------------------------------------------------------
@dataclass
class TileBatch:
    """What one task returns: per tile, its probabilities over its window (None: all nodata)."""

    tiles: list[Tile]
    probs: list[np.ndarray | None] = field(default_factory=list)
    model_seconds: float = 0.0
    image: int = 0  # which image of the scene (a slice of a volume)


def run_tiles(
    scene_ref: SceneRef, model: ModelSpec, tiles: Sequence[Tile], tile_shape, device: str | None = None,
    image: int = 0,
) -> TileBatch:  # fmt: skip
    """One task: read ``tiles``, pad them to ``tile_shape`` with NaN, run the model, crop."""

    seg = get_segmenter(model, device)
    apply_worker_threads()
    arrays, todo, batch = read_tiles(scene_ref, tiles, tile_shape)
    out = TileBatch(list(tiles), [None] * len(tiles), image=image)
    if not todo:
        return out
    t0 = time.perf_counter()
    preds = seg.predict(batch)
    out.model_seconds = time.perf_counter() - t0
    for slot, i in enumerate(todo):
        _, h, w = arrays[i].shape
        probs = np.array(to_numpy(preds[slot])[:, :h, :w], dtype=np.float32)
        probs[:, np.isnan(arrays[i]).all(axis=0)] = np.nan  # no prediction where there is no data
        out.probs[i] = probs
    return out


@dataclass
class SceneOutcome:
    """What a scene's reduction sends back: statistics, and the features if they were kept."""

    stats: dict
    features: gpd.GeoDataFrame | None = None
    footprint: dict | None = None  # GeoJSON outline in lon/lat, when the outputs asked for it


def reduce_instances(work: SceneWork, *results) -> SceneOutcome:
    """A scene's instance reduction (a task): merge its tiles' parts into whole objects, drop those
    under the minimum area or outside the checkpoint's object limits, georeference, write."""

    leave_the_task_slot()
    try:
        seg = get_segmenter(work.model, work.opts.device)
        parts = [p for r in results for p in r.parts]
        tiles_by_index = {t.index: t for t in work.grid.tiles()}
        opts = work.opts
        objects = merge_instances(
            parts, tiles_by_index, iou_threshold=opts.iou_threshold, ios_threshold=opts.ios_threshold
        )
        objects, filled = fill_holes(objects, seg, opts)
        min_area = resolve_min_area(opts, seg)
        if min_area > 0:  # on whole objects: filtering tile parts would depend on the tiling
            objects = drop_small(objects, min_area)
        objects = simplify_objects(objects, opts.simplify)
        features = to_features(objects, seg, work.model, work.meta)
        features, outside = apply_object_limits(features, seg, opts)
        stats = {
            **work.header,
            "tiles_run": sum(r.tiles_run for r in results),
            "tiles_skipped": sum(r.tiles_skipped for r in results),
            "tile_parts": len(parts),
            "objects": len(features),
            "objects_outside_limits": outside,
            "holes_filled": filled,
            "model_seconds": sum(r.model_seconds for r in results),
        }
        return _deliver(work, features, stats)
    except GeosegError as exc:
        raise type(exc)(str(exc)) from None  # no GDAL cause: it may not survive the trip home


def leave_the_task_slot() -> None:
    """In a dask.distributed worker, a reduction leaves the worker's pool of task threads
    (``distributed.secede``): the worker can start its next batch while this scene is merged and
    written, instead of a batch waiting behind every reduction that lands on its worker (on a
    1-thread worker, the slot is the model's). Elsewhere a no-op: this process's runner has a thread
    of its own for reductions already."""
    distributed = sys.modules.get("distributed")  # never imported for a run in this process
    if distributed is None:
        return
    try:
        distributed.get_worker()
    except ValueError:  # not in a worker
        return
    from distributed.threadpoolexecutor import thread_state

    if getattr(thread_state, "proceed", False):  # a thread of the pool that has not left it yet
        distributed.secede()


def _deliver(work: SceneWork, features: gpd.GeoDataFrame, stats: dict) -> SceneOutcome:
    """Write the scene's vectors (if it has an output), finish its statistics."""
    out = work.outputs
    if out.scene_name is not None and len(features):
        features["scene"] = out.scene_name
    if out.vectors is not None:
        write_features(features, out.vectors, fmt=out.fmt, overwrite=out.overwrite,
                       pixel_space=work.pixel_space, layer=out.layer)  # fmt: skip
        fault_point("scene-written")
    keep = out.keep or out.vectors is None
    footprint = None
    if out.footprint:
        meta = work.meta
        with contextlib.suppress(RasterioError, ValueError):  # left out, never failing the scene
            footprint = lonlat_footprint(meta["transform"], work.grid.width, work.grid.height, meta["crs"])
    return SceneOutcome(stats, features if keep else None, footprint)


@dataclass
class StitchState:
    """What a chain of stitch steps hands on: a stitcher per image still waiting for tiles, the
    pieces of outlines found so far, and the mask being written."""

    work: SceneWork
    stitchers: dict = field(default_factory=dict)
    pieces: dict = field(default_factory=dict)  # image -> [SemanticPiece]
    tiles_run: int = 0
    tiles_skipped: int = 0
    model_seconds: float = 0.0
    blocks_peak: int = 0


def stitch_begin(work: SceneWork) -> StitchState:
    """The state before the first batch of a semantic scene."""
    return StitchState(work)


def stitch_step(state: StitchState, *batches) -> StitchState:
    """Add the next batches' tile probabilities; blocks every tile of which is in are classified,
    written to the mask and polygonised."""

    work = state.work
    classes = class_names(get_segmenter(work.model, work.opts.device))
    sinks = work.sinks or {}
    regions = work.outlines or (work.mask is not None and (_min_area(work) > 0 or bool(_completion(work))))
    try:
        for batch in batches:
            image = batch.image
            st = state.stitchers.get(image)
            if st is None:
                st = state.stitchers[image] = Stitcher(work.grid, _channels(work), None, blend=work.blend)
            write = work.mask.writer(work.slice_indexes[image]) if work.mask is not None else None
            for tile, probs in zip(batch.tiles, batch.probs, strict=True):
                if probs is None:
                    state.tiles_skipped += 1
                else:
                    state.tiles_run += 1
                for r0, c0, block in st.add(tile, probs):
                    if "probabilities" in sinks:
                        sinks["probabilities"](r0, c0, block)
                    labels, score = classify(block, classes, work.opts.mask_threshold)
                    if write is not None:
                        write(r0, c0, labels)
                    if "mask" in sinks:
                        sinks["mask"](r0, c0, labels)
                    if regions:
                        state.pieces.setdefault(image, []).extend(
                            label_pieces(labels, score, r0, c0, classes, ~np.isnan(score))
                        )
            state.model_seconds += batch.model_seconds
            state.blocks_peak = max(state.blocks_peak, st.peak_blocks)
            if st.done:
                del state.stitchers[image]
    except GeosegError as exc:
        raise type(exc)(str(exc)) from None
    finally:
        if work.mask is not None:
            work.mask.release()  # the state may go on to another worker
    return state


def run_scene_semantic(work: SceneWork) -> SceneOutcome:
    """A whole semantic scene as one task: each batch's tiles (:func:`run_tiles`) stitched as they
    come (:func:`stitch_step`), then :func:`stitch_finish`; for scenes of a few batches (a CT
    slice), on a cluster whose workers each have a scene of their own to run."""
    state = stitch_begin(work)
    for image, tiles in work.batches():
        batch = run_tiles(
            work.images[image], work.model, tiles, work.grid.tile_shape, work.opts.device, image
        )
        state = stitch_step(state, batch)
    return stitch_finish(state)


def stitch_finish(state: StitchState) -> SceneOutcome:
    """Whole regions: drop those under the minimum area (from outlines and mask), commit the mask,
    georeference and write the outlines."""

    leave_the_task_slot()
    work = state.work
    try:
        classes = class_names(get_segmenter(work.model, work.opts.device))
        min_area = _min_area(work)
        completion = _completion(work)
        frames, removed, completed, gas_removed = [], 0, 0, 0
        for image in range(len(work.images)):
            pieces = state.pieces.get(image, [])
            objects = dissolve_semantic(pieces) if pieces else []
            small: list = []
            if min_area > 0:
                objects, small = split_small(objects, min_area)
                _paint(work, image, "erase", small)
            removed += len(small)
            if completion:
                objects, added, gas = complete_objects(objects, _whole_image(work, image), completion)
                completed += len(added)
                gas_removed += len(gas)
                _paint(work, image, "erase", gas)
                _paint(work, image, "fill", added)
            if not work.outlines:
                objects = []
            meta = {**work.meta, "name": work.image_names[image]} if work.image_names else work.meta
            objects = simplify_objects(objects, work.opts.simplify, coverage=True)
            feats = to_features(objects, SimpleNamespace(task="semantic", classes=classes), work.model, meta)
            if work.header.get("volume"):
                feats.insert(1, "slice", np.int32(work.slice_indexes[image]))
            frames.append(feats)
        features = _concat(frames)
        if work.mask is not None:
            work.mask.commit()
        stats = {
            **work.header,
            "tiles_run": state.tiles_run,
            "tiles_skipped": state.tiles_skipped,
            "objects": len(features),
            "model_seconds": state.model_seconds,
            "min_area": min_area,
            "small_regions_removed": removed,
            **({"regions_completed": completed} if completion else {}),
            **({"gas_regions_removed": gas_removed} if gas_removed else {}),
            "blocks_peak": state.blocks_peak,
        }
        return _deliver(work, features, stats)
    except GeosegError as exc:
        raise type(exc)(str(exc)) from None


def _paint(work: SceneWork, image: int, kind: str, regions: list) -> None:
    """Set ``regions`` (``[(polygon, class)]``, pixel space) of one image back to background
    (``kind`` "erase") or fill their background with the class ("fill"), in the mask being written
    and in the run's sinks."""
    if not regions:
        return
    if work.mask is not None:
        (work.mask.eraser if kind == "erase" else work.mask.filler)(work.slice_indexes[image])(regions)
    if kind in (work.sinks or {}):
        work.sinks[kind](regions)


def _channels(work: SceneWork) -> int:
    return len(get_segmenter(work.model, work.opts.device).classes)  # one probability channel per class


def _min_area(work: SceneWork) -> float:

    return resolve_min_area(work.opts, get_segmenter(work.model, work.opts.device))


def _completion(work: SceneWork) -> dict[int, dict]:
    """The checkpoint's region completion per class index (none with ``opts.complete`` False)."""
    if not work.opts.complete:
        return {}
    seg = get_segmenter(work.model, work.opts.device)
    return completion_settings(model_metadata(seg), list(seg.classes))


def _whole_image(work: SceneWork, image: int) -> np.ndarray:
    """One image's first band on the prediction grid (for region completion)."""
    window = Window(0, 0, work.grid.width, work.grid.height)
    with _reading(work.images[image]) as scene, gdal_env():
        return np.asarray(scene.read(window)[0], dtype=np.float32)


def _concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    if len(frames) == 1:
        return frames[0]
    gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=frames[0].crs)
    gdf["id"] = np.arange(1, len(gdf) + 1, dtype=np.int64)
    return gdf


def resolve_min_area(opts: PredictOptions, seg: Segmenter) -> float:
    """``opts.min_area``, or when that is None the checkpoint's ``min_area`` (else 0)."""
    if opts.min_area is not None:
        return float(opts.min_area)
    return float(model_metadata(seg).get("min_area", 0.0))


def apply_object_limits(features: gpd.GeoDataFrame, seg: Segmenter, opts: PredictOptions):
    """Drop whole objects whose measures fall outside the checkpoint's ``object_limits`` (e.g.
    ``{"length_m": [80, 420], "beam_m": [12, 72]}``: the sizes it was trained on, with a margin).
    Objects without a measure (no CRS) are kept. Returns the features, renumbered, and the count
    dropped."""
    limits = model_metadata(seg).get("object_limits") if opts.object_limits else None
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


def fill_holes(objects: list[MergedObject], seg: Segmenter, opts: PredictOptions):
    """Objects of the classes the checkpoint lists in ``fill_holes`` (solid things, such as hulls,
    whose masks can skip a bright superstructure) with their holes filled, and how many holes that
    filled; an object of such a class that lay inside a filled hole is part of the solid object now
    and leaves the list. ``opts.fill_holes`` False keeps every hole."""
    names = model_metadata(seg).get("fill_holes") or []
    solid = {i for i, c in enumerate(seg.classes) if c in names}
    if not (opts.fill_holes and solid):
        return objects, 0
    out, filled, grown = [], 0, []
    for o in objects:
        parts = shapely.get_parts(o.geometry) if o.label in solid else []
        holes = int(shapely.get_num_interior_rings(parts).sum()) if len(parts) else 0
        if holes:
            o = replace(o, geometry=shapely.union_all(shapely.polygons(shapely.get_exterior_ring(parts))))
            filled += holes
            grown.append(len(out))
        out.append(o)
    if grown:  # objects that sat in a hole (an island the model saw apart) are inside a solid one now
        tree = shapely.STRtree([out[i].geometry for i in grown])
        inside = set()
        for n, o in enumerate(out):
            if o.label not in solid:
                continue
            for k in tree.query(o.geometry, predicate="within"):
                host = grown[int(k)]
                if host != n and out[host].label == o.label:
                    inside.add(n)
        out = [o for n, o in enumerate(out) if n not in inside]
    return out, filled


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
