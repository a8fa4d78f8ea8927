"""geoseg vs sahi's sliced inference with the same Mask R-CNN weights, tile size and overlap.

Both run on the same scene in separate processes (peak RSS by GNU time). sahi gets a copy of the
same torchvision module with geoseg's normalisation moved into torchvision's own transform, no
resizing, no extra full-image pass, and its default merge (GREEDYNMM on IOS 0.5). Both outputs are
scored with `geoseg eval` against the truth: F1, duplicates and seam splits.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/sahi_compare.py SCENE TRUTH [--model CKPT] [--tile-size 512] [--overlap 128]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_MODEL = "geoseg/weights/tankers-light.safetensors"


def run_sahi(scene: str, model_path: str, tile: int, overlap: int, out: str) -> None:
    import geopandas as gpd
    import numpy as np
    import rasterio
    import shapely
    import torch
    from sahi.models.torchvision import TorchVisionDetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.utils.cv import get_coco_segmentation_from_bool_mask

    from geoseg.io.georef import pixel_to_crs
    from geoseg.models.checkpoint import load_checkpoint
    from geoseg.models.maskrcnn import no_resize

    t0 = time.perf_counter()
    seg = load_checkpoint(model_path)
    module = copy.deepcopy(seg.module).eval()
    module.transform.image_mean = [m / 255 for m in seg.mean.flatten().tolist()]
    module.transform.image_std = [s / 255 for s in seg.std.flatten().tolist()]
    no_resize(module, tile, tile)
    forward = module.forward

    def without_empty_masks(images, targets=None):
        # sahi raises on a detection whose mask gives it no polygon (empty, or only specks);
        # geoseg drops such masks too, so drop them before sahi sees them
        out = forward(images, targets)
        cleaned = []
        for o in out:
            binary = (o["masks"][:, 0] > 0.5).cpu().numpy()
            keep = torch.tensor(
                [bool(get_coco_segmentation_from_bool_mask(m)) for m in binary], dtype=torch.bool
            )
            cleaned.append({k: v[keep] for k, v in o.items()})
        return cleaned

    module.forward = without_empty_masks
    torch.set_num_threads(2)
    det = TorchVisionDetectionModel(
        model=module,
        confidence_threshold=0.5,
        category_mapping={"1": "tanker"},
        device="cpu",
        load_at_init=True,
    )
    with rasterio.open(scene) as src:  # sahi takes the whole image as one array
        image = np.moveaxis(src.read(), 0, -1)
        transform, crs = src.transform, src.crs
    result = get_sliced_prediction(
        image, det, slice_height=tile, slice_width=tile, overlap_height_ratio=overlap / tile,
        overlap_width_ratio=overlap / tile, perform_standard_pred=False, verbose=0,
    )  # fmt: skip
    geoms, scores = [], []
    for p in result.object_prediction_list:
        polys = [shapely.Polygon(np.array(s).reshape(-1, 2)) for s in p.mask.segmentation if len(s) >= 6]
        polys = [q if q.is_valid else shapely.make_valid(q) for q in polys]
        if polys:
            geoms.append(shapely.union_all(polys))
            scores.append(p.score.value)
    georef = pixel_to_crs(np.array(geoms, dtype=object), transform)
    gdf = gpd.GeoDataFrame({"score": scores}, geometry=list(georef), crs=crs)
    gdf.to_file(out, driver="GPKG")
    print(json.dumps({"seconds": time.perf_counter() - t0, "objects": len(gdf)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scene")
    ap.add_argument("truth")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--tile-size", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=128)
    ap.add_argument("--workdir", default="bench/.work")
    ap.add_argument("--child-sahi", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_sahi:
        run_sahi(args.scene, args.model, args.tile_size, args.overlap, args.out)
        return

    from bench.common import peak_rss_mb, rerun_line
    from geoseg.evaluation.objects import evaluate, read_vectors

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    truth = read_vectors(args.truth, "truth")
    geoseg_out, sahi_out = work / "geoseg.gpkg", work / "sahi.gpkg"
    geoseg_bin = str(Path(sys.executable).with_name("geoseg"))
    rows = {}
    rss, wall = peak_rss_mb([geoseg_bin, "-q", "predict", args.scene, "-m", args.model, "--tile-size",
                             str(args.tile_size), "--overlap", str(args.overlap), "-o", str(geoseg_out),
                             "--overwrite"])  # fmt: skip
    rows["geoseg"] = (rss, wall, evaluate(read_vectors(geoseg_out, "geoseg"), truth))
    # like for like: sahi has no notion of the sizes a model was trained on
    rss, wall = peak_rss_mb([geoseg_bin, "-q", "predict", args.scene, "-m", args.model, "--tile-size",
                             str(args.tile_size), "--overlap", str(args.overlap), "-o", str(geoseg_out),
                             "--overwrite", "--any-size"])  # fmt: skip
    rows["geoseg --any-size"] = (rss, wall, evaluate(read_vectors(geoseg_out, "geoseg"), truth))
    rss, wall = peak_rss_mb([sys.executable, __file__, args.scene, args.truth, "--model", args.model,
                             "--tile-size", str(args.tile_size), "--overlap", str(args.overlap),
                             "--child-sahi", "--out", str(sahi_out)])  # fmt: skip
    rows["sahi"] = (rss, wall, evaluate(read_vectors(sahi_out, "sahi"), truth))
    print(f"scene {args.scene}, model {args.model}, tile {args.tile_size}, overlap {args.overlap}")
    for name, (rss, wall, r) in rows.items():
        print(f"{name:>17}: F1 {r['f1']:.3f}  P {r['precision']:.3f}  R {r['recall']:.3f}  duplicates "
              f"{r['duplicates']}  seam splits {r['seam_splits']}  mean IoU {r['mean_iou']}  "
              f"peak RSS {rss:.0f} MB  wall {wall:.1f} s")  # fmt: skip
    g, s = rows["geoseg"], rows["sahi"]
    print(
        f"geoseg / sahi: wall {g[1] / s[1]:.2f}, peak RSS {g[0] / s[0]:.2f}, "
        f"F1 {g[2]['f1']:.3f} vs {s[2]['f1']:.3f}"
    )
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
