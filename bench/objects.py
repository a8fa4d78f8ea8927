"""Cost per object: `geoseg predict` on a lattice of small squares, time outside the model.

A 10000 x 10000 one-band GeoTIFF (tiled, written once into bench/.work/) holds a lattice of
250,000 squares of 10 x 10 px at a 20 px pitch; many straddle tile seams. `geoseg predict` finds
them with the threshold plug-in (tile 512, overlap 64, GeoParquet out) under GNU time. The model
itself is cheap here, so what is left is geoseg's cost per object: vectorising, merging,
georeferencing, measuring and writing. Printed: objects, wall seconds, model seconds (from
`--stats`), objects per second of non-model time, peak RSS, and the rerun command.

The output is checked against the lattice (every square once, exactly its outline) and, with
`--reference OTHER.parquet` (e.g. the output of an earlier version of geoseg on the same scene),
object for object against that: same count, same geometry, same common columns.

    .venv/bin/python bench/objects.py [--size 10000] [--workdir bench/.work] [--reference OLD.parquet]
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/objects.py --size 3000 --output OLD.parquet
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import peak_rss_mb, rerun_line  # noqa: E402

PITCH, SIDE, OFFSET = 20, 10, 5  # lattice: a SIDE-pixel square every PITCH pixels, OFFSET from 0


def lattice_scene(work: Path, size: int) -> tuple[Path, int]:
    """The lattice scene of ``size`` x ``size`` pixels (made once) and its number of squares."""
    from geoseg.synth.scenes import write_scene

    path = work / f"lattice_{size}.tif"
    n = (size // PITCH) ** 2
    if not path.exists():

        def draw(window):
            h, w = int(window.height), int(window.width)
            rows = (np.arange(h) + int(window.row_off)) % PITCH
            cols = (np.arange(w) + int(window.col_off)) % PITCH
            inside = ((rows >= OFFSET) & (rows < OFFSET + SIDE))[:, None] & (
                (cols >= OFFSET) & (cols < OFFSET + SIDE)
            )[None, :]
            rng = np.random.default_rng([int(window.row_off), int(window.col_off)])
            out = rng.integers(0, 20, (h, w), dtype=np.uint8)  # background noise below the threshold
            out[inside] = 200
            return out[None]

        write_scene(path, size, size, draw)
    return path, n


def lattice_truth(size: int, transform) -> np.ndarray:
    """The squares in the scene CRS, in geoseg's feature order (top to bottom, left to right)."""
    import shapely

    from geoseg.io.georef import pixel_to_crs

    k = size // PITCH
    r, c = np.divmod(np.arange(k * k), k)
    x0, y0 = c * PITCH + OFFSET, r * PITCH + OFFSET
    return pixel_to_crs(shapely.box(x0, y0, x0 + SIDE, y0 + SIDE), transform)


def same_objects(got, ref, label: str) -> bool:
    """Object for object (by id): same count, same geometry, same values in the common columns."""
    import shapely

    if len(got) != len(ref):
        print(f"{label}: {len(got)} objects, reference {len(ref)}")
        return False
    got, ref = got.sort_values("id").reset_index(drop=True), ref.sort_values("id").reset_index(drop=True)
    bad = np.flatnonzero(~shapely.equals(got.geometry.values, ref.geometry.values))
    exact = int(shapely.equals_exact(got.geometry.values, ref.geometry.values, tolerance=0).sum())
    columns = sorted((set(got.columns) & set(ref.columns)) - {"geometry", "detected_at"})
    differ = [c for c in columns if not got[c].equals(ref[c])]
    only = sorted(set(got.columns) ^ set(ref.columns))
    print(f"{label}: {len(got)} objects, {bad.size} geometries differ ({exact} identical vertex for "
          f"vertex), columns differing: {differ or 'none'}"
          + (f"; columns on one side only: {only}" if only else ""))  # fmt: skip
    return bad.size == 0 and not differ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10000, help="scene side in pixels (default 10000)")
    ap.add_argument("--workdir", default="bench/.work")
    ap.add_argument("--output", default=None, help="where the objects go (default: in the workdir)")
    ap.add_argument("--reference", default=None, help="a GeoParquet of the same scene to compare with")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    import geopandas as gpd
    import rasterio
    import shapely

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    scene, n = lattice_scene(work, args.size)
    out = Path(args.output) if args.output else work / f"lattice_{args.size}.parquet"
    stats_path = work / f"lattice_{args.size}.stats.json"
    geoseg = str(Path(sys.executable).with_name("geoseg"))
    cmd = [geoseg, "-q", "predict", str(scene), "-m", "geoseg.models.plugins:threshold_instances",
           "--model-arg", "threshold=100", "--tile-size", "512", "--overlap", "64",
           "--workers", str(args.workers), "-o", str(out), "--overwrite",
           "--stats", str(stats_path)]  # fmt: skip
    rss, wall = peak_rss_mb(cmd)
    stats = json.loads(stats_path.read_text())
    got = gpd.read_parquet(out)
    model = stats["model_seconds"]
    print(f"scene {args.size} x {args.size}, {n} squares, {stats['tiles']} tiles of 512 (overlap 64)")
    print(f"objects {len(got)}  wall {wall:.1f} s  model {model:.1f} s  (scene {stats['seconds']:.1f} s)")
    print(f"objects per second of non-model time: {len(got) / max(wall - model, 1e-9):,.0f}")
    print(f"peak RSS {rss:.1f} MB")
    with rasterio.open(scene) as src:
        truth = lattice_truth(args.size, src.transform)
    exact = len(got) == n and bool(shapely.equals(got.geometry.values, truth).all())
    print(f"every square once, exactly its outline: {'yes' if exact else 'NO'}")
    ok = exact
    if args.reference:
        ok &= same_objects(got, gpd.read_parquet(args.reference), f"vs {args.reference}")
    print(rerun_line(sys.argv))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
