"""Synthetic satellite scenes of oil tankers, with their truth, written window by window.

Sea with texture and noise, optional land along a coastline and thin clouds; tankers with real
proportions (length 100-350 m, beam 15-60 m at a length/beam ratio of 5.5-7), a pointed bow,
a white superstructure at the stern, a deck pipeline, a shadow, and a wake when under way; some
alone, some in anchorage clusters side by side a few metres apart. Everything is seeded: the same
arguments give the same file, and any window can be drawn on its own, so a 20000 x 20000 scene
never sits in memory.

``randomize`` draws a domain-randomised :class:`Look` (sea colour and state, sun azimuth, shadow
depth, deck and superstructure colours, glint, haze, gain) over the same layout, for training. A
second scene family, drawn another way and used for evaluation only, is
:mod:`geoseg.synth.tankers_b`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod
from rasterio import features
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg.io.georef import pixel_to_crs, to_lonlat
from geoseg.synth.scenes import write_scene

_GEOD = Geod(ellps="WGS84")
DECKS = [(120, 58, 48), (64, 92, 66), (96, 96, 100), (140, 70, 40), (70, 70, 90)]


def ship_to_scene(pts: np.ndarray, cx: float, cy: float, heading: float) -> np.ndarray:
    """Ship frame (x towards the bow, y to starboard, pixels) to scene pixels (col, row) for a ship
    centred at (cx, cy) with ``heading`` degrees clockwise from up."""
    h = math.radians(heading)
    fwd = np.array([math.sin(h), -math.cos(h)])
    stb = np.array([math.cos(h), math.sin(h)])
    return np.array([cx, cy]) + pts[:, :1] * fwd + pts[:, 1:] * stb


@dataclass(frozen=True)
class Tanker:
    """A tanker in scene pixel space: centre, size in pixels and image heading (degrees clockwise
    from up, i.e. from north on a north-up scene)."""

    cx: float
    cy: float
    length: float
    beam: float
    heading: float
    deck: int
    moving: bool
    cluster: int  # -1 when alone

    def _place(self, pts: np.ndarray) -> np.ndarray:
        return ship_to_scene(pts, self.cx, self.cy, self.heading)

    def hull(self) -> shapely.Polygon:
        L, B = self.length, self.beam
        x = np.array([-0.5, -0.49, -0.49, -0.5, 0.32, 0.44, 0.5, 0.44, 0.32]) * L
        y = np.array([-0.46, -0.5, 0.5, 0.46, 0.5, 0.34, 0.0, -0.34, -0.5]) * B
        order = [0, 1, 8, 7, 6, 5, 4, 2, 3]
        return shapely.Polygon(self._place(np.column_stack([x[order], y[order]])))

    def superstructure(self) -> shapely.Polygon:
        L, B = self.length, self.beam
        x = np.array([-0.47, -0.36, -0.36, -0.47]) * L
        y = np.array([-0.4, -0.4, 0.4, 0.4]) * B
        return shapely.Polygon(self._place(np.column_stack([x, y])))

    def pipeline(self) -> shapely.Polygon:
        L, B = self.length, self.beam
        w = max(0.6, 0.05 * B)
        x = np.array([-0.33, 0.3, 0.3, -0.33]) * L
        y = np.array([-w, -w, w, w])
        return shapely.Polygon(self._place(np.column_stack([x, y])))

    def shadow(self, sun: tuple[float, float]) -> shapely.Polygon:
        return shapely.affinity.translate(self.hull(), sun[0] * self.beam * 0.25, sun[1] * self.beam * 0.25)

    def wake(self) -> shapely.Polygon:
        L, B = self.length, self.beam
        pts = np.array([[-0.5 * L, -0.4 * B], [-2.2 * L, -1.6 * B], [-2.2 * L, 1.6 * B], [-0.5 * L, 0.4 * B]])
        return shapely.Polygon(self._place(pts))

    def bow_stern(self) -> tuple[tuple[float, float], tuple[float, float]]:
        bow, stern = self._place(np.array([[0.5 * self.length, 0.0], [-0.5 * self.length, 0.0]]))
        return tuple(bow), tuple(stern)

    def beam_ends(self) -> tuple[tuple[float, float], tuple[float, float]]:
        a, b = self._place(np.array([[0.0, -0.5 * self.beam], [0.0, 0.5 * self.beam]]))
        return tuple(a), tuple(b)


# -- coherent noise that any window can evaluate on its own ---------------------------------------
def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    h = (ix.astype(np.uint64) * np.uint64(0x9E3779B1)) ^ (iy.astype(np.uint64) * np.uint64(0x85EBCA77))
    h ^= np.uint64(seed * 0xC2B2AE3D & 0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h *= np.uint64(0x2C1B3C6D)
    h ^= h >> np.uint64(12)
    h *= np.uint64(0x297A2D39)
    h ^= h >> np.uint64(15)
    return (h & np.uint64(0xFFFFFF)).astype(np.float64) / float(0xFFFFFF)


def value_noise(rows: np.ndarray, cols: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1] at global pixel coordinates (``rows`` (h, 1), ``cols`` (1, w))."""
    fy, fx = rows / scale, cols / scale
    iy, ix = np.floor(fy), np.floor(fx)
    ty, tx = fy - iy, fx - ix
    ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
    iy, ix = iy.astype(np.int64) + (1 << 20), ix.astype(np.int64) + (1 << 20)
    v00, v01 = _hash01(ix, iy, seed), _hash01(ix + 1, iy, seed)
    v10, v11 = _hash01(ix, iy + 1, seed), _hash01(ix + 1, iy + 1, seed)
    return (v00 * (1 - tx) + v01 * tx) * (1 - ty) + (v10 * (1 - tx) + v11 * tx) * ty


def fractal(rows, cols, scale: float, octaves: int, seed: int) -> np.ndarray:
    total, amp, norm = 0.0, 1.0, 0.0
    for k in range(octaves):
        total = total + amp * value_noise(rows, cols, scale / 2**k, seed + 101 * k)
        norm += amp
        amp *= 0.5
    return total / norm


# -- layout -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Look:
    """How a scene's sea, light and ships look. The default is the plain scene; :func:`random_look`
    draws one for domain-randomised training scenes (``geoseg synth tankers --randomize``)."""

    sea: tuple[float, float, float] = (18.0, 38.0, 58.0)
    swell: float = 14.0
    noise: float = 3.5
    sun: tuple[float, float] = (0.6, 0.8)  # shadow offset per pixel of beam
    shadow: float = 0.55
    decks: tuple = tuple(DECKS)
    rim: float = 170.0
    pipe: float = 200.0
    bridge: float = 225.0
    glint: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 0.0)  # row, col, radius (px), strength
    haze: float = 0.0  # largest share of haze over the scene
    gain: float = 1.0


def random_look(seed: int, height: int, width: int) -> Look:
    """A domain-randomised look: sea colour and state, sun azimuth and shadow depth, deck,
    rim and superstructure colours, sun glint, haze and sensor gain."""
    rng = np.random.default_rng([seed, 5150])
    u = rng.uniform
    depth = u(0, 1)
    sea = (u(8, 60) * (1 - 0.4 * depth), u(22, 85), u(35, 100) * (1 - 0.3 * depth))
    az = u(0, 2 * np.pi)
    decks = tuple(tuple(float(c) for c in rng.uniform(25, 200, 3)) for _ in range(8))
    strength = u(40, 130) if rng.random() < 0.4 else 0.0
    glint = (u(0, height), u(0, width), u(0.3, 0.8) * max(height, width), strength)
    return Look(sea=sea, swell=u(5, 26), noise=u(2, 8), sun=(0.9 * np.sin(az), 0.9 * np.cos(az)),
                shadow=u(0.4, 0.8), decks=decks, rim=u(110, 210), pipe=u(150, 220), bridge=u(180, 245),
                glint=glint, haze=u(0, 0.45) if rng.random() < 0.4 else 0.0, gain=u(0.85, 1.15))  # fmt: skip


@dataclass(frozen=True)
class SceneSpec:
    height: int
    width: int
    gsd: float
    seed: int
    land: bool
    clouds: bool
    look: Look = Look()

    def land_field(self, rows, cols) -> np.ndarray:
        """> 0 on land: a coastline running across the scene's left part, ragged by noise."""
        if not self.land:
            return np.full(np.broadcast_shapes(np.shape(rows), np.shape(cols)), -1.0)
        n = fractal(rows, cols, 1500 / self.gsd, 4, self.seed + 7) - 0.5
        return 0.18 - cols / self.width + 0.25 * n

    def cloud_alpha(self, rows, cols) -> np.ndarray:
        if not self.clouds:
            return np.zeros(np.broadcast_shapes(np.shape(rows), np.shape(cols)))
        n = fractal(rows, cols, 2500 / self.gsd, 5, self.seed + 13)
        return np.clip((n - 0.58) * 2.5, 0, 0.4)


def layout(spec: SceneSpec, n: int, *, cluster_fraction: float = 0.4) -> list[Tanker]:
    """Place ``n`` tankers on the sea, without overlaps; about ``cluster_fraction`` of them in
    anchorage clusters of 2-4 side by side, 3-10 m apart."""
    rng = np.random.default_rng(spec.seed)
    placed: list[Tanker] = []
    hulls: list[shapely.Polygon] = []
    margin = 5.0 / spec.gsd  # at least 5 m between tankers that are not in one cluster
    cluster_id = 0
    attempts = 0
    while len(placed) < n and attempts < 200 * n:
        attempts += 1
        length_m = rng.uniform(100, 350)
        beam_m = float(np.clip(length_m / rng.uniform(5.5, 7.0), 15, 60))
        heading = rng.uniform(0, 360)
        size = 1 if rng.random() > cluster_fraction else int(rng.integers(2, 5))
        size = min(size, n - len(placed))
        cx = rng.uniform(0.05, 0.95) * spec.width
        cy = rng.uniform(0.05, 0.95) * spec.height
        group = []
        h = math.radians(heading)
        stb = np.array([math.cos(h), math.sin(h)])
        offset = 0.0
        for k in range(size):
            lk = length_m * rng.uniform(0.85, 1.15) if k else length_m
            bk = float(np.clip(lk / rng.uniform(5.5, 7.0), 15, 60)) if k else beam_m
            if k:
                offset += (group[-1].beam * spec.gsd / 2 + bk / 2 + rng.uniform(3, 10)) / spec.gsd
            c = np.array([cx, cy]) + offset * stb
            group.append(
                Tanker(float(c[0]), float(c[1]), lk / spec.gsd, bk / spec.gsd,
                       (heading + rng.normal(0, 1)) % 360 if k else heading,
                       int(rng.integers(len(DECKS))), bool(rng.random() < 0.3 and size == 1),
                       cluster_id if size > 1 else -1)
            )  # fmt: skip
        polys = [t.hull() for t in group]
        if any(a.distance(b) < 2.0 / spec.gsd for i, a in enumerate(polys) for b in polys[i + 1 :]):
            continue  # side by side, but at least 2 m of water between hulls
        bounds = shapely.box(0, 0, spec.width, spec.height)
        if not all(bounds.contains(p) for p in polys):
            continue
        if any(shapely.intersects(p.buffer(margin), q) for p in polys for q in hulls):
            continue
        pts = np.array([xy for p in polys for xy in p.exterior.coords])
        if (spec.land_field(pts[:, 1], pts[:, 0]) > -0.02).any():
            continue
        placed.extend(group)
        hulls.extend(polys)
        cluster_id += size > 1
    return placed


# -- rendering ------------------------------------------------------------------------------------
def render(spec: SceneSpec, tankers: list[Tanker], window: Window) -> np.ndarray:
    """Draw one window of the scene: uint8 (3, h, w)."""
    h, w = int(window.height), int(window.width)
    r0, c0 = int(window.row_off), int(window.col_off)
    rows = np.arange(r0, r0 + h, dtype=np.float64)[:, None]
    cols = np.arange(c0, c0 + w, dtype=np.float64)[None, :]
    rng = np.random.default_rng([spec.seed, r0, c0])
    look = spec.look
    swell = fractal(rows, cols, 400 / spec.gsd, 4, spec.seed + 1) - 0.5
    sea = np.array(look.sea)[:, None, None] + look.swell * swell[None]
    img = sea + rng.normal(0, look.noise, (3, h, w))
    if look.glint[3]:
        gr, gc, radius, strength = look.glint
        img = img + strength * np.exp(-((rows - gr) ** 2 + (cols - gc) ** 2) / (2 * radius**2))[None]

    local = Affine.translation(c0, r0)
    bbox = shapely.box(c0, r0, c0 + w, r0 + h)
    sun = look.sun
    mine = [t for t in tankers if t.wake().union(t.shadow(sun)).union(t.hull()).intersects(bbox)]

    def burn(geom) -> np.ndarray:
        return features.rasterize([(geom, 1)], out_shape=(h, w), transform=local).astype(bool)

    for t in mine:
        if t.moving:
            m = burn(t.wake())
            img[:, m] += 16 * (1 - 0.5 * rng.random(int(m.sum())))
        m = burn(t.shadow(sun))
        img[:, m] *= look.shadow
    for t in mine:
        m = burn(t.hull())
        deck = np.array(look.decks[t.deck % len(look.decks)], dtype=np.float64)[:, None]
        img[:, m] = deck + rng.normal(0, 6, (3, int(m.sum())))
        edge = m & ~burn(t.hull().buffer(-max(1.0, 0.06 * t.beam)))
        img[:, edge] = look.rim + rng.normal(0, 8, (3, int(edge.sum())))
        m = burn(t.pipeline())
        img[:, m] = look.pipe
        m = burn(t.superstructure())
        img[:, m] = look.bridge + rng.normal(0, 6, (3, int(m.sum())))

    if spec.land:
        field = spec.land_field(rows, cols)
        on_land = field > 0
        if on_land.any():
            tex = fractal(rows, cols, 120 / spec.gsd, 4, spec.seed + 3)
            land = np.array([105.0, 100.0, 78.0])[:, None, None] + 60 * (tex[None] - 0.5)
            beach = (field > 0) & (field < 0.01)
            land[:, beach] = 200
            img = np.where(on_land[None], land + rng.normal(0, 4, (3, h, w)), img)
    alpha = spec.cloud_alpha(rows, cols)
    if alpha.any():
        img = img * (1 - alpha[None]) + 235 * alpha[None]
    if look.haze:
        a = look.haze * fractal(rows, cols, 3000 / spec.gsd, 3, spec.seed + 19)
        img = img * (1 - a[None]) + 190.0 * a[None]
    if look.gain != 1.0:
        img = img * look.gain
    return np.clip(img, 0, 255).astype(np.uint8)


def truth_frame(tankers: list[Tanker], transform: Affine, crs) -> gpd.GeoDataFrame:
    """True hulls in the scene CRS with length_m, beam_m and heading_deg measured geodesically."""
    hulls = np.array([t.hull() for t in tankers], dtype=object)
    geoms = pixel_to_crs(hulls, transform)
    ends = np.array([shapely.LineString(t.bow_stern()) for t in tankers] or [], dtype=object)
    beams = np.array([shapely.LineString(t.beam_ends()) for t in tankers] or [], dtype=object)
    rows = []
    if len(tankers):
        ends_ll = to_lonlat(pixel_to_crs(ends, transform), crs)
        beams_ll = to_lonlat(pixel_to_crs(beams, transform), crs)
        for e, b in zip(ends_ll, beams_ll, strict=True):
            (bx, by), (sx, sy) = e.coords
            az, _, length = _GEOD.inv(sx, sy, bx, by)
            (ax, ay), (cx, cy) = b.coords
            _, _, beam = _GEOD.inv(ax, ay, cx, cy)
            rows.append((round(length, 2), round(beam, 2), round(az % 360, 2)))
    length, beam, heading = (np.array(c) for c in zip(*rows, strict=True)) if rows else ([], [], [])
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(tankers) + 1),
            "class": ["tanker"] * len(tankers),
            "length_m": length,
            "beam_m": beam,
            "heading_deg": heading,
            "cluster": [t.cluster for t in tankers],
        },
        geometry=list(geoms),
        crs=crs,
    )


def tanker_scene(
    path: str | os.PathLike,
    *,
    size: int | tuple[int, int] = 8000,
    gsd: float = 1.5,
    crs: str = "EPSG:32631",
    origin: tuple[float, float] | None = None,
    n_tankers: int | None = None,
    seed: int = 0,
    land: bool = True,
    clouds: bool = False,
    cluster_fraction: float = 0.4,
    randomize: bool = False,
    truth: str | os.PathLike | None = None,
) -> tuple[Path, gpd.GeoDataFrame]:
    """Write a tanker scene (3-band uint8 GeoTIFF) and return (path, truth in the scene CRS).

    ``n_tankers`` defaults to about one per 1.5 km^2 of scene; about ``cluster_fraction`` of the
    placements are anchorage clusters. The truth is also written to ``truth`` (GeoJSON, or any
    format geoseg writes) when given. ``randomize``: a domain-randomised look (:func:`random_look`)
    over the same layout, for training.
    """
    height, width = (size, size) if isinstance(size, int) else size
    look = random_look(seed, height, width) if randomize else Look()
    spec = SceneSpec(height, width, gsd, seed, land, clouds, look)
    if n_tankers is None:
        n_tankers = max(1, round(height * width * gsd * gsd / 1.5e6))
    tankers = layout(spec, n_tankers, cluster_fraction=cluster_fraction)
    crs_obj = CRS.from_user_input(crs)
    if origin is None:  # somewhere at sea level latitudes in a UTM zone of either hemisphere
        southern = 32701 <= (crs_obj.to_epsg() or 0) <= 32760
        if not (crs_obj.is_projected and crs_obj.axis_info[0].unit_name == "metre"):
            raise ValueError(f"give an origin for CRS {crs}: the default suits UTM only")
        origin = (400000.0, 7400000.0 if southern else 5600000.0)
    transform = from_origin(origin[0], origin[1], gsd, gsd)
    write_scene(
        path, height, width, lambda w: render(spec, tankers, w), count=3, crs=crs, transform=transform
    )
    frame = truth_frame(tankers, transform, crs_obj)
    if truth is not None:
        from geoseg.io.vectors import write_vectors

        write_vectors(frame, truth, overwrite=True)
    return Path(path), frame
