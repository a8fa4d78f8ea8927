"""The execution engine: many scenes in flight, a bounded window of batches, reductions as tasks,
the same results locally and on dask.distributed, forward passes routed to GPU workers."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest

from geoseg.inference.engine import LocalRunner, execute, predict_scene
from geoseg.inference.options import PredictOptions
from geoseg.inference.plan import Outputs, prepare
from geoseg.models.segmenter import ModelSpec
from tests import factories
from tests.helpers import objects_array, write_raster

THRESHOLD = ModelSpec("geoseg.models.plugins:threshold_instances", (("threshold", 100),))
PROBE = ModelSpec("tests.factories:concurrency_probe", (("seconds", 0.3),))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    return [write_raster(root / f"s{i}.tif", objects_array(300, 300, seed=i)) for i in range(4)]


def _run(scenes, model, opts, runner, out_dir=None, window=None):
    done = {}

    def prep(path):
        outputs = Outputs(vectors=str(out_dir / f"{path.stem}.gpkg")) if out_dir else Outputs()
        return prepare(path, model, opts, outputs)

    execute(scenes, prep, runner, window=window,
            on_done=lambda item, outcome, error: done.setdefault(item.stem, (outcome, error)))  # fmt: skip
    return done


def test_scenes_are_in_flight_together(scenes):
    """Four one-batch scenes on four threads: their forward passes overlap. Run one scene after
    another, as geoseg run used to, they never would."""
    factories.PROBE.update(now=0, peak=0)
    runner = LocalRunner(4)
    try:
        done = _run(scenes, PROBE, PredictOptions(tile_size=512, batch_size=4), runner)
    finally:
        runner.close()
    assert sorted(done) == ["s0", "s1", "s2", "s3"] and all(e is None for _, e in done.values())
    assert factories.PROBE["peak"] == 4


def test_the_window_bounds_batches_in_flight(scenes):
    factories.PROBE.update(now=0, peak=0)
    runner = LocalRunner(4)
    try:
        done = _run(scenes, PROBE, PredictOptions(tile_size=128, overlap=16, batch_size=1), runner, window=2)
    finally:
        runner.close()
    assert all(e is None for _, e in done.values())
    assert factories.PROBE["peak"] == 2  # four threads, but never more than two batches at once


def test_outputs_are_written_by_the_reduction_and_match_predict_scene(scenes, tmp_path):
    runner = LocalRunner(2)
    try:
        done = _run(scenes, THRESHOLD, PredictOptions(tile_size=128, overlap=16), runner, out_dir=tmp_path)
    finally:
        runner.close()
    for path in scenes:
        outcome, error = done[path.stem]
        assert error is None and outcome.features is None  # written, not sent back
        got = gpd.read_file(tmp_path / f"{path.stem}.gpkg")
        want = predict_scene(path, THRESHOLD, PredictOptions(tile_size=128, overlap=16)).features
        assert len(got) == len(want) == outcome.stats["objects"] > 0
        assert np.allclose(np.sort(got.area.to_numpy()), np.sort(want.area.to_numpy()))


def test_a_bad_scene_fails_alone(scenes, tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a raster")
    runner = LocalRunner(2)
    try:
        done = _run([scenes[0], bad, scenes[1]], THRESHOLD, PredictOptions(tile_size=128), runner)
    finally:
        runner.close()
    assert done["bad"][1] is not None and "bad.tif" in str(done["bad"][1])
    assert done["s0"][1] is None and done["s1"][1] is None


def test_a_failing_batch_fails_its_scene_and_leaves_no_mask(tmp_path):
    path = write_raster(tmp_path / "s.tif", objects_array(400, 400, seed=3))
    model = ModelSpec("tests.factories:semantic_failing_after", (("calls", 2),))
    done = {}
    runner = LocalRunner(1)
    try:
        opts = PredictOptions(tile_size=128, overlap=16, batch_size=1)
        outputs = Outputs(vectors=str(tmp_path / "o.gpkg"))
        execute(
            [path], lambda p: prepare(p, model, opts, outputs, mask_path=tmp_path / "m.tif"), runner,
            on_done=lambda i, o, e: done.setdefault("s", (o, e)),
        )  # fmt: skip
    finally:
        runner.close()
    assert "fell off the bus" in str(done["s"][1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]  # no mask, no outlines, no temporaries


@pytest.mark.slow
def test_forward_passes_go_to_gpu_workers(scenes):
    """A cluster with one worker declaring a GPU resource: every forward pass runs there, and the
    polygonising is a task of its own; the objects are those of a local run."""
    from distributed import Client, Nanny, Scheduler, SpecCluster, get_task_stream

    # worker processes: GDAL's configuration is process-wide, and workers sharing this process
    # would set it from their threads while the client opens scenes here
    workers = {
        "gpu": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
        "cpu": {"cls": Nanny, "options": {"nthreads": 1}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    opts = PredictOptions(tile_size=128, overlap=16, batch_size=2)
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        gpu = next(a for a, w in client.scheduler_info()["workers"].items() if w["resources"].get("GPU"))
        with get_task_stream(client) as stream:
            remote = predict_scene(scenes[0], THRESHOLD, opts, scheduler=client).features
        tasks = [(t["key"][0] if isinstance(t["key"], tuple) else t["key"], t["worker"]) for t in stream.data]
    infer = [w for k, w in tasks if str(k).startswith("infer_instances")]
    vectorise = [w for k, w in tasks if str(k).startswith("vectorise_instances")]
    assert infer and len(infer) == len(vectorise) and set(infer) == {gpu}
    local = predict_scene(scenes[0], THRESHOLD, opts).features
    assert len(remote) == len(local) and np.allclose(remote.area.sum(), local.area.sum())


def test_a_semantic_scene_holds_a_window_of_batches_not_the_scene(tmp_path, monkeypatch):
    """The probabilities of a batch are let go once its stitch step is done: however many batches
    a scene has, only about a window of them is alive at any time (memory does not grow with area)."""
    import weakref

    import geoseg.inference.engine as engine
    from geoseg.inference.engine import predict_blended

    alive: list = []  # weak references to every batch's probabilities
    most = [0]
    run_tiles = engine.run_tiles

    def tracked(*args):
        batch = run_tiles(*args)
        alive.append(weakref.ref(batch))
        return batch

    def probabilities(r0, c0, block):
        most[0] = max(most[0], sum(ref() is not None for ref in alive))

    monkeypatch.setattr(engine, "run_tiles", tracked)
    scene = write_raster(tmp_path / "s.tif", objects_array(900, 900, seed=4))
    model = ModelSpec("geoseg.models.plugins:threshold_semantic", (("threshold", 100),))
    opts = PredictOptions(tile_size=64, overlap=16, batch_size=4)
    result = predict_blended(str(scene), model, opts, probabilities=probabilities)
    batches = -(-result.stats["tiles"] // 4)
    assert batches > 60 and len(result.features) > 0
    assert 0 < most[0] <= 8, f"{most[0]} of {batches} batches alive at once"


def test_a_thread_keeps_a_scene_open_between_batches_and_reopens_a_changed_file(tmp_path, monkeypatch):
    """Batches of one scene on one thread read from one open dataset; a file rewritten in place
    (a new inode, size or time) is opened again, and a failed read closes the dataset."""
    from geoseg.inference import tasks
    from geoseg.inference.tiling import TileGrid
    from geoseg.io.refs import SceneRef

    path = tmp_path / "s.tif"
    write_raster(path, np.full((64, 64), 7, np.uint8))
    opened = []
    real_open = SceneRef.open
    monkeypatch.setattr(SceneRef, "open", lambda ref, **kw: opened.append(ref.path) or real_open(ref, **kw))
    monkeypatch.setattr(tasks, "_open_scenes", tasks._OpenScenes())  # this thread's cache, empty
    tiles = TileGrid(64, 64, size=32, overlap=0).tiles()
    ref = SceneRef(str(path))
    first = tasks.read_tiles(ref, tiles[:2], (32, 32))[2]
    second = tasks.read_tiles(ref, tiles[2:], (32, 32))[2]
    assert len(opened) == 1 and (first == 7).all() and (second == 7).all()

    write_raster(tmp_path / "new.tif", np.full((64, 64), 9, np.uint8))
    (tmp_path / "new.tif").replace(path)  # as a writer renames a finished file into place
    assert (tasks.read_tiles(ref, tiles[:1], (32, 32))[2] == 9).all()
    assert len(opened) == 2 and len(tasks._open_scenes.scenes) == 1  # the old one closed

    held = next(iter(tasks._open_scenes.scenes.values()))
    monkeypatch.setattr(type(held), "read", lambda *a, **k: (_ for _ in ()).throw(OSError("gone")))
    with pytest.raises(OSError, match="gone"):
        tasks.read_tiles(ref, tiles[:1], (32, 32))
    assert held._ds is None and not tasks._open_scenes.scenes  # closed, not kept


def test_a_reduction_on_a_dask_worker_leaves_the_task_slot_to_the_next_batch():
    """On a 1-thread worker a task that has left the slot (as reductions do) lets the next task
    run beside it; outside a worker, leaving the slot does nothing."""
    import time

    from dask.distributed import Client, LocalCluster

    from geoseg.inference.tasks import leave_the_task_slot

    def reduction(seconds):
        leave_the_task_slot()
        leave_the_task_slot()  # a second call is harmless
        time.sleep(seconds)
        return time.perf_counter()

    def batch():
        return time.perf_counter()

    leave_the_task_slot()  # here: not a worker
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            slow = client.submit(reduction, 1.5, pure=False)
            while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) < 1:
                time.sleep(0.01)
            time.sleep(0.3)  # the reduction is running
            fast = client.submit(batch, pure=False)
            assert fast.result(timeout=30) < slow.result(timeout=30)


class _FakeClient:
    def __init__(self, workers):
        self.workers = workers

    def scheduler_info(self):
        return {"workers": self.workers}


def test_a_scene_s_batches_go_where_its_last_batch_went_while_that_worker_has_room():
    """Placement on a CPU cluster: a run's first batches start on every idle worker; after that a
    scene's batches stay on one worker up to ``depth`` per thread, then move to the least loaded."""
    from geoseg.inference.engine import _Placement

    workers = {f"tcp://w{i}": {"nthreads": 1} for i in range(3)}
    place = _Placement(_FakeClient(workers), workers, depth=3)
    first = [place.take("a") for _ in range(3)]
    assert sorted(first) == ["tcp://w0", "tcp://w1", "tcp://w2"]  # idle workers first
    home = first[-1]
    assert place.take("a") == home and place.load[home] == 2  # room left there (3 per thread)
    b = [place.take("b") for _ in range(2)]  # none idle: the least loaded, then it stays there
    assert b[0] == b[1] != home and place.load[b[0]] == 3
    assert place.take("b") != b[0]  # that one is full: the least loaded takes the next
    place.give_back(home)
    place.give_back(home)  # that worker has nothing to do now
    assert place.take("c") == home  # an idle worker takes the next batch, whoever's it is
    assert place.take("c") == home
    place.forget("c")
    assert "c" not in place.home


def test_a_task_runs_a_scene_s_batches_together_while_other_scenes_can_feed_the_idle_workers():
    """Chunks on a CPU cluster: up to ``depth`` batches a task when the scenes still to come can
    give every idle worker thread a scene of its own; else the scene is spread over them."""
    from geoseg.inference.engine import DaskRunner

    workers = {f"tcp://w{i}": {"nthreads": 2} for i in range(4)}  # 8 idle threads
    runner = DaskRunner(_FakeClient(workers))
    assert runner.window == 2 * runner.depth * 8
    assert runner.chunk(4, later=7) == 4  # 8 scenes for 8 threads: a task runs the whole scene
    assert runner.chunk(40, later=None) == runner.chunk_max == 2  # an endless stream of big scenes
    assert runner.chunk(40, later=0) == 2  # one scene: 40 batches over 8 threads, in pairs
    assert runner.chunk(8, later=0) == 1  # one batch per idle thread
    assert runner.chunk(3, later=3) == 2  # 4 scenes for 8 threads: two threads each, 2 + 1 batches
    runner.placement.take("a", 4), runner.placement.take("b", 4)  # two workers busy, 4 threads idle
    assert runner.chunk(4, later=3) == 4  # 4 scenes for 4 idle threads: whole scenes again
    assert runner.chunk(8, later=0) == 2
    assert DaskRunner(_FakeClient(workers), place=False).chunk(8, later=7) == 1  # not placed: batches


def test_a_chunk_of_batches_gives_what_its_batches_give_one_by_one(scenes, tmp_path):
    from geoseg.inference.tasks import run_batch, run_batches

    work = prepare(scenes[0], THRESHOLD, PredictOptions(tile_size=128, overlap=16, batch_size=2))
    batches = work.batches()
    assert len(batches) == 5
    shape = work.grid.tile_shape
    one_by_one = [run_batch(work.images[i], work.model, t, shape, work.opts) for i, t in batches]
    chunk = run_batches(work.images[0], work.model, [t for _, t in batches], shape, work.opts)
    parts = [p for r in one_by_one for p in r.parts]
    assert len(chunk.parts) == len(parts) > 0
    pairs = zip(chunk.parts, parts, strict=True)
    assert all(a.geometry.equals(b.geometry) and a.tile == b.tile for a, b in pairs)
    assert chunk.tiles_run == sum(r.tiles_run for r in one_by_one) == 9


def test_placement_sees_workers_that_joined_or_left():
    from geoseg.inference.engine import _Placement

    workers = {"tcp://a": {"nthreads": 2}}
    client = _FakeClient(workers)
    place = _Placement(client, workers, depth=2)
    assert place.slots == {"tcp://a": 4}
    client.workers = {"tcp://b": {"nthreads": 1}}
    place.seen -= 60  # the last look is old
    assert place.take("s") == "tcp://b"
    assert set(place.slots) == {"tcp://b"}


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [2, 4])
def test_placed_batches_on_a_cluster_give_the_objects_of_a_local_run(scenes, tmp_path, batch_size):
    """Two worker processes: each task goes to the worker the runner placed it on (a preference
    dask may overrule), four scenes' objects equal an in-process run's, and every load was given
    back. Batches of 2: a scene is two chunks of 2 batches, one of 1 and a reduction; of 4: a
    scene is one task with its reduction."""
    from dask.distributed import Client, LocalCluster

    from geoseg.inference.engine import DaskRunner

    opts = PredictOptions(tile_size=128, overlap=16, batch_size=batch_size)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            runner = DaskRunner(client)
            assert runner.placement is not None and runner.window == 2 * runner.depth * 2
            placed = []
            submit = client.submit

            def spy(fn, *args, **kwargs):
                if "workers" in kwargs:
                    placed.append(kwargs["workers"][0])
                return submit(fn, *args, **kwargs)

            client.submit = spy
            try:
                done = _run(scenes, THRESHOLD, opts, runner, out_dir=tmp_path)
            finally:
                client.submit = submit
            assert set(placed) == set(client.scheduler_info()["workers"])  # both workers were used
            assert len(placed) == (12 if batch_size == 2 else 4)  # tasks, not batches
            assert sum(runner.placement.load.values()) == 0
    for path in scenes:
        outcome, error = done[path.stem]
        assert error is None
        got = gpd.read_file(tmp_path / f"{path.stem}.gpkg")
        want = predict_scene(path, THRESHOLD, opts).features
        assert len(got) == len(want) == outcome.stats["objects"] > 0
        assert np.allclose(np.sort(got.area.to_numpy()), np.sort(want.area.to_numpy()))


@pytest.mark.parametrize("stage", ["_infer_batch", "_finish_batch"])
def test_a_chunk_that_fails_in_a_batch_raises_that_error_without_its_gdal_cause(scenes, monkeypatch, stage):
    """A chunk polygonises each batch on a helper thread while the next one is read and run: an
    error in either stage is the chunk's, as run_batch raises it (no cause to carry home)."""
    from geoseg.errors import SceneError
    from geoseg.inference import tasks

    work = prepare(scenes[0], THRESHOLD, PredictOptions(tile_size=128, overlap=16, batch_size=2))
    batches = [t for _, t in work.batches()]
    real, calls = getattr(tasks, stage), []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            try:
                raise OSError("GDAL said no")
            except OSError as cause:
                raise SceneError("scene 's0.tif': cannot read window") from cause
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks, stage, failing)
    with pytest.raises(SceneError, match="cannot read window") as err:
        tasks.run_batches(work.images[0], work.model, batches, work.grid.tile_shape, work.opts)
    assert err.value.__cause__ is None


def test_small_semantic_scenes_are_one_task_each_on_a_cluster_and_give_what_a_local_run_gives(tmp_path):
    """Four semantic scenes of 3 batches on two worker processes: one task each (tiles, stitching
    and the finish in it); each class mask and its outlines equal an in-process run's."""
    import rasterio
    from dask.distributed import Client, LocalCluster

    from geoseg.inference.engine import DaskRunner

    semantic = ModelSpec(
        "geoseg.models.plugins:threshold_semantic", (("threshold", 100), ("sharpness", 0.05))
    )
    paths = [write_raster(tmp_path / f"m{i}.tif", objects_array(200, 300, seed=10 + i)) for i in range(4)]
    opts = PredictOptions(tile_size=128, overlap=32, batch_size=2, min_area=5)
    assert len(prepare(paths[0], semantic, opts).batches()) == 3

    def prep(out: str):
        def make(path):
            outputs = Outputs(vectors=str(tmp_path / f"{path.stem}-{out}.gpkg"))
            return prepare(path, semantic, opts, outputs, mask_path=tmp_path / f"{path.stem}-{out}.tif")

        return make

    local: dict = {}
    execute(paths, prep("local"), LocalRunner(2), on_done=lambda i, o, e: local.setdefault(i.stem, (o, e)))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            runner = DaskRunner(client)
            names = []
            submit = client.submit

            def spy(fn, *args, **kwargs):
                names.append(fn.__name__)
                return submit(fn, *args, **kwargs)

            client.submit = spy
            remote: dict = {}
            try:
                execute(
                    paths, prep("remote"), runner, on_done=lambda i, o, e: remote.setdefault(i.stem, (o, e))
                )
            finally:
                client.submit = submit
    assert names == ["run_scene_semantic"] * 4
    for path in paths:
        (lo, le), (ro, re) = local[path.stem], remote[path.stem]
        assert le is None and re is None and ro.stats["tiles_run"] == lo.stats["tiles_run"] > 0
        with (
            rasterio.open(tmp_path / f"{path.stem}-local.tif") as a,
            rasterio.open(tmp_path / f"{path.stem}-remote.tif") as b,
        ):
            assert np.array_equal(a.read(1), b.read(1)) and a.read(1).any()
        got = gpd.read_file(tmp_path / f"{path.stem}-remote.gpkg", layer=f"{path.stem}-remote")
        want = gpd.read_file(tmp_path / f"{path.stem}-local.gpkg", layer=f"{path.stem}-local")
        assert len(got) == len(want) > 0
        assert got.geometry.union_all().symmetric_difference(want.geometry.union_all()).area == pytest.approx(
            0
        )
