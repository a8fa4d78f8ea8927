"""Robustness report: every committed model on every data family, split by condition, mean and worst.

Lungs: the U-Net through geoseg's predict path (its defaults: tiles, blending, minimum area, pixel
spacing, region completion), the same without region completion ("alone") and the threshold
baseline beside it, on held-out slices of phantom family A (the one the
model is trained on, unseen seeds) and family B (built another way, never trained on). Per family:
mean / median / worst Dice, false positives on lung-free slices, and the same split by each recorded
condition (streak strength, lung density, arms, metal, kernel, ghosting, slice kind).

Tankers: the Mask R-CNN through `geoseg predict` with its defaults on scenes of family A
(``geoseg synth tankers``) and family B (``geoseg synth tankers --family b``, never trained on), at
several GSDs, clustered and with clouds or haze: F1 / precision / recall at IoU 0.5, duplicates, seam
splits, polygons with holes, per scene and per condition.

    .venv/bin/python bench/robustness.py lungs --slices 200        # about 4 minutes
    .venv/bin/python bench/robustness.py tankers --size 4096       # about 15 minutes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LUNG_MODEL = ROOT / "geoseg" / "weights" / "lungs-unet.safetensors"
TANKER_MODEL = ROOT / "geoseg" / "weights" / "tankers-light.safetensors"


def stats(values) -> str:
    v = np.asarray(values, float)
    return f"n={len(v):3d}  mean {v.mean():.4f}  median {np.median(v):.4f}  worst {v.min():.4f}"


def lungs(args) -> dict:
    from geoseg.evaluation.baselines import threshold_lungs
    from geoseg.evaluation.dice import dice_score
    from geoseg.inference.engine import predict_semantic
    from geoseg.inference.options import PredictOptions
    from geoseg.models.segmenter import ModelSpec
    from geoseg.synth.lungs import write_lungs

    work = Path(args.work) / "lungs"
    work.mkdir(parents=True, exist_ok=True)
    model = ModelSpec(args.lung_model)
    report = {}
    for family in ("a", "b"):
        folder = work / f"{family}-{args.slices}-{args.seed}"
        if not (folder / "lungs.json").exists():
            write_lungs(folder, args.slices, size=512, seed=args.seed, patients=max(1, args.slices // 40),
                        family=family, overwrite=True)  # fmt: skip
        index = json.loads((folder / "lungs.json").read_text())
        rows = []
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            for s in index["slices"]:
                path = folder / "images" / f"{s['id']}.npy"
                with Image.open(folder / "masks" / f"{s['id']}.png") as im:
                    truth = np.asarray(im) > 0
                out = Path(tmp) / f"{s['id']}.npy"
                predict_semantic(str(path), model, PredictOptions(), mask_path=out)
                pred = np.load(out) == 1
                alone = Path(tmp) / f"{s['id']}-alone.npy"  # without the checkpoint's region completion
                predict_semantic(str(path), model, PredictOptions(complete=False), mask_path=alone)
                raw = np.load(alone) == 1
                base = threshold_lungs(np.load(path))
                rows.append({"id": s["id"], "kind": s["kind"], "empty": not truth.any(),
                             **{k: str(v) for k, v in s.get("conditions", {}).items()},
                             "unet": dice_score(pred, truth), "baseline": dice_score(base, truth),
                             "alone": dice_score(raw, truth),
                             "unet_fp_px": int(pred.sum()) if not truth.any() else 0,
                             "alone_fp_px": int(raw.sum()) if not truth.any() else 0,
                             "baseline_fp_px": int(base.sum()) if not truth.any() else 0})  # fmt: skip
        seconds = time.perf_counter() - t0
        empty = [r for r in rows if r["empty"]]
        print(f"\nlungs family {family.upper()} ({folder}): {len(rows)} slices, {len(empty)} lung-free, "
              f"{seconds:.0f} s")  # fmt: skip
        for name in ("unet", "alone", "baseline"):
            fp = [r[f"{name}_fp_px"] for r in empty if r[f"{name}_fp_px"] > 0]
            print(f"  {name:8s} Dice {stats([r[name] for r in rows])}   under 0.90: "
                  f"{sum(r[name] < 0.9 for r in rows)}   false positives on {len(fp)}/{len(empty)} lung-free"
                  + (f" ({min(fp)}-{max(fp)} px)" if fp else ""))  # fmt: skip
        keys = sorted(
            {k for r in rows for k in r}
            - {"id", "unet", "alone", "baseline", "unet_fp_px", "alone_fp_px", "baseline_fp_px"}
        )
        for key in keys:
            groups = defaultdict(list)
            for r in rows:
                groups[str(r.get(key, "-"))].append(r)
            if len(groups) < 2:
                continue
            print(f"  by {key}:")
            for value, group in sorted(groups.items()):
                print(f"    {value:10s} U-Net {stats([r['unet'] for r in group])}"
                      f"   baseline mean {np.mean([r['baseline'] for r in group]):.4f}")  # fmt: skip
        worst = sorted(rows, key=lambda r: r["unet"])[:5]
        print("  worst U-Net slices:", ", ".join(f"{r['id']} ({r['kind']}) {r['unet']:.3f}" for r in worst))
        report[family] = rows
    return report


def tankers(args) -> dict:
    import geopandas as gpd

    from geoseg.evaluation.objects import evaluate

    work = Path(args.work) / "tankers"
    work.mkdir(parents=True, exist_ok=True)
    cases = [  # (family, gsd, extra synth flags, condition)
        ("a", 1.0, ["--clusters", "0.7"], "clustered"),
        ("a", 1.5, ["--clouds"], "clouds"),
        ("a", 2.2, [], "plain"),
        ("b", 1.0, ["--clusters", "0.7"], "clustered"),
        ("b", 1.5, ["--haze"], "haze"),
        ("b", 2.2, [], "plain"),
    ]
    report = {}
    for family, gsd, flags, condition in cases:
        name = f"{family}-{gsd}-{condition}-{args.size}-{args.seed}"
        scene = work / f"{name}.tif"
        if not scene.exists():
            synth = [
                BIN / "geoseg",
                "-q",
                "synth",
                "tankers",
                scene,
                "--size",
                str(args.size),
                "--gsd",
                str(gsd),
            ]
            subprocess.run([*synth, "--seed", str(args.seed), "--family", family, *flags], check=True)
        pred = work / f"{name}.pred.geojson"
        t0 = time.perf_counter()
        subprocess.run([BIN / "geoseg", "-q", "predict", scene, "-m", args.tanker_model, "-o", pred,
                        "--overwrite", *args.predict_flag], check=True)  # fmt: skip
        seconds = time.perf_counter() - t0
        p = gpd.read_file(pred)
        t = gpd.read_file(work / f"{name}.truth.geojson")
        m = evaluate(p, t)
        holes = int(sum(len(g.interiors) for g in p.geometry.explode(index_parts=False) if g is not None))
        report[name] = {**m, "holes": holes, "seconds": round(seconds, 1)}
        print(f"tankers {family.upper()} {gsd:.1f} m {condition:9s}: truth {len(t):3d}  found {len(p):3d}  "
              f"F1 {m['f1']:.3f}  P {m['precision']:.3f}  R {m['recall']:.3f}  dup {m['duplicates']}  "
              f"seams {m['seam_splits']}  parts {m['parts']}  holes {holes}  {seconds:.0f} s")  # fmt: skip
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["lungs", "tankers", "all"])
    ap.add_argument("--work", default=str(ROOT / "build" / "robustness"))
    ap.add_argument("--slices", type=int, default=200, help="slices per lung family")
    ap.add_argument("--size", type=int, default=4096, help="pixels a side of each tanker scene")
    ap.add_argument("--seed", type=int, default=3, help="a seed no model was trained or validated on")
    ap.add_argument("--lung-model", default=str(LUNG_MODEL))
    ap.add_argument("--tanker-model", default=str(TANKER_MODEL))
    ap.add_argument("--predict-flag", action="append", default=[], help="extra `geoseg predict` flag")
    ap.add_argument("--json", default=None, help="write per-slice and per-scene scores here")
    args = ap.parse_args()
    out = {}
    if args.what in ("lungs", "all"):
        out["lungs"] = lungs(args)
    if args.what in ("tankers", "all"):
        out["tankers"] = tankers(args)
    print("\nrerun:", " ".join(["python", *sys.argv]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
