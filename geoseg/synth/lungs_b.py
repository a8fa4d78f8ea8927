"""A second family of chest-CT phantoms, built another way, for evaluation only (``geoseg synth
lungs --family b``). No geoseg model is trained on it: ``geoseg train unet`` refuses a folder whose
``lungs.json`` says ``"evaluation_only": true``.

Family A (:mod:`geoseg.synth.lungs`) stacks ellipses and super-ellipses in a 3-D anatomy walked along
z. Family B is drawn slice by slice from a position ``t`` in [0, 1] along the chest (neck at 0,
abdomen at 1) with shapes of its own:

- outlines are closed curves ``r(theta)`` with random harmonics (bodies, lungs, organs), the patient
  may lie tilted and off centre, with the arms down beside the chest (humeri in the slice);
- lungs grow from the apex and turn into crescents around the diaphragm domes at the base; the heart
  bites into the left lung, the spine and aorta into both;
- lung density runs from emphysema (about -950 HU, with bullae) to dense, poorly aerated lungs (about
  -600 HU) with a posterior (dependent) gradient of up to 200 HU, reticular and ground-glass texture,
  and vessels drawn as branching random walks from the hila;
- lung-free slices are necks (trachea, oesophagus, thyroid, shoulders) and abdomens (stomach with an
  air-fluid level, colon gas along the flanks);
- acquisition: scanner offset and gain, reconstruction kernel (smooth or sharp with edge overshoot),
  noise of another spectrum, photon-starvation streaks between the shoulders or arms, metal streaks
  crossing the whole field of view, ring artefacts, cupping, motion ghosting, and pixels outside the
  reconstruction circle at -2048 on some scanners.

The lung mask is the lung (vessels, texture, bullae and dense patches inside it included); trachea,
main bronchi, bowel and stomach gas are not lung. Every slice records its conditions in lungs.json
(``streaks``: none, moderate or strong; ``density``: emphysema, normal or dense; ``arms``; ``ghost``)
so that scores can be split by them. Same files and index as family A (read by
:func:`geoseg.io.slices.load_pairs`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from geoseg.synth.ct import density_class, slices_per_patient

# a lung section smaller than this (mm^2) is a partial-volume sliver; such positions are not drawn
MIN_LUNG_MM2 = 250.0


@dataclass
class PatientB:
    index: int
    fov: float
    tilt: float
    centre: tuple[float, float]
    body: tuple[float, float]  # half width, half depth (mm) at mid chest
    body_harmonics: np.ndarray  # (k, amplitude, phase)
    fat: float
    arms: bool
    lung: tuple[float, float]  # half width, half depth of one lung at its widest
    lung_harmonics: tuple[np.ndarray, np.ndarray]
    lung_hu: float
    gradient: float
    reticular: float
    bullae: int
    ground_glass: float
    heart: float  # radius (mm)
    span: tuple[float, float]  # t where the lungs begin and end (apex, lowest base)
    dome: tuple[float, float]  # t where each dome starts to cut into its lung (right, left)
    offset: float
    gain: float
    kernel: str
    noise: float
    streaks: float  # 0 none, else amplitude scale
    metal: bool
    rings: float
    ghost: float
    padding: bool

    @property
    def density(self) -> str:
        return density_class(self.lung_hu)


def make_patient_b(seed: int, index: int) -> PatientB:
    rng = np.random.default_rng([seed, index, 31337])
    u = rng.uniform
    harm = lambda n, amp: np.stack([np.arange(2, 2 + n), u(0, amp, n), u(0, 2 * np.pi, n)], 1)  # noqa: E731
    width = u(130, 185)
    depth = width * u(0.62, 0.8)
    fat = u(3, 30)
    lung_w = (width - fat - 14) * u(0.4, 0.48)
    lung_d = (depth - fat - 18) * u(0.78, 0.92)
    start = u(0.1, 0.2)
    end = u(0.75, 0.88)
    streak_draw = rng.random()
    return PatientB(
        index=index,
        fov=u(300, 480),
        tilt=u(-0.15, 0.15),
        centre=(u(-20, 20), u(-10, 25)),
        body=(width, depth),
        body_harmonics=harm(4, 0.04),
        fat=fat,
        arms=bool(rng.random() < 0.4),
        lung=(lung_w, lung_d),
        lung_harmonics=(harm(3, 0.05), harm(3, 0.05)),
        lung_hu=u(-950, -600),
        gradient=u(0, 200),
        reticular=u(0, 120) if rng.random() < 0.5 else 0.0,
        bullae=int(rng.poisson(3)) if rng.random() < 0.35 else 0,
        ground_glass=u(0.0, 0.25) if rng.random() < 0.4 else 0.0,
        heart=u(45, 62),
        span=(start, end),
        dome=(end - u(0.18, 0.26), end - u(0.12, 0.2)),
        offset=u(-35, 35),
        gain=u(0.95, 1.05),
        kernel="sharp" if rng.random() < 0.5 else "smooth",
        noise=u(8, 60),
        streaks=0.0 if streak_draw < 0.3 else u(0.5, 1.0) if streak_draw < 0.7 else u(1.3, 2.2),
        metal=bool(rng.random() < 0.3),
        rings=u(10, 40) if rng.random() < 0.3 else 0.0,
        ghost=u(0.05, 0.15) if rng.random() < 0.25 else 0.0,
        padding=bool(rng.random() < 0.4),
    )


def _curve(x, y, cx, cy, a, b, harmonics, angle=0.0) -> np.ndarray:
    """Signed inside measure of a closed curve r(theta) = 1 + sum a_k cos(k theta + phi_k) scaled to
    semi-axes (a, b): < 1 inside."""
    ca, sa = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    px, py = (dx * ca + dy * sa) / a, (-dx * sa + dy * ca) / b
    rho = np.hypot(px, py)
    theta = np.arctan2(py, px)
    r = np.ones_like(theta)
    for k, amp, phase in harmonics:
        r += amp * np.cos(k * theta + phase)
    return rho / r


def _disk(x, y, cx, cy, r):
    return (x - cx) ** 2 + (y - cy) ** 2 < r * r


def _profile(t: float, start: float, end: float) -> float:
    """Lung size along the chest: a rounded apex, full through the middle."""
    if t <= start or t >= end + 0.1:
        return 0.0
    s = (t - start) / max(end - start, 1e-6)
    return float(np.clip(np.sin(np.pi / 2 * min(s / 0.45, 1.0)), 0, 1)) ** 0.7


def _branches(mask, hilum, spacing, rng, steps: int) -> np.ndarray:
    """Vessels: random walks out of a hilum, thinning as they go (bool, inside ``mask`` only)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    yy, xx = np.ogrid[0:h, 0:w]
    for _ in range(steps):
        r, c = hilum
        ang = rng.uniform(0, 2 * np.pi)
        rad = rng.uniform(2.0, 4.5) / spacing
        for _ in range(int(rng.integers(15, 45))):
            ang += rng.normal(0, 0.25)
            r += np.sin(ang) * 3.0 / spacing
            c += np.cos(ang) * 3.0 / spacing
            if not (0 <= r < h and 0 <= c < w):
                break
            rad = max(rad * 0.94, 0.6 / spacing)
            i0, i1 = int(max(r - rad - 1, 0)), int(min(r + rad + 2, h))
            j0, j1 = int(max(c - rad - 1, 0)), int(min(c + rad + 2, w))
            out[i0:i1, j0:j1] |= (yy[i0:i1] - r) ** 2 + (xx[:, j0:j1] - c) ** 2 < rad * rad
    return out & mask


def _band_noise(shape, sigma_px: float, rng) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma_px)
    return n / max(float(n.std()), 1e-6)


def render_slice_b(
    p: PatientB, t: float, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One slice at chest position ``t``: (int16 HU, bool lung mask)."""
    spacing = p.fov / size
    c = (np.arange(size, dtype=np.float32) + 0.5 - size / 2) * spacing
    x, y = c[None, :], c[:, None]
    shape = (size, size)
    u = rng.uniform
    cx, cy = p.centre
    neck = t < p.span[0] - 0.02
    abdomen = t > p.span[1] + 0.04
    scale = 0.55 if neck else 1.0 + (0.05 if abdomen else 0.0)
    bw, bd = p.body[0] * scale, p.body[1] * (0.8 if neck else 1.0)
    body = _curve(x, y, cx, cy, bw, bd, p.body_harmonics, p.tilt) < 1
    img = np.full(shape, -1000.0, np.float32)
    img[body] = -110.0 + u(-15, 15)  # subcutaneous fat
    wall = _curve(x, y, cx, cy, bw - p.fat, bd - p.fat * 0.8, p.body_harmonics, p.tilt)
    img[wall < 1] = 45.0  # muscle
    cavity = _curve(x, y, cx, cy, bw - p.fat - 14, bd - p.fat * 0.8 - 12, p.body_harmonics, p.tilt) < 1
    img[cavity] = 35.0
    ca, sa = np.cos(p.tilt), np.sin(p.tilt)

    def at(dx, dy):  # a point in the patient's frame
        return cx + dx * ca - dy * sa, cy + dx * sa + dy * ca

    # bed: a curved plate under the patient
    img[(np.abs(y - (cy + bd + 15) - 0.0005 * (x - cx) ** 2) < 3) & (np.abs(x - cx) < p.fov * 0.42)] = 250.0
    # arms down beside the chest: soft tissue with a humerus
    dense_points = []
    if p.arms and not neck:
        for s in (-1, 1):
            ax, ay = at(s * (bw + 38), 5)
            arm = _curve(x, y, ax, ay, 30, 38, p.body_harmonics[:2], p.tilt) < 1
            img[arm] = 40.0
            img[_disk(x, y, ax, ay, 12)] = 1100.0
            img[_disk(x, y, ax, ay, 8)] = 300.0
            dense_points.append((ax, ay))
    # spine
    sx, sy = at(0, bd - p.fat * 0.8 - 30)
    img[_disk(x, y, sx, sy, 17)] = 1000.0
    img[_disk(x, y, sx, sy, 14)] = 220.0
    canal = _disk(x, y, sx, sy + 26, 7)
    img[_disk(x, y, sx, sy + 26, 10)] = 900.0
    img[canal] = 20.0
    dense_points.append((sx, sy))
    mask = np.zeros(shape, bool)
    if neck:
        tx, ty = at(0, -bd * 0.3)
        img[_disk(x, y, tx - 10, ty - 2, 16)] = 90.0  # thyroid lobes
        img[_disk(x, y, tx + 10, ty - 2, 16)] = 90.0
        img[_disk(x, y, tx, ty, 9)] = -1000.0  # trachea
        img[_disk(x, y, tx + 4, ty + 14, 4)] = -990.0 if rng.random() < 0.5 else 30.0
        if t > p.span[0] - 0.12:  # shoulders: dense bone on both sides
            for s in (-1, 1):
                hx, hy = at(s * bw * 0.85, -5)
                img[_disk(x, y, hx, hy, 16)] = 1200.0
                dense_points.append((hx, hy))
    elif abdomen:
        lx, ly = at(-bw * 0.3, -5)
        img[_curve(x, y, lx, ly, bw * 0.55, bd * 0.6, p.lung_harmonics[0], p.tilt) < 1] = 65.0  # liver
        gx, gy = at(bw * 0.35, -bd * 0.2)
        stomach = _curve(x, y, gx, gy, 40, 30, p.lung_harmonics[1], p.tilt) < 1
        img[stomach] = 20.0
        level = gy + u(-20, 10)
        img[stomach & (y < level) & (_curve(x, y, gx, gy, 36, 26, p.lung_harmonics[1], p.tilt) < 1)] = -1000.0
        for _ in range(int(rng.integers(3, 10))):  # colon gas along the flanks
            s = rng.choice([-1, 1])
            px, py = at(s * bw * u(0.55, 0.75), u(-bd * 0.5, bd * 0.5))
            img[_disk(x, y, px, py, u(6, 18)) & cavity] = -1000.0
    else:
        size_t = _profile(t, *p.span)
        lw, ld = p.lung
        for side, s in ((0, -1), (1, 1)):
            a, b = lw * (0.35 + 0.65 * size_t), ld * (0.45 + 0.55 * size_t)
            lx, ly = at(s * (lw + 10), 4)
            lung = _curve(x, y, lx, ly, a, b, p.lung_harmonics[side], p.tilt) < 1
            lung &= cavity
            lung &= ~_disk(x, y, sx, sy - 4, 34)  # spine and paraspinal muscles
            if t > p.dome[side]:  # the diaphragm dome rises into the lung from below and in front
                k = (t - p.dome[side]) / max(p.span[1] + 0.1 - p.dome[side], 1e-6)
                dx, dy = at(s * (lw + 8), -ld * 0.1)
                dome = _disk(x, y, dx, dy, (0.35 + 0.75 * k) * max(a, b))
                img[dome & lung] = 60.0  # liver or spleen
                lung &= ~dome
            mask |= lung
        # mediastinum and heart, on top of the lungs
        hx, hy = at(12, -ld * 0.25)
        if p.span[0] + 0.2 < t < p.span[1] - 0.05:
            heart = _curve(x, y, hx, hy, p.heart, p.heart * 0.8, p.body_harmonics[:1], p.tilt + 0.6) < 1
            img[heart] = 40.0
            mask &= ~ndimage.binary_dilation(heart, iterations=max(1, int(3 / spacing)))
        ax, ay = at(18, bd - p.fat - 62)
        img[_disk(x, y, ax, ay, 13)] = 45.0  # aorta
        mask &= ~_disk(x, y, ax, ay, 16)
        mid = np.abs((x - cx) * ca + (y - cy) * sa) < 14  # mediastinal band between the lungs
        mask &= ~mid
        tx, ty = at(0, -10)
        if t < p.span[0] + 0.25:
            airway = _disk(x, y, tx, ty, 9)
        else:  # main bronchi
            airway = _disk(x, y, tx - 14, ty + 4, 7) | _disk(x, y, tx + 16, ty + 6, 6)
        wall = ndimage.binary_dilation(airway, iterations=max(1, int(2 / spacing)))
        mask &= ~wall
        mask = ndimage.binary_opening(mask, iterations=2)
        labels, n = ndimage.label(mask)
        if n:
            sizes = ndimage.sum_labels(mask, labels, np.arange(1, n + 1))
            mask = np.isin(labels, 1 + np.flatnonzero(sizes * spacing**2 >= 40.0))
        img[wall & cavity] = 50.0
        img[airway] = -1000.0
        if mask.any():
            depth = np.clip((y - (cy - ld)) / (2 * ld), 0, 1)
            lung_img = p.lung_hu + p.gradient * depth**1.5 + 12 * _band_noise(shape, 1.5 / spacing, rng)
            if p.reticular:
                band = _band_noise(shape, 1.2 / spacing, rng) - _band_noise(shape, 3.0 / spacing, rng)
                lung_img += p.reticular * (np.abs(band) < 0.15)
            if p.ground_glass:
                lung_img += 250 * (_band_noise(shape, 12 / spacing, rng) > 1.6 - 2 * p.ground_glass)
            for _ in range(p.bullae):
                bx, by = np.unravel_index(rng.choice(np.flatnonzero(mask)), shape)
                lung_img[_disk(x, y, x[0, by], y[bx, 0], u(5, 18))] = -990.0
            img[mask] = lung_img[mask]
            for s in (-1, 1):
                hr = int(np.clip(size / 2 + (hy + 5) / spacing, 0, size - 1))
                hc = int(np.clip(size / 2 + (cx + s * 30) / spacing, 0, size - 1))
                img[_branches(mask, (hr, hc), spacing, rng, 14)] = u(20, 70)

    # acquisition
    if p.kernel == "sharp":
        blur = ndimage.gaussian_filter(img, 1.2)
        img = img + 0.6 * (img - blur)  # edge overshoot
        noise = rng.normal(size=shape).astype(np.float32)
    else:
        img = ndimage.gaussian_filter(img, 0.9)
        noise = _band_noise(shape, 1.2, rng)
    img += p.noise * noise / max(float(noise.std()), 1e-6)
    if p.streaks:
        img += _streaks_b(x, y, dense_points, p, spacing, rng)
    if p.rings:
        r = np.hypot(x, y) / spacing
        img += p.rings * np.sin(r * u(0.6, 1.4)) * (np.sin(r / u(8, 20)) > 0.7)
    if p.ghost:
        shift = (int(rng.integers(-6, 7)), int(rng.integers(2, 9)))
        img = (1 - p.ghost) * img + p.ghost * np.roll(img, shift, (0, 1))
    cup = np.hypot(x - cx, y - cy) / max(p.body)
    img -= 25.0 * np.clip(1 - cup, 0, 1) * (img > -500)
    img = img * p.gain + p.offset
    if p.padding:  # outside the reconstruction circle
        img[np.hypot(x, y) > p.fov / 2] = -2048.0
    return np.clip(np.rint(img), -2048, 3071).astype(np.int16), mask


def _streaks_b(x, y, dense_points, p: PatientB, spacing, rng) -> np.ndarray:
    """Streaks between dense structures (photon starvation: dark bands joining them with bright
    edges) and, with metal, bright and dark lines through the whole field of view."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape), np.float32)
    for i, (ax, ay) in enumerate(dense_points):
        for bx, by in dense_points[i + 1 :]:
            t = np.arctan2(by - ay, bx - ax)
            d = np.abs((x - ax) * np.sin(t) - (y - ay) * np.cos(t))
            width = rng.uniform(4, 12)
            out -= p.streaks * rng.uniform(40, 90) * np.exp(-0.5 * (d / width) ** 2)
            for k in range(int(rng.integers(2, 6))):
                off = rng.normal(0, width * 2)
                dk = np.abs(d - abs(off)) / spacing
                out += p.streaks * rng.uniform(30, 80) * (1 if k % 2 else -1) * np.exp(-0.5 * (dk / 1.0) ** 2)
    if p.metal:
        mx, my = dense_points[int(rng.integers(len(dense_points)))]
        mx, my = mx + rng.uniform(-25, 25), my - rng.uniform(20, 80)
        out[_disk(x, y, mx, my, 3)] += 2500.0
        for k in range(int(rng.integers(8, 20))):
            t = rng.uniform(0, np.pi)
            d = np.abs((x - mx) * np.sin(t) - (y - my) * np.cos(t)) / spacing
            r = np.hypot(x - mx, y - my)
            amp = p.streaks * rng.uniform(80, 250) * (1 if k % 2 else -1)
            out += amp * np.exp(-0.5 * (d / rng.uniform(0.8, 2.0)) ** 2) * np.exp(-r / (p.fov * 0.6))
    return out


@dataclass
class SliceB:
    id: str
    patient: int
    z: int
    t: float
    kind: str
    spacing_mm: float
    conditions: dict
    image: np.ndarray
    mask: np.ndarray


def lung_slices_b(
    n_slices: int, *, size: int = 512, seed: int = 0, patients: int | None = None
) -> Iterator[SliceB]:
    """``n_slices`` family-B slices over ``patients`` phantoms (default one per 40 slices), each
    patient's share spread from the neck to the abdomen; positions where a lung would be a sliver
    under ``MIN_LUNG_MM2`` are moved along the chest."""
    per = slices_per_patient(n_slices, patients, size)
    for i, n in enumerate(per):
        p = make_patient_b(seed, i)
        walk = np.random.default_rng([seed, i, 11])
        ts = (np.arange(n) + walk.uniform(0.2, 0.8, n)) / max(n, 1)
        for j, t in enumerate(ts):
            rng_seed = [seed, i, j, 5]
            for attempt in range(8):
                image, mask = render_slice_b(p, float(t), size, np.random.default_rng(rng_seed + [attempt]))
                area = float(mask.sum()) * (p.fov / size) ** 2
                if area == 0 or area >= MIN_LUNG_MM2:
                    break
                t = min(t + 0.015, 0.999) if t > 0.5 else max(t - 0.015, 0.0)
            kind = (
                ("apex" if t < 0.5 else "abdomen")
                if not mask.any()
                else "base"
                if t > min(p.dome)
                else "lung"
            )
            level = "none" if not p.streaks else "strong" if p.streaks >= 1.3 else "moderate"
            yield SliceB(
                id=f"b{i:03d}_z{j:03d}",
                patient=i,
                z=j,
                t=round(float(t), 4),
                kind=kind,
                spacing_mm=round(p.fov / size, 4),
                conditions={
                    "streaks": level,
                    "metal": p.metal,
                    "density": p.density,
                    "arms": p.arms,
                    "ghost": bool(p.ghost),
                    "kernel": p.kernel,
                },  # fmt: skip
                image=image,
                mask=mask,
            )
