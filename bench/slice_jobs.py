"""A nightly job over CT slices: ``geoseg run`` with the committed lung U-Net over N synthetic
slices (``.npy``, 512 x 512, class mask and outlines written), in this process and on a
LocalCluster of 2 worker processes of 1 thread; the run's wall time in scenes (``scenes_seconds``)
of each, their ratio, and whether every mask is identical.

On a cluster a slice of a few batches is one task (tiles, stitching and the finish in one worker,
:func:`geoseg.inference.tasks.run_scene_semantic`). ``--rounds N`` runs both configurations in
turn N times and reports the median ratio (the machine drifts between runs).

    .venv/bin/python bench/slice_jobs.py [--slices 40] [--rounds 2]
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
WORK = ROOT / "bench" / ".work" / "slice-jobs"


def _slices(n: int) -> Path:
    from geoseg.synth.lungs import write_lungs

    folder = WORK / f"slices-{n}"
    WORK.mkdir(parents=True, exist_ok=True)
    if not (folder / "lungs.json").exists():
        write_lungs(folder, n, size=512, seed=7, patients=max(1, n // 20), overwrite=True)
    return folder / "images"


def _run(images: Path, workers: int) -> tuple[float, dict]:
    import numpy as np

    from geoseg.batch.jobs import load_job
    from geoseg.batch.runner import run_job

    run_dir = WORK / f"run-{workers}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "job.yaml").write_text(
        f"name: slices\ninputs: [{{glob: '{images}/*.npy'}}]\nmodel: lungs-unet\n"
        "outputs: {dir: out, mask: npy, combined: none, report: false}\nstore: store\n"
        f"cluster: {{workers: {workers}, processes: {'true' if workers > 1 else 'false'}}}\n"
    )
    report = run_job(load_job(run_dir / "job.yaml")).as_dict()
    if report["failed"]:
        raise SystemExit(f"{report['failed']} slices failed: {report['scenes']}")
    masks = {p.name: np.load(p) for p in sorted((run_dir / "out").glob("*.mask.npy"))}
    return report["scenes_seconds"], masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    images = _slices(args.slices)
    ratios, same = [], True
    for k in range(args.rounds):
        local, local_masks = _run(images, 1)
        cluster, cluster_masks = _run(images, 2)
        same = same and local_masks.keys() == cluster_masks.keys() and len(local_masks) == args.slices
        same = same and all((local_masks[n] == cluster_masks[n]).all() for n in local_masks)
        ratios.append(local / cluster)
        print(f"round {k + 1}: in-process {local:.2f} s, 2 worker processes {cluster:.2f} s: "
              f"{local / cluster:.2f}x the speed")  # fmt: skip
    print(f"{args.slices} slices, committed lung U-Net: 2 worker processes / in-process "
          f"{statistics.median(ratios):.2f}x (median of {args.rounds}); masks identical: {same}")  # fmt: skip
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
