"""Synthetic scenes for tests, benchmarks and demos, written window by window.

A scene is described by a list of shapes in pixel space; each block of the output GeoTIFF is
rasterised from the shapes that touch it, so a 20000 x 20000 scene never sits in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio import features
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg.io.atomic import atomic_path
from geoseg.io.georef import pixel_to_crs


def write_scene(
    path: str | os.PathLike,
    height: int,
    width: int,
    draw: Callable[[Window], np.ndarray],
    *,
    count: int = 1,
    dtype: str = "uint8",
    crs: str = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
    block: int = 512,
    tags: dict | None = None,
) -> Path:
    """Write a tiled, deflate-compressed GeoTIFF whose blocks come from ``draw(window)``
    (returning ``(count, h, w)``), with averaged overviews down to under 512 pixels a side (as
    delivered scenes have them), and metadata ``tags``, to a temporary file renamed into place."""
    path = Path(path)
    profile = dict(
        driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=crs,
        transform=transform or from_origin(500000, 6000000, 1.0, 1.0), nodata=nodata,
        tiled=True, blockxsize=block, blockysize=block, compress="deflate", predictor=2, BIGTIFF="IF_SAFER",
    )  # fmt: skip
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, height, block):
            for col in range(0, width, block):
                window = Window(col, row, min(block, width - col), min(block, height - row))
                dst.write(draw(window), window=window)
        if tags:
            dst.update_tags(**tags)
        factors = [2**k for k in range(1, 16) if max(width, height) / 2 ** (k - 1) > 512]
        if factors:
            dst.build_overviews(factors, Resampling.average)
    return path


def random_boxes(height: int, width: int, n: int, *, seed: int = 0, size=(8, 60)) -> np.ndarray:
    """``n`` random axis-aligned boxes (pixel-space shapely geometries) inside the scene."""
    rng = np.random.default_rng(seed)
    h = rng.integers(size[0], size[1], n)
    w = rng.integers(size[0], size[1], n)
    r = rng.integers(0, height - size[1], n)
    c = rng.integers(0, width - size[1], n)
    return shapely.box(c, r, c + w, r + h)


def shapes_scene(
    path: str | os.PathLike,
    height: int,
    width: int,
    shapes: np.ndarray,
    *,
    value: int = 200,
    noise: int = 20,
    seed: int = 0,
    crs: str = "EPSG:32633",
    transform: Affine | None = None,
    truth: str | os.PathLike | None = None,
) -> Path:
    """A one-band uint8 scene of ``shapes`` (pixel space) at ``value`` over background noise in
    ``[0, noise)``; optionally writes the shapes, georeferenced, as a truth GeoJSON."""
    transform = transform or from_origin(500000, 6000000, 1.0, 1.0)
    tree = shapely.STRtree(shapes)

    def draw(window: Window) -> np.ndarray:
        h, w = int(window.height), int(window.width)
        rng = np.random.default_rng([seed, int(window.row_off), int(window.col_off)])
        out = rng.integers(0, max(1, noise), (h, w), dtype=np.uint8)
        bbox = shapely.box(window.col_off, window.row_off, window.col_off + w, window.row_off + h)
        hits = shapes[tree.query(bbox, predicate="intersects")]
        if len(hits):
            local = Affine.translation(window.col_off, window.row_off)
            burned = features.rasterize(((g, 1) for g in hits), out_shape=(h, w), transform=local)
            out[burned == 1] = value
        return out[None]

    write_scene(path, height, width, draw, crs=crs, transform=transform)
    if truth is not None:
        geoms = pixel_to_crs(shapes, transform)
        gdf = gpd.GeoDataFrame({"id": np.arange(1, len(shapes) + 1)}, geometry=list(geoms), crs=crs)
        from geoseg.io.vectors import write_vectors

        write_vectors(gdf, truth, overwrite=True)
    return Path(path)
