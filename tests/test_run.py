"""``geoseg run``: job specs, idempotent and resumable runs, failure isolation, kills, clusters."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.batch.jobs import load_job
from geoseg.batch.runner import job_lock
from geoseg.batch.runstate import RunState
from geoseg.cli.main import cli
from tests.helpers import objects_array, write_raster

GEOSEG = [sys.executable, "-m", "geoseg.cli.main"]
REPO = Path(__file__).resolve().parents[1]

JOB = """\
name: archive
inputs:
  - stac: archive/items.json
    asset: data
    bands: [1]
model: {model}
model_args: {{threshold: 100}}
tiling: {{tile_size: 256, overlap: 32, batch_size: 2}}
outputs: {{dir: out, combined: gpkg}}
store: tiles
"""


def _item(item_id: str, href: str, asset: str = "data") -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": None,
        "properties": {"datetime": "2026-11-01T00:00:00Z"},
        "links": [],
        "assets": {asset: {"href": href, "type": "image/tiff; application=geotiff"}},
    }


def make_archive(root: Path, real: Path, *, model: str = "geoseg.models.plugins:threshold_instances") -> Path:
    """Four scenes listed by a STAC ItemCollection: two good, one corrupt, one all nodata."""
    arc = root / "archive"
    arc.mkdir(parents=True)
    write_raster(arc / "a.tif", objects_array(600, 700, seed=1))
    write_raster(arc / "b.tif", objects_array(500, 520, seed=2))
    shutil.copy(real / "corrupt.tif", arc / "c.tif")
    shutil.copy(real / "all-nodata.tif", arc / "d.tif")
    items = [_item(f"scene-{k}", f"{k}.tif") for k in "abcd"]
    (arc / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    job = root / "job.yaml"
    job.write_text(JOB.format(model=model))
    return job


def run(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GEOSEG, "run", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def features(path: Path) -> list[dict]:
    """Features without their detection time, in file order."""
    doc = json.loads(path.read_text())
    for f in doc["features"]:
        f["properties"].pop("detected_at", None)
    return doc["features"]


def outputs(out: Path) -> dict[str, list]:
    return {p.name: features(p) for p in sorted(out.glob("*.geojson"))}


def test_archive_failure_recorded_then_fixed(tmp_path, real_data):
    job = make_archive(tmp_path, real_data)
    r = run(job)
    assert r.returncode == 1, r.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.geojson")) == [
        "scene-a.geojson",
        "scene-b.geojson",
        "scene-d.geojson",
    ]
    assert features(out / "scene-d.geojson") == []  # all nodata: done, nothing found
    assert len(features(out / "scene-a.geojson")) > 20
    with RunState.open(str(tmp_path / "tiles" / "archive"), "archive", readonly=True) as state:
        scenes = dict(state.records())
    c = scenes["scene-c"]
    assert c["status"] == "failed" and "cannot read window" in c["error"] and "c.tif" in c["error"]
    assert {k: v["status"] for k, v in scenes.items()} == {
        "scene-a": "done", "scene-b": "done", "scene-c": "failed", "scene-d": "done"
    }  # fmt: skip
    report = json.loads((out / "archive.report.json").read_text())
    assert (report["done"], report["skipped"], report["failed"]) == (3, 0, 1)
    assert report["tiles_per_second"] > 0
    combined = gpd.read_file(out / "archive.gpkg")
    n_ab = len(features(out / "scene-a.geojson")) + len(features(out / "scene-b.geojson"))
    assert len(combined) == n_ab and set(combined["scene"]) == {"scene-a", "scene-b"}
    assert "FAILED scene-c" in (out / "archive.report.txt").read_text()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("scene-*.geojson")}

    shutil.copy(tmp_path / "archive" / "b.tif", tmp_path / "archive" / "c.tif")  # fix the scene
    dry = run(job, "--dry-run")
    assert dry.returncode == 0
    assert [line.split()[:2] for line in dry.stdout.splitlines()] == [
        ["skip", "scene-a"], ["skip", "scene-b"], ["changed", "scene-c"], ["skip", "scene-d"]
    ]  # fmt: skip
    r = run(job)
    assert r.returncode == 0, r.stderr
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("scene-*.geojson")}
    assert {k: v for k, v in after.items() if k != "scene-c.geojson"} == before  # only c was processed
    same = [
        {**f, "properties": {**f["properties"], "scene": "scene-b"}}
        for f in features(out / "scene-c.geojson")
    ]
    assert same == features(out / "scene-b.geojson")
    report = json.loads((out / "archive.report.json").read_text())
    assert (report["done"], report["skipped"], report["failed"]) == (1, 3, 0)
    assert len(gpd.read_file(out / "archive.gpkg")) == n_ab + len(features(out / "scene-b.geojson"))

    r = run(job)  # nothing left to do: nothing rewritten, not even the combined layer
    combined_mtime = (out / "archive.gpkg").stat().st_mtime_ns
    assert r.returncode == 0
    assert (out / "archive.gpkg").stat().st_mtime_ns == combined_mtime
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("scene-*.geojson")} == after
    assert not list((tmp_path / "tiles" / "archive" / "cache").glob("scene-[abd]-*"))


def test_changes_are_redone_and_force(tmp_path, real_data):
    job = make_archive(tmp_path, real_data)
    run(job)
    text = job.read_text().replace("overlap: 32", "overlap: 48")
    job.write_text(text)
    assert "changed  scene-a  tiling or prediction settings changed" in run(job, "--dry-run").stdout
    run(job)
    assert "skip     scene-a" in run(job, "--dry-run").stdout
    assert "forced   scene-a" in run(job, "--dry-run", "--force").stdout
    job.write_text(text.replace("threshold: 100", "threshold: 150"))
    assert "changed  scene-a  the model changed" in run(job, "--dry-run").stdout
    job.write_text(text)
    os.utime(tmp_path / "archive" / "a.tif", ns=(1, 1))  # touched: its fingerprint changed
    assert "changed  scene-a  the input changed" in run(job, "--dry-run").stdout
    (tmp_path / "out" / "scene-b.geojson").unlink()
    assert "changed  scene-b  its output is missing" in run(job, "--dry-run").stdout


def test_dry_run_touches_nothing(tmp_path, real_data):
    job = make_archive(tmp_path, real_data)
    r = run(job, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["new"] * 4
    assert not (tmp_path / "out").exists() and not (tmp_path / "tiles").exists()


def test_json_logs(tmp_path, real_data):
    job = make_archive(tmp_path, real_data)
    r = run(job, "--log-format", "json")
    assert r.returncode == 1
    events = [json.loads(line) for line in r.stderr.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert kinds.count("scene_done") == 3 and kinds.count("scene_failed") == 1
    failed = next(e for e in events if e["event"] == "scene_failed")
    assert failed["scene"] == "scene-c" and "cannot read window" in failed["error"]


def test_second_run_is_refused_while_one_holds_the_lock(tmp_path, real_data):
    job = make_archive(tmp_path, real_data)
    with job_lock(str(tmp_path / "tiles" / "archive"), "archive"):
        r = run(job)
    assert r.returncode == 3
    assert "job 'archive' is already running (pid" in r.stderr
    assert not (tmp_path / "out").exists()


# -- invalid jobs --------------------------------------------------------------------------------
BASE = "name: j\ninputs: [{glob: '*.tif'}]\nmodel: M\noutputs: {dir: o}\n"
INVALID = {
    "unknown key": (BASE + "tilling: {}\n", "line 5: unknown key 'tilling'"),
    "nested unknown key": (BASE.replace("{dir: o}", "{dir: o, foo: 1}"), "line 4: unknown key 'outputs.foo'"),
    "wrong type": (BASE + "tiling:\n  tile_size: big\n", "line 6: 'tiling.tile_size' must be an integer"),
    "missing key": (BASE.replace("model: M\n", ""), "missing required key 'model'"),
    "missing model": (
        BASE.replace("model: M", "model: nothere.safetensors"),
        "line 3: 'model': no such checkpoint",
    ),
    "glob matching nothing": (BASE.replace("*.tif", "nothing/*.tif"), "'inputs[0].glob' matches no file"),
    "stac without asset": (
        BASE.replace("{glob: '*.tif'}", "{stac: items.json, asset: visual}"),
        "'inputs[0].asset' STAC item 'x1' has no asset 'visual' (it has: data)",
    ),
    "python tag": (
        BASE.replace("[{glob: '*.tif'}]", "!!python/object/apply:os.system ['touch pwned']"),
        "line 2: YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
    ),
    "bad name": (BASE.replace("name: j", "name: ../x"), "line 1: 'name' must be"),
    "two sources": (
        BASE.replace("{glob: '*.tif'}", "{glob: '*.tif', list: l.txt}"),
        "'inputs[0]' needs exactly one of glob, list, stac",
    ),
    "bad gsd": (
        BASE + "predict:\n  gsd: fine\n",
        "line 6: 'predict.gsd' must be a number > 0 or one of native",
    ),
    "negative gsd": (BASE + "predict:\n  gsd: -1\n", "'predict.gsd' must be a number > 0"),
    "rotated view not a flag": (BASE + "predict:\n  rotated_view: 2\n", "'predict.rotated_view' must be"),
    "not a list": (
        BASE.replace("[{glob: '*.tif'}]", "scenes/*.tif"),
        "line 2: 'inputs' must be a non-empty list",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_jobs(tmp_path, case):
    text, message = INVALID[case]
    write_raster(tmp_path / "s.tif", objects_array(64, 64))
    (tmp_path / "items.json").write_text(
        json.dumps({"type": "FeatureCollection", "features": [_item("x1", "s.tif")]})
    )
    job = tmp_path / "job.yaml"
    job.write_text(text.replace("model: M", "model: geoseg.models.plugins:threshold_instances"))
    before = sorted(p.name for p in tmp_path.iterdir())
    r = CliRunner().invoke(cli, ["run", str(job)])
    assert r.exit_code == 2, r.output
    assert message in r.output, r.output
    assert r.output.count("\n") == 1  # one line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing touched
    assert not (tmp_path / "pwned").exists()


def test_gsd_and_rotated_view_job_keys(tmp_path):
    from geoseg.batch.jobs import load_job

    write_raster(tmp_path / "s.tif", objects_array(64, 64))
    base = BASE.replace("model: M", "model: geoseg.models.plugins:threshold_instances")
    hashes = set()
    for extra, gsd, rotated in [
        ("", None, None),
        ("predict:\n  gsd: native\n", 0.0, None),
        ("predict:\n  gsd: 1.5\n", 1.5, None),
        ("predict:\n  gsd: 2\n  rotated_view: true\n", 2.0, True),
    ]:
        (tmp_path / "job.yaml").write_text(base + extra)
        job = load_job(tmp_path / "job.yaml")
        assert (job.options.gsd, job.options.rotated_view) == (gsd, rotated)
        hashes.add(job.params_hash())
    assert len(hashes) == 4  # each setting is its own result set

    # a job that resamples: the same objects on the same ground, measured on the finer grid
    write_raster(tmp_path / "s.tif", objects_array(300, 300, seed=3))  # 2 m pixels
    outputs = {}
    for name, extra in (("native", ""), ("fine", "predict:\n  gsd: 1\n")):
        job = base.replace("name: j", f"name: {name}").replace("{dir: o}", f"{{dir: {name}}}\nstore: st")
        (tmp_path / "job.yaml").write_text(job.replace("model: geoseg.models.plugins:threshold_instances",
                                                       "model: geoseg.models.plugins:threshold_instances\n"
                                                       "model_args: {threshold: 100}") + extra)  # fmt: skip
        r = CliRunner().invoke(cli, ["run", str(tmp_path / "job.yaml")])
        assert r.exit_code == 0, r.output
        outputs[name] = gpd.read_file(tmp_path / name / "s.geojson")
    native, fine = outputs["native"], outputs["fine"]
    assert len(native) == len(fine) > 0
    np.testing.assert_allclose(np.sort(fine["area_px"]), 4 * np.sort(native["area_px"]), rtol=0.1)
    np.testing.assert_allclose(np.sort(fine["area_m2"]), np.sort(native["area_m2"]), rtol=0.1)


def test_stac_ids_cannot_escape_the_output_root(tmp_path):
    write_raster(tmp_path / "s.tif", objects_array(300, 300, seed=3))
    write_raster(tmp_path / "t.tif", objects_array(300, 300, seed=4))
    items = [_item("../../etc/x", "s.tif"), _item("/abs/olute", "t.tif")]
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    job = tmp_path / "job.yaml"
    job.write_text(
        JOB.replace("archive/items.json", "items.json").format(
            model="geoseg.models.plugins:threshold_instances"
        )
    )
    r = CliRunner().invoke(cli, ["run", str(job)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.geojson")) == ["abs_olute.geojson", "etc_x.geojson"]
    assert not (tmp_path.parent / "etc").exists() and not Path("/abs").exists()
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))


def test_list_and_glob_inputs_with_duplicate_names(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        write_raster(tmp_path / sub / "scene.tif", objects_array(300, 300, seed=len(sub)))
    (tmp_path / "paths.txt").write_text("# tonight\nx/scene.tif\n\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: mixed\ninputs:\n  - list: paths.txt\n    bands: [1]\n  - glob: 'y/*.tif'\n    bands: [1]\n"
        "model: geoseg.models.plugins:threshold_instances\nmodel_args: {threshold: 100}\n"
        "outputs: {dir: out, combined: parquet}\nstore: st\n"
    )
    r = CliRunner().invoke(cli, ["run", str(job)])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "out").glob("*.geojson"))
    assert len(names) == 2 and all(n.startswith("scene-") for n in names)  # told apart by a path hash
    assert len(gpd.read_parquet(tmp_path / "out" / "mixed.parquet")) > 0


# -- kills ---------------------------------------------------------------------------------------
def test_killed_runs_resume_to_identical_outputs(tmp_path, real_data):
    ref = tmp_path / "ref"
    job = make_archive(ref, real_data)
    assert run(job).returncode == 1
    expected = outputs(ref / "out")
    expected_combined = gpd.read_file(ref / "out" / "archive.gpkg").drop(columns="detected_at")

    points = ("batch-cached:3", "output-temp-written:3", "output-temp-written:7", "scene-written:2",
              "manifest-written:4", "manifest-written:9")  # fmt: skip
    for point in points:
        root = tmp_path / point.replace(":", "-")
        job = make_archive(root, real_data)
        env = {**os.environ, "GEOSEG_CRASH_AT": point}
        r = run(job, env=env)
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr)
        leftovers = [p for p in (root / "out").glob("*") if ".tmp" in p.name]
        assert all(p.name.startswith(".") for p in leftovers)  # temporaries are hidden, never a result
        for p in (root / "out").glob("scene-*.geojson"):  # whatever is in place is whole
            assert features(p) == expected[p.name], point
        if point.startswith("batch-cached"):  # killed mid-scene: its finished batches are kept
            assert any((root / "tiles" / "archive" / "cache").rglob("*.json"))
        r = run(job)
        assert r.returncode == 1, (point, r.stderr)
        assert outputs(root / "out") == expected, point
        combined = gpd.read_file(root / "out" / "archive.gpkg").drop(columns="detected_at")
        assert combined.equals(expected_combined), point
        assert not [p for p in (root / "out").glob("*") if ".tmp" in p.name]


def test_killed_at_random_moments(tmp_path, real_data):
    """SIGKILL from outside at moments spread over a run, then one rerun: the same outputs."""
    ref = tmp_path / "ref"
    job = make_archive(ref, real_data)
    t0 = time.perf_counter()
    assert run(job).returncode == 1
    duration = time.perf_counter() - t0
    expected = outputs(ref / "out")
    for i, frac in enumerate((0.45, 0.6, 0.75, 0.9)):
        root = tmp_path / f"k{i}"
        job = make_archive(root, real_data)
        proc = subprocess.Popen(
            [*GEOSEG, "run", str(job)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(duration * frac)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert run(job).returncode == 1
        assert outputs(root / "out") == expected, frac


COUNTING_MODEL = """
import os
from geoseg.models.plugins import ThresholdInstances

def make(log, **kw):
    class Counting(ThresholdInstances):
        def predict(self, tiles):
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {len(tiles)}\\n")
            return super().predict(tiles)
    return Counting(**kw)
"""


def test_killed_mid_scene_does_not_redo_finished_batches(tmp_path):
    (tmp_path / "countmodel.py").write_text(COUNTING_MODEL)
    write_raster(tmp_path / "big.tif", objects_array(1100, 1100, seed=5))
    calls = tmp_path / "calls.txt"
    job = tmp_path / "job.yaml"
    job.write_text(
        f"name: big\ninputs: [{{glob: big.tif}}]\nmodel: countmodel:make\n"
        f"model_args: {{log: {calls}, threshold: 100}}\n"
        "tiling: {tile_size: 256, overlap: 32, batch_size: 2}\n"
        "outputs: {dir: out, combined: none}\n"
    )
    env = {**os.environ, "GEOSEG_CRASH_AT": "batch-cached:4"}
    assert run(job, cwd=tmp_path, env=env).returncode == -signal.SIGKILL
    first = len(calls.read_text().splitlines())
    kept = len(list((tmp_path / "tiles" / "big" / "cache").rglob("*.json")))
    # killed as the 4th batch was kept; the model may have run the next one already (it runs a
    # batch ahead of the polygonising), which was lost with the process
    assert kept == 4 and 4 <= first <= 5
    assert run(job, cwd=tmp_path).returncode == 0
    batches = json.loads((tmp_path / "out" / "big.report.json").read_text())["scenes"][0]["tiles"]
    total = -(-batches // 2)
    # the kept batches are not run again: only the one lost with the process, and the rest
    assert len(calls.read_text().splitlines()) == total + first - kept
    calls.unlink()
    ref = tmp_path / "ref.yaml"
    ref.write_text(job.read_text().replace("dir: out", "dir: out2").replace("name: big", "name: ref"))
    assert run(ref, cwd=tmp_path).returncode == 0
    assert features(tmp_path / "out" / "big.geojson") == features(tmp_path / "out2" / "big.geojson")


# -- clusters ------------------------------------------------------------------------------------
def _start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )


@pytest.mark.slow
def test_distributed_run_matches_local_and_survives_a_killed_worker(tmp_path, real_data):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "slowmodel.py").write_text(
        "import os, time\nfrom geoseg.models.plugins import ThresholdInstances\n\n"
        "def make(**kw):\n    class Slow(ThresholdInstances):\n        def predict(self, tiles):\n"
        "            time.sleep(0.4)\n            return super().predict(tiles)\n"
        "    with open('loads.txt', 'a') as f:\n        f.write(f'{os.getpid()}\\n')\n"
        "    return Slow(**kw)\n"
    )
    job = make_archive(dist / "local", real_data, model="slowmodel:make")
    assert run(job, cwd=dist).returncode == 1
    expected = outputs(dist / "local" / "out")
    job = make_archive(dist / "w", real_data, model="slowmodel:make")
    sched_file = tmp_path / "scheduler.json"
    bindir = Path(sys.executable).parent
    procs = [
        _start([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                "--scheduler-file", str(sched_file)], dist, tmp_path / "scheduler.log"),
    ]  # fmt: skip
    try:
        for _ in range(100):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(
                _start([str(bindir / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard",
                        "--name", f"w{i}", "--no-nanny"], dist, tmp_path / f"worker{i}.log")
            )  # fmt: skip
        from dask.distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        runner = subprocess.Popen(
            [*GEOSEG, "run", str(job), "--scheduler", address, "--log-format", "json"],
            cwd=dist, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        cache = dist / "w" / "tiles" / "archive" / "cache"
        deadline = time.time() + 120
        while not any(cache.rglob("*.json")) and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(procs[2].pid, signal.SIGKILL)  # a worker dies mid-run
        _, err = runner.communicate(timeout=300)
        assert runner.returncode == 1, err
        events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert any(e["event"] == "cluster" and e["workers"] == 2 for e in events)
        assert outputs(dist / "w" / "out") == expected
        loads = (dist / "loads.txt").read_text().split()
        assert len(loads) == len(set(loads)) <= 4  # once per process: 2 drivers, 2 workers
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_shipped_jobs_are_valid():
    for path in sorted((REPO / "jobs").glob("*.yaml")):
        job = load_job(path)
        assert job.name and job.inputs
        assert Path(job.model).exists()


def test_nightly_job_runs_as_shipped(tmp_path):
    """The shipped nightly job, copied with the layout it expects (jobs/, archive/), on two small
    synthetic tanker scenes, with the committed tanker model."""
    (tmp_path / "jobs").mkdir()
    shutil.copy(REPO / "jobs" / "nightly-tankers.yaml", tmp_path / "jobs")
    (tmp_path / "archive").mkdir()
    for seed in (1, 2):
        r = subprocess.run(
            [*GEOSEG, "synth", "tankers", str(tmp_path / "archive" / f"scene{seed}.tif"), "--size", "640",
             "--seed", str(seed), "--tankers", "3"], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    r = run(tmp_path / "jobs" / "nightly-tankers.yaml")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out" / "nightly-tankers"
    assert (out / "scene1.geojson").exists() and (out / "scene2.geojson").exists()
    report = json.loads((out / "nightly-tankers.report.json").read_text())
    assert report["done"] == 2 and report["objects"] >= 1
    assert (out / "nightly-tankers.report.html").exists() and report["stac"] == "stac/collection.json"
    import pystac

    items = list(pystac.read_file(str(out / "stac" / "collection.json")).get_items())
    assert sorted(i.id for i in items) == ["scene1", "scene2"]
    assert sum(i.properties["geoseg:objects"] for i in items) == report["objects"]
    assert "skip" in run(tmp_path / "jobs" / "nightly-tankers.yaml", "--dry-run").stdout
    first = outputs(out)
    r = run(tmp_path / "jobs" / "nightly-tankers.yaml", "--force", "--workers", "2")  # a LocalCluster
    assert r.returncode == 0, r.stderr
    assert "dask cluster" in r.stderr and "2 workers" in r.stderr
    assert outputs(out) == first


def test_run_writes_a_stac_collection_and_an_html_report(tmp_path, real_data):
    """Three scenes done and one failed, read from a STAC ItemCollection: the results Collection
    has one label Item per done scene (pystac reads it back), linked to its source item; the HTML
    report lists all four."""
    import pystac
    from pystac.extensions.label import LabelExtension

    job = make_archive(tmp_path, real_data)
    job.write_text(job.read_text().replace("combined: gpkg}", "combined: gpkg, report: html}"))
    r = run(job)
    assert r.returncode == 1, r.stderr
    out = tmp_path / "out"
    collection = pystac.read_file(str(out / "stac" / "collection.json"))
    assert isinstance(collection, pystac.Collection) and collection.id == "archive"
    items = {i.id: i for i in collection.get_items()}
    assert sorted(items) == ["scene-a", "scene-b", "scene-d"]  # c failed: no result to catalogue
    with RunState.open(str(tmp_path / "tiles" / "archive"), "archive", readonly=True) as state:
        records = dict(state.records())
    import geoseg

    for key, item in items.items():
        label = LabelExtension.ext(item)
        assert label.label_type == "vector" and label.label_properties == ["class"]
        assert label.label_tasks == ["detection", "segmentation"]
        assert label.label_classes[0].name == "class" and "object" in label.label_classes[0].classes
        n = len(features(out / f"{key}.geojson"))
        assert sum(c.count for c in label.label_overviews[0].counts) == n
        asset = item.assets["labels"]
        assert asset.media_type == "application/geo+json" and "labels" in asset.roles
        assert Path(asset.get_absolute_href()) == (out / f"{key}.geojson").resolve()
        assert not os.path.isabs(asset.href)  # relative: the folder can move
        source = item.get_single_link("source")
        assert Path(source.get_absolute_href()) == (tmp_path / "archive" / "items.json").resolve()
        assert key in source.title
        assert item.properties["geoseg:version"] == geoseg.__version__
        assert item.properties["geoseg:model_hash"] == records[key]["model_hash"]
        assert str(item.datetime.date()) == "2026-11-01"  # the source item's datetime
    a = items["scene-a"]
    import shapely.geometry

    assert a.geometry["type"] == "Polygon"  # the scene's outline in lon/lat, its bbox around it
    assert a.bbox == pytest.approx(list(shapely.geometry.shape(a.geometry).bounds))
    assert Path(collection.assets["combined"].get_absolute_href()) == (out / "archive.gpkg").resolve()
    assert collection.assets["report"].media_type == "text/html"
    html = (out / "archive.report.html").read_text()
    for key in ("scene-a", "scene-b", "scene-c", "scene-d", "cannot read window"):
        assert key in html
    stamp = (out / "stac" / "collection.json").stat().st_mtime_ns
    assert run(job).returncode == 1  # c still fails; nothing else changed: the catalogue is left alone
    assert (out / "stac" / "collection.json").stat().st_mtime_ns == stamp
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_stac_item_footprint_is_the_scene_in_lonlat(tmp_path):
    from rasterio.transform import from_origin

    from geoseg.batch.stac import scene_footprint
    from geoseg.synth.scenes import random_boxes, shapes_scene

    scene = tmp_path / "s.tif"
    shapes_scene(scene, 400, 300, random_boxes(400, 300, 3), crs="EPSG:32631",
                 transform=from_origin(500000, 5500000, 2.0, 2.0))  # fmt: skip
    geom = scene_footprint(str(scene))
    lon, lat = np.asarray(geom["coordinates"][0]).T
    assert geom["type"] == "Polygon" and len(lon) > 5
    assert 2.9 < lon.min() < lon.max() < 3.1 and 49.6 < lat.min() < lat.max() < 49.7  # zone 31 N, 5500 km


@pytest.mark.parametrize("gsd", [None, 3.0])
def test_run_records_the_footprint_of_the_scene_as_read_from_its_file(tmp_path, gsd):
    """The outline a STAC Item gets is measured where the scene is reduced, from its plan (also when
    it is read resampled); it is the outline of the file itself."""
    from geoseg.batch.stac import scene_footprint

    write_raster(tmp_path / "a.tif", objects_array(700, 600, seed=3))
    (tmp_path / "job.yaml").write_text(
        "name: fp\ninputs: [{glob: a.tif}]\nmodel: geoseg.models.plugins:threshold_instances\n"
        "model_args: {threshold: 100}\ntiling: {tile_size: 256, overlap: 32}\n"
        + (f"predict: {{gsd: {gsd}}}\n" if gsd else "")
        + "outputs: {dir: out}\nstore: tiles\n"
    )
    from geoseg.batch.runner import run_job

    assert run_job(load_job(tmp_path / "job.yaml")).counts()["done"] == 1
    with RunState.open(str(tmp_path / "tiles" / "fp"), "fp", readonly=True) as state:
        recorded = state.get("a")["footprint"]
    expected = scene_footprint(str(tmp_path / "a.tif"))
    assert recorded["type"] == "Polygon"
    np.testing.assert_allclose(recorded["coordinates"], expected["coordinates"], atol=1e-7)


def test_semantic_run_catalogues_its_masks_and_draws_them(tmp_path):
    """A semantic job's STAC Items list the class mask (a COG) beside the outlines, and its HTML
    report draws the mask over the scene."""
    import pystac

    from geoseg.batch.runner import run_job

    write_raster(tmp_path / "a.tif", objects_array(700, 600, seed=5))
    (tmp_path / "job.yaml").write_text(
        "name: sem\ninputs: [{glob: a.tif}]\nmodel: geoseg.models.plugins:threshold_semantic\n"
        "model_args: {threshold: 100}\ntiling: {tile_size: 256, overlap: 32}\n"
        "outputs: {dir: out, mask: tif, report: html}\nstore: tiles\n"
    )
    report = run_job(load_job(tmp_path / "job.yaml"))
    assert report.counts()["done"] == 1
    item = pystac.read_file(str(tmp_path / "out" / "stac" / "collection.json")).get_item("a", recursive=True)
    from pystac.extensions.label import LabelExtension

    assert LabelExtension.ext(item).label_tasks == ["segmentation"]
    mask = item.assets["mask"]
    assert mask.media_type == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert Path(mask.get_absolute_href()) == (tmp_path / "out" / "a.mask.tif").resolve()
    assert "labels-raster" in mask.roles
    html = (tmp_path / "out" / "sem.report.html").read_text()
    data = json.loads(html.split('id="report-data">')[1].split("</script>")[0])
    assert data["scenes"][0]["overlay"].startswith("data:image/png;base64,")
    assert data["scenes"][0]["objects"]  # the outlines too
