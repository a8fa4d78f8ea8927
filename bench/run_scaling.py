"""Tiles per second of ``geoseg run`` in this process, and on 1 and 2 dask.distributed worker
processes, on the same archive of synthetic tanker scenes with the committed tanker model.

Each configuration runs the job from scratch (its own store and output folder); the figure is
tiles run / seconds spent in scenes (from the run report), so cluster start-up is left out and
reported separately. Outputs of every configuration are compared feature for feature.

    .venv/bin/python bench/run_scaling.py [--scenes 3] [--size 2048]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import rerun_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "scaling"


def _features(path: Path) -> list:
    doc = json.loads(path.read_text())
    for f in doc["features"]:
        f["properties"].pop("detected_at", None)
    return doc["features"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    archive = WORK / f"archive-{args.scenes}x{args.size}"
    archive.mkdir(parents=True, exist_ok=True)
    for i in range(args.scenes):
        out = archive / f"scene{i}.tif"
        if not out.exists():
            subprocess.run(
                [sys.executable, "-m", "geoseg.cli.main", "-q", "synth", "tankers", str(out), "--size",
                 str(args.size), "--seed", str(300 + i), "--gsd", "1.5"], check=True,
            )  # fmt: skip

    from dask.distributed import LocalCluster

    from geoseg.jobs import load_job
    from geoseg.runner import run_job

    results = {}
    for label, workers in (("in-process", 0), ("1 worker process", 1), ("2 worker processes", 2)):
        run_dir = WORK / f"run-{workers}"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        run_dir.mkdir(parents=True)
        job_file = run_dir / "job.yaml"
        job_file.write_text(
            f"name: scaling\ninputs: [{{glob: '{archive}/*.tif'}}]\nmodel: tankers-light\n"
            f"outputs: {{dir: out, combined: none}}\nstore: store\n"
        )
        job = load_job(job_file)
        t0 = time.perf_counter()
        cluster = None
        if workers:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)  # fmt: skip
        started = time.perf_counter() - t0
        try:
            report = run_job(job, scheduler=cluster.scheduler_address if cluster else None).as_dict()
        finally:
            if cluster:
                cluster.close()
        busy = sum(s["seconds"] for s in report["scenes"])
        results[label] = {
            "tiles": report["tiles_run"],
            "tiles_per_second": report["tiles_run"] / busy,
            "cluster_start_s": started,
            "out": {p.name: _features(p) for p in sorted((run_dir / "out").glob("*.geojson"))},
        }
        rate = results[label]["tiles_per_second"]
        print(f"{label:20} {report['tiles_run']} tiles in {busy:.1f} s: {rate:.2f} tiles/s "
              f"(cluster start {started:.1f} s)")  # fmt: skip
    base = results["in-process"]
    same = all(r["out"] == base["out"] for r in results.values())
    one, two = results["1 worker process"], results["2 worker processes"]
    print(f"2 workers / 1 worker:     {two['tiles_per_second'] / one['tiles_per_second']:.2f}x")
    print(f"2 workers / in-process:   {two['tiles_per_second'] / base['tiles_per_second']:.2f}x")
    print(f"outputs identical across configurations: {same}")
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
