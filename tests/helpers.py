"""Generated rasters for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin


def write_raster(path, data, *, crs="EPSG:32633", transform=None, nodata=None, tiled=True) -> Path:
    """Write a (H, W) or (C, H, W) array as a tiled, compressed GeoTIFF."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    transform = transform or from_origin(500000, 6000000, 2.0, 2.0)
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="deflate",
    )
    if tiled and height >= 16 and width >= 16:
        profile.update(
            tiled=True, blockxsize=256 if width >= 256 else 16, blockysize=256 if height >= 256 else 16
        )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return Path(path)


def objects_array(height: int = 2300, width: int = 2200, seed: int = 0) -> np.ndarray:
    """A uint8 scene of bright objects on a dark background that exercises the merge: many
    rectangles, objects longer than 1024 px, a ring with a hole, an L shape, a U shape and pairs
    3 px apart, several straddling tile seams."""
    rng = np.random.default_rng(seed)
    a = np.zeros((height, width), np.uint8)
    for _ in range(120):
        r, c = rng.integers(0, height - 60), rng.integers(0, width - 60)
        a[r : r + rng.integers(4, 60), c : c + rng.integers(4, 60)] = 200
    a[1100:1118, 10 : width - 10] = 220  # longer than a 1024 tile, horizontal
    a[40 : height - 40, 1500:1512] = 220  # longer than a 1024 tile, vertical
    a[480:600, 480:600] = 210  # ring with a hole, across the 512 seams
    a[510:570, 510:570] = 0
    a[1700:1900, 700:720] = 230  # L shape
    a[1880:1900, 700:900] = 230
    a[200:400, 1000:1020] = 230  # U shape: arms joined only at the bottom
    a[200:400, 1060:1080] = 230
    a[380:400, 1000:1080] = 230
    for r, c in [(250, 250), (760, 1010), (2000, 500), (1300, 2040)]:  # pairs 3 px apart
        a[r : r + 70, c : c + 30] = 200
        a[r : r + 70, c + 33 : c + 60] = 200
    a[300:340, 1800:1840] = 0  # carve a gap so the long vertical object stays simple nearby
    return a
