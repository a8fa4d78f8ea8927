"""Per-tile predictions to polygons in scene pixel space (x = column, y = row; exact pixel edges).

Instances: one geometry per mask, flagged when it touches a cut edge of its tile (an edge that is
not the scene's own edge), for the cross-tile merge. Semantic: per-class polygons of the part of
the tile it owns (its core), dissolved across tiles by :mod:`geoseg.merge`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from rasterio.errors import NotGeoreferencedWarning
from scipy import ndimage
from shapely.geometry import shape

from geoseg.segmenter import to_numpy
from geoseg.tiling import Tile

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass
class InstancePart:
    """One instance as one tile saw it."""

    geometry: shapely.Geometry
    score: float
    label: int
    tile: int
    cut: bool
    area_px: float
    # edges (TOP | LEFT | BOTTOM | RIGHT) that cut the scene and that the part ends near without
    # touching: it may go on beyond them (see geoseg.merge)
    near: int = 0


TOP, LEFT, BOTTOM, RIGHT = 1, 2, 4, 8


@dataclass
class SemanticPiece:
    """The pixels of one class inside one tile's core."""

    geometry: shapely.Geometry
    label: int
    prob_sum: float
    pixels: int


def mask_to_geometry(
    mask: np.ndarray, row_off: int = 0, col_off: int = 0, *, min_area: float = 0, largest: bool = False
) -> shapely.Geometry | None:
    """Polygon (or MultiPolygon) of the True pixels of ``mask``, offset to scene pixel space.

    4-connected pixels form one polygon; holes are kept; parts smaller than ``min_area`` pixels
    are dropped, and with ``largest`` only the largest part is kept. Returns None when nothing is
    left.

    >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True; m[2, 2] = False
    >>> g = mask_to_geometry(m, 10, 20)
    >>> g.bounds, g.area, len(g.interiors)
    ((21.0, 11.0, 24.0, 14.0), 8.0, 1)
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.ascontiguousarray(mask[r0:r1, c0:c1], dtype=np.uint8)
    if largest:  # choose the largest 4-connected region before polygonising (cheap in NumPy)
        regions, n = ndimage.label(crop, structure=_FOUR_CONNECTED)
        if n > 1:
            crop = (regions == np.argmax(np.bincount(regions.ravel())[1:]) + 1).astype(np.uint8)
    transform = Affine.translation(col_off + c0, row_off + r0)
    with warnings.catch_warnings():  # a crop at the scene origin has an identity transform
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        found = features.shapes(crop, mask=crop.astype(bool), transform=transform, connectivity=4)
        parts = [shape(g) for g, _ in found]
    parts = [p for p in parts if p.area >= max(min_area, 1e-9)]
    if not parts:
        return None
    if largest:
        parts = [max(parts, key=lambda p: p.area)]
    geom = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    return geom if geom.is_valid else shapely.make_valid(geom)


def instance_parts(
    pred: dict,
    tile: Tile,
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    min_area: float = 0,
    fragment_ios: float = 0.6,
    edge_margin: int = 4,
    near_margin: int | None = None,
) -> list[InstancePart]:
    """Polygons of one tile's instance prediction (only the part inside the tile's window), with
    partial duplicates inside a better detection removed (see :func:`suppress_fragments`)."""
    scores = to_numpy(pred["scores"]).reshape(-1)
    keep = np.flatnonzero(scores >= score_threshold)
    if keep.size == 0:
        return []
    masks = pred["masks"]
    labels = to_numpy(pred["labels"]).reshape(-1)
    boxes = to_numpy(pred["boxes"]) if "boxes" in pred else None
    h, w = int(tile.window.height), int(tile.window.width)
    r_off, c_off = int(tile.window.row_off), int(tile.window.col_off)
    out = []
    for k in keep:
        m = to_numpy(masks[k])
        if m.ndim == 3:  # torchvision gives (K, 1, H, W)
            m = m[0]
        y0, x0, y1, x1 = 0, 0, h, w
        if boxes is not None:  # masks are empty outside their box: only look inside it
            bx0, by0, bx1, by1 = boxes[k]
            x0, y0 = max(0, int(np.floor(bx0)) - 1), max(0, int(np.floor(by0)) - 1)
            x1, y1 = min(w, int(np.ceil(bx1)) + 1), min(h, int(np.ceil(by1)) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
        sub = m[y0:y1, x0:x1]
        binary = sub if sub.dtype == bool else sub >= mask_threshold
        # an instance is one connected region: stray specks of a soft mask are dropped
        geom = mask_to_geometry(binary, r_off + y0, c_off + x0, min_area=min_area, largest=True)
        if geom is None:
            continue
        gx0, gy0, gx1, gy1 = geom.bounds
        top, left, bottom, right = tile.cut
        # distance from each edge that cuts the scene (inf for the scene's own edges)
        gaps = np.array(
            [gy0 - r_off if top else np.inf, gx0 - c_off if left else np.inf,
             r_off + h - gy1 if bottom else np.inf, c_off + w - gx1 if right else np.inf]
        )  # fmt: skip
        # a soft mask often stops a pixel or two short of the tile edge that cuts the object:
        # within edge_margin counts as cut. It can also stop further short (8-20 px for a hull at
        # 1.5 m): within near_margin the part is only near the edge, and the merge decides
        cut = bool((gaps <= edge_margin).any())
        near_by = (gaps <= (edge_margin if near_margin is None else near_margin)) & ~(gaps <= edge_margin)
        near = int(np.dot(near_by, [TOP, LEFT, BOTTOM, RIGHT]))
        out.append(InstancePart(geom, float(scores[k]), int(labels[k]), tile.index, cut, geom.area, near))
    return suppress_fragments(out, ios_threshold=fragment_ios)


def suppress_fragments(parts: list[InstancePart], *, ios_threshold: float = 0.6) -> list[InstancePart]:
    """Within one tile, drop a part that lies mostly (``ios_threshold`` of its area) inside a
    better-scored part of the same class: a model's second, partial detection of one object.
    Box NMS misses these because the two boxes differ in size."""
    if len(parts) < 2:
        return parts
    order = sorted(range(len(parts)), key=lambda i: (-parts[i].score, -parts[i].area_px))
    kept: list[InstancePart] = []
    for i in order:
        p = parts[i]
        rivals = [k.geometry for k in kept if k.label == p.label]
        if rivals:
            inside = shapely.area(shapely.intersection(p.geometry, np.array(rivals, dtype=object)))
            if inside.max() >= ios_threshold * p.area_px:
                continue
        kept.append(p)
    return kept


def semantic_pieces(probs, tile: Tile, classes: list[str]) -> list[SemanticPiece]:
    """Per-class polygons of the argmax inside the tile's core."""
    probs = to_numpy(probs)
    r_off, c_off = int(tile.window.row_off), int(tile.window.col_off)
    cr0, cc0, cr1, cc1 = tile.core_bounds
    core = probs[:, cr0 - r_off : cr1 - r_off, cc0 - c_off : cc1 - c_off]
    winner = np.argmax(core, axis=0)
    top = np.take_along_axis(core, winner[None], axis=0)[0]
    return label_pieces(winner, top, cr0, cc0, classes)


def label_pieces(
    labels: np.ndarray,
    score: np.ndarray,
    row_off: int,
    col_off: int,
    classes,
    valid: np.ndarray | None = None,
) -> list[SemanticPiece]:
    """Polygons (scene pixel space) of each class of a label block, except ``background``; each
    4-connected region carries the sum of its ``score`` and its pixel count. Pixels outside
    ``valid`` (when given) belong to no class."""
    out = []
    transform = Affine.translation(col_off, row_off)
    for label, name in enumerate(classes):
        if name == "background":
            continue
        sel = labels == label
        if valid is not None:
            sel &= valid
        if not sel.any():
            continue
        regions, n = ndimage.label(sel, structure=_FOUR_CONNECTED)
        index = np.arange(1, n + 1)
        prob_sums = ndimage.sum_labels(score, regions, index)
        counts = ndimage.sum_labels(sel, regions, index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            found = list(
                features.shapes(regions.astype(np.int32), mask=sel, transform=transform, connectivity=4)
            )
        for g, value in found:
            i = int(value) - 1
            out.append(SemanticPiece(shape(g), label, float(prob_sums[i]), int(counts[i])))
    return out
