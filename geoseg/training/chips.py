"""Training chips sampled from labelled scenes (a raster plus polygons in any vector format)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from rasterio.windows import Window
from scipy import ndimage

from geoseg.errors import GeosegError
from geoseg.evaluation.objects import read_vectors
from geoseg.inference.attributes import ship_attributes
from geoseg.io.fingerprints import files_fingerprint
from geoseg.io.refs import open_scene
from geoseg.io.scene import Scene


@dataclass
class LabelledScene:
    """A scene kept open for sampling, with its label polygons in scene pixel space."""

    scene: Scene
    polygons: np.ndarray
    sizes: np.ndarray | None = None  # (n, 2) length and beam in metres, when the labels have a CRS
    tree: shapely.STRtree = field(init=False)

    def __post_init__(self) -> None:
        self.tree = shapely.STRtree(self.polygons)

    @property
    def shape(self) -> tuple[int, int]:
        return self.scene.height, self.scene.width


def evaluation_only(scene, labels) -> bool:
    """Whether a scene or its labels say they are for evaluation only: ``geoseg synth tankers
    --family b`` tags the GeoTIFF ``GEOSEG_EVALUATION_ONLY=yes`` and its truth has ``family`` b."""
    tagged = getattr(scene, "tags", {}).get("GEOSEG_EVALUATION_ONLY") == "yes"
    return tagged or ("family" in labels.columns and bool((labels["family"] == "b").any()))


def load_labelled(scene_path: str, labels_path: str, *, bands=None) -> LabelledScene:
    """Open ``scene_path`` and bring ``labels_path``'s polygons into its pixel space."""
    scene = open_scene(scene_path, bands=bands)
    labels = read_vectors(labels_path, "labels")
    if evaluation_only(scene, labels):
        raise GeosegError(f"scene '{scene_path}': is evaluation-only data (family b); models are never "
                          "trained or selected on it")  # fmt: skip
    if scene.crs is None or labels.crs is None:
        raise GeosegError(f"labels '{labels_path}': the scene and the labels both need a CRS")
    labels = labels.to_crs(scene.crs)
    inv = ~scene.transform
    a, b, c, d, e, f = inv.a, inv.b, inv.c, inv.d, inv.e, inv.f
    polys = shapely.transform(
        np.asarray(labels.geometry.values, dtype=object),
        lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]),
    )
    dims = ship_attributes(np.asarray(labels.geometry.values, dtype=object), labels.crs)
    sizes = dims[["length_m", "beam_m"]].to_numpy(dtype=np.float64, na_value=np.nan)
    return LabelledScene(scene, polys, sizes)


def size_limits(scenes: list[LabelledScene], margin: float = 0.2) -> dict | None:
    """The range of the labelled objects' length and beam (metres), widened by ``margin`` at each
    end: what a model trained on them can be expected to find. None without sizes."""
    sizes = [s.sizes for s in scenes if s.sizes is not None and len(s.sizes)]
    if not sizes:
        return None
    allsizes = np.concatenate(sizes)
    allsizes = allsizes[~np.isnan(allsizes).any(axis=1)]
    if not len(allsizes):
        return None
    lo, hi = allsizes.min(axis=0), allsizes.max(axis=0)
    return {
        "length_m": [round(float(lo[0]) * (1 - margin), 1), round(float(hi[0]) * (1 + margin), 1)],
        "beam_m": [round(float(lo[1]) * (1 - margin), 1), round(float(hi[1]) * (1 + margin), 1)],
    }


def fingerprint(pairs: list[tuple[str, str]]) -> str:
    """A short hash of training data: each scene's and labels' file name, size and first MiB."""
    return files_fingerprint(p for pair in pairs for p in pair)


def chip_window(ls: LabelledScene, rng: np.random.Generator, size: int, focus: float = 0.7) -> Window:
    """A random chip window; with probability ``focus`` it holds (part of) a labelled object."""
    h, w = ls.shape
    if len(ls.polygons) and rng.random() < focus:
        g = ls.polygons[rng.integers(len(ls.polygons))]
        x0, y0, x1, y1 = g.bounds
        cx = rng.uniform(x0, x1) + rng.uniform(-0.35, 0.35) * size
        cy = rng.uniform(y0, y1) + rng.uniform(-0.35, 0.35) * size
        col, row = int(cx - size / 2), int(cy - size / 2)
    else:
        col, row = int(rng.integers(0, max(1, w - size))), int(rng.integers(0, max(1, h - size)))
    col = int(np.clip(col, 0, max(0, w - size)))
    row = int(np.clip(row, 0, max(0, h - size)))
    return Window(col, row, min(size, w), min(size, h))


def instance_targets(ls: LabelledScene, window: Window, *, min_pixels: int = 20) -> np.ndarray:
    """Instance masks (K, h, w) uint8 of the labels inside ``window``."""
    h, w = int(window.height), int(window.width)
    box = shapely.box(window.col_off, window.row_off, window.col_off + w, window.row_off + h)
    hits = ls.polygons[ls.tree.query(box, predicate="intersects")]
    local = Affine.translation(window.col_off, window.row_off)
    masks = [features.rasterize([(g, 1)], out_shape=(h, w), transform=local) for g in hits]
    masks = [m for m in masks if m.sum() >= min_pixels]
    return np.stack(masks).astype(np.uint8) if masks else np.zeros((0, h, w), np.uint8)


def augment(image: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flips, 90-degree turns, brightness/contrast jitter and noise (raw band values)."""
    k = int(rng.integers(4))
    image, masks = np.rot90(image, k, axes=(1, 2)), np.rot90(masks, k, axes=(1, 2))
    if rng.random() < 0.5:
        image, masks = image[:, :, ::-1], masks[:, :, ::-1]
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-12, 12)
    image = image + rng.normal(0, rng.uniform(0, 4), image.shape)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(masks)


def photometric(image: np.ndarray, rng: np.random.Generator, top: float = 255.0) -> np.ndarray:
    """Stronger, sensor- and atmosphere-like changes of a chip's raw band values, whose bright end
    is ``top`` (255 for 8-bit scenes): per-band gain and offset (another sea colour, another
    calibration), gamma, haze (path radiance that brightens and flattens the chip, varying across
    it), blur, noise of a random level and a one-pixel shift of one band. Each is drawn on its own;
    the chip's shape, and so its masks, are untouched."""
    image = image.astype(np.float32) / top
    bands, h, w = image.shape
    image = image * rng.uniform(0.75, 1.3, (bands, 1, 1)) + rng.uniform(-0.1, 0.1, (bands, 1, 1))
    if rng.random() < 0.5:
        image = np.clip(image, 0, None) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.4:
        # a share of a bright veil, slightly bluer in the later bands, ramping across the chip
        ry, rx = rng.uniform(-1, 1, 2) * rng.uniform(0, 0.3)
        yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
        xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
        share = np.clip(rng.uniform(0.1, 0.6) + ry * yy + rx * xx, 0, 0.8)[None]
        tint = rng.uniform(-0.06, 0.1) * np.linspace(0, 1, bands, dtype=np.float32)[:, None, None]
        image = image * (1 - share) + (rng.uniform(0.55, 0.9) + tint) * share
    if rng.random() < 0.3:
        sigma = rng.uniform(0.4, 1.2)
        image = ndimage.gaussian_filter(image, (0, sigma, sigma))
    if bands > 1 and rng.random() < 0.15:
        b = int(rng.integers(bands))
        image[b] = np.roll(image[b], int(rng.choice([-1, 1])), axis=int(rng.integers(2)))
    image = image + rng.normal(0, rng.uniform(0, 0.03), image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * top).astype(np.float32)


def band_stats(scenes: list[LabelledScene], rng: np.random.Generator, samples: int = 24, size: int = 256):
    """Per-band mean and std of raw values over random windows (NaN ignored)."""
    data = []
    for _ in range(samples):
        ls = scenes[int(rng.integers(len(scenes)))]
        data.append(ls.scene.read(chip_window(ls, rng, size, focus=0.5)).reshape(ls.scene.count, -1))
    arr = np.concatenate(data, axis=1)
    return np.nanmean(arr, axis=1).tolist(), np.maximum(np.nanstd(arr, axis=1), 1e-3).tolist()
