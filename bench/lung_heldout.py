"""Held-out lung slices: the U-Net checkpoint against the threshold baseline, per slice Dice with
geoseg.evaluation.dice's empty-mask convention, summarised overall and per kind. "unet" is what `geoseg
predict` writes (the checkpoint's tiles, blending and minimum region area); "unet-raw" is the
network's argmax on the whole slice, untiled and without the minimum area, for reference.

    .venv/bin/geoseg synth lungs build/lung-data/test --slices 120 --patients 4 --seed 3
    .venv/bin/python bench/lung_heldout.py build/lung-data/test \
        --model geoseg/weights/lungs-unet.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from geoseg.evaluation.baselines import threshold_lungs
from geoseg.evaluation.dice import dice_score, iou_score
from geoseg.inference.engine import predict_semantic
from geoseg.inference.options import PredictOptions
from geoseg.models.segmenter import ModelSpec, get_segmenter


def summary(values: list[float]) -> str:
    v = np.asarray(values)
    return f"mean {v.mean():.4f}  median {np.median(v):.4f}  worst {v.min():.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a `geoseg synth lungs` output folder")
    ap.add_argument("--model", default="geoseg/weights/lungs-unet.safetensors")
    ap.add_argument("--json", default=None, help="write per-slice scores here")
    args = ap.parse_args()
    folder = Path(args.folder)
    index = json.loads((folder / "lungs.json").read_text())
    model = ModelSpec(args.model)
    seg = get_segmenter(model)
    rows = []
    t_geoseg = 0.0
    tmp = tempfile.TemporaryDirectory()
    for s in index["slices"]:
        path = folder / "images" / f"{s['id']}.npy"
        image = np.load(path, allow_pickle=False)
        with Image.open(folder / "masks" / f"{s['id']}.png") as im:
            truth = np.asarray(im) > 0
        t0 = time.perf_counter()
        out = Path(tmp.name) / f"{s['id']}.npy"
        predict_semantic(str(path), model, PredictOptions(), mask_path=out)
        pred = np.load(out) == 1
        t_geoseg += time.perf_counter() - t0
        raw = seg.predict(image[None, None].astype(np.float32))[0].argmax(0) == 1
        base = threshold_lungs(image)
        rows.append({"id": s["id"], "kind": s["kind"], "unet_dice": dice_score(pred, truth),
                     "unet_iou": iou_score(pred, truth), "unet-raw_dice": dice_score(raw, truth),
                     "unet-raw_iou": iou_score(raw, truth), "baseline_dice": dice_score(base, truth),
                     "baseline_iou": iou_score(base, truth)})  # fmt: skip
    print(f"{len(rows)} slices from {index['patients']} patients (seed {index['seed']}), model {args.model}")
    print(f"geoseg predict: tiles {seg.tile_size}, minimum region {seg.metadata.get('min_area', 0)} px")
    for name in ("unet", "unet-raw", "baseline"):
        print(f"{name:9s} Dice {summary([r[name + '_dice'] for r in rows])}"
              f"   IoU mean {np.mean([r[name + '_iou'] for r in rows]):.4f}")  # fmt: skip
        for kind in ("apex", "lung", "base", "abdomen"):
            vals = [r[name + "_dice"] for r in rows if r["kind"] == kind]
            if vals:
                print(f"    {kind:8s} n={len(vals):3d}  {summary(vals)}")
    worst = sorted(rows, key=lambda r: r["unet_dice"])[:5]
    print("worst U-Net slices:", ", ".join(f"{r['id']} ({r['kind']}) {r['unet_dice']:.4f}" for r in worst))
    print(f"geoseg predict time {t_geoseg:.1f} s for {len(rows)} slices")
    print("rerun:", " ".join(["python", *sys.argv]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
