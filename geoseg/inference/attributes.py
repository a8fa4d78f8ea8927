"""Ship attributes of detected objects: length, beam and heading in metres and degrees.

The ``"ship"`` measure set: :func:`geoseg.inference.features.to_features` adds these columns only for
models that declare it (``measures = ("ship",)``, as geoseg's Mask R-CNN tanker models do).

Each object is measured in a local azimuthal equidistant projection centred on it (built straight
from the scene CRS, so it works for any CRS, across the antimeridian, and for rotated rasters):
the oriented minimum rectangle gives the axis and the length (its long side); the beam is the median
width of cross-sections through the middle half of the length (the parallel midbody). The
rectangle's short side would overstate it: the outline of a raster mask is a staircase whose
corners stick out of the hull on a diagonal, by up to a pixel on each side. The heading is the
azimuth of the long axis, clockwise from true north, pointing to the bow. The bow is the narrower
end: a tanker's hull tapers to a point there while the stern is square.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer


def _bow_sign(poly: shapely.Geometry, centre: np.ndarray, axis: np.ndarray, length: float) -> float:
    """+1 if the bow lies along +axis, -1 otherwise (compares the area in each end slab)."""
    normal = np.array([-axis[1], axis[0]])
    span = 10 * length

    def slab(sign: float) -> float:
        near = centre + sign * axis * 0.3 * length
        far = centre + sign * axis * 0.6 * length
        box = shapely.Polygon(
            [near + normal * span, far + normal * span, far - normal * span, near - normal * span]
        )
        return shapely.intersection(poly, box).area

    return 1.0 if slab(1.0) <= slab(-1.0) else -1.0


#: cross-sections for the beam: this many, evenly over the middle half of the length
_SECTIONS = 21


def _midbody_beam(
    poly: shapely.Geometry, centre: np.ndarray, axis: np.ndarray, length: float, width: float
) -> float:
    """Median width of ``poly`` across ``axis`` over the middle half of its length."""
    normal = np.array([-axis[1], axis[0]])
    at = centre + np.outer(np.linspace(-0.25, 0.25, _SECTIONS) * length, axis)
    reach = normal * (2 * width + 1)
    lines = shapely.linestrings(np.stack([at - reach, at + reach], axis=1))
    widths = shapely.length(shapely.intersection(poly, lines))
    return float(np.median(widths)) if widths.max() > 0 else float(width)


def ship_attributes(geoms: np.ndarray, crs) -> pd.DataFrame:
    """``length_m``, ``beam_m`` and ``heading_deg`` of each geometry (in ``crs``); null without a
    CRS or for an empty geometry."""
    n = len(geoms)
    out = {k: np.full(n, np.nan) for k in ("length_m", "beam_m", "heading_deg")}
    if crs is None or n == 0:
        return pd.DataFrame({k: pd.array(v, dtype="Float64") for k, v in out.items()})
    src = CRS.from_user_input(crs)
    to_ll = Transformer.from_crs(src, 4326, always_xy=True)
    local_frames: dict[tuple[float, float], Transformer] = {}
    for i, g in enumerate(geoms):
        if g is None or g.is_empty:
            continue
        c = g.centroid
        lon, lat = to_ll.transform(c.x, c.y)
        # objects within ~1 km share a frame: the scale error there is ~1e-8, the north error ~0.01 deg
        key = (round(lat, 2), round(lon, 2))
        if key not in local_frames:
            local = CRS.from_proj4(f"+proj=aeqd +lat_0={key[0]} +lon_0={key[1]} +datum=WGS84 +units=m")
            local_frames[key] = Transformer.from_crs(src, local, always_xy=True)
        tr = local_frames[key]
        gm = shapely.transform(g, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        rect = np.array(shapely.oriented_envelope(gm).exterior.coords)[:4]
        sides = np.diff(np.vstack([rect, rect[:1]]), axis=0)
        lengths = np.hypot(sides[:, 0], sides[:, 1])
        k = int(np.argmax(lengths[:2]))
        length, beam = lengths[k], lengths[1 - k]
        axis = sides[k] / max(length, 1e-12)
        centre = rect.mean(axis=0)
        axis = axis * _bow_sign(gm, centre, axis, length)
        beam = _midbody_beam(gm, centre, axis, length, beam)
        out["length_m"][i] = round(float(length), 2)
        out["beam_m"][i] = round(float(beam), 2)
        out["heading_deg"][i] = round(math.degrees(math.atan2(axis[0], axis[1])) % 360, 2)
    return pd.DataFrame({k: pd.array(v, dtype="Float64") for k, v in out.items()})
