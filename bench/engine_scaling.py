"""Does geoseg keep N workers busy? ``geoseg run`` with a latency model on 1 to 16 loopback worker
processes, against the ideal time.

The latency model (``geoseg.models.plugins:latency_instances``) waits 0.1 s per tile and uses no CPU while
it waits, as a GPU-bound detector keeps its caller waiting: so a 2-core machine can show whether
the engine itself scales to more workers than it has cores. Each scene is 1024 x 1024 with a few
squares, cut into 16 tiles of 256 (batches of 4): a scene is 1.6 s of model time, and the ideal
time of S scenes on N workers is S x 1.6 / N. The figure is the time spent in scenes (the run
report's ``scenes_seconds``: from the first scene's start to the last one's end); the cluster's
start and the loading of the model on each worker are reported beside it.

    .venv/bin/python bench/engine_scaling.py [--workers 1,2,4,8,16] [--scenes 8] [--delay 0.1] [--repeat 1]

With ``--workers 16`` the scene count is raised to 16 so every worker has a scene's worth of work.
``--idle N`` first measures the bookkeeping of N idle worker processes: the CPU time they and the
scheduler take in 2.5 s with dask's own settings and with the quiet ones geoseg starts its
LocalCluster with (:func:`geoseg.batch.cluster.quiet_worker_config`).

``--repeat N`` runs each worker count N times (a fresh cluster each time) and reports the median,
with the fastest and slowest run beside it: on a 2-core machine 16 worker processes make the
figure vary by a few hundredths of a second from run to run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import rerun_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "engine-scaling"
TILE, SIDE, BATCH = 256, 1024, 4


def make_scenes(folder: Path, n: int) -> None:
    import numpy as np

    from geoseg.synth.scenes import write_scene

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"scene{i:02d}.tif"
        if path.exists():
            continue
        a = np.zeros((SIDE, SIDE), np.uint8)
        for k in range(6):  # squares inside tiles and across their seams
            r, c = 100 + 150 * k, 60 + 160 * k
            a[r : r + 40, c : c + 40] = 200
        write_scene(path, SIDE, SIDE, lambda w, a=a: a[None, w.row_off : w.row_off + w.height,
                                                        w.col_off : w.col_off + w.width])  # fmt: skip


def latency_job(run_dir: Path, scenes: int, delay: float, name: str, cluster: str = "") -> Path:
    """A fresh job folder ``run_dir`` for the latency plug-in over the first ``scenes`` benchmark
    scenes (made if missing), with ``cluster`` as its extra YAML line: its job file."""
    archive = WORK / "archive"
    make_scenes(archive, scenes)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    files = sorted(archive.glob("scene*.tif"))[:scenes]
    (run_dir / "scenes.txt").write_text("".join(f"{p}\n" for p in files))
    job = run_dir / "job.yaml"
    job.write_text(
        f"name: {name}\n"
        "inputs: [{list: scenes.txt}]\n"
        "model: geoseg.models.plugins:latency_instances\n"
        f"model_args: {{seconds_per_tile: {delay}, threshold: 100}}\n"
        f"tiling: {{tile_size: {TILE}, overlap: 0, batch_size: {BATCH}}}\n"
        "outputs: {dir: out, combined: none, report: false}\n"
        "store: store\n" + cluster
    )
    return job


def run(workers: int, scenes: int, delay: float) -> dict:
    from geoseg.batch.jobs import load_job
    from geoseg.batch.runner import run_job

    cluster = f"cluster: {{workers: {workers}, processes: {'true' if workers > 1 else 'false'}}}\n"
    job = latency_job(WORK / f"run-{workers}", scenes, delay, "scaling", cluster)
    report = run_job(load_job(job)).as_dict()
    if report["failed"]:
        raise SystemExit(f"{report['failed']} scenes failed: {report['scenes']}")
    return report


def idle_cpu(workers: int, quiet: bool, seconds: float = 2.5) -> float:
    """CPU seconds per second that ``workers`` idle worker processes and this process (the
    scheduler's) take."""
    import time

    import psutil

    from geoseg.batch.cluster import start_local_cluster

    with start_local_cluster(workers, quiet=quiet) as cluster:
        from dask.distributed import Client

        with Client(cluster):
            time.sleep(2.0)  # let the start settle
            me = psutil.Process()

            def cpu() -> float:
                total = 0.0
                for p in [me, *me.children(recursive=True)]:
                    try:
                        t = p.cpu_times()
                    except psutil.Error:
                        continue
                    total += t.user + t.system
                return total

            before = cpu()
            time.sleep(seconds)
            return (cpu() - before) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4,8,16", help="worker counts, comma-separated")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--delay", type=float, default=0.1, help="model seconds per tile")
    ap.add_argument("--repeat", type=int, default=1, help="runs per worker count (median reported)")
    ap.add_argument("--idle", type=int, default=0, help="first: idle CPU of this many workers")
    args = ap.parse_args()
    if args.idle:
        loud, quiet = idle_cpu(args.idle, False), idle_cpu(args.idle, True)
        print(f"{args.idle} idle workers and their scheduler: dask's settings {loud:.3f} CPU-s/s, "
              f"geoseg's quiet ones {quiet:.3f} CPU-s/s ({loud / max(quiet, 1e-3):.1f}x less)")  # fmt: skip
    tiles_per_scene = (SIDE // TILE) ** 2
    per_scene = tiles_per_scene * args.delay
    base = None
    print(f"{'workers':>7} {'scenes':>6} {'in scenes s':>11} {'ideal s':>8} {'/ideal':>7} {'speed-up':>8} "
          f"{'start s':>8}" + ("  /ideal of each run" if args.repeat > 1 else ""))  # fmt: skip
    for n in (int(w) for w in args.workers.split(",")):
        scenes = max(args.scenes, n) if n >= 16 else args.scenes
        reports = [run(n, scenes, args.delay) for _ in range(max(1, args.repeat))]
        times = sorted(r["scenes_seconds"] for r in reports)
        busy = statistics.median(times)
        ideal = scenes * per_scene / n
        rate = scenes / busy
        base = base or (rate, n)
        each = "  " + " ".join(f"{t / ideal:.2f}" for t in times) if len(times) > 1 else ""
        print(f"{n:>7} {scenes:>6} {busy:>11.2f} {ideal:>8.2f} {busy / ideal:>7.2f} "
              f"{rate / base[0] * base[1]:>8.2f} {reports[0]['cluster_seconds']:>8.1f}{each}")  # fmt: skip
    print("speed-up: scenes per second relative to the first row (times its worker count)")
    print("done means: time in scenes <= 1.3 x ideal at 8 workers (8 scenes) and 16 workers (16 scenes)")
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
