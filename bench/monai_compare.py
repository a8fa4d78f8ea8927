"""geoseg's blended tiled inference vs MONAI's sliding_window_inference: same model, tile size,
overlap and blending; time and peak memory ratios on a slice and on a large raster.

Each side runs in its own subprocess (peak RSS from GNU time) and goes from the input file to a
mask file: geoseg reads window by window and writes a tiled GeoTIFF block by block; MONAI reads the
whole image into a tensor, keeps a full-size output and count map, and the mask is written at the
end. Outlines (polygons) are not made on either side. The model is geoseg's U-Net
(``random_init``, BatchNorm in eval mode) unless ``--model CHECKPOINT`` is given; the large raster
uses a smaller U-Net by default (``--large-depth``, ``--large-base-width``) to keep the CPU run short.

    .venv/bin/python bench/monai_compare.py [--slice 512] [--large 8000] [--tile 256] [--overlap 64]
        [--blends gaussian,constant] [--large-blends gaussian] [--repeat 3] [--model CHECKPOINT]
        [--workdir bench/.work]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import rerun_line  # noqa: E402


def _model_spec(args, large: bool):
    from geoseg.models.segmenter import ModelSpec

    if args.model:
        return ModelSpec(args.model)
    depth, width = (args.large_depth, args.large_base_width) if large else (args.depth, args.base_width)
    return ModelSpec("geoseg.models.unet:random_init", (("depth", depth), ("base_width", width)))


# -- the two sides, each in a child process -------------------------------------------------------
def run_geoseg(inp: str, out: str, spec, tile: int, overlap: int, blend: str) -> float:
    from geoseg.inference.engine import predict_blended
    from geoseg.inference.options import PredictOptions
    from geoseg.io.masks import MaskWriter
    from geoseg.io.refs import SceneRef
    from geoseg.models.segmenter import get_segmenter

    get_segmenter(spec)  # model loading is not timed on either side
    t0 = time.perf_counter()
    with SceneRef(inp).open() as sc:
        shape, crs, transform = (sc.height, sc.width), sc.crs, sc.transform
    with MaskWriter(out, shape, crs=crs, transform=transform, overwrite=True) as writer:
        opts = PredictOptions(tile_size=tile, overlap=overlap, batch_size=4)
        predict_blended(inp, spec, opts, blend=blend, mask=writer.writer(), outlines=False)
    return time.perf_counter() - t0


def run_monai(inp: str, out: str, spec, tile: int, overlap: int, blend: str) -> float:
    import rasterio
    import torch
    from monai.inferers import sliding_window_inference

    from geoseg.models.segmenter import get_segmenter

    seg = get_segmenter(spec)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    t0 = time.perf_counter()
    if inp.endswith(".npy"):
        image = np.load(inp, allow_pickle=False).astype(np.float32)[None]
        profile = None
    else:
        with rasterio.open(inp) as ds:
            image = ds.read().astype(np.float32)
            profile = ds.profile
    x = torch.from_numpy(image)[None]  # (1, C, H, W) raw values

    def predictor(batch: torch.Tensor) -> torch.Tensor:  # the same normalisation and softmax
        return torch.softmax(seg.module(seg.normalize(batch.numpy())), dim=1)

    with torch.inference_mode():
        probs = sliding_window_inference(
            x, (tile, tile), 4, predictor, overlap=overlap / tile, mode=blend, sigma_scale=0.125
        )[0]
    mask = (probs[1] >= 0.5).numpy().astype(np.uint8)
    if profile is None:  # a .npy slice: a plain (pixel-space) TIFF
        profile = dict(driver="GTiff", width=mask.shape[1], height=mask.shape[0])
    profile.update(count=1, dtype="uint8", compress="deflate", nodata=None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(mask[None])
    return time.perf_counter() - t0


def child(args) -> None:
    spec = _model_spec(args, args.large_model)
    fn = run_geoseg if args.child == "geoseg" else run_monai
    seconds = fn(args.input, args.out, spec, args.tile, args.overlap, args.blend)
    Path(args.result).write_text(json.dumps({"seconds": seconds}))


# -- the parent: inputs, runs, ratios -------------------------------------------------------------
def measure(side: str, inp: Path, blend: str, args, large: bool, work: Path) -> dict:
    out = work / f"{side}-{inp.stem}-{blend}.tif"
    result = work / f"{side}-{inp.stem}-{blend}.json"
    options = {"--child": side, "--input": inp, "--out": out, "--result": result, "--blend": blend,
               "--tile": args.tile, "--overlap": args.overlap, "--depth": args.depth,
               "--base-width": args.base_width, "--large-depth": args.large_depth,
               "--large-base-width": args.large_base_width}  # fmt: skip
    cmd = [sys.executable, __file__, *(str(x) for kv in options.items() for x in kv)]
    if args.model:
        cmd += ["--model", args.model]
    if large:
        cmd.append("--large-model")
    gnu_time = shutil.which("time") or "/usr/bin/time"
    t0 = time.perf_counter()
    proc = subprocess.run([gnu_time, "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{side} failed on {inp}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {
        "rss_mb": kb / 1024,
        "wall": wall,
        "seconds": json.loads(result.read_text())["seconds"],
        "mask": out,
    }


def make_inputs(work: Path, slice_size: int, large: int) -> tuple[Path, Path]:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from geoseg.synth.lungs import lung_slices

    lung = next(s for s in lung_slices(4, size=slice_size, seed=11) if s.kind == "lung")
    slice_path = work / f"lung_{slice_size}.npy"
    np.save(slice_path, lung.image)
    big = work / f"lungs_{large}.tif"
    if not big.exists():
        profile = dict(driver="GTiff", width=large, height=large, count=1, dtype="int16", tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", crs="EPSG:32633",
                       transform=from_origin(500000, 6000000, 1, 1))  # fmt: skip
        tile = lung.image.astype(np.int16)
        n = tile.shape[0]
        with rasterio.open(big, "w", **profile) as dst:  # the slice repeated, written block by block
            for r in range(0, large, n):
                for c in range(0, large, n):
                    h, w = min(n, large - r), min(n, large - c)
                    dst.write(tile[None, :h, :w], window=Window(c, r, w, h))
    return slice_path, big


def _median_run(runs: list[dict]) -> dict:
    """Median time and largest peak RSS of repeated runs."""
    return {"seconds": float(np.median([r["seconds"] for r in runs])),
            "rss_mb": max(r["rss_mb"] for r in runs), "mask": runs[-1]["mask"]}  # fmt: skip


def _dice(a: Path, b: Path) -> float:
    import rasterio

    from geoseg.evaluation.dice import dice_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # pixel-space masks
        with rasterio.open(a) as da, rasterio.open(b) as db:
            return float(dice_score(da.read(1) > 0, db.read(1) > 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slice", type=int, default=512)
    ap.add_argument("--large", type=int, default=8000)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--blends", default="gaussian,constant")
    ap.add_argument("--large-blends", default="gaussian")
    ap.add_argument("--model", default=None, help="A U-Net checkpoint (default: random_init).")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--base-width", type=int, default=16)
    ap.add_argument("--large-depth", type=int, default=3)
    ap.add_argument("--large-base-width", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="Runs per side and case (median time).")
    ap.add_argument("--workdir", default="bench/.work")
    ap.add_argument("--child", choices=["geoseg", "monai"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--blend", help=argparse.SUPPRESS)
    ap.add_argument("--large-model", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    slice_path, big = make_inputs(work, args.slice, args.large)
    if args.model:  # one snapshot for every run, even if the checkpoint is rewritten meanwhile
        snapshot = work / f"model-snapshot{Path(args.model).suffix}"
        shutil.copyfile(args.model, snapshot)
        args.model = str(snapshot)
    cases = [(slice_path, b, False) for b in args.blends.split(",") if b]
    cases += [(big, b, True) for b in args.large_blends.split(",") if b]
    cores = len(os.sched_getaffinity(0))
    print(f"tile {args.tile}, overlap {args.overlap}, batch 4, {cores} cores, median of {args.repeat} runs")
    for inp, blend, large in cases:
        runs: dict[str, list[dict]] = {"geoseg": [], "monai": []}
        for _ in range(args.repeat):  # alternate the sides: a shared machine's load hits both
            for side in runs:
                runs[side].append(measure(side, inp, blend, args, large, work))
        g, m = (_median_run(runs[side]) for side in ("geoseg", "monai"))
        for side, rs in runs.items():  # on a shared machine the spread is the honest error bar
            print(f"  {side} runs: " + ", ".join(f"{r['seconds']:.1f} s" for r in rs))
        fastest = min(r["seconds"] for r in runs["geoseg"]) / min(r["seconds"] for r in runs["monai"])
        side = args.large if large else args.slice
        model = args.model or (
            f"U-Net depth {args.large_depth if large else args.depth} width "
            f"{args.large_base_width if large else args.base_width}"
        )
        print(
            f"{side} x {side} {blend:8s} ({model}): geoseg {g['seconds']:7.1f} s {g['rss_mb']:7.0f} MB | "
            f"MONAI {m['seconds']:7.1f} s {m['rss_mb']:7.0f} MB | time ratio geoseg/MONAI "
            f"{g['seconds'] / m['seconds']:.2f} (fastest runs {fastest:.2f}), "
            f"peak RSS ratio {g['rss_mb'] / m['rss_mb']:.2f}, "
            f"mask Dice {_dice(g['mask'], m['mask']):.4f}"
        )
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
