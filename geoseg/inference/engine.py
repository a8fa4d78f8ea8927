"""The execution engine: one stream of tile batches from any number of scenes, and per scene one
reduction, as tasks on local threads or on dask.distributed workers, for both model families.

A run is a sequence of scenes. For each, the client *prepares* a :class:`SceneWork` (it opens the
scene's header, chooses bands, ground sample distance and the tile grid: no pixels are read), then
submits the scene's batch tasks, and its reduction, whose arguments are the batch tasks' futures:
the data goes from worker to worker and never through the client.

- Instance scenes: on a CPU cluster, every batch task reads its tiles, runs the model and
  vectorises (:func:`geoseg.inference.tasks.run_batch`). On a cluster whose workers declare a ``GPU``
  resource, the forward pass (:func:`infer_instances`, which asks for the GPU, and hands on each
  mask cut to its window) and the polygonising (:func:`vectorise_instances`, which doesn't) are
  separate tasks, so a GPU never waits on shapely. In this process, reading
  (:func:`read_batch`) and polygonising run on a CPU thread while the model thread runs the next
  forward pass.
  One :func:`reduce_instances` task merges the scene's parts, georeferences and measures them and
  writes the scene's vector file.
- Semantic scenes: batch tasks return blended-ready probabilities (:func:`geoseg.inference.blend.run_tiles`);
  a chain of :func:`stitch_step` tasks, each taking the state of the one before and the next few
  batches, accumulates them block by block (:class:`geoseg.inference.blend.Stitcher`), writes the finished
  blocks of the class mask and polygonises them; :func:`stitch_finish` drops regions under the
  minimum area, commits the mask and writes the outlines. The state carries only the overlap strips
  still waiting for their neighbours, so memory does not grow with the scene's area.

At most ``window`` batches are in flight at once (submitted and not yet consumed: an instance
batch is consumed when it finishes, since its parts are small; a semantic batch when the stitch
step that takes it is done), so neither the client nor the workers hold more than a window of
batches, however many scenes a run has. Scenes overlap: the next scene's batches start while the
previous one is still being reduced, so workers are never idle behind a merge. Only small results
come back to the client: statistics, output paths, and the features themselves only when the caller
asked to keep them in memory (``geoseg.inference.tasks.predict_scene``).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from geoseg.errors import GeosegError, ModelError, SceneError
from geoseg.faults import fault_point
from geoseg.inference.tiling import Tile, TileGrid
from geoseg.io.gdal import gdal_env
from geoseg.io.scene import NoCRSWarning, SceneRef
from geoseg.models.segmenter import ModelSpec, get_segmenter, to_numpy

# -- what a scene is and what it writes ---------------------------------------------------------


@dataclass(frozen=True)
class Outputs:
    """Where a scene's results go. ``vectors`` None: nothing is written and the features come back
    in memory (``keep`` is then implied); ``scene_name`` replaces the ``scene`` column (a job names
    scenes after their STAC item)."""

    vectors: str | None = None
    fmt: str | None = None
    overwrite: bool = False
    layer: str | None = None
    scene_name: str | None = None
    keep: bool = False


@dataclass
class SceneWork:
    """One prepared scene: everything its tasks need, picklable except ``sinks`` (local runs only)."""

    task: str  # "instance" | "semantic"
    model: ModelSpec
    opts: Any  # geoseg.inference.tasks.PredictOptions
    grid: TileGrid
    images: list[SceneRef]  # one per 2-D image: a raster, or the chosen slices of a stack/volume
    meta: dict  # crs, transform, name, path of the scene
    header: dict  # statistics known before any tile runs
    outputs: Outputs = field(default_factory=Outputs)
    pixel_space: bool = False
    cache: Any = None  # geoseg.inference.tilecache.TileCache: finished instance batches, for mid-scene resume
    blend: str = "gaussian"
    mask: Any = None  # geoseg.io.masks.MaskWriter of a semantic scene
    slice_indexes: list[int | None] = field(default_factory=list)  # per image: its slice (volumes)
    sinks: dict | None = None  # mask / erase / probabilities callbacks (in-process runs only)
    outlines: bool = True
    image_names: list[str] = field(default_factory=list)  # per image, for a volume's slices

    def batches(self) -> list[tuple[int, list[Tile]]]:
        """``(image, tiles)`` of every batch, image after image, tiles in row-major order."""
        tiles = self.grid.tiles()
        size = self.opts.batch_size
        return [(i, tiles[k : k + size]) for i in range(len(self.images)) for k in range(0, len(tiles), size)]

    def cleanup(self) -> None:
        """After a failure: remove what the scene had started to write."""
        if self.mask is not None:
            self.mask.abort()


@dataclass
class SceneOutcome:
    """What a scene's reduction sends back: statistics, and the features if they were kept."""

    stats: dict
    features: gpd.GeoDataFrame | None = None


# -- runners: local threads or a dask.distributed client ----------------------------------------


class LocalRunner:
    """Runs tasks on threads of this process: forward passes (``model=True``) on ``workers``
    threads, everything else (polygonising, reductions, stitching) on a thread of its own, so the
    next batch's forward pass runs while the last one is vectorised. A task whose arguments include
    futures of other tasks starts once they are done, with their results (as dask would do it)."""

    split = True  # forward passes and polygonising are separate tasks
    prefetch = True  # and reading: a batch is read while the model runs the one before

    def __init__(self, workers: int = 1) -> None:
        self.threads = max(1, int(workers))
        self.model_pool = ThreadPoolExecutor(self.threads, thread_name_prefix="geoseg-model",
                                             initializer=_share_cores, initargs=(self.threads,))  # fmt: skip
        self.cpu_pool = ThreadPoolExecutor(1, thread_name_prefix="geoseg-cpu")

    def submit(self, fn: Callable, *args, model: bool = False) -> Future:
        pool = self.model_pool if model else self.cpu_pool
        out: Future = Future()
        deps = [a for a in args if isinstance(a, Future)]
        remaining = [len(deps)]
        lock = threading.Lock()
        # the arguments are dropped once the task has them: finished futures point at each other
        # through their callbacks, and a batch's results must not wait for the garbage collector
        held = {"args": args, "deps": deps}

        def launch() -> None:
            args, deps = held.pop("args"), held.pop("deps")
            if not out.set_running_or_notify_cancel():
                return
            failed = next((d for d in deps if d.cancelled() or d.exception() is not None), None)
            if failed is not None:
                out.set_exception(failed.exception() if not failed.cancelled() else _Cancelled())
                return
            values = [a.result() if isinstance(a, Future) else a for a in args]
            del args, deps
            inner = pool.submit(fn, *values)
            del values
            inner.add_done_callback(lambda f: _settle(out, f))

        def one_done(_f: Future) -> None:
            with lock:
                remaining[0] -= 1
                ready = remaining[0] == 0
            if ready:
                launch()

        if not deps:
            launch()
        for d in deps:
            d.add_done_callback(one_done)
        return out

    def close(self) -> None:
        for pool in (self.model_pool, self.cpu_pool):
            pool.shutdown(wait=True, cancel_futures=True)


def _share_cores(threads: int) -> None:
    """In a new model thread: torch's thread count for this thread (OpenMP keeps one per calling
    thread), so that ``threads`` forward passes at once share the cores instead of each taking all."""
    torch = sys.modules.get("torch")
    if torch is not None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // threads))


class _Cancelled(GeosegError):
    """A task was cancelled because its scene had already failed."""


def _settle(out: Future, inner: Future) -> None:
    if inner.cancelled():
        out.set_exception(_Cancelled("cancelled"))
    elif inner.exception() is not None:
        out.set_exception(inner.exception())
    else:
        out.set_result(inner.result())


class DaskRunner:
    """Runs tasks on a dask.distributed cluster through ``client``. Workers that declare a ``GPU``
    resource (``dask worker --resources GPU=1``) get the forward passes, and polygonising is then a
    task of its own that any worker takes; without GPUs a batch is one task (read, forward pass,
    polygons), which moves the least data between workers."""

    def __init__(self, client) -> None:
        self.client = client
        workers = client.scheduler_info().get("workers", {})
        self.threads = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        self.gpus = any((w.get("resources") or {}).get("GPU") for w in workers.values())
        self.split = self.gpus
        self.prefetch = False  # a batch is read where its forward pass runs: no pixels travel

    def submit(self, fn: Callable, *args, model: bool = False):
        extra = {"resources": {"GPU": 1}} if model and self.gpus else {}
        return self.client.submit(fn, *args, pure=False, **extra)

    def close(self) -> None:
        pass


def make_runner(workers: int = 1, scheduler=None):
    """A :class:`DaskRunner` for a ``dask.distributed.Client``, else a :class:`LocalRunner`."""
    return DaskRunner(scheduler) if scheduler is not None else LocalRunner(workers)


# -- the stream ----------------------------------------------------------------------------------


@dataclass
class _Live:
    """A scene being run: its futures, and whether its outcome was already reported."""

    item: Any
    work: SceneWork
    started: float  # time.perf_counter() on the client, when the scene was prepared
    futures: list = field(default_factory=list)
    finished: bool = False


def execute(
    items: Iterable,
    prepare: Callable[[Any], SceneWork],
    runner,
    *,
    on_start: Callable[[Any], None] | None = None,
    on_done: Callable[[Any, SceneOutcome | None, BaseException | None], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    window: int | None = None,
) -> None:
    """Run every scene of ``items``: ``prepare(item)`` (on this, the client, side) makes its
    :class:`SceneWork`; its batches and reduction go to ``runner``. ``on_done(item, outcome,
    error)`` is called once per item, in the order scenes finish, with ``error`` set (and outcome
    None) when it failed: one failing scene never stops the others. ``progress(done, submitted)``
    counts batches."""
    window = max(2, window or 2 * runner.threads)
    events: queue.SimpleQueue = queue.SimpleQueue()
    state = {"in_flight": 0, "done": 0, "submitted": 0, "open": 0}

    def report(live: _Live, outcome: SceneOutcome | None, error: BaseException | None) -> None:
        if live.finished:
            return
        live.finished = True
        if error is not None:
            for f in live.futures:
                f.cancel()
            live.work.cleanup()
        live.futures = []  # drop the references: a cluster frees the batches' results
        state["open"] -= 1
        if outcome is not None:  # measured here: clocks of other processes are not comparable
            outcome.stats["seconds"] = time.perf_counter() - live.started
        if on_done:
            on_done(live.item, outcome, error)

    def handle(event) -> None:
        kind, live, fut, released, value = event
        state["in_flight"] -= released
        if kind == "batch":
            state["done"] += 1
            if progress:
                progress(state["done"], state["submitted"])
        error = value if isinstance(value, BaseException) else _error_of(fut)
        if error is not None:
            report(live, None, error)
        elif kind == "reduce":
            report(live, value, None)

    # a scene's outcome is fetched from its worker off this thread, which goes on submitting
    fetcher = ThreadPoolExecutor(2, thread_name_prefix="geoseg-fetch")

    def fetch(kind: str, live: _Live, f, released: int) -> None:
        try:
            value = f.result() if _error_of(f) is None else None
        except BaseException as exc:
            value = exc
        events.put((kind, live, f, released, value))

    def watch(fut, kind: str, live: _Live, released: int) -> None:
        if kind == "reduce":
            fut.add_done_callback(lambda f: fetcher.submit(fetch, kind, live, f, released))
        else:
            fut.add_done_callback(lambda f: events.put((kind, live, f, released, None)))

    def make_room(needed: int) -> None:
        while state["in_flight"] + needed > window and state["in_flight"] > 0:
            handle(events.get())

    # the next scene is planned (its header read) on a thread of its own while this one's batches
    # are submitted, so the workers are fed without waiting for the client
    planner = ThreadPoolExecutor(1, thread_name_prefix="geoseg-plan")

    def plan(item) -> tuple:
        if on_start:  # here, on the calling thread: it may record the run state
            on_start(item)
        return item, time.perf_counter(), planner.submit(prepare, item)

    queue_ = iter(items)
    ahead = [plan(item) for item in _take(queue_, 1)]
    try:
        while ahead:
            item, started, planned = ahead.pop(0)
            error = planned.exception()
            work = planned.result() if error is None else None
            ahead += [plan(nxt) for nxt in _take(queue_, 1)]
            if error is not None:  # a bad scene fails alone, before anything is submitted
                if on_done:
                    on_done(item, None, error)
                continue
            live = _Live(item, work, started)
            state["open"] += 1
            try:
                _submit_scene(live, runner, watch, make_room, state, window)
            except Exception as exc:
                report(live, None, exc)
            while not events.empty():  # take what finished meanwhile, without waiting
                handle(events.get())
    finally:
        planner.shutdown(wait=True, cancel_futures=True)
    while state["open"] > 0:
        handle(events.get())
    fetcher.shutdown(wait=False)


def _take(it, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def _error_of(fut) -> BaseException | None:
    if fut.cancelled():
        return _Cancelled("cancelled")
    status = getattr(fut, "status", None)
    if status is not None:  # a distributed future: look without fetching its result
        return fut.exception() if status == "error" else None
    return fut.exception()


def _submit_scene(live: _Live, runner, watch, make_room, state: dict, window: int) -> None:
    from geoseg.inference.blend import run_tiles
    from geoseg.inference.tasks import run_batch

    work = live.work
    batches = work.batches()
    tile_shape = work.grid.tile_shape
    if work.task == "instance":
        results = []
        for image, tiles in batches:
            make_room(1)
            if live.finished:
                return
            ref = work.images[image]
            if runner.split:  # the forward pass, then polygonising elsewhere
                args = (ref, work.model, tiles, tile_shape, work.opts, work.cache)
                if runner.prefetch:  # read on the CPU thread while the model runs the batch before
                    args = (*args, runner.submit(read_batch, ref, tiles, tile_shape, work.cache))
                raw = runner.submit(infer_instances, *args, model=True)
                # (not kept in live.futures: a batch's raw predictions go as soon as it is polygonised)
                fut = runner.submit(vectorise_instances, raw, tiles, work.opts, work.cache)
            else:
                fut = runner.submit(run_batch, ref, work.model, tiles, tile_shape, work.opts, work.cache,
                                    model=True)  # fmt: skip
            state["in_flight"] += 1
            state["submitted"] += 1
            live.futures.append(fut)
            results.append(fut)
            watch(fut, "batch", live, 1)
        reduction = runner.submit(reduce_instances, work, *results)
        live.futures.append(reduction)
        watch(reduction, "reduce", live, 0)
        return
    # semantic: a chain of stitch steps, each taking the next few batches
    per_step = max(1, min(window // 2, len(work.grid.tiles()) // max(1, work.opts.batch_size) or 1, 8))
    stitch = runner.submit(stitch_begin, work)
    live.futures.append(stitch)
    for k in range(0, len(batches), per_step):
        chunk = batches[k : k + per_step]
        make_room(len(chunk))
        if live.finished:
            return
        futs = []
        for image, tiles in chunk:
            fut = runner.submit(run_tiles, work.images[image], work.model, tiles, tile_shape,
                                work.opts.device, image, model=True)  # fmt: skip
            state["in_flight"] += 1
            state["submitted"] += 1
            futs.append(fut)
            watch(fut, "batch", live, 0)
        stitch = runner.submit(stitch_step, stitch, *futs)
        live.futures += [*futs, stitch]
        watch(stitch, "step", live, len(futs))
    reduction = runner.submit(stitch_finish, stitch)
    live.futures.append(reduction)
    watch(reduction, "reduce", live, 0)


# -- instance tasks ----------------------------------------------------------------------------


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
    from geoseg.inference.tasks import BatchResult, read_tiles

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
    from geoseg.inference.tasks import apply_worker_threads
    from geoseg.inference.vectorize import mask_windows

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
    from geoseg.inference.tasks import BatchResult
    from geoseg.inference.vectorize import instance_parts

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


def reduce_instances(work: SceneWork, *results) -> SceneOutcome:
    """A scene's instance reduction (a task): merge its tiles' parts into whole objects, drop those
    under the minimum area or outside the checkpoint's object limits, georeference, write."""
    from geoseg.inference.features import to_features
    from geoseg.inference.merge import merge_instances
    from geoseg.inference.tasks import apply_object_limits, drop_small, resolve_min_area

    try:
        seg = get_segmenter(work.model, work.opts.device)
        parts = [p for r in results for p in r.parts]
        tiles_by_index = {t.index: t for t in work.grid.tiles()}
        opts = work.opts
        objects = merge_instances(
            parts, tiles_by_index, iou_threshold=opts.iou_threshold, ios_threshold=opts.ios_threshold
        )
        min_area = resolve_min_area(opts, seg)
        if min_area > 0:  # on whole objects: filtering tile parts would depend on the tiling
            objects = drop_small(objects, min_area)
        features = to_features(objects, seg, work.model, work.meta)
        features, outside = apply_object_limits(features, seg, opts)
        stats = {
            **work.header,
            "tiles_run": sum(r.tiles_run for r in results),
            "tiles_skipped": sum(r.tiles_skipped for r in results),
            "tile_parts": len(parts),
            "objects": len(features),
            "objects_outside_limits": outside,
            "model_seconds": sum(r.model_seconds for r in results),
        }
        return _deliver(work, features, stats)
    except GeosegError as exc:
        raise type(exc)(str(exc)) from None  # no GDAL cause: it may not survive the trip home


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
    return SceneOutcome(stats, features if keep else None)


def write_features(
    features: gpd.GeoDataFrame, path: str, *, fmt: str | None = None, overwrite: bool = False,
    pixel_space: bool = False, layer: str | None = None,
) -> None:  # fmt: skip
    """Write a scene's features: GeoJSON in pixel coordinates for a pixel-space scene (a slice),
    any format in the scene's CRS otherwise (see :mod:`geoseg.io.vectors`)."""
    from geoseg.io.masks import write_pixel_geojson
    from geoseg.io.vectors import format_for, write_vectors

    fmt = format_for(path, fmt)
    if pixel_space and fmt == "geojson" and features.crs is None:
        write_pixel_geojson(features, path, overwrite=overwrite)
        return
    with warnings.catch_warnings():
        if pixel_space:  # pixel coordinates are what a slice's outlines are meant to have
            warnings.filterwarnings("ignore", message="'crs' was not provided")
        write_vectors(features, path, fmt=fmt, overwrite=overwrite, layer=layer)


# -- semantic tasks ----------------------------------------------------------------------------


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
    from geoseg.inference.blend import Stitcher, class_names, classify
    from geoseg.inference.vectorize import label_pieces

    work = state.work
    classes = class_names(get_segmenter(work.model, work.opts.device))
    sinks = work.sinks or {}
    regions = work.outlines or (work.mask is not None and _min_area(work) > 0)
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


def stitch_finish(state: StitchState) -> SceneOutcome:
    """Whole regions: drop those under the minimum area (from outlines and mask), commit the mask,
    georeference and write the outlines."""
    from geoseg.inference.blend import class_names
    from geoseg.inference.features import to_features
    from geoseg.inference.merge import dissolve_semantic
    from geoseg.inference.tasks import split_small

    work = state.work
    try:
        classes = class_names(get_segmenter(work.model, work.opts.device))
        min_area = _min_area(work)
        frames, removed = [], 0
        for image in range(len(work.images)):
            pieces = state.pieces.get(image, [])
            objects = dissolve_semantic(pieces) if pieces else []
            small: list = []
            if min_area > 0:
                objects, small = split_small(objects, min_area)
                if small and work.mask is not None:
                    work.mask.eraser(work.slice_indexes[image])(small)
                if small and "erase" in (work.sinks or {}):
                    work.sinks["erase"](small)
            removed += len(small)
            if not work.outlines:
                objects = []
            meta = {**work.meta, "name": work.image_names[image]} if work.image_names else work.meta
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
            "blocks_peak": state.blocks_peak,
        }
        return _deliver(work, features, stats)
    except GeosegError as exc:
        raise type(exc)(str(exc)) from None


def _channels(work: SceneWork) -> int:
    return len(get_segmenter(work.model, work.opts.device).classes)  # one probability channel per class


def _min_area(work: SceneWork) -> float:
    from geoseg.inference.tasks import resolve_min_area

    return resolve_min_area(work.opts, get_segmenter(work.model, work.opts.device))


def _concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    if len(frames) == 1:
        return frames[0]
    gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=frames[0].crs)
    gdf["id"] = np.arange(1, len(gdf) + 1, dtype=np.int64)
    return gdf


# -- preparing a scene (client side) -------------------------------------------------------------


def prepare(
    scene: str | SceneRef,
    model: ModelSpec | str,
    opts,
    outputs: Outputs = Outputs(),
    *,
    cache=None,
    blend: str = "gaussian",
    mask_path: str | os.PathLike | None = None,
    axis: int | None = None,
    slices: Sequence[int] | None = None,
    hu_window: tuple[float, float] | None = None,
    sinks: dict | None = None,
    outlines: bool = True,
    local: bool = True,
) -> SceneWork:
    """Open ``scene``'s header and plan its work with ``model`` (see the module docstring). A bad
    scene, model or setting raises here, before any task runs. The semantic keywords (``blend``,
    ``mask_path``, ``axis``, ``slices``, ``hu_window``, ``sinks``, ``outlines``) apply to semantic
    models; a mask asked of an instance model is an error. ``local``: the model also runs in this
    process (not only on a cluster's workers)."""
    ref = scene if isinstance(scene, SceneRef) else SceneRef(str(scene))
    model = model if isinstance(model, ModelSpec) else ModelSpec(model)
    opened = _open_header(ref, axis, hu_window)  # a bad scene fails before a model is loaded
    try:
        # the client reads the model's settings; on a cluster the workers run it (on their devices)
        seg = get_segmenter(model, opts.device if local else "cpu")
        if seg.task == "instance" and mask_path is not None:
            raise ModelError(f"model '{model.name}': masks are written for semantic models only")
    except BaseException:
        if opened is not None:
            opened.close()
        raise
    if seg.task == "semantic":
        if opened is not None:
            opened.close()  # semantic planning opens each image as it chooses it
        return _prepare_semantic(ref, model, seg, opts, outputs, blend, mask_path, axis, slices, hu_window,
                                 sinks, outlines)  # fmt: skip
    return _prepare_instance(ref, model, seg, opts, outputs, cache, opened)


def _open_header(ref: SceneRef, axis, hu_window):
    """Open ``ref`` (a bad scene fails here, before a model is loaded): the open scene, or None for
    a stack or volume, whose slices are opened one by one later."""
    from geoseg.io.slices import SliceRef, SliceScene, is_slice_file

    if is_slice_file(ref.path) and not isinstance(ref, SliceRef):
        SliceScene(ref.path, bands=ref.bands, index=0, axis=axis, hu_window=hu_window).close()
        return None
    return ref.open()


def _prepare_instance(ref, model, seg, opts, outputs, cache, first=None) -> SceneWork:
    from geoseg.inference.tasks import check_bands, make_grid, resolve_gsd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoCRSWarning)  # reported once, when the caller opened it
        first, asked = first if first is not None else ref.open(), ref
        try:
            ref = trained_bands(ref, seg, first.count)
            ref = resolve_gsd(ref, seg, opts, first.native_gsd)
            if opts.rotated_view is not None and getattr(seg, "rotated_view", None) is None:
                raise ModelError(f"model '{model.name}': has no rotated view (a Mask R-CNN checkpoint has)")
            same = ref == asked  # other bands or another grid: open it again as chosen
        except BaseException:
            first.close()
            raise
        with first if same else _closing_then_open(first, ref) as sc:
            check_bands(sc, seg, model)
            grid = make_grid(sc, seg, opts)
            if opts.edge_margin is None:
                opts = replace(opts, edge_margin=max(4, grid.overlap // 4))
            meta = {"crs": sc.crs, "transform": sc.transform, "name": sc.name, "path": sc.path}
            gsd = {"native_gsd_m": sc.native_gsd, "gsd_m": sc.gsd if sc.gsd is not None else sc.native_gsd}
            pixel_space = bool(getattr(sc, "pixel_space", False))
            ref = sc.ref
    header = {
        "scene": meta["path"], "width": grid.width, "height": grid.height, "tile_size": grid.size,
        "overlap": grid.overlap, **{k: round(v, 4) if v is not None else None for k, v in gsd.items()},
        "tiles": len(grid.tiles()), "pixel_space": pixel_space,
    }  # fmt: skip
    return SceneWork("instance", model, opts, grid, [ref], meta, header, outputs, pixel_space, cache,
                     slice_indexes=[None])  # fmt: skip


def _closing_then_open(first, ref: SceneRef):
    """``ref`` opened anew (other bands or grid than ``first``, which is closed)."""
    first.close()
    return ref.open()


def trained_bands(ref: SceneRef, seg, count: int) -> SceneRef:
    """A checkpoint knows its bands: read them unless told otherwise."""
    trained = (getattr(seg, "metadata", None) or {}).get("bands")
    if ref.bands is None and trained and len(trained) == seg.in_channels:
        if count != seg.in_channels and max(trained) <= count:
            return replace(ref, bands=tuple(trained))
    return ref


def _prepare_semantic(ref, model, seg, opts, outputs, blend, mask_path, axis, slices, hu_window, sinks,
                      outlines) -> SceneWork:  # fmt: skip
    from geoseg.inference.blend import BLENDS
    from geoseg.inference.tasks import check_bands, make_grid
    from geoseg.io.masks import MaskWriter
    from geoseg.io.slices import (
        VOLUME_EXTENSIONS,
        SliceRef,
        SliceScene,
        extension,
        is_slice_file,
        read_volume,
    )

    if blend not in BLENDS:
        raise ModelError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    if opts.gsd:
        raise ModelError("resampling (--gsd) is for instance models: semantic masks keep the scene's grid")
    if opts.rotated_view:
        raise ModelError(f"model '{model.name}': the rotated view is for Mask R-CNN models")
    volume, nifti, indexes = False, None, [None]
    if is_slice_file(ref.path) and not isinstance(ref, SliceRef):
        with SliceScene(ref.path, bands=ref.bands, index=0, axis=axis, hu_window=hu_window) as first:
            count = first.slices
        nifti = read_volume(ref.path) if extension(ref.path) in VOLUME_EXTENSIONS else None
        volume = nifti is not None or count > 1
        chosen = list(range(count)) if slices is None else sorted(set(slices))
        bad = [k for k in chosen if not 0 <= k < count]
        if bad:
            raise SceneError(f"scene '{ref.path}': slice {bad[0]} does not exist (it has {count})")
        if volume:
            indexes = chosen
        images = [SliceRef(ref.path, ref.bands, index=k, axis=axis, hu_window=hu_window) for k in indexes]
    else:
        images = [ref]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoCRSWarning)
        with images[0].open() as sc:
            refined = trained_bands(images[0], seg, sc.count)
        images = [replace(im, bands=refined.bands) for im in images]
        with images[0].open() as sc:
            check_bands(sc, seg, model)
            grid = make_grid(sc, seg, opts)
            meta = {"crs": sc.crs, "transform": sc.transform, "name": sc.name, "path": sc.path}
            pixel_space = bool(getattr(sc, "pixel_space", False))
            crs, transform, height, width = sc.crs, sc.transform, sc.height, sc.width
            images[0] = sc.ref if not volume else images[0]
    names = []
    if volume:
        from geoseg.io.slices import file_stem

        names = [f"{file_stem(ref.path)}_{int(k):04d}" for k in indexes]
        meta["path"] = ref.path
    writer = None
    if mask_path is not None:
        if volume:
            shape = tuple(nifti.shape[:3]) if nifti is not None else (count, height, width)
            vol_axis = (2 if axis is None else axis) if nifti is not None else 0
            writer = MaskWriter(mask_path, shape, axis=vol_axis, nifti=nifti, overwrite=outputs.overwrite)
        else:
            writer = MaskWriter(mask_path, (height, width), crs=crs, transform=transform,
                                overwrite=outputs.overwrite)  # fmt: skip
    header = {
        "scene": ref.path, "width": grid.width, "height": grid.height, "tile_size": grid.size,
        "overlap": grid.overlap, "stride": grid.align, "blend": blend,
        "tiles": len(grid.tiles()) * len(images), "pixel_space": pixel_space,
        "mask": None if mask_path is None else str(mask_path),
    }  # fmt: skip
    if volume:
        header.update(slices=len(images), volume=True)
    return SceneWork("semantic", model, opts, grid, images, meta, header, outputs, pixel_space, None, blend,
                     writer, indexes, sinks, outlines, names)  # fmt: skip


# -- one scene, in this process or on a cluster -------------------------------------------------


def run_scene(
    scene: str | SceneRef, model: ModelSpec | str, opts, outputs: Outputs = Outputs(), *, progress=None,
    scheduler=None, **prepare_options,
) -> SceneOutcome:  # fmt: skip
    """Prepare and run one scene (``geoseg predict``); raise what made it fail."""
    outcome: list = []
    runner = make_runner(opts.workers, scheduler)
    previous = torch_threads_for(opts.workers) if scheduler is None else None
    try:
        execute(
            [scene], lambda s: prepare(s, model, opts, outputs, local=scheduler is None, **prepare_options),
            runner,
            on_done=lambda _i, result, error: outcome.append((result, error)), progress=progress,
        )  # fmt: skip
    finally:
        runner.close()
        if previous is not None:
            sys.modules["torch"].set_num_threads(previous)
    result, error = outcome[0]
    if error is not None:
        raise error
    return result


def torch_threads_for(workers: int) -> int | None:
    """Keep threads x torch threads <= cores in this process; returns the setting to restore.

    Only when the model uses torch (it is imported by then): a model without torch pays nothing.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    previous = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, (cores or 1) // max(1, workers)))
    return previous


__all__ = [
    "DaskRunner",
    "LocalRunner",
    "Outputs",
    "SceneOutcome",
    "SceneWork",
    "execute",
    "make_runner",
    "prepare",
    "run_scene",
    "write_features",
]
