"""What the 45-degree second view of Mask R-CNN costs: one view, the second view where a tile has a
diagonal hull (what ``--rotated-view`` does), and every tile turned, on the clustered 1.0 m scenes of
``bench/robustness.py`` (families A and B), with the committed tanker model.

Prints model seconds and their ratio to one view, and F1 / precision / recall at IoU 0.5 against
each scene's truth, so that the objects of the two second-view variants can be compared.

    .venv/bin/python bench/rotated_view.py [--size 4096] [--seed 3]     # about 9 minutes at 4096
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import rerun_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "robustness" / "tankers"
MODEL = ROOT / "geoseg" / "weights" / "tankers-light.safetensors"


def scene(family: str, size: int, seed: int) -> Path:
    path = WORK / f"{family}-1.0-clustered-{size}-{seed}.tif"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run([Path(sys.executable).parent / "geoseg", "-q", "synth", "tankers", path, "--size",
                        str(size), "--gsd", "1.0", "--seed", str(seed), "--family", family, "--clusters",
                        "0.7"], check=True)  # fmt: skip
    return path


def measure(path: Path, mode: str) -> dict:
    import geopandas as gpd

    import geoseg.models.maskrcnn as maskrcnn
    from geoseg.evaluation.objects import evaluate
    from geoseg.inference.engine import predict_scene
    from geoseg.inference.options import PredictOptions

    turn = maskrcnn.rotated_views
    if mode == "every tile":
        maskrcnn.rotated_views = lambda run, x, every_tile=False: turn(run, x, every_tile=True)
    try:
        res = predict_scene(path, str(MODEL), PredictOptions(rotated_view=mode != "one view"))
    finally:
        maskrcnn.rotated_views = turn
    truth = gpd.read_file(path.with_suffix(".truth.geojson"))
    return {"model_s": res.stats["model_seconds"], **evaluate(res.features.to_crs(truth.crs), truth)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    for family in ("a", "b"):
        path = scene(family, args.size, args.seed)
        rows = {mode: measure(path, mode) for mode in ("one view", "rotated view", "every tile")}
        one = rows["one view"]["model_s"]
        for mode, m in rows.items():
            print(f"family {family.upper()} {path.name}: {mode:12s} model {m['model_s']:6.1f} s = "
                  f"{m['model_s'] / one:4.2f}x one view  F1 {m['f1']:.3f}  P {m['precision']:.3f}  "
                  f"R {m['recall']:.3f}  dup {m['duplicates']}  seam splits {m['seam_splits']}")  # fmt: skip
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
