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
- Semantic scenes: batch tasks return blended-ready probabilities (:func:`geoseg.inference.tasks.run_tiles`);
  a chain of :func:`stitch_step` tasks, each taking the state of the one before and the next few
  batches, accumulates them block by block (:class:`geoseg.inference.blend.Stitcher`), writes the finished
  blocks of the class mask and polygonises them; :func:`stitch_finish` drops regions under the
  minimum area, commits the mask and writes the outlines. The state carries only the overlap strips
  still waiting for their neighbours, so memory does not grow with the scene's area.

On a CPU cluster, a scene's batches are placed on as few workers as keep every worker busy
(:class:`DaskRunner`), so that its reduction runs where its inputs are; a scene of up to
``depth`` batches is a single task with its reduction (:func:`run_scene_instances`, and for
semantic scenes :func:`run_scene_semantic`) while other scenes are waiting for the idle workers,
and a bigger one goes in tasks of a few consecutive batches (:func:`run_batches`).

At most ``window`` batches are in flight at once (submitted and not yet consumed: an instance
batch is consumed when it finishes, since its parts are small; a semantic batch when the stitch
step that takes it is done), so neither the client nor the workers hold more than a window of
batches, however many scenes a run has. Scenes overlap: the next scene's batches start while the
previous one is still being reduced, so workers are never idle behind a merge. Only small results
come back to the client: statistics, output paths, and the features themselves only when the caller
asked to keep them in memory (``geoseg.inference.engine.predict_scene``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import geopandas as gpd
import numpy as np

from geoseg.errors import GeosegError, ModelError
from geoseg.inference.options import PredictOptions
from geoseg.inference.plan import Outputs, SceneWork, prepare
from geoseg.inference.tasks import (
    SceneOutcome,
    infer_instances,
    read_batch,
    reduce_instances,
    run_batch,
    run_batches,
    run_scene_instances,
    run_scene_semantic,
    run_tiles,
    stitch_begin,
    stitch_finish,
    stitch_step,
    vectorise_instances,
)
from geoseg.inference.tilecache import TileCache
from geoseg.io.refs import SceneRef
from geoseg.models.segmenter import ModelSpec, get_segmenter


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
        self.window = 2 * self.threads  # batches in flight

    def submit(self, fn: Callable, *args, model: bool = False, group: Any = None, weight: int = 1) -> Future:
        """Run ``fn(*args)``; ``group`` (the scene a batch belongs to) and ``weight`` (the batches
        the task runs) matter to a cluster only."""
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

    def forget(self, group: Any) -> None:
        """Nothing to do: this process places no batches."""

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
    polygons), which moves the least data between workers.

    Without GPUs, a scene's batches are placed on as few workers as keep every worker busy
    (:class:`_Placement`): up to ``depth`` batches per worker thread, and a scene's next batch goes
    where its last one went while that worker has room. Its reduction then finds most of its
    inputs where it runs instead of waiting for them to travel (which, on dask, holds a worker's
    slot), the worker reads the scene from the raster it has open, and the next batch waits in the
    worker rather than behind a round trip to the scheduler. A placement is a preference
    (``allow_other_workers``): dask still moves a batch to an idle worker, or off one that left.

    Batches placed together also travel together: a scene of up to ``depth`` batches is one task
    with its reduction (:func:`run_scene_instances`, :func:`run_scene_semantic`), and a bigger one
    goes in tasks of ``chunk_max`` consecutive batches (:meth:`chunk`), as long as enough scenes are
    still to come to give every idle worker its own. Each task costs the scheduler, the worker
    and the client a few milliseconds of CPU whatever it runs; 16 workers on two cores spent a
    third of their CPU that way with a task per batch.
    """

    depth = 4  # batches in flight per worker thread, when batches are placed
    chunk_max = 2  # batches of a bigger scene in one task

    def __init__(self, client, *, place: bool | None = None) -> None:
        self.client = client
        workers = client.scheduler_info().get("workers", {})
        self.threads = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        self.gpus = any((w.get("resources") or {}).get("GPU") for w in workers.values())
        self.split = self.gpus
        self.prefetch = False  # a batch is read where its forward pass runs: no pixels travel
        place = not self.gpus if place is None else place
        self.placement = _Placement(client, workers, self.depth) if place and workers else None
        # placed, a worker holds two chunks per thread: the next one waits there, not behind the client
        self.window = 2 * self.depth * self.threads if self.placement else 2 * self.threads

    def submit(self, fn: Callable, *args, model: bool = False, group: Any = None, weight: int = 1):
        extra: dict = {"resources": {"GPU": 1}} if model and self.gpus else {}
        where = None
        if model and group is not None and self.placement is not None:
            where = self.placement.take(group, weight)
            extra.update(workers=[where], allow_other_workers=True)
        fut = self.client.submit(fn, *args, pure=False, **extra)
        if where is not None:
            fut.add_done_callback(lambda _f: self.placement.give_back(where, weight))
        return fut

    def chunk(self, batches: int, later: int | None) -> int:
        """How many of a scene's ``batches`` one task runs, with ``later`` scenes still to come
        after it (None: not known, taken as many). When the scenes to come can feed the worker
        threads that are idle, a scene of up to ``depth`` batches is one task, and a bigger one goes
        in chunks of ``chunk_max`` (so the end of a run waits on a worker for at most that many
        batches more than on the others); else the scene is spread over its share of the idle
        threads."""
        if self.placement is None:
            return 1
        idle = self.placement.idle_threads()
        share = 1 if later is None or later + 1 >= idle else -(-idle // (later + 1))
        if share == 1 and batches <= self.depth:
            return max(1, batches)  # the whole scene, with its reduction
        return max(1, min(self.chunk_max, -(-batches // share)))

    def forget(self, group: Any) -> None:
        """``group`` (a scene) has no more batches to place."""
        if self.placement is not None:
            self.placement.forget(group)

    def close(self) -> None:
        pass


class _Placement:
    """Which worker a scene's next batch goes to: a worker with nothing to do, if there is one (so
    a run's first scenes start on every worker at once); else the worker its last batch went to,
    while that one has fewer than ``depth`` batches per thread in flight; else the worker with the
    fewest (in turn, among equals). Workers that joined or left are seen every few seconds."""

    refresh_seconds = 2.0

    def __init__(self, client, workers: dict, depth: int) -> None:
        self.client, self.depth = client, depth
        self.lock = threading.Lock()
        self.load: dict[str, int] = {}
        self.home: dict[Any, str] = {}
        self.turn = 0
        self.seen = time.monotonic()
        self._set_workers(workers)

    def _set_workers(self, workers: dict) -> None:
        self.threads = {a: max(1, int(w.get("nthreads", 1))) for a, w in workers.items()}
        self.slots = {a: self.depth * n for a, n in self.threads.items()}
        self.order = sorted(self.slots)
        for a in self.order:
            self.load.setdefault(a, 0)

    def take(self, group: Any, weight: int = 1) -> str:
        """Where the next task of ``group`` (a scene) goes; it runs ``weight`` batches."""
        if time.monotonic() - self.seen > self.refresh_seconds:
            self.seen = time.monotonic()
            with contextlib.suppress(Exception):  # the cluster as last seen still serves
                workers = self.client.scheduler_info().get("workers") or {}
                if workers:
                    self._set_workers(workers)
        with self.lock:
            n = len(self.order)
            ranked = [self.order[(self.turn + k) % n] for k in range(n)]
            where = self.home.get(group)
            idle = next((a for a in ranked if self.load[a] == 0), None)
            if idle is not None or where not in self.slots or self.load[where] >= self.slots[where]:
                where = idle or min(ranked, key=lambda a: self.load[a] / self.slots[a])
                self.turn = (self.order.index(where) + 1) % n
                self.home[group] = where
            self.load[where] += weight
            return where

    def give_back(self, where: str, weight: int = 1) -> None:
        with self.lock:
            self.load[where] = max(0, self.load.get(where, 0) - weight)

    def idle_threads(self) -> int:
        """Threads of the workers that have nothing placed on them."""
        with self.lock:
            return sum(n for a, n in self.threads.items() if self.load.get(a, 0) == 0)

    def forget(self, group: Any) -> None:
        with self.lock:
            self.home.pop(group, None)


def make_runner(workers: int = 1, scheduler=None):
    """A :class:`DaskRunner` for a ``dask.distributed.Client``, else a :class:`LocalRunner`."""
    return DaskRunner(scheduler) if scheduler is not None else LocalRunner(workers)


@dataclass
class _Live:
    """A scene being run: its futures, and whether its outcome was already reported."""

    item: Any
    work: SceneWork
    started: float  # time.perf_counter() on the client, when the scene was prepared
    futures: list = field(default_factory=list)
    finished: bool = False
    # per stitch step (by id): the futures it consumes, let go once it is done, so that neither the
    # client nor a cluster keeps a semantic scene's probabilities or old states beyond a window
    consumes: dict = field(default_factory=dict)

    def step_done(self, step) -> None:
        used = {id(f) for f in self.consumes.pop(id(step), ())}
        if used:
            self.futures = [f for f in self.futures if id(f) not in used]


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
    window = max(2, window or runner.window)
    events: queue.SimpleQueue = queue.SimpleQueue()
    state = {"in_flight": 0, "done": 0, "submitted": 0, "open": 0, "scenes": 0}

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
        kind, live, fut, released, batches, value = event
        state["in_flight"] -= released
        if batches:
            state["done"] += batches
            if progress:
                progress(state["done"], state["submitted"])
        error = value if isinstance(value, BaseException) else _error_of(fut)
        if error is not None:
            report(live, None, error)
        elif kind == "step":
            live.step_done(fut)
        elif kind == "reduce":
            report(live, value, None)

    # a scene's outcome is fetched from its worker off this thread, which goes on submitting
    fetcher = ThreadPoolExecutor(2, thread_name_prefix="geoseg-fetch")

    def fetch(kind: str, live: _Live, f, released: int, batches: int) -> None:
        try:
            value = f.result() if _error_of(f) is None else None
        except BaseException as exc:
            value = exc
        events.put((kind, live, f, released, batches, value))

    def watch(fut, kind: str, live: _Live, released: int, batches: int = 0) -> None:
        """Handle ``fut`` once done: it releases ``released`` batches of the window and finishes
        ``batches`` (for the progress); a "reduce" ends its scene with its result."""
        if kind == "reduce":
            fut.add_done_callback(lambda f: fetcher.submit(fetch, kind, live, f, released, batches))
        else:
            fut.add_done_callback(lambda f: events.put((kind, live, f, released, batches, None)))

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

    total = len(items) if isinstance(items, Sized) else None
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
            state["scenes"] += 1
            later = None if total is None else max(0, total - state["scenes"])
            try:
                _submit_scene(live, runner, watch, make_room, state, window, later)
            except Exception as exc:
                report(live, None, exc)
            finally:
                runner.forget(id(live))  # the scene has no more batches to place
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


def _submit_scene(
    live: _Live, runner, watch, make_room, state: dict, window: int, later: int | None = None
) -> None:
    """Submit ``live``'s tasks, as the window lets them in; ``later``: scenes still to come."""
    work = live.work
    batches = work.batches()
    tile_shape = work.grid.tile_shape
    if work.task == "instance" and not runner.split:
        per_task = runner.chunk(len(batches), later)
        _submit_instance_chunks(live, batches, runner, watch, make_room, state, per_task)
        return
    if work.task == "instance":  # the forward pass, then polygonising as a task of its own
        results = []
        for image, tiles in batches:
            make_room(1)
            if live.finished:
                return
            ref = work.images[image]
            args = (ref, work.model, tiles, tile_shape, work.opts, work.cache)
            if runner.prefetch:  # read on the CPU thread while the model runs the batch before
                args = (*args, runner.submit(read_batch, ref, tiles, tile_shape, work.cache))
            raw = runner.submit(infer_instances, *args, model=True)
            # (not kept in live.futures: a batch's raw predictions go as soon as it is polygonised)
            fut = runner.submit(vectorise_instances, raw, tiles, work.opts, work.cache)
            state["in_flight"] += 1
            state["submitted"] += 1
            live.futures.append(fut)
            results.append(fut)
            watch(fut, "batch", live, 1, 1)
        reduction = runner.submit(reduce_instances, work, *results)
        live.futures.append(reduction)
        watch(reduction, "reduce", live, 0)
        return
    if not runner.split and len(batches) <= runner.chunk(len(batches), later):
        _submit_whole_scene(live, len(batches), runner, watch, make_room, state, run_scene_semantic)
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
                                work.opts.device, image, model=True, group=id(live))  # fmt: skip
            state["in_flight"] += 1
            state["submitted"] += 1
            futs.append(fut)
            watch(fut, "batch", live, 0, 1)
        previous, stitch = stitch, runner.submit(stitch_step, stitch, *futs)
        live.futures += [*futs, stitch]
        live.consumes[id(stitch)] = [previous, *futs]
        watch(stitch, "step", live, len(futs))
    reduction = runner.submit(stitch_finish, stitch)
    live.futures.append(reduction)
    watch(reduction, "reduce", live, 0)


def _submit_whole_scene(live: _Live, n: int, runner, watch, make_room, state: dict, task: Callable) -> None:
    """``live``'s scene of ``n`` batches as one task, ``task(work)``, that runs its batches and its
    reduction."""
    make_room(n)
    if live.finished:
        return
    fut = runner.submit(task, live.work, model=True, group=id(live), weight=max(1, n))
    state["in_flight"] += n
    state["submitted"] += n
    live.futures.append(fut)
    watch(fut, "reduce", live, n, n)


def _submit_instance_chunks(
    live: _Live, batches: list, runner, watch, make_room, state: dict, per_task: int
) -> None:
    """An instance scene of ``batches`` on a CPU cluster: tasks of up to ``per_task`` consecutive
    batches of one image (:func:`run_batches`), placed together, and the reduction; or, when the
    whole scene fits in one task, that task with the reduction in it (:func:`run_scene_instances`)."""
    work = live.work
    if len(batches) <= per_task:
        _submit_whole_scene(live, len(batches), runner, watch, make_room, state, run_scene_instances)
        return
    chunks: list[list] = []
    for image, tiles in batches:  # consecutive batches, never across images
        if chunks and len(chunks[-1]) < per_task and chunks[-1][0][0] == image:
            chunks[-1].append((image, tiles))
        else:
            chunks.append([(image, tiles)])
    results = []
    for chunk in chunks:
        make_room(len(chunk))
        if live.finished:
            return
        ref = work.images[chunk[0][0]]
        if len(chunk) == 1:
            fut = runner.submit(run_batch, ref, work.model, chunk[0][1], work.grid.tile_shape, work.opts,
                                work.cache, model=True, group=id(live))  # fmt: skip
        else:
            tiles = [t for _, t in chunk]
            fut = runner.submit(run_batches, ref, work.model, tiles, work.grid.tile_shape, work.opts,
                                work.cache, model=True, group=id(live), weight=len(chunk))  # fmt: skip
        state["in_flight"] += len(chunk)
        state["submitted"] += len(chunk)
        live.futures.append(fut)
        results.append(fut)
        watch(fut, "batch", live, len(chunk), len(chunk))
    reduction = runner.submit(reduce_instances, work, *results)
    live.futures.append(reduction)
    watch(reduction, "reduce", live, 0)


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


@dataclass
class SceneResult:
    """What :func:`predict_scene` returns: features in the scene CRS and run statistics."""

    features: gpd.GeoDataFrame
    stats: dict


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
    blended, stitched classes (as :func:`geoseg.inference.engine.predict_blended`). Both run on
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

    outcome = run_scene(scene, model, opts, progress=progress, scheduler=scheduler, cache=cache)
    return SceneResult(outcome.features, outcome.stats)


def predict_semantic(
    scene: SceneRef | str,
    model: ModelSpec | str,
    opts: PredictOptions = PredictOptions(),
    *,
    blend: str | None = None,
    mask_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    axis: int | None = None,
    slices: Sequence[int] | None = None,
    hu_window: tuple[float, float] | None = None,
    progress=None,
    scheduler=None,
) -> SceneResult:
    """Segment ``scene`` with a semantic model; write its class mask to ``mask_path`` if given.

    ``axis`` (NIfTI volumes, default 2) and ``slices`` (default: every slice) choose the slices of
    a stack or volume; ``hu_window=(center, width)`` clips DICOM values; ``blend`` weighs tiles.
    Each of these left None keeps ``opts``' own value. The result's ``stats``
    carry ``pixel_space`` (True for slices: outlines are in pixel coordinates). Runs on
    :mod:`geoseg.inference.engine`, in this process or on the cluster of ``scheduler``.
    """

    given = {"blend": blend, "slice_axis": axis, "hu_window": hu_window,
             "slices": None if slices is None else tuple(slices)}  # fmt: skip
    opts = replace(opts, **{k: v for k, v in given.items() if v is not None})
    outcome = run_scene(scene, model, opts, Outputs(overwrite=overwrite), progress=progress,
                        scheduler=scheduler, mask_path=mask_path)  # fmt: skip
    return SceneResult(outcome.features, outcome.stats)


# -- a whole scene --------------------------------------------------------------------------------
def predict_blended(
    scene: str | SceneRef,
    model: ModelSpec | str,
    opts: PredictOptions = PredictOptions(),
    *,
    blend: str | None = None,
    mask: Callable[[int, int, np.ndarray], None] | None = None,
    erase: Callable[[list], None] | None = None,
    fill: Callable[[list], None] | None = None,
    probabilities: Callable[[int, int, np.ndarray], None] | None = None,
    outlines: bool = True,
    progress=None,
    scheduler=None,
) -> SceneResult:
    """Segment a scene with a semantic model, blending overlapping tiles (see the module docstring).

    Parameters
    ----------
    scene
        A path or a :class:`~geoseg.io.scene.SceneRef` (a :class:`~geoseg.io.slices.SliceRef` for one
        slice of a stack or volume).
    model
        A semantic model: :class:`ModelSpec` or a spec string.
    opts
        Tile size, overlap, batch size, workers, ``mask_threshold`` and ``min_area`` (pixels).
    blend
        ``constant``, ``cosine`` or ``gaussian`` tile weights (default: ``opts.blend``).
    mask
        Called as ``mask(row_off, col_off, classes)`` with a uint8 block of class indexes (0 is
        background for a one-foreground-class model) for every finished block.
    erase
        With a minimum area (``opts.min_area``, or the checkpoint's ``min_area``): called once at
        the end as ``erase([(polygon, class), ...])`` with the regions, in scene pixel space, that
        are smaller and so must be set back to background in the mask. Regions are only whole
        once every block is done, so this is a second, small pass.
    fill
        With region completion (the checkpoint's ``complete``, :mod:`geoseg.inference.complete`):
        called once at the end as ``fill([(polygon, class), ...])`` with the regions, in scene pixel
        space, whose background pixels become that class. Without it a ``mask`` callback gets the
        model's own classes.
    probabilities
        Called as ``probabilities(row_off, col_off, probs)`` with the blended float32
        ``(C, h, w)`` probabilities of every finished block.
    outlines
        Polygonise the classes (dissolved across blocks) into the result's features.
    progress, scheduler
        As for :func:`geoseg.inference.engine.predict_scene`. Callbacks run where the stitching does, so
        they need an in-process run (no ``scheduler``); a cluster writes masks through
        :func:`geoseg.inference.engine.predict_semantic`'s ``mask_path``.
    """

    ref = scene if isinstance(scene, SceneRef) else SceneRef(str(scene))
    model = model if isinstance(model, ModelSpec) else ModelSpec.resolve(str(model))
    ref.open().close()  # a bad scene fails before a model is loaded
    if get_segmenter(model, "cpu").task != "semantic":
        raise ModelError(f"model '{model.name}': blended stitching needs a semantic model, not instance")
    sinks = {k: v for k, v in (("mask", mask), ("erase", erase), ("fill", fill),
                                ("probabilities", probabilities)) if v}  # fmt: skip
    if sinks and scheduler is not None:
        raise ModelError("mask and probability callbacks need an in-process run (no scheduler)")
    opts = opts if blend is None else replace(opts, blend=blend)
    outcome = run_scene(ref, model, opts, progress=progress, scheduler=scheduler,
                        sinks=sinks, outlines=outlines)  # fmt: skip
    return SceneResult(outcome.features, outcome.stats)


def blended_probabilities(
    scene: str | SceneRef, model: ModelSpec | str, opts: PredictOptions = PredictOptions(), **kwargs
) -> np.ndarray:
    """The whole blended ``(C, H, W)`` probability image of a (small) scene, for checks and tests."""
    ref = scene if isinstance(scene, SceneRef) else SceneRef(str(scene))
    model = model if isinstance(model, ModelSpec) else ModelSpec.resolve(str(model))
    channels = len(get_segmenter(model, "cpu").classes)
    with ref.open(warn=False) as sc:
        out = np.full((channels, sc.height, sc.width), np.nan, np.float32)

    def keep(r0: int, c0: int, probs: np.ndarray) -> None:
        out[:, r0 : r0 + probs.shape[1], c0 : c0 + probs.shape[2]] = probs

    predict_blended(ref, model, opts, probabilities=keep, outlines=False, **kwargs)
    return out


__all__ = [
    "DaskRunner",
    "LocalRunner",
    "Outputs",
    "PredictOptions",
    "SceneOutcome",
    "SceneResult",
    "SceneWork",
    "execute",
    "make_runner",
    "predict_blended",
    "predict_scene",
    "predict_semantic",
    "prepare",
    "run_scene",
]
