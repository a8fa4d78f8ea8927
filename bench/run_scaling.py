"""Worker processes vs this process: tiles per second of ``geoseg run`` with the committed tanker
model, and the forward passes behind it under dask's malloc setting.

Part 1, forward passes (``--part forward``): the same batches of tiles through the model's
``predict`` in three fresh processes: a plain one, one with dask's nanny variable
``MALLOC_TRIM_THRESHOLD_=65536`` (glibc then keeps its mmap threshold at 128 KiB, so activation
buffers are mapped and unmapped every batch), and one with the variable where
``geoseg.runtime.restore_malloc_thresholds`` (what the worker plug-in calls) ran first. Wall time,
system time and minor page faults (``resource.getrusage``) of the timed batches.

Part 2, tiles per second (``--part rates``): the same archive of synthetic tanker scenes run from
scratch in each configuration:

- in this process (as ``geoseg run`` without a cluster; OMP_WAIT_POLICY=PASSIVE as the CLI sets it);
- a LocalCluster geoseg starts (``geoseg.batch.cluster.start_local_cluster``) of 1 worker process;
- one of 2 worker processes of 1 thread each;
- a joined cluster: ``dask scheduler`` and ``dask worker --nthreads 1`` started by hand, with the
  nanny (its MALLOC_TRIM_THRESHOLD_ in the worker), repaired by geoseg's worker plug-in;
- the same, with the plug-in's malloc repair turned off (``GEOSEG_MALLOPT=off``): the state before.

The figure is tiles run / seconds spent in scenes (the run report's ``scenes_seconds``: from the
first scene's start to the last one's end; scenes overlap, so their own durations would count
waiting as work). Cluster start-up and a warm-up (geoseg's plug-in registered, the model loaded
on every worker, as ``run_job`` loads it in this process before the first scene) are left out and
reported separately. Outputs of every
configuration are compared feature for feature. Everything goes through the public entry point
``geoseg.batch.runner.run_job``.

    .venv/bin/python bench/run_scaling.py [--scenes 3] [--size 2048] [--batches 8] [--repeat 1] [--part all]
        [--configs local1,local2] [--rounds 3]

``--rounds N`` runs the configurations in turn N times and reports each one's median ratio to the
in-process run of the same round: on this machine a run's speed drifts by 10-20 % within minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import rerun_line  # noqa: E402
from geoseg import runtime  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "scaling"
MODEL = ROOT / "geoseg" / "weights" / "tankers-light.safetensors"
#: variables that would make the configurations differ in more than what each one names
CLEAN = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "OMP_WAIT_POLICY", runtime.OPT_OUT)

# One process of part 1: argv = scene, batches, batch size, "fix" or "". Prints one JSON line.
FORWARD = """
import json, resource, sys, time
import numpy as np
from geoseg import runtime
fix = runtime.restore_malloc_thresholds() if sys.argv[4] == "fix" else None
import rasterio
from rasterio.windows import Window
from geoseg.models.segmenter import ModelSpec, get_segmenter
seg = get_segmenter(ModelSpec(sys.argv[5]))
n, size = int(sys.argv[3]), seg.tile_size or 512
with rasterio.open(sys.argv[1]) as src:
    step = max(1, (src.width - size) // max(1, n - 1))
    windows = [Window(i * step, i * step // 2, size, size) for i in range(n)]
    tiles = np.stack([src.read([1, 2, 3], window=w).astype("float32") for w in windows])
seg.predict(tiles)  # warm-up: weights paged in, allocator and thread pool settled
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(int(sys.argv[2])):
    seg.predict(tiles)
wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "sys": r1.ru_stime - r0.ru_stime, "user": r1.ru_utime - r0.ru_utime,
                  "minflt": r1.ru_minflt - r0.ru_minflt, "fix": fix}))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    return {**env, **extra}


def _archive(scenes: int, size: int) -> Path:
    archive = WORK / f"archive-{scenes}x{size}"
    archive.mkdir(parents=True, exist_ok=True)
    for i in range(scenes):
        out = archive / f"scene{i}.tif"
        if not out.exists():
            subprocess.run(
                [sys.executable, "-m", "geoseg.cli.main", "-q", "synth", "tankers", str(out), "--size",
                 str(size), "--seed", str(300 + i), "--gsd", "1.5"], check=True,
            )  # fmt: skip
    return archive


def forward_passes(scene: Path, batches: int, batch_size: int, repeat: int) -> None:
    print(f"forward passes: {batches} batches of {batch_size} tiles, {scene.name}, each in a fresh process"
          f"{f', median of {repeat} interleaved rounds' if repeat > 1 else ''}")  # fmt: skip
    configs = (
        ("plain process", _env(), ""),
        ("MALLOC_TRIM_THRESHOLD_=65536", _env(MALLOC_TRIM_THRESHOLD_="65536"), ""),
        ("same + plug-in's mallopt", _env(MALLOC_TRIM_THRESHOLD_="65536"), "fix"),
    )
    runs: dict[str, list[dict]] = {}
    for _ in range(repeat):  # rounds of all three, so that drift in the machine's load hits each alike
        for label, env, fix in configs:
            r = subprocess.run(
                [sys.executable, "-c", FORWARD, str(scene), str(batches), str(batch_size), fix, str(MODEL)],
                env=env, capture_output=True, text=True, cwd=ROOT,
            )  # fmt: skip
            if r.returncode != 0:
                sys.stderr.write(r.stderr)
                raise SystemExit(f"forward pass process failed: {label}")
            runs.setdefault(label, []).append(json.loads(r.stdout.strip().splitlines()[-1]))
    keys = ("wall", "sys", "minflt")
    rows = {label: {k: statistics.median(r[k] for r in rs) for k in keys} for label, rs in runs.items()}
    base = rows["plain process"]
    for label, row in rows.items():
        faults = row["minflt"] / max(1, base["minflt"])
        print(f"  {label:30} wall {row['wall']:6.1f} s ({row['wall'] / base['wall']:.2f}x)  "
              f"sys {row['sys']:5.1f} s ({row['sys'] / max(1e-3, base['sys']):.1f}x)  "
              f"minor faults {row['minflt'] / 1e6:6.2f} M ({faults:.1f}x)")  # fmt: skip
        fix = runs[label][0]["fix"]
        if fix:
            print(f"  {'':30} mallopt: {fix[1]} ({fix[2]})")


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                            start_new_session=True)  # fmt: skip


class HandStarted:
    """``dask scheduler`` + ``dask worker --nthreads 1`` (with its nanny) started as an operator
    would, in an environment without geoseg's settings; ``worker_env`` adds to the worker's."""

    def __init__(self, run_dir: Path, worker_env: dict[str, str]) -> None:
        bindir = Path(sys.executable).parent
        sched_file = run_dir / "scheduler.json"
        self.procs = [
            _start([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(sched_file)], run_dir / "scheduler.log", _env()),
        ]  # fmt: skip
        try:
            deadline = time.time() + 60
            while not (sched_file.exists() and sched_file.stat().st_size) and time.time() < deadline:
                time.sleep(0.1)
            self.scheduler_address = json.loads(sched_file.read_text())["address"]
            self.procs.append(
                _start([str(bindir / "dask"), "worker", self.scheduler_address, "--nthreads", "1",
                        "--no-dashboard", "--host", "127.0.0.1"], run_dir / "worker.log",
                       _env(**worker_env))
            )  # fmt: skip
            from dask.distributed import Client

            with Client(self.scheduler_address, timeout="30s") as client:
                client.wait_for_workers(1, timeout=120)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()


def _warm_up(address: str, model) -> None:
    """Register geoseg's worker plug-in (as a run does, before torch loads there) and load the model
    on every worker, so that a worker's first batch is no slower than one in this process, where
    ``run_job`` loads the model before the first scene."""
    from geoseg.batch.cluster import open_cluster

    def load() -> None:
        from geoseg.models.segmenter import get_segmenter

        get_segmenter(model)

    with open_cluster(1, address=address) as (client, _):
        client.run(load)


def _features(path: Path) -> list:
    doc = json.loads(path.read_text())
    for f in doc["features"]:
        f["properties"].pop("detected_at", None)
    return doc["features"]


CONFIGS = (
    ("in-process", "inproc", None),
    ("LocalCluster, 1 worker process", "local1", 1),
    ("LocalCluster, 2 processes x 1 thread", "local2", 2),
    ("dask worker (nanny), joined", "joined", {}),
    ("same, plug-in's mallopt off", "joined-off", {runtime.OPT_OUT: "off"}),
)


def rates(archive: Path, batch_size: int, names: list[str] | None = None, rounds: int = 1) -> None:
    """Every configuration of ``names`` (all: None) in turn, ``rounds`` times: each round's ratios
    are against that round's in-process run, so a machine that drifts between rounds (it does, by
    10-20 % in minutes) does not make one configuration look faster; the medians come last."""
    configs = [c for c in CONFIGS if names is None or c[1] in names or c[1] == "inproc"]
    ratios: dict[str, list[float]] = {label: [] for label, _, _ in configs}
    for k in range(rounds):
        if rounds > 1:
            print(f" round {k + 1} of {rounds}")
        for label, ratio in _round(archive, batch_size, configs).items():
            ratios[label].append(ratio)
    if rounds > 1:
        print(f"medians of {rounds} rounds (x in-process of the same round):")
        for label, values in ratios.items():
            each = " ".join(f"{v:.2f}" for v in values)
            print(f"  {label:38} {statistics.median(values):.2f}x  ({each})")


def _round(archive: Path, batch_size: int, configs) -> dict[str, float]:
    from geoseg.batch.cluster import start_local_cluster
    from geoseg.batch.jobs import load_job
    from geoseg.batch.runner import run_job
    from geoseg.models.segmenter import ModelSpec

    results = {}
    for label, name, how in configs:
        run_dir = WORK / f"run-{name}"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        run_dir.mkdir(parents=True)
        job_file = run_dir / "job.yaml"
        job_file.write_text(
            f"name: scaling\ninputs: [{{glob: '{archive}/*.tif'}}]\nmodel: tankers-light\n"
            f"tiling: {{batch_size: {batch_size}}}\noutputs: {{dir: out, combined: none}}\nstore: store\n"
        )
        job = load_job(job_file)
        t0 = time.perf_counter()
        cluster = None
        if isinstance(how, int):
            cluster = start_local_cluster(how, 1)
        elif isinstance(how, dict):
            cluster = HandStarted(run_dir, how)
        try:
            if cluster:
                _warm_up(cluster.scheduler_address, ModelSpec(job.model, job.model_args))
            started = time.perf_counter() - t0
            report = run_job(job, scheduler=cluster.scheduler_address if cluster else None).as_dict()
        finally:
            if cluster:
                cluster.close()
        # wall time from the first scene's start to the last one's end: scenes overlap, so the sum
        # of their own durations counts a scene's wait behind another's batches as its own time
        busy = report["scenes_seconds"]
        results[label] = {
            "tiles_per_second": report["tiles_run"] / busy,
            "out": {p.name: _features(p) for p in sorted((run_dir / "out").glob("*.geojson"))},
        }
        rate, base = results[label]["tiles_per_second"], results["in-process"]["tiles_per_second"]
        print(f"  {label:38} {report['tiles_run']} tiles in {busy:5.1f} s: {rate:5.2f} tiles/s "
              f"= {rate / base:.2f}x in-process (cluster start and warm-up {started:.1f} s)")  # fmt: skip
    rate = {label: r["tiles_per_second"] for label, r in results.items()}
    pairs = (
        ("LocalCluster, 2 processes x 1 thread", "LocalCluster, 1 worker process", "2 worker processes / 1"),
        ("dask worker (nanny), joined", "same, plug-in's mallopt off", "joined worker, mallopt on / off"),
    )
    for a, b, text in pairs:
        if a in rate and b in rate:
            print(f"  {text}: {rate[a] / rate[b]:.2f}x")
    same = all(r["out"] == results["in-process"]["out"] for r in results.values())
    print(f"  outputs identical across configurations: {same}")
    return {label: r / rate["in-process"] for label, r in rate.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=3, help="synthetic tanker scenes in the archive")
    ap.add_argument("--size", type=int, default=2048, help="their side in pixels (1.5 m)")
    ap.add_argument("--batches", type=int, default=8, help="timed batches of the forward-pass part")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the forward-pass part (median)")
    ap.add_argument("--part", choices=["all", "forward", "rates"], default="all")
    ap.add_argument("--configs", help="rates of these only, comma-separated (in-process always runs): "
                    + ", ".join(name for _, name, _ in CONFIGS))  # fmt: skip
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the rates part (median ratios)")
    args = ap.parse_args()
    # as `geoseg run` does, before torch loads; the hand-started workers get an environment without it
    runtime.prefer_passive_openmp()
    print(f"{len(os.sched_getaffinity(0))} cores; load average {os.getloadavg()[0]:.2f} at the start")
    archive = _archive(args.scenes, args.size)
    if args.part in ("all", "forward"):
        forward_passes(archive / "scene0.tif", args.batches, args.batch_size, args.repeat)
    if args.part in ("all", "rates"):
        print(f"tiles per second: {args.scenes} scenes of {args.size}², committed tanker model")
        names = args.configs.split(",") if args.configs else None
        rates(archive, args.batch_size, names, args.rounds)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
