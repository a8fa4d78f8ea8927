"""From scene pixel space to the scene CRS, and measurements in metres for any CRS."""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer

_GEOD = Geod(ellps="WGS84")


def pixel_to_crs(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Apply a raster's affine transform (rotation and shear included) to pixel-space geometries."""
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f

    def fn(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([a * col + b * row + c, d * col + e * row + f])

    return shapely.transform(np.asarray(geoms, dtype=object), fn)


def to_lonlat(geoms: np.ndarray, crs) -> np.ndarray:
    """Geometries in ``crs`` to WGS84 lon/lat (no antimeridian handling: for measuring)."""
    src = CRS.from_user_input(crs)
    if src.equals(CRS.from_epsg(4326)):
        return np.asarray(geoms, dtype=object)
    tr = Transformer.from_crs(src, 4326, always_xy=True)

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(np.asarray(geoms, dtype=object), fn)


def geodesic_areas(lonlat_geoms: np.ndarray) -> np.ndarray:
    """Areas in square metres on the WGS84 ellipsoid of lon/lat geometries."""
    return np.array(
        [abs(_GEOD.geometry_area_perimeter(g)[0]) if g is not None else np.nan for g in lonlat_geoms]
    )


def ground_sample_distance(transform: Affine, crs, width: int, height: int) -> float:
    """Ground sample distance in metres at the centre of a raster: the geometric mean of the ground
    lengths of one pixel step along a row and along a column (any CRS, rotated transforms too)."""
    col, row = width / 2, height / 2
    pts = np.array([transform * (col, row), transform * (col + 1, row), transform * (col, row + 1)])
    lon, lat = Transformer.from_crs(CRS.from_user_input(crs), 4326, always_xy=True).transform(
        pts[:, 0], pts[:, 1]
    )
    _, _, dist = _GEOD.inv([lon[0], lon[0]], [lat[0], lat[0]], lon[1:], lat[1:])
    return float(np.sqrt(dist[0] * dist[1]))
