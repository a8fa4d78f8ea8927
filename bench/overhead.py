"""Pipeline overhead: `geoseg predict` wall time / the model's own forward time on the same tiles.

The model alone is the limit (ratio 1.0). Both are measured in one process, on the same tiles,
batch size and torch threads: first the model's predict() over tiles already in memory, then the
whole pipeline (Dask graph, windowed reads, vectorising, merging, georeferencing, writing GeoJSON),
then the model alone again; the ratio uses the mean of the two model runs.

    .venv/bin/python bench/overhead.py [--config light|resnet50] [--model CHECKPOINT] [--size 2048]
                                       [--tile-size 512] [--scene SCENE.tif]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geoseg.runtime import prefer_passive_openmp  # noqa: E402

prefer_passive_openmp()  # as geoseg predict does, before torch loads (a policy you set stays)

from bench.common import rerun_line  # noqa: E402
from geoseg.inference.engine import predict_scene  # noqa: E402
from geoseg.inference.options import PredictOptions  # noqa: E402
from geoseg.inference.plan import make_grid  # noqa: E402
from geoseg.io.refs import open_scene  # noqa: E402
from geoseg.io.vectors import write_vectors  # noqa: E402
from geoseg.models.segmenter import ModelSpec, get_segmenter  # noqa: E402
from geoseg.synth.scenes import random_boxes, write_scene  # noqa: E402


def model_alone(seg, tiles: list[np.ndarray], batch_size: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(tiles), batch_size):
        seg.predict(np.stack(tiles[i : i + batch_size]))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="light", choices=["light", "resnet50"])
    ap.add_argument("--model", default=None, help="a checkpoint or module:factory instead of a random model")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tile-size", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--scene", default=None, help="an existing scene instead of the generated one")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="geoseg-bench-"))
    scene = work / "scene.tif"
    boxes = random_boxes(args.size, args.size, args.size**2 // 40000, seed=1)
    import shapely
    from rasterio import features

    def draw(window):
        rng = np.random.default_rng([int(window.row_off), int(window.col_off)])
        h, w = int(window.height), int(window.width)
        out = rng.integers(60, 120, (3, h, w), dtype=np.uint8)
        from affine import Affine

        b = features.rasterize(
            ((g, 1) for g in boxes if g.intersects(shapely.box(window.col_off, window.row_off,
                                                                window.col_off + w, window.row_off + h))),
            out_shape=(h, w), transform=Affine.translation(window.col_off, window.row_off),
        )  # fmt: skip
        out[:, b == 1] = 230
        return out

    if args.scene:
        scene = Path(args.scene)
    else:
        write_scene(scene, args.size, args.size, draw, count=3)
    spec = ModelSpec(args.model) if args.model else ModelSpec(
        "geoseg.models.maskrcnn:random_init", (("config", args.config),)
    )  # fmt: skip
    opts = PredictOptions(tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size)
    seg = get_segmenter(spec)
    import torch

    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    with open_scene(scene) as sc:
        grid = make_grid(sc, seg, opts)
        tiles = [sc.read(t.window) for t in grid]
    seg.predict(np.stack(tiles[:1]))  # warm-up, excluded from both
    m1 = model_alone(seg, tiles, args.batch_size)
    t0 = time.perf_counter()
    result = predict_scene(scene, spec, opts)
    write_vectors(result.features, work / "out.geojson", overwrite=True)
    pipeline = time.perf_counter() - t0
    m2 = model_alone(seg, tiles, args.batch_size)
    model = (m1 + m2) / 2
    print(f"model: {args.model or 'random ' + args.config}; scene {args.scene or args.size}, "
          f"{len(tiles)} tiles of {args.tile_size} (overlap {args.overlap}), batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"model alone: {m1:.2f} s, {m2:.2f} s (mean {model:.2f} s, {len(tiles) / model:.2f} tiles/s)")
    print(f"geoseg predict: {pipeline:.2f} s ({result.stats['objects']} objects, "
          f"{result.stats['tile_parts']} tile parts; model inside the pipeline "
          f"{result.stats['model_seconds']:.2f} s)")  # fmt: skip
    print(f"pipeline / model ratio: {pipeline / model:.3f}")
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
