"""A second family of tanker scenes, drawn another way, for evaluation only (``geoseg synth tankers
--family b``). No geoseg model is trained on it: ``geoseg train maskrcnn`` refuses a scene whose
GeoTIFF carries the tag ``GEOSEG_EVALUATION_ONLY=yes`` or whose truth has ``family`` ``b``.

Where family A (:mod:`geoseg.synth.tankers`) has one dark blue sea, a fixed sun and five deck
colours, family B varies what another sea, sensor and fleet would:

- sea colour (navy, teal, green-brown, overcast grey), wind waves with a direction and a wavelength,
  whitecaps whose number grows with the sea state, and sun glint: a broad bright patch with sparkle
  in which ships look darker than the water around them;
- hulls with a rounded transom stern and an elliptical bow, deck colours from rust red to white,
  twin pipelines, a manifold across mid-ship, hatches, a forecastle, a funnel on a cream or white
  superstructure, a darker or lighter bulwark; the sun's azimuth and elevation set each scene's
  shadows;
- anchorages and ship-to-ship transfers (two to four hulls side by side, 2 to 8 m apart) and tandem
  moorings (bow to stern);
- clutter that is not a tanker: small boats (8-45 m, white, often with a wake), buoys, oil slicks,
  and, with land, a coast with breakwaters and jetties reaching into the sea;
- the sensor: haze (path radiance that varies across the scene), blur (optics), noise, and a
  one-pixel shift of one band (band-to-band misregistration).

Truth has the columns of family A's (id, class, length_m, beam_m, heading_deg, cluster) plus
``family``; clutter is never in it. Any window can be drawn on its own (noise is a function of scene
coordinates), so big scenes are written block by block.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS
from rasterio import features
from rasterio.transform import from_origin
from rasterio.windows import Window
from scipy import ndimage

from geoseg.synth.scenes import write_scene
from geoseg.synth.tankers import Tanker, _hash01, fractal, truth_frame, value_noise

SEAS = [(12, 26, 48), (22, 70, 78), (44, 60, 50), (70, 80, 92)]
DECKS_B = [
    (150, 52, 40),
    (110, 40, 36),
    (60, 84, 62),
    (92, 94, 96),
    (40, 44, 52),
    (50, 70, 120),
    (190, 190, 184),
]
PAD = 6  # pixels drawn around each window for blur and band shift


@dataclass(frozen=True)
class Hull(Tanker):
    """A family-B ship: a tanker's placement and size (``deck`` indexes ``DECKS_B``) with its own
    hull shape and deck; ``small`` marks clutter (a small boat, never in the truth)."""

    small: bool = False

    def outline(self, n: int = 10) -> np.ndarray:
        """Ship-frame outline: transom stern with rounded corners, parallel midbody, elliptical bow."""
        L, B = self.length, self.beam
        r = 0.12 * B
        t = np.linspace(0, np.pi / 2, n)
        stern_port = np.column_stack([-0.5 * L + r - r * np.cos(t), -(0.5 * B - r) - r * np.sin(t)])[::-1]
        a = np.linspace(-np.pi / 2, np.pi / 2, 3 * n)
        bow_len = (0.3 if not self.small else 0.4) * L
        bow = np.column_stack([0.5 * L - bow_len + bow_len * np.cos(a), 0.5 * B * np.sin(a)])
        stern_stb = stern_port[::-1] * np.array([1, -1])
        return np.vstack([stern_port, bow, stern_stb])

    def hull(self) -> shapely.Polygon:
        return shapely.Polygon(self._place(self.outline()))

    def box(self, x0, x1, y0, y1) -> shapely.Polygon:
        L, B = self.length, self.beam
        pts = np.array([[x0 * L, y0 * B], [x1 * L, y0 * B], [x1 * L, y1 * B], [x0 * L, y1 * B]])
        return shapely.Polygon(self._place(pts))

    def wake(self) -> shapely.Polygon:
        L, B = self.length, self.beam
        pts = np.array([[-0.5 * L, -0.3 * B], [-3.0 * L, -1.4 * L * 0.35], [-3.0 * L, 1.4 * L * 0.35],
                        [-0.5 * L, 0.3 * B]])  # fmt: skip
        return shapely.Polygon(self._place(pts))


@dataclass(frozen=True)
class SpecB:
    height: int
    width: int
    gsd: float
    seed: int
    land: bool
    haze: bool
    clouds: bool
    sea: int
    sea_state: float  # 0 calm .. 1 rough
    wave_dir: float
    wave_len: float  # metres
    glint: tuple[float, float, float, float]  # centre row, col (pixels), radius (pixels), strength
    sun: tuple[float, float]  # shadow offset per metre of height (pixels), x and y
    shift_band: int

    def land_field(self, rows, cols) -> np.ndarray:
        """> 0 on land: a coast along the scene's top edge, with breakwaters (thin, straight)."""
        if not self.land:
            return np.full(np.broadcast_shapes(np.shape(rows), np.shape(cols)), -1.0)
        n = fractal(rows, cols, 900 / self.gsd, 3, self.seed + 71) - 0.5
        return 0.12 - rows / self.height + 0.08 * n


def make_spec(height, width, gsd, seed, *, land=True, haze=False, clouds=False) -> SpecB:
    rng = np.random.default_rng([seed, 2027])
    u = rng.uniform
    glint = (u(-0.2, 1.2) * height, u(-0.2, 1.2) * width, u(0.3, 0.8) * max(height, width),
             u(60, 150) if rng.random() < 0.5 else 0.0)  # fmt: skip
    az, elev = u(0, 2 * np.pi), u(25, 70)
    k = 1 / math.tan(math.radians(elev)) / gsd
    return SpecB(height, width, gsd, seed, land, haze, clouds, int(rng.integers(len(SEAS))), u(0, 1),
                 u(0, np.pi), u(20, 90), glint, (k * math.sin(az), k * math.cos(az)),
                 int(rng.integers(0, 3)))  # fmt: skip


def _free(poly, placed, margin) -> bool:
    return not any(poly.distance(q) < margin for q in placed)


def layout_b(spec: SpecB, n: int, *, cluster_fraction: float = 0.4):
    """Tankers (alone, side by side, in tandem) and clutter (small boats, buoys, slicks, jetties)."""
    rng = np.random.default_rng([spec.seed, 2028])
    g = spec.gsd
    bounds = shapely.box(0, 0, spec.width, spec.height)

    def at_sea(poly) -> bool:
        pts = np.asarray(poly.exterior.coords)
        return bounds.contains(poly) and not (spec.land_field(pts[:, 1], pts[:, 0]) > -0.03).any()

    tankers: list[Hull] = []
    polys: list = []
    cluster = 0
    tries = 0
    while len(tankers) < n and tries < 300 * max(n, 1):
        tries += 1
        length = rng.uniform(90, 340)
        beam = float(np.clip(length / rng.uniform(5.2, 7.2), 14, 62))
        heading = rng.uniform(0, 360)
        kind = "single" if rng.random() > cluster_fraction else ("tandem" if rng.random() < 0.25 else "side")
        count = 1 if kind == "single" else int(rng.integers(2, 5 if kind == "side" else 3))
        count = min(count, n - len(tankers))
        cx, cy = rng.uniform(0.04, 0.96) * spec.width, rng.uniform(0.04, 0.96) * spec.height
        h = math.radians(heading)
        fwd, stb = np.array([math.sin(h), -math.cos(h)]), np.array([math.cos(h), math.sin(h)])
        group: list[Hull] = []
        offset = 0.0
        for k in range(count):
            lk = length * rng.uniform(0.8, 1.2) if k else length
            bk = float(np.clip(lk / rng.uniform(5.2, 7.2), 14, 62)) if k else beam
            if k and kind == "side":
                offset += (group[-1].beam * g / 2 + bk / 2 + rng.uniform(2, 8)) / g
                c = np.array([cx, cy]) + offset * stb
            elif k:
                offset += (group[-1].length * g / 2 + lk / 2 + rng.uniform(25, 80)) / g
                c = np.array([cx, cy]) + offset * fwd
            else:
                c = np.array([cx, cy])
            group.append(Hull(float(c[0]), float(c[1]), lk / g, bk / g,
                              (heading + rng.normal(0, 1.5)) % 360 if k else heading,
                              deck=int(rng.integers(len(DECKS_B))), cluster=cluster if count > 1 else -1,
                              moving=bool(count == 1 and rng.random() < 0.3)))  # fmt: skip
        gp = [t.hull() for t in group]
        if any(a.distance(b) < 1.5 / g for i, a in enumerate(gp) for b in gp[i + 1 :]):
            continue
        if not all(at_sea(p) for p in gp) or not all(_free(p, polys, 6.0 / g) for p in gp):
            continue
        tankers.extend(group)
        polys.extend(gp)
        cluster += count > 1
    area_km2 = spec.height * spec.width * g * g / 1e6
    boats: list[Hull] = []
    for _ in range(int(area_km2 * rng.uniform(1.0, 4.0))):
        length = rng.uniform(8, 45)
        b = Hull(rng.uniform(0, spec.width), rng.uniform(0, spec.height), length / g,
                 length / rng.uniform(3.0, 4.5) / g, rng.uniform(0, 360), deck=6, cluster=-1,
                 moving=bool(rng.random() < 0.5), small=True)  # fmt: skip
        p = b.hull()
        if at_sea(p) and _free(p, polys, 15.0 / g):
            boats.append(b)
            polys.append(p)
    buoys = [(rng.uniform(0, spec.width), rng.uniform(0, spec.height), rng.uniform(1.0, 2.5) / g,
              int(rng.integers(2))) for _ in range(int(area_km2 * rng.uniform(2, 8)))]  # fmt: skip
    buoys = [b for b in buoys if at_sea(shapely.Point(b[0], b[1]).buffer(b[2] + 1))
             and _free(shapely.Point(b[0], b[1]), polys, 8.0 / g)]  # fmt: skip
    slicks = []
    for _ in range(int(rng.integers(0, 3))):
        c = shapely.Point(rng.uniform(0, spec.width), rng.uniform(0, spec.height))
        slicks.append(shapely.affinity.scale(c.buffer(rng.uniform(100, 400) / g), rng.uniform(1.5, 4), 1.0))
        slicks[-1] = shapely.affinity.rotate(slicks[-1], rng.uniform(0, 180))
    jetties = []
    if spec.land:
        for _ in range(int(rng.integers(1, 4))):
            col = rng.uniform(0.1, 0.9) * spec.width
            row0 = float(np.clip(spec.height * 0.12, 0, spec.height))
            length, width = rng.uniform(150, 600) / g, rng.uniform(12, 45) / g
            ang = rng.uniform(-25, 25)
            box = shapely.box(col - width / 2, row0 - 80 / g, col + width / 2, row0 + length)
            j = shapely.affinity.rotate(box, ang, origin=(col, row0))
            if _free(j, polys, 30.0 / g):
                jetties.append(j)
    return tankers, boats, buoys, slicks, jetties


def render_b(spec: SpecB, scene, window: Window) -> np.ndarray:
    """One window of a family-B scene: uint8 (3, h, w)."""
    tankers, boats, buoys, slicks, jetties = scene
    g = spec.gsd
    h, w = int(window.height) + 2 * PAD, int(window.width) + 2 * PAD
    r0, c0 = int(window.row_off) - PAD, int(window.col_off) - PAD
    rows = np.arange(r0, r0 + h, dtype=np.float64)[:, None]
    cols = np.arange(c0, c0 + w, dtype=np.float64)[None, :]
    ir, ic = (rows + (1 << 20)).astype(np.int64), (cols + (1 << 20)).astype(np.int64)

    sea = np.array(SEAS[spec.sea], np.float64)[:, None, None]
    d = (cols * math.cos(spec.wave_dir) + rows * math.sin(spec.wave_dir)) * g
    warp = fractal(rows, cols, 300 / g, 3, spec.seed + 5) * 40
    waves = np.sin(2 * np.pi * (d + warp) / spec.wave_len) * (2 + 8 * spec.sea_state)
    swell = (fractal(rows, cols, 1200 / g, 4, spec.seed + 6) - 0.5) * 20
    calm = np.zeros((h, w), bool)
    for s in slicks:  # oil slicks calm the water: no waves, a little darker
        calm |= _burn(s, r0, c0, h, w)
    waves = np.where(calm, 0.2 * waves - 4, waves)
    img = sea + (waves + swell)[None] * np.array([0.6, 0.8, 1.0])[:, None, None]
    caps = (_hash01(ic, ir, spec.seed + 9) < 0.0004 * spec.sea_state**2 * g * g) & ~calm
    img[:, caps] = 210
    gr, gc, gradius, gstrength = spec.glint
    if gstrength:
        glow = np.exp(-((rows - gr) ** 2 + (cols - gc) ** 2) / (2 * gradius**2))
        sparkle = (_hash01(ic, ir, spec.seed + 10) < 0.02 * glow) * 80 * ~calm
        img = img + (gstrength * glow + sparkle)[None]

    bbox = shapely.box(c0, r0, c0 + w, r0 + h)
    ships = [
        t
        for t in list(tankers) + list(boats)
        if t.hull().buffer(t.length * (3 if t.moving else 0.5)).intersects(bbox)
    ]
    rng = np.random.default_rng([spec.seed, r0 + PAD, c0 + PAD, 77])
    for t in ships:
        if t.moving:
            m = _burn(t.wake(), r0, c0, h, w)
            wake = value_noise(rows, cols, 3 / g + 1, spec.seed + 17)
            img[:, m] += (22 * wake[m])[None]
        height_m = 8.0 if t.small else 14.0
        shadow = shapely.affinity.translate(t.hull(), spec.sun[0] * height_m, spec.sun[1] * height_m)
        m = _burn(shadow, r0, c0, h, w)
        img[:, m] *= 0.6
    for t in ships:
        m = _burn(t.hull(), r0, c0, h, w)
        if not m.any():
            continue
        if t.small:
            img[:, m] = 215 + rng.normal(0, 8, (3, int(m.sum())))
            continue
        deck = np.array(DECKS_B[t.deck], np.float64)[:, None]
        img[:, m] = deck + rng.normal(0, 5, (3, int(m.sum())))
        rim = m & ~_burn(t.hull().buffer(-max(1.0, 0.05 * t.beam)), r0, c0, h, w)
        img[:, rim] = (deck * (0.6 if t.deck % 2 else 1.4)).clip(0, 255)
        for y in (-0.12, 0.12):
            img[:, _burn(t.box(-0.32, 0.3, y - 0.02, y + 0.02), r0, c0, h, w)] = 185
        img[:, _burn(t.box(-0.03, 0.03, -0.45, 0.45), r0, c0, h, w)] = 170  # manifold
        for x in np.linspace(-0.28, 0.26, 6):
            img[:, _burn(t.box(x - 0.015, x + 0.015, -0.3, -0.2), r0, c0, h, w)] = 140
        img[:, _burn(t.box(0.3, 0.42, -0.3, 0.3), r0, c0, h, w)] = (deck * 1.2).clip(0, 255)  # forecastle
        cream = 235 if t.deck % 3 else 215
        img[:, _burn(t.box(-0.47, -0.35, -0.42, 0.42), r0, c0, h, w)] = cream
        funnel = _burn(t.box(-0.46, -0.42, -0.1, 0.1), r0, c0, h, w)
        img[:, funnel] = np.array((60, 40, 40) if t.deck % 2 else (180, 60, 40), np.float64)[:, None]
    for bx, by, br, colour in buoys:
        if c0 - 5 <= bx < c0 + w + 5 and r0 - 5 <= by < r0 + h + 5:
            m = (rows - by) ** 2 + (cols - bx) ** 2 <= max(br, 0.6) ** 2
            img[:, m] = np.array([220, 40, 30] if colour else [230, 200, 40], np.float64)[:, None]
    if spec.land:
        field = spec.land_field(rows, cols)
        on_land = field > 0
        for j in jetties:
            on_land |= _burn(j, r0, c0, h, w)
        if on_land.any():
            tex = fractal(rows, cols, 60 / g, 4, spec.seed + 33)
            blocks = _hash01(ic // max(1, int(30 / g)), ir // max(1, int(30 / g)), spec.seed + 34) * 90
            land = np.array([120.0, 115.0, 105.0])[:, None, None] + (60 * (tex - 0.5) + blocks - 45)[None]
            img = np.where(on_land[None], land, img)
    if spec.clouds:
        n = fractal(rows, cols, 1800 / g, 5, spec.seed + 41)
        alpha = np.clip((n - 0.6) * 3.0, 0, 0.85)
        sh = fractal(rows - 150 / g, cols - 150 / g, 1800 / g, 5, spec.seed + 41)
        img *= 1 - 0.35 * np.clip((sh - 0.6) * 3.0, 0, 1)[None]
        img = img * (1 - alpha[None]) + 240 * alpha[None]
    if spec.haze:
        a = 0.25 + 0.3 * fractal(rows, cols, 3000 / g, 3, spec.seed + 51)
        img = img * (1 - a[None]) + np.array([175.0, 185.0, 200.0])[:, None, None] * a[None]
    img = ndimage.gaussian_filter(img, (0, 0.8, 0.8))
    img += np.random.default_rng([spec.seed, r0 + PAD, c0 + PAD, 78]).normal(0, 2.5, img.shape)
    if spec.shift_band:
        img[spec.shift_band] = np.roll(img[spec.shift_band], 1, axis=1)
    img = img[:, PAD:-PAD, PAD:-PAD]
    return np.clip(img, 0, 255).astype(np.uint8)


def _burn(geom, r0, c0, h, w) -> np.ndarray:
    if not geom.intersects(shapely.box(c0, r0, c0 + w, r0 + h)):
        return np.zeros((h, w), bool)
    return features.rasterize([(geom, 1)], out_shape=(h, w), transform=Affine.translation(c0, r0)).astype(
        bool
    )


def tanker_scene_b(
    path: str | os.PathLike,
    *,
    size: int | tuple[int, int] = 4096,
    gsd: float = 1.5,
    crs: str = "EPSG:32750",
    n_tankers: int | None = None,
    seed: int = 0,
    land: bool = True,
    clouds: bool = False,
    haze: bool = False,
    cluster_fraction: float = 0.4,
    truth: str | os.PathLike | None = None,
):
    """Write a family-B scene (3-band uint8 GeoTIFF) and return (path, truth in the scene CRS)."""
    height, width = (size, size) if isinstance(size, int) else size
    spec = make_spec(height, width, gsd, seed, land=land, haze=haze, clouds=clouds)
    if n_tankers is None:
        n_tankers = max(1, round(height * width * gsd * gsd / 1.5e6))
    scene = layout_b(spec, n_tankers, cluster_fraction=cluster_fraction)
    crs_obj = CRS.from_user_input(crs)
    if not (crs_obj.is_projected and crs_obj.axis_info[0].unit_name == "metre"):
        raise ValueError(f"CRS {crs} is not projected in metres (UTM)")
    southern = 32701 <= (crs_obj.to_epsg() or 0) <= 32760
    transform = from_origin(600000.0, 9300000.0 if southern else 2500000.0, gsd, gsd)
    write_scene(path, height, width, lambda w: render_b(spec, scene, w), count=3, crs=crs,
                transform=transform,
                tags={"GEOSEG_EVALUATION_ONLY": "yes", "GEOSEG_FAMILY": "b"})  # fmt: skip
    frame = truth_frame(scene[0], transform, crs_obj)
    frame["family"] = "b"
    if truth is not None:
        from geoseg.io.vectors import write_vectors

        write_vectors(frame, truth, overwrite=True)
    return Path(path), frame
