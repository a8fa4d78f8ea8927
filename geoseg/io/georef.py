"""From scene pixel space to the scene CRS, and measurements in metres for any CRS."""

from __future__ import annotations

import functools

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer

_GEOD = Geod(ellps="WGS84")
_RING_AREA = _GEOD.polygon_area_perimeter  # one ring's signed area and perimeter


def pixel_to_crs(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Apply a raster's affine transform (rotation and shear included) to pixel-space geometries."""
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f

    def fn(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([a * col + b * row + c, d * col + e * row + f])

    return shapely.transform(np.asarray(geoms, dtype=object), fn)


def pyproj_crs(crs) -> CRS | None:
    """``crs`` (a rasterio CRS, WKT or any pyproj input) as a pyproj CRS, parsed once per CRS:
    geopandas parses each CRS it is given again, which costs more than a small scene's frame."""
    if crs is None or isinstance(crs, CRS):
        return crs
    return _parsed_crs(crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs))


@functools.lru_cache(maxsize=64)
def _parsed_crs(crs: str) -> CRS:
    return CRS.from_user_input(crs)


def to_lonlat(geoms: np.ndarray, crs) -> np.ndarray:
    """Geometries in ``crs`` to WGS84 lon/lat (no antimeridian handling: for measuring)."""
    tr = _lonlat_transformer(crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs))
    if tr is None:
        return np.asarray(geoms, dtype=object)

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(np.asarray(geoms, dtype=object), fn)


@functools.lru_cache(maxsize=64)
def _lonlat_transformer(crs: str) -> Transformer | None:
    """The transformer from ``crs`` (WKT or any pyproj input) to lon/lat, None if it is lon/lat:
    made once per CRS (parsing a CRS and building a transformer cost more than transforming a
    scene's objects). pyproj's transformers are thread-safe."""
    src = CRS.from_user_input(crs)
    if src.equals(CRS.from_epsg(4326)):
        return None
    return Transformer.from_crs(src, 4326, always_xy=True)


def geodesic_areas(lonlat_geoms: np.ndarray) -> np.ndarray:
    """Areas in square metres on the WGS84 ellipsoid of lon/lat geometries; NaN for None.

    The numbers of pyproj's ``Geod.geometry_area_perimeter``, geometry by geometry: the signed
    area of each ring, holes counting against their shell, summed in the same order. Polygons and
    multipolygons are read in one pass over all their coordinates instead of through shapely's
    Python objects one geometry at a time.

    >>> square = shapely.box(10.0, 55.0, 10.001, 55.001)
    >>> a = geodesic_areas(np.array([square, shapely.MultiPolygon([square, square]), None]))
    >>> a.round(1).tolist(), bool(a[0] == abs(_GEOD.geometry_area_perimeter(square)[0]))
    ([7124.0, 14247.9, nan], True)
    """
    geoms = np.asarray(lonlat_geoms, dtype=object).reshape(-1)
    out = np.full(geoms.size, np.nan)
    kind = shapely.get_type_id(geoms)
    polygonal = np.isin(kind, [shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON])
    polygonal &= ~shapely.is_empty(geoms)
    for i in np.flatnonzero((kind >= 0) & ~polygonal):  # lines, collections, empties: as pyproj does
        out[i] = abs(_GEOD.geometry_area_perimeter(geoms[i])[0])
    fast = np.flatnonzero(polygonal)
    if fast.size == 0:
        return out
    _, xy, offsets = shapely.to_ragged_array(geoms[fast])
    if len(offsets) == 2:  # polygons only: each geometry is one polygon
        offsets = (*offsets, np.arange(fast.size + 1))
    ring_end, poly_end, geom_end = offsets
    lon, lat = np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1])
    ring_area = np.array(
        [
            _RING_AREA(lon[s:e], lat[s:e])[0]
            for s, e in zip(ring_end[:-1].tolist(), ring_end[1:].tolist(), strict=True)
        ]
    )
    out[fast] = np.abs(_sum_in_order(_sum_in_order(ring_area, poly_end), geom_end))
    return out


def _sum_in_order(values: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Sums of ``values[ends[i]:ends[i + 1]]`` added left to right (what pyproj's Python loop does;
    numpy's own reductions add pairwise, which may round differently)."""
    starts, counts = ends[:-1], np.diff(ends)
    total = values[starts].copy()
    for k in range(1, int(counts.max(initial=1))):
        more = counts > k
        total[more] += values[starts[more] + k]
    return total


def ground_sample_distance(transform: Affine, crs, width: int, height: int) -> float:
    """Ground sample distance in metres at the centre of a raster: the geometric mean of the ground
    lengths of one pixel step along a row and along a column (any CRS, rotated transforms too)."""
    col, row = width / 2, height / 2
    pts = np.array([transform * (col, row), transform * (col + 1, row), transform * (col, row + 1)])
    tr = _lonlat_transformer(crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs))
    lon, lat = (pts[:, 0], pts[:, 1]) if tr is None else tr.transform(pts[:, 0], pts[:, 1])
    _, _, dist = _GEOD.inv([lon[0], lon[0]], [lat[0], lat[0]], lon[1:], lat[1:])
    return float(np.sqrt(dist[0] * dist[1]))


def lonlat_footprint(transform: Affine, width: int, height: int, crs) -> dict | None:
    """A raster's outline in EPSG:4326 as a GeoJSON geometry (each edge densified into four
    segments, coordinates rounded to 7 decimals), or None without a CRS (a slice in pixel space)."""
    if crs is None:
        return None
    from rasterio.warp import transform_geom

    left, top = transform * (0, 0)
    right, bottom = transform * (width, height)
    box = shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    box = shapely.segmentize(box, max(abs(right - left), abs(bottom - top)) / 4)
    geom = transform_geom(crs, "EPSG:4326", shapely.geometry.mapping(box))
    ring = [[round(x, 7), round(y, 7)] for x, y in geom["coordinates"][0]]
    return {"type": "Polygon", "coordinates": [ring]}
