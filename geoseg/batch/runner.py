"""Running a job over an archive of scenes: idempotent, resumable, one bad scene never sinks a run.

State lives in the tile store, in the job's own folder (``<store>/<job name>/``):

``state.sqlite``
    the run state (:mod:`geoseg.batch.runstate`): one row per scene with its input fingerprint, model
    hash, parameter hash, status (``running``, ``done``, ``failed``), outputs, object count,
    timings and error, and the combined layer's state. Each change is one synced SQLite
    transaction on one row, by the one process that runs the job; the ``manifest.json`` of
    earlier versions is imported by the first run that finds it.
``lock``
    held with ``flock`` while a run is going; the kernel drops it when the process dies, so a
    killed run never leaves a stale lock behind.
``cache/<scene>-<hash>/``
    finished batches of the scene being processed (see :mod:`geoseg.inference.tilecache`); removed once the
    scene's output is in place.

A scene is skipped when its record is ``done`` with the same fingerprint, model and parameters
and its output file exists; it is redone when any of them changed; retried when it failed or was
interrupted (``running``). Every output is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from geoseg.batch.cluster import open_cluster
from geoseg.batch.jobs import Job, JobError, ScenePlan, expand_inputs, inside
from geoseg.batch.runstate import RunState, results_digest
from geoseg.clock import utc_now
from geoseg.errors import GeosegError, one_line
from geoseg.inference.engine import execute, make_runner, torch_threads_for
from geoseg.inference.options import PredictOptions
from geoseg.inference.plan import Outputs, prepare
from geoseg.inference.tilecache import TileCache
from geoseg.io.atomic import write_text_atomic
from geoseg.io.fingerprints import update_with_file
from geoseg.io.refs import SceneRef
from geoseg.io.vectors import FORMATS, read_layer, write_vectors
from geoseg.models.segmenter import ModelSpec, get_segmenter

log = logging.getLogger("geoseg.run")

#: exit codes of ``geoseg run``
EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_LOCKED = 0, 1, 2, 3


class LockedError(GeosegError):
    """Another run of the same job holds its lock."""


# -- fingerprints ------------------------------------------------------------------------------
def fingerprint(plan: ScenePlan) -> str:
    """What identifies a scene's content: size, modification time and the first and last MiB of a
    local file (cheap on archives of large scenes); the STAC item's id, href, datetime and checksum
    for a catalogued scene; the URI for any other remote scene."""
    h = hashlib.sha256()
    if plan.stac_fingerprint:
        h.update(plan.stac_fingerprint.encode())
    if "://" in plan.href or plan.href.startswith("/vsi"):
        h.update(plan.href.encode())
        return h.hexdigest()[:16]
    update_with_file(h, plan.href)
    return h.hexdigest()[:16]


# -- lock -------------------------------------------------------------------------------------
@contextlib.contextmanager
def job_lock(job_dir: str, job_name: str):
    """Hold the job's lock for the ``with`` block, or raise :class:`LockedError` at once."""
    os.makedirs(job_dir, exist_ok=True)
    path = os.path.join(job_dir, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise LockedError(f"job '{job_name}' is already running ({holder}); lock '{path}'") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename} since {utc_now()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


# -- planning ----------------------------------------------------------------------------------
@dataclass
class Step:
    """What a run does with one scene, and why."""

    plan: ScenePlan
    action: str  # new | changed | retry | resume | skip | forced
    reason: str
    fingerprint: str


def plan_steps(
    job: Job, model: ModelSpec, state: RunState, *, force: bool = False, scenes: list | None = None
) -> list[Step]:
    scenes = expand_inputs(job) if scenes is None else scenes
    params = job.params_hash()
    steps = []
    for plan in scenes:
        fp = fingerprint(plan)
        rec = state.get(plan.key)
        if rec is None:
            action, reason = "new", "not in the run state"
        elif rec.get("href") != plan.href and rec.get("status") == "done":
            action, reason = "changed", f"now read from {plan.href}"
        elif rec.get("fingerprint") != fp:
            action, reason = "changed", "the input changed since it was processed"
        elif rec.get("model_hash") != model.key:
            action, reason = "changed", "the model changed"
        elif rec.get("params_hash") != params:
            action, reason = "changed", "tiling or prediction settings changed"
        elif rec.get("status") == "failed":
            action, reason = "retry", f"failed before: {rec.get('error')}"
        elif rec.get("status") == "running":
            action, reason = "resume", "an earlier run stopped in the middle of it"
        elif any(not os.path.exists(os.path.join(job.out_dir, o)) for o in rec.get("outputs", [])):
            action, reason = "changed", "its output is missing"
        else:
            action, reason = "skip", f"done at {rec.get('finished')} ({rec.get('objects')} objects)"
        if force and action == "skip":
            action, reason = "forced", "--force"
        steps.append(Step(plan, action, reason, fp))
    return steps


# -- the run -----------------------------------------------------------------------------------
@dataclass
class RunReport:
    job: str
    started: str
    finished: str = ""
    seconds: float = 0.0
    scenes: list[dict] = field(default_factory=list)
    combined: str | None = None
    stac: str | None = None  # the results' STAC Collection, relative to the outputs folder
    model: str | None = None
    scenes_seconds: float = 0.0  # from the first scene's start to the last one's end
    cluster_seconds: float = 0.0  # starting or joining the cluster, and loading the model on it

    def counts(self) -> dict[str, int]:
        c = {"done": 0, "skipped": 0, "failed": 0}
        for s in self.scenes:
            c[s["result"]] += 1
        return c

    def as_dict(self) -> dict:
        tiles = sum(s.get("tiles_run", 0) for s in self.scenes if s["result"] == "done")
        busy = self.scenes_seconds  # scenes overlap: the span they ran in, not the sum of their times
        return {
            "job": self.job,
            "started": self.started,
            "finished": self.finished,
            "seconds": round(self.seconds, 3),
            "scenes_seconds": round(self.scenes_seconds, 3),
            "cluster_seconds": round(self.cluster_seconds, 3),
            **self.counts(),
            "objects": sum(s.get("objects", 0) for s in self.scenes if s["result"] != "failed"),
            "tiles_run": tiles,
            "tiles_per_second": round(tiles / busy, 3) if busy > 0 else None,
            "combined": self.combined,
            "stac": self.stac,
            "model": self.model,
            "scenes": self.scenes,
        }

    def summary(self) -> str:
        d = self.as_dict()
        lines = [
            f"job {self.job}: {d['done']} done, {d['skipped']} skipped, {d['failed']} failed; "
            f"{d['objects']} objects; {d['seconds']:.1f} s"
            + (f"; {d['tiles_per_second']:.2f} tiles/s" if d["tiles_per_second"] else "")
        ]
        for s in self.scenes:
            if s["result"] == "failed":
                lines.append(f"  FAILED {s['scene']}: {s['error']}")
            elif s["result"] == "done":
                lines.append(
                    f"  done   {s['scene']}: {s['objects']} objects, {s['tiles_run']} tiles, "
                    f"{s['seconds']:.1f} s"
                )
        return "\n".join(lines)


class Events:
    """Run events as text lines or JSON lines on stderr (``--log-format json``)."""

    def __init__(self, fmt: str = "text", stream=None, quiet: bool = False) -> None:
        self.fmt, self.stream, self.quiet = fmt, stream or sys.stderr, quiet

    def __call__(self, event: str, message: str, **fields) -> None:
        if self.fmt == "json":
            rec = {"time": utc_now(), "event": event, "message": message, **fields}
            print(json.dumps(rec, default=str), file=self.stream, flush=True)
        elif not self.quiet and event != "run_end":  # the text summary follows instead
            print(message, file=self.stream, flush=True)


def run_job(
    job: Job,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    force: bool = False,
    events: Events | None = None,
    progress=None,
) -> RunReport:
    """Run ``job``: every scene to do, then the combined layer and the report. Never raises for a
    bad scene (it is recorded as failed); raises :class:`LockedError` if the job is running.

    Scenes run on :mod:`geoseg.inference.engine`: several are in flight at once, each ends in a reduction
    task that writes its outputs, and this process records each scene's state as it finishes."""
    events = events or Events(quiet=True)
    model = ModelSpec(job.model, job.model_args)
    report = RunReport(job.name, utc_now())
    t0 = time.perf_counter()
    scenes = expand_inputs(job)  # a job that cannot run fails here, before anything is touched
    seg = get_segmenter(model, "cpu")
    if job.mask and seg.task != "semantic":
        raise JobError(
            f"job '{job.path}': 'outputs.mask' needs a semantic model ('{model.name}' is {seg.task})"
        )
    with job_lock(job.job_dir, job.name), RunState.open(job.job_dir, job.name) as state:
        os.makedirs(job.out_dir, exist_ok=True)
        _remove_stale_temporaries(job)
        steps = plan_steps(job, model, state, force=force, scenes=scenes)
        todo = [s for s in steps if s.action != "skip"]
        events("run_start", f"job {job.name}: {len(steps)} scenes, {len(todo)} to process",
               job=job.name, scenes=len(steps), todo=len(todo))  # fmt: skip
        rows: dict[str, dict] = {}
        for n, step in enumerate(steps, 1):
            if step.action == "skip":
                rec = state.get(step.plan.key) or {}
                rows[step.plan.key] = {"scene": step.plan.key, "href": step.plan.href, "result": "skipped",
                                       "reason": step.reason, "objects": rec.get("objects", 0),
                                       "outputs": rec.get("outputs", []), **_reading(step.plan)}  # fmt: skip
                events("scene_skipped", f"[{n}/{len(steps)}] {step.plan.key}: skipped ({step.reason})",
                       scene=step.plan.key)  # fmt: skip
        if todo:
            started = time.perf_counter()
            address = scheduler or job.scheduler
            with open_cluster(
                workers if workers is not None else job.workers,
                processes=job.processes,
                threads_per_worker=job.threads_per_worker,
                address=address,
                events=events,
            ) as (client, local_workers):
                opts = job_options(job, local_workers)
                # each worker (or this process) loads the model once, before the clock starts
                if client is not None:  # a joined cluster's workers may be busy with others' work
                    warm_workers(client, model, opts.device, job.scene_format, out_of_band=bool(address))
                    _warm_io(None)  # this process plans the scenes: it opens their headers
                else:
                    warm_up(model, opts.device, job.scene_format)
                report.cluster_seconds = time.perf_counter() - started
                scene_run = _SceneRun(job, model, opts, state, events, progress, rows, local=client is None)
                scene_run.total = len(todo)
                runner = make_runner(local_workers, client)
                previous = torch_threads_for(local_workers) if client is None else None
                t_scenes = time.perf_counter()
                try:
                    tiles = progress.tiles if progress else None
                    execute(todo, scene_run.prepare, runner, on_start=scene_run.start, on_done=scene_run.done,
                            progress=tiles)  # fmt: skip
                finally:
                    runner.close()
                    if previous is not None:
                        sys.modules["torch"].set_num_threads(previous)
                report.scenes_seconds = time.perf_counter() - t_scenes
        report.scenes = [rows[s.plan.key] for s in steps]
        report.combined = _write_combined(job, state, events)
        report.model = model.name
        if job.stac:
            report.stac = _write_stac(job, state, model, seg, events)
        report.finished = utc_now()
        report.seconds = time.perf_counter() - t0
        if job.report != "none":
            stem = inside(job.out_dir, f"{job.name}.report")
            write_text_atomic(stem + ".json", json.dumps(report.as_dict(), indent=1, default=str))
            write_text_atomic(stem + ".txt", report.summary() + "\n")
        if job.report == "html":
            _write_html_report(job, report, events)
    c = report.counts()
    events("run_end", f"job {job.name}: {c['done']} done, {c['skipped']} skipped, {c['failed']} failed",
           job=job.name, **c)  # fmt: skip
    return report


def job_options(job: Job, workers: int) -> PredictOptions:
    """The job's prediction settings, as :func:`geoseg.inference.engine.predict_scene` takes them."""
    return replace(job.options, workers=workers)  # a batch size left open is chosen per device by prepare


def warm_up(model: ModelSpec, device: str, vector_format: str | None = None) -> None:
    """On a worker: import what the tasks run, load the model (once per process), open a raster
    and write a one-feature layer in ``vector_format``, before any scene, so that the first batches
    and reductions do not pay for GDAL's and the writers' first calls (on a host whose workers
    share few cores, they would all pay at once)."""
    import geoseg.inference.blend  # noqa: F401
    import geoseg.inference.engine  # noqa: F401
    import geoseg.inference.features  # noqa: F401
    import geoseg.inference.merge  # noqa: F401
    import geoseg.io.masks  # noqa: F401
    import geoseg.io.vectors  # noqa: F401

    get_segmenter(model, device)
    _warm_io(vector_format)


def warm_workers(
    client, model: ModelSpec, device: str, vector_format: str | None = None, *, out_of_band: bool = False
) -> None:  # fmt: skip
    """:func:`warm_up` on every worker of ``client``, as a task in the worker's own task thread
    (where the batches will run: the thread, and what it keeps per thread, exists before the first
    batch). ``out_of_band``: on the workers' event loops instead (``client.run``), which never waits
    for a task thread: for a cluster geoseg joined, whose threads may be busy with other work."""
    if out_of_band:
        client.run(warm_up, model, device, vector_format)
        return
    workers = client.scheduler_info().get("workers", {})
    client.gather([client.submit(warm_up, model, device, vector_format, workers=[w], pure=False)
                   for w in workers])  # fmt: skip


def _warm_io(vector_format: str | None) -> None:
    import tempfile

    import geopandas as gpd
    import numpy as np
    import pyproj
    import rasterio
    import shapely
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    # PROJ's database: ground sample distances, lon/lat and geodesic areas
    pyproj.Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(0.0, 0.0)
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=16, height=16, count=1, dtype="uint8", crs="EPSG:3857",
                      transform=from_origin(0, 16, 1, 1)) as ds:  # fmt: skip
            ds.write(np.zeros((1, 16, 16), np.uint8))
        with rasterio.open(mem.name) as ds:
            ds.read(1, window=((0, 8), (0, 8)))
    if vector_format:
        one = gpd.GeoDataFrame({"score": [1.0], "label": ["x"]}, geometry=[shapely.box(0, 0, 1, 1)],
                               crs="EPSG:3857")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="geoseg-warm-") as tmp:
            write_vectors(one, os.path.join(tmp, "warm" + FORMATS[vector_format][0]), fmt=vector_format)


def _scene_output(job: Job, plan: ScenePlan) -> str:
    ext = FORMATS[job.scene_format][0]
    return os.path.relpath(inside(job.out_dir, plan.key + ext), os.path.realpath(job.out_dir))


def _mask_output(job: Job, plan: ScenePlan) -> str | None:
    if not job.mask:
        return None
    return os.path.relpath(inside(job.out_dir, f"{plan.key}.mask.{job.mask}"), os.path.realpath(job.out_dir))


class _SceneRun:
    """What the run does around each scene: its record in the run state before and after, its
    events, its tile cache, and its row of the report."""

    def __init__(self, job, model, opts, state, events, progress, rows, *, local: bool) -> None:
        self.job, self.model, self.opts, self.state = job, model, opts, state
        self.events, self.progress, self.rows, self.local = events, progress, rows, local
        self.params = job.params_hash()
        self.records: dict[str, dict] = {}
        self.started: dict[str, float] = {}
        self.count, self.total = 0, None

    def _cache_dir(self, step: Step) -> str:
        key = f"{step.plan.key}-{step.fingerprint}-{self.model.key}-{self.params}"[:200]
        return os.path.join(self.job.job_dir, "cache", key)

    def start(self, step: Step) -> None:
        plan = step.plan
        rec = {
            "href": plan.href, "source": plan.source, "item_id": plan.item_id,
            "fingerprint": step.fingerprint, "model_hash": self.model.key, "params_hash": self.params,
            "status": "running", "started": utc_now(),
        }  # fmt: skip
        if plan.stac_href:
            rec.update(stac_href=plan.stac_href, stac_datetime=plan.stac_datetime)
        previous = self.state.get(plan.key) or {}
        rec["attempts"] = previous.get("attempts", 0) + 1 if step.action in ("retry", "resume") else 1
        self.state.put(plan.key, rec)
        self.records[plan.key] = rec
        self.started[plan.key] = time.perf_counter()
        _drop_stale_caches(self.job, plan.key, self._cache_dir(step))
        self.count += 1
        if self.progress:
            self.progress.scene(self.count, self.total, plan.key)
        self.events("scene_start", f"{plan.key}: {step.action} ({step.reason})", scene=plan.key,
                    action=step.action)  # fmt: skip

    def prepare(self, step: Step):
        job, plan = self.job, step.plan
        out_rel, mask_rel = _scene_output(job, plan), _mask_output(job, plan)
        outputs = Outputs(vectors=os.path.join(job.out_dir, out_rel), fmt=job.scene_format, overwrite=True,
                          scene_name=plan.item_id or plan.key, footprint=bool(job.stac))  # fmt: skip
        semantic = {}
        if get_segmenter(self.model, "cpu").task == "semantic":
            semantic = {"mask_path": os.path.join(job.out_dir, mask_rel) if mask_rel else None}
        self.records[plan.key]["outputs_planned"] = [o for o in (out_rel, mask_rel) if o]
        return prepare(SceneRef(plan.href, plan.bands, plan.crs), self.model, self.opts, outputs,
                       cache=TileCache(self._cache_dir(step)), local=self.local, **semantic)  # fmt: skip

    def done(self, step: Step, outcome, error) -> None:
        plan = step.plan
        rec = self.records[plan.key]
        outputs = rec.pop("outputs_planned", [])
        seconds = round(time.perf_counter() - self.started[plan.key], 3)
        if error is not None:  # one bad scene never sinks the run
            rec.update(status="failed", error=one_line(error, typed=True), finished=utc_now(), outputs=[],
                       seconds=seconds)  # fmt: skip
            self.state.put(plan.key, rec)
            self.events("scene_failed", f"{plan.key}: FAILED: {rec['error']}", scene=plan.key,
                        error=rec["error"])  # fmt: skip
            log.debug("scene %s failed", plan.key, exc_info=error)
            self.rows[plan.key] = {"scene": plan.key, "href": plan.href, "result": "failed",
                                   "error": rec["error"], "seconds": seconds, **_reading(plan)}  # fmt: skip
            return
        s = outcome.stats
        rec.update(status="done", error=None, finished=utc_now(), outputs=outputs, objects=s["objects"],
                   tiles=s["tiles"], tiles_run=s["tiles_run"], seconds=seconds)  # fmt: skip
        if s.get("pixel_space"):
            rec["pixel_space"] = True
        if self.job.stac:
            rec["footprint"] = outcome.footprint
        self.state.put(plan.key, rec)
        shutil.rmtree(self._cache_dir(step), ignore_errors=True)
        tps = s["tiles_run"] / seconds if seconds > 0 else 0.0
        message = (f"{plan.key}: {s['objects']} objects, {s['tiles_run']} tiles, {seconds:.1f} s "
                   f"({tps:.2f} tiles/s) -> {', '.join(outputs)}")  # fmt: skip
        self.events("scene_done", message, scene=plan.key, objects=s["objects"], tiles_run=s["tiles_run"],
                    seconds=seconds, output=outputs[0])  # fmt: skip
        self.rows[plan.key] = {
            "scene": plan.key, "href": plan.href, "result": "done", "objects": s["objects"],
            "tiles": s["tiles"], "tiles_run": s["tiles_run"], "seconds": seconds,
            "tiles_per_second": round(tps, 3), "output": outputs[0], "outputs": outputs, **_reading(plan),
        }  # fmt: skip


def _reading(plan: ScenePlan) -> dict:
    """How a report reads the scene again: its bands and assigned CRS, where the job set them."""
    out = {}
    if plan.bands:
        out["bands"] = list(plan.bands)
    if plan.crs:
        out["crs"] = plan.crs
    return out


def _remove_stale_temporaries(job: Job) -> None:
    """Temporary files of a run that was killed before renaming them (only a run holding the lock
    calls this, so no other writer owns them)."""
    for folder, pattern in ((job.out_dir, ".*.tmp*"), (job.job_dir, "**/.*.tmp*")):
        for p in Path(folder).glob(pattern):
            with contextlib.suppress(OSError):
                p.unlink()


def _drop_stale_caches(job: Job, key: str, keep: str) -> None:
    """Remove batches kept for an earlier version of the scene (other input, model or settings)."""
    root = os.path.join(job.job_dir, "cache")
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if name.startswith(key + "-") and path != keep and name[len(key) + 1 :].count("-") == 2:
                shutil.rmtree(path, ignore_errors=True)


def _write_combined(job: Job, state: RunState, events) -> str | None:
    """One layer of every done scene's objects (EPSG:4326; in pixel coordinates when every scene is
    a slice), rebuilt only when a scene changed."""
    if job.combined == "none":
        return None
    ext = FORMATS[job.combined][0]
    path = inside(job.out_dir, job.name + ext)
    done = state.records("done")  # sorted by key
    digest = results_digest(done)
    if state.combined.get("state") == digest and os.path.exists(path):
        return os.path.basename(path)
    import geopandas as gpd
    import pandas as pd
    import shapely

    # georeferenced scenes meet in EPSG:4326; slices (pixel space) only among themselves, without a CRS
    pixel = [k for k, r in done if r.get("pixel_space")]
    if pixel and len(pixel) < len(done):
        events("combined_skipped", f"combined layer: {len(pixel)} pixel-space scenes left out (no CRS)",
               scenes=pixel)  # fmt: skip
        done = [(k, r) for k, r in done if not r.get("pixel_space")]
    crs = None if pixel and len(done) == len(pixel) else "EPSG:4326"
    frames = []
    for _, r in done:
        for o in r.get("outputs", [])[:1]:  # the scene's vectors (a mask may follow)
            gdf = read_layer(os.path.join(job.out_dir, o))
            if crs is None:  # a pixel-space GeoJSON is read as lon/lat: it is not
                geoms = shapely.from_wkb(shapely.to_wkb(gdf.geometry.values))
                gdf = gpd.GeoDataFrame(pd.DataFrame(gdf.drop(columns="geometry")), geometry=geoms, crs=None)
            if len(gdf):
                frames.append(gdf.to_crs(crs) if gdf.crs and crs else gdf)
    if frames:
        gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs)
    else:
        gdf = gpd.GeoDataFrame({"scene": pd.Series([], dtype="string")}, geometry=[], crs=crs)
    if "id" in gdf.columns:  # ids are per scene; the combined layer numbers its features anew
        gdf = gdf.rename(columns={"id": "scene_id"})
    write_vectors(gdf, path, fmt=job.combined, overwrite=True, layer=job.name)
    state.set_combined({"state": digest, "path": os.path.basename(path), "written": utc_now()})
    events("combined", f"combined layer: {len(gdf)} objects -> {os.path.basename(path)}", objects=len(gdf))
    return os.path.basename(path)


def _write_stac(job: Job, state: RunState, model: ModelSpec, seg, events) -> str | None:
    from geoseg.batch.stac import write_collection

    try:
        path = write_collection(job, state, model, seg)
    except Exception as exc:  # pystac and GDAL raise many kinds; the results stand without their catalogue
        events("stac_failed", f"STAC collection: not written ({one_line(exc)})", error=one_line(exc))
        return None
    events("stac", f"STAC collection: {len(state.records('done'))} items -> {path}", path=path)
    return path


def _write_html_report(job: Job, report: RunReport, events) -> None:
    from geoseg.report.build import run_entries, run_summary, write_report

    d = report.as_dict()
    path = inside(job.out_dir, f"{job.name}.report.html")
    try:
        write_report(
            path, run_entries(d, job.out_dir), title=f"geoseg run: {job.name}", summary=run_summary(d)
        )
    except (GeosegError, OSError) as exc:
        events("report_failed", f"HTML report: not written ({one_line(exc)})", error=one_line(exc))
        return
    events("report", f"HTML report -> {os.path.basename(path)}", path=os.path.basename(path))


def dry_run(job: Job, *, force: bool = False) -> list[Step]:
    """What a run would do, and why; touches nothing."""
    model = ModelSpec(job.model, job.model_args)
    with RunState.open(job.job_dir, job.name, readonly=True) as state:
        return plan_steps(job, model, state, force=force)
