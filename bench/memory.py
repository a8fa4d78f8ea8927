"""Peak memory of `geoseg predict` on a 20000 x 20000 scene vs a 5000 x 5000 scene.

Both scenes have the same object density; the scene is read window by window and results are
polygons, so peak RSS should barely grow with the scene (the target ratio is <= 1.3).

    .venv/bin/python bench/memory.py [--big 20000] [--small 5000] [--workdir bench/.work]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import objects_scene, peak_rss_mb, rerun_line  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", type=int, default=20000)
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--tile-size", type=int, default=512)
    ap.add_argument("--workdir", default="bench/.work")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    geoseg = str(Path(sys.executable).with_name("geoseg"))
    rows = []
    for side in (args.small, args.big):
        scene, n = objects_scene(work, side)
        out = work / f"objects_{side}.gpkg"
        cmd = [geoseg, "-q", "predict", str(scene), "-m", "geoseg.models.plugins:threshold_instances",
               "--model-arg", "threshold=100", "--tile-size", str(args.tile_size), "-o", str(out),
               "--overwrite"]  # fmt: skip
        rss, wall = peak_rss_mb(cmd)
        rows.append((side, n, rss, wall))
        print(f"{side:>6} x {side:<6} {n:>7} objects  peak RSS {rss:8.1f} MB  wall {wall:7.1f} s")
    (s_side, _, s_rss, s_wall), (b_side, _, b_rss, b_wall) = rows
    print(
        f"peak RSS ratio {b_side}^2 / {s_side}^2: {b_rss / s_rss:.3f} (pixels x{(b_side / s_side) ** 2:.0f})"
    )
    print(f"wall ratio: {b_wall / s_wall:.2f}; throughput {b_side * b_side / b_wall / 1e6:.1f} Mpx/s")
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
