"""Does geoseg keep N workers busy? ``geoseg run`` with a latency model on 1 to 16 loopback worker
processes, against the ideal time.

The latency model (``geoseg.models.plugins:latency_instances``) waits 0.1 s per tile and uses no CPU while
it waits, as a GPU-bound detector keeps its caller waiting: so a 2-core machine can show whether
the engine itself scales to more workers than it has cores. Each scene is 1024 x 1024 with a few
squares, cut into 16 tiles of 256 (batches of 4): a scene is 1.6 s of model time, and the ideal
time of S scenes on N workers is S x 1.6 / N. The figure is the time spent in scenes (the run
report's ``scenes_seconds``: from the first scene's start to the last one's end); the cluster's
start and the loading of the model on each worker are reported beside it.

    .venv/bin/python bench/engine_scaling.py [--workers 1,2,4,8,16] [--scenes 8] [--delay 0.1]

With ``--workers 16`` the scene count is raised to 16 so every worker has a scene's worth of work.
"""

from __future__ import annotations

import argparse
import shutil
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


def run(workers: int, scenes: int, delay: float) -> dict:
    from geoseg.batch.jobs import load_job
    from geoseg.batch.runner import run_job

    archive = WORK / "archive"
    make_scenes(archive, scenes)
    run_dir = WORK / f"run-{workers}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    files = sorted(archive.glob("scene*.tif"))[:scenes]
    listing = run_dir / "scenes.txt"
    listing.write_text("".join(f"{p}\n" for p in files))
    (run_dir / "job.yaml").write_text(
        "name: scaling\n"
        "inputs: [{list: scenes.txt}]\n"
        "model: geoseg.models.plugins:latency_instances\n"
        f"model_args: {{seconds_per_tile: {delay}, threshold: 100}}\n"
        f"tiling: {{tile_size: {TILE}, overlap: 0, batch_size: {BATCH}}}\n"
        "outputs: {dir: out, combined: none, report: false}\n"
        "store: store\n"
        f"cluster: {{workers: {workers}, processes: {'true' if workers > 1 else 'false'}}}\n"
    )
    report = run_job(load_job(run_dir / "job.yaml")).as_dict()
    if report["failed"]:
        raise SystemExit(f"{report['failed']} scenes failed: {report['scenes']}")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4,8,16", help="worker counts, comma-separated")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--delay", type=float, default=0.1, help="model seconds per tile")
    args = ap.parse_args()
    tiles_per_scene = (SIDE // TILE) ** 2
    per_scene = tiles_per_scene * args.delay
    base = None
    print(f"{'workers':>7} {'scenes':>6} {'in scenes s':>11} {'ideal s':>8} {'/ideal':>7} {'speed-up':>8} "
          f"{'start s':>8}")  # fmt: skip
    for n in (int(w) for w in args.workers.split(",")):
        scenes = max(args.scenes, n) if n >= 16 else args.scenes
        report = run(n, scenes, args.delay)
        busy = report["scenes_seconds"]
        ideal = scenes * per_scene / n
        rate = scenes / busy
        base = base or (rate, n)
        print(f"{n:>7} {scenes:>6} {busy:>11.2f} {ideal:>8.2f} {busy / ideal:>7.2f} "
              f"{rate / base[0] * base[1]:>8.2f} {report['cluster_seconds']:>8.1f}")  # fmt: skip
    print("speed-up: scenes per second relative to the first row (times its worker count)")
    print("done means: time in scenes <= 1.3 x ideal at 8 workers (8 scenes) and 16 workers (16 scenes)")
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
