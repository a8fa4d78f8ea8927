"""Synthetic chest-CT slices in Hounsfield units with their true lung masks (``geoseg synth lungs``).

Each "patient" is a seeded phantom: a body outline (a super-ellipse whose size, shape and fat layer
vary per patient), chest wall muscle and fat, ribs, sternum, spine with its canal, aorta, heart,
trachea, main bronchi, oesophagus, two lungs and, under the diaphragm domes, liver, spleen, stomach
and bowel. Slices come from a walk along z, from the thoracic inlet above the lung apices to the
abdomen below the lung bases, so every kind of slice appears in fixed proportions.

Intensities (HU): air -1000, lung parenchyma about -850..-700 (denser posteriorly), fat about -100,
soft tissue 20..60, cancellous bone 200..350 in a cortex of 700..1000. Patients differ in their lung
density, global offset and noise level; slices get correlated noise and, some of them, streak
artefacts.

The lung mask is the whole lung: vessels, small airways, nodules and consolidations inside it are
lung. Not lung: the trachea and main bronchi (air, in the mediastinum), gas in the stomach and bowel
under the diaphragm, air outside the body. Those, the dense lesions and the empty slices above the
apices and below the bases are what defeats a threshold (see :mod:`geoseg.evaluation.baselines`).

With ``randomize`` (``geoseg synth lungs --randomize SHARE``, domain randomisation for training)
that share of patients and scanners vary more: body size and fat, field of view, lung density
from emphysema to poorly aerated, parenchyma texture and vessel density, noise level and spectrum,
streak strength, gain, offset, gamma, blur or a sharp kernel (:func:`make_patient`). A second
phantom family, built another way and used for evaluation only, is :mod:`geoseg.synth.lungs_b`.

The walk never stops within a few millimetres of a lung's apex or lowest point, where a section
would be a partial-volume sliver a few pixels across (``APEX_MARGIN_MM``, ``BASE_MARGIN_MM``).

Files written by :func:`write_lungs` (read back by :func:`geoseg.io.slices.load_pairs`)::

    OUT/images/<id>.npy   int16 (H, W) Hounsfield units
    OUT/masks/<id>.png    uint8 single-band PNG: 0 background, 255 lung (read as mask > 0)
    OUT/lungs.json        family, evaluation_only, randomize, seed, size, and per slice: id, patient,
                          z (index), z_mm (family b: t), kind, spacing_mm, lung_pixels, conditions

``<id>`` is ``p<patient>_z<index>``, e.g. ``p003_z041``; ``kind`` is ``apex`` (above the lungs, no
lung), ``lung``, ``base`` (lung above the diaphragm, abdomen below it) or ``abdomen`` (below the
lungs, no lung).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from geoseg.errors import OutputError
from geoseg.io.atomic import atomic_path, write_text_atomic
from geoseg.synth.ct import density_class, slices_per_patient

APEX_MARGIN_MM = 3.0
BASE_MARGIN_MM = 2.0
KINDS = ("apex", "lung", "base", "abdomen")
FAMILIES = ("a", "b")


@dataclass
class Patient:
    """Anatomy of one phantom, in millimetres (x to the image's right = patient's left, y towards
    the back, z from the higher lung apex downwards)."""

    index: int
    fov: float
    body_a: float
    body_b: float
    body_pow: float
    body_cy: float
    fat: float
    muscle: float
    mediastinum: float
    apex: tuple[float, float]  # per side (image left = patient's right, image right)
    apex_depth: float
    dome_top: tuple[float, float]
    dome_height: float
    dome_pow: float
    dome_floor: float
    heart: tuple[float, float, float, float, float]  # cx, cy, a, b, angle (rad)
    heart_z: tuple[float, float]
    trachea_r: float
    carina_z: float
    spine_r: float
    lung_hu: float
    lung_gradient: float
    offset: float
    noise: float
    streak_p: float
    rib_phase: float
    lesions: list  # (kind, x, y, z, rx, ry, rz, hu)
    gas: list  # bowel gas ellipsoids (x, y, z, rx, ry, rz)
    stomach: tuple[float, float, float, float, float, float, float]  # x, y, z, rx, ry, rz, gas level y
    z_top: float = 0.0
    z_bottom: float = 0.0
    lung_low: tuple[float, float] = (0.0, 0.0)
    # acquisition and texture; the defaults are the plain phantom, make_patient(randomize=True) draws them
    blur: float = 0.5  # partial-volume blur (px); negative: a sharp kernel's edge overshoot
    noise_sigma: float = 0.7  # noise correlation length (px): its spectrum
    streak_amp: float = 1.0
    gain: float = 1.0
    gamma: float = 1.0  # applied to the -1024..200 HU range (contrast of air against tissue)
    texture: float = 15.0  # parenchyma texture (HU, standard deviation)
    vessels: float = 1.0  # vessel density, relative

    @property
    def inner(self) -> tuple[float, float]:
        """Semi-axes of the inside of the rib cage."""
        wall = self.fat + self.muscle + 9.0
        return self.body_a - wall, self.body_b - wall

    @property
    def spine_y(self) -> float:
        return self.body_cy + self.inner[1] - self.spine_r * 0.35


def make_patient(seed: int, index: int, *, randomize: bool = False) -> Patient:
    """A seeded phantom: the same ``seed`` and ``index`` always give the same anatomy.

    ``randomize`` (domain randomisation for training) widens what patients and scanners vary in,
    drawn from a stream of its own: body size and fat, field of view, lung density and its posterior
    gradient, parenchyma texture and vessel density, noise level and spectrum, streak strength,
    scanner gain and offset, gamma, blur or a sharp kernel."""
    rng = np.random.default_rng([seed, index, 7919])
    dr = np.random.default_rng([seed, index, 4242])
    u = rng.uniform
    body_a, body_b = u(145, 178), u(102, 125)
    fat, muscle = u(5, 24), u(8, 13)
    if randomize:
        grow = dr.uniform(0.85, 1.12)
        body_a, body_b = body_a * grow, body_b * grow * dr.uniform(0.9, 1.1)
        fat = dr.uniform(3, 35)
    wall = fat + muscle + 9.0
    ia, ib = body_a - wall, body_b - wall
    lung_h = u(200, 250)
    apex = (u(0, 6), u(0, 6))
    apex = (apex[0] - min(apex), apex[1] - min(apex))
    dome_r = lung_h * u(0.72, 0.8)
    dome_top = (dome_r, dome_r + u(6, 18))
    mediastinum = u(13, 20)
    heart = (u(10, 22), u(-30, -12) + u(-5, 5), u(52, 64), u(40, 50), u(0.5, 0.8))
    spine_r = u(15, 20)
    body_cy = u(0, 14)
    p = Patient(
        index=index,
        fov=u(350, 400),
        body_a=body_a,
        body_b=body_b,
        body_pow=u(2.0, 2.6),
        body_cy=body_cy,
        fat=fat,
        muscle=muscle,
        mediastinum=mediastinum,
        apex=apex,
        apex_depth=u(35, 50),
        dome_top=dome_top,
        dome_height=u(40, 55),
        dome_pow=u(2.0, 2.6),
        dome_floor=u(0.8, 0.95),
        heart=heart,
        heart_z=(lung_h * u(0.35, 0.45), dome_top[1] + 8),
        trachea_r=u(7, 10),
        carina_z=lung_h * u(0.25, 0.33),
        spine_r=spine_r,
        lung_hu=u(-860, -760),
        lung_gradient=u(20, 90),
        offset=u(-15, 15),
        noise=u(10, 30),
        streak_p=u(0.15, 0.5),
        rib_phase=u(0, 1),
        lesions=[],
        gas=[],
        stomach=(0, 0, 0, 0, 0, 0, 0),
    )
    # lesions inside the lungs: nodules (some against the pleura) and, for some patients, consolidations
    for _ in range(int(rng.poisson(2.5))):
        side = rng.choice([-1, 1])
        ang = u(0, 2 * np.pi)
        rad = u(0.3, 1.0)
        x = side * (mediastinum + (ia - mediastinum) * (0.5 + 0.45 * rad * np.cos(ang)))
        y = body_cy + ib * 0.85 * rad * np.sin(ang)
        r = u(3, 11)
        p.lesions.append(("nodule", x, y, u(20, dome_r), r, r, r, u(10, 60)))
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 3))):
            side = rng.choice([-1, 1])
            ang = u(-np.pi / 2, np.pi / 2)  # mostly lateral and posterior
            x = side * (ia * 0.75 * abs(np.cos(ang)) + mediastinum * 0.5)
            y = body_cy + ib * 0.6 * np.sin(ang) + 10
            z = u(30, dome_r)
            p.lesions.append(("consolidation", x, y, z, u(15, 35), u(15, 35), u(15, 35), u(-40, 45)))
    # abdomen: stomach under the left dome, bowel gas below the diaphragm
    p.stomach = (ia * u(0.35, 0.55), body_cy - ib * u(0.2, 0.45), dome_top[1] + u(35, 55),
                 u(35, 50), u(28, 40), u(35, 50), 0.0)  # fmt: skip
    sx, sy, sz, srx, sry, srz, _ = p.stomach
    p.stomach = (sx, sy, sz, srx, sry, srz, sy - sry * u(0.1, 0.5))
    p.lung_low = (_lowest_lung_z(p, 0), _lowest_lung_z(p, 1))
    z_bottom = max(p.lung_low) + u(30, 60)
    for _ in range(int(rng.integers(8, 22))):
        r = u(4, 18)
        p.gas.append((u(-ia * 0.8, ia * 0.8), body_cy + u(-ib * 0.7, ib * 0.4),
                      u(min(dome_top) + 15, z_bottom + 20), r * u(0.8, 1.6), r, r * u(0.6, 1.4)))  # fmt: skip
    p.z_top = -u(25, 55)
    p.z_bottom = z_bottom
    if randomize:
        v = dr.uniform
        p.fov = v(max(300.0, 2 * body_a + 30), 480)
        p.lung_hu, p.lung_gradient = v(-950, -600), v(0, 200)
        p.noise, p.noise_sigma = v(5, 70), v(0.0, 1.5)
        p.streak_p, p.streak_amp = v(0.2, 0.8), v(0.5, 3.0)
        p.gain, p.offset, p.gamma = v(0.93, 1.07), v(-40, 40), v(0.8, 1.25)
        p.blur = v(0.3, 1.4) if dr.random() < 0.6 else -v(0.3, 0.8)
        p.texture, p.vessels = v(3, 40), v(0.1, 1.3)
    return p


def _grid(size: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5 - size / 2) * spacing
    return c[None, :], c[:, None]


def _superellipse(x, y, cx, cy, a, b, power=2.0):
    return (np.abs(x - cx) / a) ** power + (np.abs(y - cy) / b) ** power


def _ellipse(x, y, cx, cy, a, b, angle=0.0):
    ca, sa = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    return ((dx * ca + dy * sa) / a) ** 2 + ((-dx * sa + dy * ca) / b) ** 2


def _dome_z(p: Patient, x, y, side: int):
    ia, ib = p.inner
    m = p.mediastinum
    xd = (-1 if side == 0 else 1) * (m + ia) / 2
    rho = np.sqrt(((x - xd) / ((ia - m) / 2)) ** 2 + ((y - (p.body_cy - 0.25 * ib)) / ib) ** 2)
    # the dome rises towards its centre; around it, the deepest recesses end on a common floor
    return p.dome_top[side] + p.dome_height * np.minimum(rho, p.dome_floor) ** p.dome_pow


def _lung_region(p: Patient, x, y, z: float, side: int):
    """One lung's section at ``z`` (before rounding its corners)."""
    ia, ib = p.inner
    m = p.mediastinum
    s = -1 if side == 0 else 1
    inside = _superellipse(x, y, 0, p.body_cy, ia, ib, p.body_pow) < 1
    region = inside & (s * x > m)
    # spine and paraspinal muscles, aorta (patient's left), heart
    region &= _ellipse(x, y, 0, p.spine_y, p.spine_r + 14, p.spine_r + 18) > 1
    region &= _ellipse(x, y, p.spine_r * 0.7 + 4, p.spine_y - p.spine_r - 12, 16, 16) > 1
    if p.heart_z[0] <= z <= p.heart_z[1] + 25:
        hx, hy, ha, hb, ang = p.heart
        shrink = 1.0 if z <= p.heart_z[1] else max(0.2, 1 - (z - p.heart_z[1]) / 25)
        region &= _ellipse(x, y, hx, hy, (ha + 4) * shrink, (hb + 4) * shrink, ang) > 1
    # apex: an ellipsoidal cap
    d = z - p.apex[side]
    if d <= 0:
        return np.zeros_like(region)
    if d < p.apex_depth:
        c = np.sqrt(1 - (1 - d / p.apex_depth) ** 2)
        cx = s * (m + ia) / 2
        region &= _ellipse(x, y, cx, p.body_cy + 0.1 * ib, (ia - m) / 2 * 1.2 * c, ib * 1.05 * c) < 1
    # base: above the diaphragm dome
    region &= z < _dome_z(p, x, y, side)
    return region


def lung_mask(p: Patient, x, y, z: float, spacing: float) -> np.ndarray:
    """Both lungs' true mask at ``z`` (main bronchi excluded), corners rounded over ~2 mm."""
    mask = np.zeros(np.broadcast_shapes(x.shape, y.shape), bool)
    for side in (0, 1):
        region = _lung_region(p, x, y, z, side)
        if region.any():
            mask |= ndimage.gaussian_filter(region.astype(np.float32), 2.0 / spacing) > 0.5
    return mask & ~_airways(p, x, y, z, wall=1.5)


def _airways(p: Patient, x, y, z: float, *, wall: float = 0.0) -> np.ndarray:
    """Trachea and main bronchi lumen (plus ``wall`` mm) at ``z``."""
    ty = p.spine_y - p.spine_r - 22
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape), bool)
    if z < p.carina_z:
        return _ellipse(x, y, 0, ty, p.trachea_r + wall, p.trachea_r * 0.85 + wall) < 1
    for s, length in ((-1, 30.0), (1, 48.0)):
        t = (z - p.carina_z) / length
        if t > 1:
            continue
        bx = s * (p.trachea_r * 0.6 + t * (p.mediastinum + 12))
        r = p.trachea_r * 0.75
        out |= _ellipse(x, y, bx, ty + 4 * t, r * 1.5 + wall, r + wall) < 1
    return out


def _lowest_lung_z(p: Patient, side: int) -> float:
    spacing = 2.0
    x, y = _grid(200, spacing)
    lo, hi = max(p.dome_top), max(p.dome_top) + p.dome_height * 3
    if not _lung_region(p, x, y, lo, side).any():
        return lo
    for _ in range(30):
        mid = (lo + hi) / 2
        if _lung_region(p, x, y, mid, side).any():
            lo = mid
        else:
            hi = mid
    return lo


def walk(p: Patient, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` slice positions (mm) from above the apices to below the bases, evenly spaced with a
    random phase, moved out of the few millimetres next to each lung's apex and lowest point."""
    step = (p.z_bottom - p.z_top) / max(n, 1)
    z = p.z_top + step * (np.arange(n) + rng.uniform(0.2, 0.8))
    bands = [(a - 1.0, a + APEX_MARGIN_MM) for a in p.apex]
    bands += [(lo - BASE_MARGIN_MM, lo + 1.0) for lo in p.lung_low]
    for a, b in bands:
        inside = (z > a) & (z < b)
        z[inside] = np.where(z[inside] - a < b - z[inside], a, b)
    return z


def _paint_ellipse(img, x, y, cx, cy, a, b, value, angle=0.0, where=None):
    hit = _ellipse(x, y, cx, cy, a, b, angle) < 1
    if where is not None:
        hit &= where
    img[hit] = value
    return hit


def render_slice(
    p: Patient, z: float, size: int, rng: np.random.Generator, info: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One slice: (int16 HU image, bool lung mask), both ``size x size``; ``info``, when given,
    receives the slice's conditions (``streaks``)."""
    spacing = p.fov / size
    x, y = _grid(size, spacing)
    u = rng.uniform
    ia, ib = p.inner
    shape = (size, size)
    img = np.full(shape, -1000.0, np.float32)
    # body outline, a little different along z: narrower at the thoracic inlet, rounder in the abdomen
    a = p.body_a * (0.9 if z < 0 else 1.0) * (1 + 0.02 * np.sin(z / 40 + p.rib_phase * 6))
    b = p.body_b * (1.04 if z > max(p.dome_top) + 30 else 1.0)
    body = _superellipse(x, y, 0, p.body_cy, a, b, p.body_pow) < 1
    img[body] = 40.0  # skin
    fat = _superellipse(x, y, 0, p.body_cy, a - 2, b - 2, p.body_pow) < 1
    img[fat] = -100.0 + u(-10, 10)
    muscle = _superellipse(x, y, 0, p.body_cy, a - 2 - p.fat, b - 2 - p.fat, p.body_pow) < 1
    img[muscle] = 50.0
    cavity = _superellipse(x, y, 0, p.body_cy, ia * (0.9 if z < 0 else 1.0), ib, p.body_pow) < 1
    img[cavity] = -90.0  # mediastinal / visceral fat
    # table under the patient
    ty = p.body_cy + b + 12
    table = (np.abs(y - ty - 0.0003 * x**2) < 4) & (np.abs(x) < p.fov * 0.45)
    img[table] = 150.0

    # abdomen under the diaphragm
    below = np.zeros(shape, bool)
    for side in (0, 1):
        half = (x < 0) if side == 0 else (x >= 0)
        below |= half & (z > _dome_z(p, x, y, side))
    below &= cavity
    if below.any():
        img[below] = 40.0
        liver_taper = np.clip(1 - (z - p.dome_top[0] - 60) / 100, 0.2, 1.0)
        liver = below & (_ellipse(x, y, -ia * 0.3, p.body_cy, ia * 0.75 * liver_taper, ib * 0.9) < 1)
        img[liver] = 60.0 + u(-5, 5)
        fat_blobs = below & (ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 6) > 0.04)
        img[fat_blobs & ~liver] = -95.0
        # gas sits inside the stomach and bowel loops, behind a wall of at least ~3 mm and never as a
        # sliver thinner than ~4 mm (where a pocket meets an organ it is cut off, not pressed flat)
        wall_px = max(1, int(round(3.0 / spacing)))
        room = ndimage.binary_erosion(below, iterations=wall_px)
        gas = np.zeros(shape, bool)
        sx, sy, sz, srx, sry, srz, level = p.stomach
        dz = (z - sz) / srz
        if abs(dz) < 1:
            k = np.sqrt(1 - dz * dz)
            wall = below & (_ellipse(x, y, sx, sy, srx * k, sry * k) < 1)
            img[wall] = 40.0
            lumen = below & (_ellipse(x, y, sx, sy, srx * k - 4, sry * k - 4) < 1)
            img[lumen] = 15.0
            gas |= lumen & (y < level) & room
        loops = room & ~ndimage.binary_dilation(liver, iterations=wall_px)
        for gx, gy, gz, rx, ry, rz in p.gas:
            dz = (z - gz) / rz
            if abs(dz) < 1:
                k = np.sqrt(1 - dz * dz)
                gas |= loops & (_ellipse(x, y, gx, gy, rx * k, ry * k) < 1)
        gas = ndimage.binary_opening(gas, iterations=max(1, int(round(2.0 / spacing))))
        img[ndimage.binary_dilation(gas, iterations=wall_px) & below & ~liver] = 35.0
        img[gas] = -1000.0

    # mediastinum: heart, aorta, oesophagus, airways
    if p.heart_z[0] <= z <= p.heart_z[1]:
        hx, hy, ha, hb, ang = p.heart
        _paint_ellipse(img, x, y, hx, hy, ha, hb, 40.0, ang)
    ax_, ay_ = p.spine_r * 0.7 + 4, p.spine_y - p.spine_r - 12
    _paint_ellipse(img, x, y, ax_, ay_, 12, 12, 45.0)
    if z < p.heart_z[0] and z > p.carina_z - 40:  # aortic arch region: ascending aorta too
        _paint_ellipse(img, x, y, 5, p.body_cy - ib * 0.35, 14, 14, 45.0)
    oy = p.spine_y - p.spine_r - 8
    _paint_ellipse(img, x, y, -3, oy, 7, 5, 40.0)
    if rng.random() < 0.3:
        _paint_ellipse(img, x, y, -3, oy, 2, 1.5, -1000.0)  # air in the oesophagus
    airway_wall = _airways(p, x, y, z, wall=2.0)
    img[airway_wall] = 50.0
    img[_airways(p, x, y, z)] = -1000.0

    # lungs
    mask = lung_mask(p, x, y, z, spacing)
    if mask.any():
        texture = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 3.0 / spacing)
        texture *= p.texture / max(float(texture.std()), 1e-6)
        parenchyma = p.lung_hu + p.lung_gradient * np.clip((y - p.body_cy + ib) / (2 * ib), 0, 1) + texture
        img[mask] = parenchyma[mask]
        _vessels(img, mask, p, x, y, spacing, rng)
        for kind, lx, ly, lz, rx, ry, rz, hu in p.lesions:
            dz = (z - lz) / rz
            if abs(dz) >= 1:
                continue
            k = np.sqrt(1 - dz * dz)
            if kind == "nodule":
                _paint_ellipse(img, x, y, lx, ly, rx * k, ry * k, hu, where=mask)
            else:
                blob = _ellipse(x, y, lx, ly, rx * k, ry * k, lz / 10) < 1
                blob |= _ellipse(x, y, lx + rx * 0.5, ly - ry * 0.4, rx * k * 0.7, ry * k * 0.6) < 1
                blob &= mask
                img[blob] = hu + 10 * texture[blob] / 15
                for _ in range(3):  # air bronchograms
                    t = u(0, np.pi)
                    line = np.abs((x - lx) * np.sin(t) - (y - ly) * np.cos(t)) < 1.0
                    line &= _ellipse(x, y, lx, ly, rx * k * 0.6, ry * k * 0.6) < 1
                    img[line & blob] = -900.0

    _bones(img, p, x, y, z, cavity, body, spacing, rng)

    # partial volume blur, streaks, correlated noise, patient offset
    if p.blur >= 0:
        img = ndimage.gaussian_filter(img, p.blur)
    else:  # a sharp reconstruction kernel: edges overshoot
        img = img + 0.8 * -p.blur * (img - ndimage.gaussian_filter(img, 1.2))
    if p.gamma != 1.0:
        low = np.clip((img + 1024.0) / 1224.0, 0, 1)
        img = np.where(img < 200, -1024.0 + 1224.0 * low**p.gamma, img)
    streaks = rng.random() < p.streak_p
    if streaks:
        img += _streaks(x, y, p, spacing, rng)
    if info is not None:
        info["streaks"] = "none" if not streaks else "strong" if p.streak_amp >= 1.3 else "moderate"
    noise = rng.normal(size=shape).astype(np.float32)
    if p.noise_sigma > 0:
        noise = ndimage.gaussian_filter(noise, p.noise_sigma)
    img += noise * (p.noise / max(float(noise.std()), 1e-6)) + p.offset
    if p.gain != 1.0:
        img *= p.gain
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16), mask


def _vessels(img, mask, p, x, y, spacing, rng):
    ia, ib = p.inner
    idx = np.flatnonzero(mask)
    n = int(len(idx) * spacing * spacing / 250 * p.vessels) + 5
    picks = idx[rng.integers(0, len(idx), n)]
    size = mask.shape[0]
    for k in picks:
        r, c = divmod(int(k), size)
        cx, cy = float(x[0, c]), float(y[r, 0])
        hilum = min(abs(cx + p.mediastinum + 15), abs(cx - p.mediastinum - 15)) + abs(cy - p.body_cy)
        rad = 0.7 + 4.0 * np.exp(-hilum / 45) * rng.uniform(0.5, 1.0)
        aspect = rng.uniform(1, 3.5)
        ang = rng.uniform(0, np.pi)
        half = int(np.ceil(rad * aspect / spacing)) + 2
        r0, r1, c0, c1 = max(r - half, 0), min(r + half + 1, size), max(c - half, 0), min(c + half + 1, size)
        sub = (slice(r0, r1), slice(c0, c1))
        hit = (_ellipse(x[:, c0:c1], y[r0:r1], cx, cy, rad * aspect, rad, ang) < 1) & mask[sub]
        if rng.random() < 0.15 and rad > 1.5:  # a small airway beside its artery
            img[sub][hit] = 40.0
            lumen = (_ellipse(x[:, c0:c1], y[r0:r1], cx, cy, (rad - 0.8) * aspect, rad - 0.8, ang) < 1) & hit
            img[sub][lumen] = -1000.0
        else:
            img[sub][hit] = rng.uniform(25, 60)


def _bones(img, p, x, y, z, cavity, body, spacing, rng):
    sy = p.spine_y
    r = p.spine_r
    # vertebral body, canal, posterior elements
    _paint_ellipse(img, x, y, 0, sy, r, r * 0.9, 850.0)
    _paint_ellipse(img, x, y, 0, sy, r - 2, r * 0.9 - 2, 250.0 + 60 * np.sin(z / 13))
    _paint_ellipse(img, x, y, 0, sy + r + 9, 9, 8, 850.0)
    _paint_ellipse(img, x, y, 0, sy + r + 9, 7, 6, 15.0)
    for s in (-1, 1):
        _paint_ellipse(img, x, y, s * 14, sy + r + 20, 7, 12, 700.0, angle=s * 0.5)
    if 0.05 * p.carina_z < z < p.heart_z[1]:  # sternum
        _paint_ellipse(img, x, y, 0, p.body_cy - p.inner[1] - 6, 14, 6, 700.0)
        _paint_ellipse(img, x, y, 0, p.body_cy - p.inner[1] - 6, 12, 4, 300.0)
    if z < 8:  # clavicles
        for s in (-1, 1):
            _paint_ellipse(img, x, y, s * 55, p.body_cy - p.inner[1] - 4, 40, 7, 800.0, angle=s * -0.25)
    if z > max(p.lung_low) + 40:
        return
    # ribs: cross-sections around the rib cage, their angles shifting with z (ribs run obliquely)
    ia, ib = p.inner
    n = 11
    for side in (-1, 1):
        for k in range(n):
            t = (k + 0.5 + 0.6 * np.sin(z / 25 + p.rib_phase * 6 + k)) / n
            ang = -np.pi / 2 + t * np.pi * 0.97
            ca, sa = np.cos(ang), np.sin(ang)
            # a point on the super-ellipse just outside the cavity
            ex = np.abs(ca) ** (2 / p.body_pow) * np.sign(ca)
            ey = np.abs(sa) ** (2 / p.body_pow) * np.sign(sa)
            cx, cy = side * (ia + 5) * ex, p.body_cy + (ib + 5) * ey
            tangent = np.arctan2((ib + 5) * ca, -side * (ia + 5) * sa)
            length = 9 + 6 * abs(np.sin(z / 30 + k))
            _paint_ellipse(img, x, y, cx, cy, length, 4.5, rng.uniform(700, 1000), tangent)
            _paint_ellipse(img, x, y, cx, cy, length - 1.5, 3.0, rng.uniform(220, 340), tangent)


def _streaks(x, y, p, spacing, rng) -> np.ndarray:
    """Beam-hardening-like streaks: alternating bright and dark lines through a dense point."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape), np.float32)
    cx = rng.uniform(-30, 30)
    cy = p.spine_y if rng.random() < 0.6 else p.body_cy + rng.uniform(-60, 60)
    for i in range(int(rng.integers(3, 9))):
        t = rng.uniform(0, np.pi)
        d = np.abs((x - cx) * np.sin(t) - (y - cy) * np.cos(t)) / spacing
        amp = rng.uniform(60, 220) * (1 if i % 2 else -1) * p.streak_amp
        out += amp * np.exp(-0.5 * (d / rng.uniform(0.6, 1.6)) ** 2)
    return out


@dataclass
class LungSlice:
    id: str
    patient: int
    z: int
    z_mm: float
    kind: str
    spacing_mm: float
    image: np.ndarray  # int16 HU (H, W)
    mask: np.ndarray  # bool (H, W)
    conditions: dict = field(default_factory=dict)  # what the slice shows: streaks, lung density


def _kind(p: Patient, z: float, has_lung: bool) -> str:
    if not has_lung:
        return "apex" if z < p.carina_z else "abdomen"
    return "base" if z > min(p.dome_top) else "lung"


def lung_slices(
    n_slices: int, *, size: int = 512, seed: int = 0, patients: int | None = None, randomize: float = 0.0
) -> Iterator[LungSlice]:
    """Yield ``n_slices`` seeded slices, spread over ``patients`` phantoms (default: one per 40
    slices), each patient's share walked from above the apices to below the bases; ``randomize``:
    the share of patients (0-1, a seeded draw per patient) that are domain-randomised patients and
    scanners (:func:`make_patient`), the others plain."""
    per = slices_per_patient(n_slices, patients, size)
    for i, n in enumerate(per):
        varied = bool(np.random.default_rng([seed, i, 99]).random() < float(randomize))
        p = make_patient(seed, i, randomize=varied)
        zs = walk(p, n, np.random.default_rng([seed, i, 1]))
        for j, z in enumerate(zs):
            info: dict = {}
            image, mask = render_slice(p, float(z), size, np.random.default_rng([seed, i, j, 2]), info)
            yield LungSlice(
                id=f"p{i:03d}_z{j:03d}",
                patient=i,
                z=j,
                z_mm=round(float(z), 2),
                kind=_kind(p, float(z), bool(mask.any())),
                spacing_mm=round(p.fov / size, 4),
                image=image,
                mask=mask,
                conditions={**info, "density": density_class(p.lung_hu), "randomized": varied},
            )


def write_lungs(
    out: str | os.PathLike,
    n_slices: int,
    *,
    size: int = 512,
    seed: int = 0,
    patients: int | None = None,
    family: str = "a",
    randomize: float = 0.0,
    overwrite: bool = False,
) -> dict:
    """Write slices, masks and ``lungs.json`` under ``out`` (see the module docstring); each file
    goes to a temporary name and is renamed into place. Returns the index written to lungs.json.

    ``family`` "a" is this module's phantom (``randomize``: the share of domain-randomised patients,
    for training); "b" is :mod:`geoseg.synth.lungs_b`, for evaluation only (its index says
    ``"evaluation_only": true``)."""
    from PIL import Image

    out = Path(out)
    index_path = out / "lungs.json"
    if index_path.exists() and not overwrite:
        raise OutputError(f"output '{out}': already holds lungs.json (use --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output '{out}': is a file, not a folder")
    if not out.parent.exists():
        raise OutputError(f"output '{out}': folder '{out.parent}' does not exist")
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
    if family == "b" and randomize:
        raise ValueError("family b is drawn one way only (randomize is for family a)")
    if family == "b":
        from geoseg.synth.lungs_b import lung_slices_b

        slices = lung_slices_b(n_slices, size=size, seed=seed, patients=patients)
    else:
        slices = lung_slices(n_slices, size=size, seed=seed, patients=patients, randomize=randomize)
    old_ids = set()
    if index_path.exists():  # slices of an earlier run that this one does not write are removed below
        try:
            old_ids = {s["id"] for s in json.loads(index_path.read_text())["slices"]}
        except (ValueError, KeyError, TypeError):
            old_ids = set()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    records = []
    for s in slices:
        img_path = out / "images" / f"{s.id}.npy"
        with atomic_path(img_path) as tmp:
            np.save(tmp, s.image)
        mask_path = out / "masks" / f"{s.id}.png"
        with atomic_path(mask_path) as tmp:
            Image.fromarray(s.mask.astype(np.uint8) * 255, mode="L").save(tmp, format="PNG")
        where = {"z_mm": s.z_mm} if family == "a" else {"t": s.t}
        records.append({"id": s.id, "patient": s.patient, "z": s.z, **where, "kind": s.kind,
                        "spacing_mm": s.spacing_mm, "lung_pixels": int(s.mask.sum()),
                        "conditions": s.conditions})  # fmt: skip
    index = {
        "family": family,
        "evaluation_only": family == "b",
        "randomize": float(randomize),
        "seed": seed,
        "size": size,
        "patients": len({r["patient"] for r in records}),
        "units": "HU",
        "mask_values": {"0": "background", "255": "lung"},
        "slices": records,
    }
    write_text_atomic(index_path, json.dumps(index, indent=1))
    for stale in old_ids - {r["id"] for r in records}:
        (out / "images" / f"{stale}.npy").unlink(missing_ok=True)
        (out / "masks" / f"{stale}.png").unlink(missing_ok=True)
    return index
