"""Region completion: a semantic class's predicted regions grown to the intensity regions they lie in.

A network trained on one kind of image can find an organ's identity (which dark region inside a CT
body is lung, which is bowel gas or trachea) more reliably than its extent: on a scanner or anatomy
it has not seen, it may keep a lung's posterior part and miss a smooth, vessel-free anterior part
of the same air-filled region. A checkpoint may therefore say, per class, that the class fills the
connected regions of low values inside the body it marks::

    "complete": {"lung": {"below": -400, "body_above": -500, "overlap": 0.3}}

After the minimum area has dropped small regions, every 4-connected region of the image whose
values are under ``below``, inside the body (the largest region above ``body_above``, holes
filled) and not touching the image border, is added to the class where at least ``overlap`` of it
is already predicted as that class. Regions the model did not mark at all
(bowel gas, the trachea, air outside the body) stay out. It needs the whole image in memory, which
slices are; ``geoseg predict --no-complete`` turns it off.

With ``gas_below`` as well (``geoseg train unet --gas-below``; meaningful for slices calibrated so
that air reads -1000 HU, see :func:`geoseg.io.slices.air_offset`), the class is first taken out of
the regions whose median is under it: an air-filled space (stomach or bowel gas, the trachea) is
not lung, while lung parenchyma, even an emphysematous one, is denser than air::

    "complete": {"lung": {"below": -400, "body_above": -500, "overlap": 0.3, "gas_below": -975}}

Otherwise completion only adds background pixels.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy import ndimage

from geoseg.inference.merge import MergedObject
from geoseg.inference.vectorize import mask_to_geometry
from geoseg.io.slices import body_mask

MAX_PIXELS = 8192 * 8192  # completion reads the whole image: slices and small rasters only


def settings(metadata: dict, classes: list[str]) -> dict[int, dict]:
    """Class index -> its completion settings (``below``, ``body_above``, ``overlap``) from a
    checkpoint's ``complete`` entry; classes the checkpoint does not have are ignored."""
    out = {}
    for name, s in (metadata.get("complete") or {}).items():
        if name in classes:
            out[classes.index(name)] = {
                "below": float(s["below"]),
                "body_above": float(s.get("body_above", s["below"])),
                "overlap": float(s.get("overlap", 0.3)),
                **({"gas_below": float(s["gas_below"])} if s.get("gas_below") is not None else {}),
            }
    return out


def intensity_regions(values: np.ndarray, below: float, body_above: float) -> tuple[np.ndarray, int]:
    """4-connected regions (labels 1..n) of ``values`` (2-D) under ``below`` inside the body (the
    largest region above ``body_above``, holes filled), without the regions that touch the image
    border. NaN (no data) is neither."""
    data = np.asarray(values, dtype=np.float32)
    body = body_mask(data, body_above)
    if not body.any():
        return np.zeros(data.shape, np.int32), 0
    regions, n = ndimage.label((data < below) & body & ~np.isnan(data))
    border = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    if border.size and border.max() > 0:
        drop = np.zeros(n + 1, bool)
        drop[border] = True
        drop[0] = True
        regions = np.where(drop[regions], 0, regions)
    return regions.astype(np.int32), n


def chosen_regions(mine: np.ndarray, regions: np.ndarray, n: int, overlap: float) -> np.ndarray:
    """Which of the ``n`` labelled ``regions`` (index 0..n, 0 never) are at least ``overlap``
    covered by the boolean mask ``mine``."""
    size = np.bincount(regions.ravel(), minlength=n + 1)
    inside = np.bincount(regions.ravel(), weights=mine.ravel(), minlength=n + 1)
    chosen = inside / np.maximum(size, 1) >= overlap
    chosen[0] = False
    return chosen


def gas_regions(regions: np.ndarray, n: int, values: np.ndarray, gas_below: float | None) -> np.ndarray:
    """Which of the ``n`` labelled ``regions`` (index 0..n, 0 never) have a median of ``values``
    under ``gas_below``: air-filled spaces (bowel and stomach gas, the trachea), not an organ that
    holds air (a lung, even an emphysematous one, is denser than air). None: none are."""
    gas = np.zeros(n + 1, bool)
    if gas_below is not None and n:
        medians = ndimage.median(np.asarray(values, np.float32), regions, index=np.arange(1, n + 1))
        gas[1:] = np.asarray(medians) < gas_below
    return gas


def complete_labels(labels: np.ndarray, values: np.ndarray, by_class: dict[int, dict]) -> np.ndarray:
    """A class label image ``(H, W)`` completed as :func:`complete_objects` completes polygons: each
    completed class taken out of the gas regions (``gas_below``), then grown into the intensity
    regions of ``values`` (2-D) it mostly fills, over background pixels only (training validates
    checkpoints so, as predictions will be made)."""
    out = labels.copy()
    for label, s in by_class.items():
        if not (out == label).any():
            continue
        regions, n = intensity_regions(values, s["below"], s["body_above"])
        if not n:
            continue
        out[gas_regions(regions, n, values, s.get("gas_below"))[regions] & (out == label)] = 0
        out[chosen_regions(out == label, regions, n, s["overlap"])[regions] & (out == 0)] = label
    return out


def rasterize(objects: list[MergedObject], shape: tuple[int, int]) -> np.ndarray:
    """The class indexes (uint8, 0 = background) the objects' pixel-space polygons cover."""
    shapes = [(o.geometry, int(o.label)) for o in objects if not o.geometry.is_empty]
    if not shapes:
        return np.zeros(shape, np.uint8)
    return features.rasterize(shapes, out_shape=shape, transform=Affine.identity(), dtype="uint8")


def complete_objects(
    objects: list[MergedObject], values: np.ndarray, by_class: dict[int, dict]
) -> tuple[list[MergedObject], list[tuple[shapely.Geometry, int]], list[tuple[shapely.Geometry, int]]]:
    """``objects`` (semantic, pixel space of the 2-D ``values``) with each completed class taken
    out of the gas regions (its ``gas_below``) and grown into the intensity regions it mostly
    fills; the added and the removed regions as ``[(polygon, class)]`` (for the mask). Objects of
    other classes are unchanged."""
    labels = rasterize(objects, values.shape)
    out = list(objects)
    added_regions: list[tuple[shapely.Geometry, int]] = []
    removed_regions: list[tuple[shapely.Geometry, int]] = []
    for label, s in by_class.items():
        mine = labels == label
        if not mine.any():
            continue
        regions, n = intensity_regions(values, s["below"], s["body_above"])
        if n == 0:
            continue
        gas = gas_regions(regions, n, values, s.get("gas_below"))[regions] & mine
        if gas.any():  # the class's parts in gas regions are taken out, objects left empty dropped
            hole = mask_to_geometry(gas)
            kept = []
            for o in out:
                if o.label == label and o.geometry.intersects(hole):
                    rest = shapely.get_parts(o.geometry.difference(hole))
                    kept.extend(MergedObject(p, o.score, o.label, o.parts) for p in rest if p.area > 0)
                else:
                    kept.append(o)
            out = kept
            removed_regions.extend((p, label) for p in shapely.get_parts(hole))
            mine &= ~gas
            labels = np.where(gas, 0, labels)
            if not mine.any():
                continue
        added = chosen_regions(mine, regions, n, s["overlap"])[regions] & (labels == 0)
        if not added.any():
            continue
        geom = mask_to_geometry(mine | added)
        if geom is None:
            continue
        old = [o for o in out if o.label == label]
        out = [o for o in out if o.label != label]
        for part in shapely.get_parts(geom):  # each keeps the score of the regions it grew from
            within = [(o, part.intersection(o.geometry).area) for o in old if part.intersects(o.geometry)]
            weight = sum(a for _, a in within)
            score = sum(o.score * a for o, a in within) / weight if weight else 0.0
            out.append(MergedObject(part, float(score), label, sum(o.parts for o, _ in within) or 1))
        extra = mask_to_geometry(added)
        if extra is not None:
            added_regions.extend((p, label) for p in shapely.get_parts(extra))
    return out, added_regions, removed_regions
