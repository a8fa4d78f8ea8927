"""Per-tile predictions to polygons in scene pixel space (x = column, y = row; exact pixel edges).

Instances (:func:`instance_parts`): one polygon per mask, the mask's largest 4-connected region,
flagged when it touches a cut edge of its tile (an edge that is not the scene's own edge) or ends
near one, for the cross-tile merge; a partial second detection inside a better one of the same
tile is dropped (:func:`suppress_fragments`). A tile's masks are polygonised together, by one call
of ``rasterio.features.shapes``: each mask's window goes into one label image, an atlas, under a
label value of its own (:func:`masks_to_geometries`). Masks that overlap in the tile sit side by
side there, so they need no separate layers, and what is polygonised is the masks' windows rather
than a tile per mask. The polygons are those of polygonising each mask alone, coordinate for
coordinate.

Semantic: per-class polygons of the part of the tile it owns (its core), dissolved across tiles by
:mod:`geoseg.inference.merge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy import ndimage
from shapely.geometry import shape

from geoseg.inference.tiling import Tile
from geoseg.models.segmenter import to_numpy

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
_ATLAS_AT = Affine.translation(1, 1)  # where masks_to_geometries polygonises its atlas


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
    # touching: it may go on beyond them (see geoseg.inference.merge)
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
    # polygonised one pixel off its place and moved back: a crop at the scene origin would have an
    # identity transform, which rasterio warns of (and silencing warnings is not thread-safe)
    transform = Affine.translation(col_off + c0 + 1, row_off + r0 + 1)
    found = features.shapes(crop, mask=crop.astype(bool), transform=transform, connectivity=4)
    parts = [shapely.transform(shape(g), lambda xy: xy - 1) for g, _ in found]
    parts = [p for p in parts if p.area >= max(min_area, 1e-9)]
    if not parts:
        return None
    if largest:
        parts = [max(parts, key=lambda p: p.area)]
    geom = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    return geom if geom.is_valid else shapely.make_valid(geom)


def masks_to_geometries(
    masks: Sequence[np.ndarray],
    rows: Sequence[int],
    cols: Sequence[int],
    *,
    min_area: float = 0,
) -> np.ndarray:
    """For each boolean mask, the polygon of its largest 4-connected region, offset to scene
    pixel space by ``(rows[i], cols[i])``; None where nothing is left (no True pixel, or a largest
    region under ``min_area`` pixels). The same polygons, holes included, as
    :func:`mask_to_geometry` with ``largest=True`` gives mask by mask.

    All masks are polygonised by one call: they are packed side by side into one label image (an
    atlas), one label value per mask, so masks may overlap in the scene; each mask is best cropped
    to its True pixels first, since the atlas holds every mask whole. A mask whose largest region
    is not unique keeps the first in raster order (as ``ndimage.label`` numbers them).

    >>> ring = np.ones((3, 3), bool); ring[1, 1] = False
    >>> specks = np.eye(3, dtype=bool)  # three regions of one pixel: the first stays
    >>> a, b, c = masks_to_geometries([ring, specks, ~specks[:1, :1]], [0, 10, 0], [0, 20, 0])
    >>> a.bounds, a.area, len(a.interiors), b.wkt, c
    ((0.0, 0.0, 3.0, 3.0), 8.0, 1, 'POLYGON ((20 10, 20 11, 21 11, 21 10, 20 10))', None)
    """
    n = len(masks)
    out = np.full(n, None, dtype=object)
    if n == 0:
        return out
    canvas, slots = _atlas(masks)
    # the atlas one pixel off the origin: rasterio warns of an identity transform, and silencing
    # warnings (catch_warnings) is not thread-safe; integer shifts keep the coordinates exact
    found = list(features.shapes(canvas, mask=canvas > 0, transform=_ATLAS_AT, connectivity=4))
    if not found:
        return out
    values, xy, ring_offsets, poly_offsets = _ragged(found)
    mask_of = values.astype(np.int64) - 1
    ring_of_point = np.repeat(np.arange(ring_offsets.size - 1), np.diff(ring_offsets))
    poly_of_point = np.repeat(np.arange(len(found)), np.diff(poly_offsets))[ring_of_point]
    # from the atlas back to the scene: integer shifts, so the coordinates are exact
    shift = np.column_stack([np.asarray(cols, np.int64), np.asarray(rows, np.int64)]) - slots[:, ::-1] - 1
    xy += shift[mask_of[poly_of_point]]
    polys = shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, (ring_offsets, poly_offsets))
    areas = shapely.area(polys)
    first = np.arange(len(polys))
    if len(polys) > np.unique(mask_of).size:
        # the largest region of each mask; ties go to the region whose first pixel comes first in
        # raster order: the top row's leftmost pixel, the lowest exterior vertex of that row
        top = shapely.bounds(polys)[:, 1]
        on_top = (ring_of_point == poly_offsets[:-1][poly_of_point]) & (xy[:, 1] == top[poly_of_point])
        left = np.full(len(polys), np.inf)
        np.minimum.at(left, poly_of_point[on_top], xy[on_top, 0])
        order = np.lexsort((left, top, -areas, mask_of))
        first = order[np.r_[True, mask_of[order][1:] != mask_of[order][:-1]]]
    first = first[areas[first] >= max(min_area, 1e-9)]
    chosen = polys[first]
    invalid = ~shapely.is_valid(chosen)
    if invalid.any():
        chosen[invalid] = shapely.make_valid(chosen[invalid])
    out[mask_of[first]] = chosen
    return out


def _ragged(found: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``rasterio.features.shapes`` output as arrays: each polygon's value, all points, and the
    ring and polygon offsets of :func:`shapely.from_ragged_array` (the polygons ``shape()`` would
    make of each, built at once)."""
    rings, ring_counts = [], []
    for g, _ in found:
        rings.extend(g["coordinates"])
        ring_counts.append(len(g["coordinates"]))
    values = np.array([v for _, v in found], dtype=np.float64)
    xy = np.array(list(chain.from_iterable(rings)), dtype=np.float64).reshape(-1, 2)
    ring_offsets = np.concatenate([[0], np.cumsum(np.fromiter(map(len, rings), np.int64, len(rings)))])
    poly_offsets = np.concatenate([[0], np.cumsum(ring_counts, dtype=np.int64)])
    return values, xy, ring_offsets, poly_offsets


def _atlas(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pack boolean masks into one int32 label image (mask ``i`` is label ``i + 1``), shelf by
    shelf in order of height, one empty pixel apart; returns it and each mask's (row, col)."""
    shapes = [m.shape for m in masks]
    heights = [s[0] for s in shapes]
    width = max(max(s[1] for s in shapes), int(sum((h + 1) * (w + 1) for h, w in shapes) ** 0.5)) + 1
    slots = [(0, 0)] * len(masks)
    x = y = shelf = 0
    for i in sorted(range(len(masks)), key=heights.__getitem__, reverse=True):
        h, w = shapes[i]
        if x + w > width:
            x, y, shelf = 0, y + shelf + 1, 0
        slots[i] = (y, x)
        x, shelf = x + w + 1, max(shelf, h)
    canvas = np.zeros((y + shelf, width), dtype=np.int32)
    for i, (m, (r, c), (h, w)) in enumerate(zip(masks, slots, shapes, strict=True)):
        canvas[r : r + h, c : c + w][m] = i + 1
    return canvas, np.array(slots, dtype=np.int64).reshape(-1, 2)


def mask_windows(pred: dict, h: int, w: int, *, score_threshold: float = 0.5,
                 mask_threshold: float = 0.5) -> list:  # fmt: skip
    """Each mask of ``pred`` as ``(row, col, binary crop)`` in tile pixels, cut to the window
    :func:`instance_parts` would look at (its box grown by a pixel, or its pixels' extent without
    boxes); None for masks under ``score_threshold`` or with an empty window. ``pred`` with
    ``"mask_crops"`` set to this gives :func:`instance_parts` the same parts, while a batch's
    predictions shrink from K full-tile masks per tile to their crops."""
    scores = to_numpy(pred["scores"]).reshape(-1)
    masks = pred["masks"]
    boxes = to_numpy(pred["boxes"]).reshape(-1, 4) if "boxes" in pred else None
    out: list = [None] * scores.size
    for k in np.flatnonzero(scores >= score_threshold).tolist():
        m = to_numpy(masks[k])
        m = m[0] if m.ndim == 3 else m  # torchvision gives (K, 1, H, W)
        if boxes is not None:
            bx0, by0, bx1, by1 = boxes[k]
            x0, y0 = max(0, int(np.floor(bx0)) - 1), max(0, int(np.floor(by0)) - 1)
            x1, y1 = min(w, int(np.ceil(bx1)) + 1), min(h, int(np.ceil(by1)) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            sub = m[y0:y1, x0:x1]  # a copy below: a view would keep the whole mask stack alive
            out[k] = (y0, x0, np.array(sub) if sub.dtype == bool else sub >= mask_threshold)
            continue
        binary = m if m.dtype == bool else m >= mask_threshold
        r = np.flatnonzero(binary.any(axis=1))
        if r.size == 0:
            continue
        c = np.flatnonzero(binary.any(axis=0))
        out[k] = (int(r[0]), int(c[0]), binary[r[0] : r[-1] + 1, c[0] : c[-1] + 1].copy())
    return out


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
    partial duplicates inside a better detection removed (see :func:`suppress_fragments`).

    Each mask above ``score_threshold`` is thresholded at ``mask_threshold`` (inside its box,
    grown by a pixel, when the model gives boxes) and reduced to its largest 4-connected region,
    and all of a tile's masks are polygonised at once (:func:`masks_to_geometries`)."""
    scores = to_numpy(pred["scores"]).reshape(-1)
    keep = np.flatnonzero(scores >= score_threshold)
    if keep.size == 0:
        return []
    labels = to_numpy(pred["labels"]).reshape(-1)
    h, w = int(tile.window.height), int(tile.window.width)
    r_off, c_off = int(tile.window.row_off), int(tile.window.col_off)
    # each mask cut to its window: by the engine already (``mask_crops``), else here
    windows = pred.get("mask_crops")
    if windows is None:
        windows = mask_windows(pred, h, w, score_threshold=score_threshold, mask_threshold=mask_threshold)
    crops, rows, cols, found = [], [], [], []
    for k in keep.tolist():
        if windows[k] is None:
            continue
        a, c, sub = windows[k]
        crops.append(sub)
        rows.append(r_off + a)
        cols.append(c_off + c)
        found.append(k)
    return _parts_from_crops(crops, rows, cols, found, scores, labels, tile, h, w, r_off, c_off,
                             edge_margin, near_margin, min_area, fragment_ios)  # fmt: skip


def _parts_from_crops(crops, rows, cols, found, scores, labels, tile, h, w, r_off, c_off, edge_margin,
                      near_margin, min_area, fragment_ios) -> list[InstancePart]:  # fmt: skip
    """The parts of a tile's masks, given as binary crops at scene pixel ``rows``/``cols``."""
    # an instance is one connected region: stray specks of a soft mask are dropped
    geoms = masks_to_geometries(crops, rows, cols, min_area=min_area)
    present = np.flatnonzero(shapely.is_geometry(geoms))
    if present.size == 0:
        return []
    geoms, k = geoms[present], np.array(found, dtype=np.int64)[present]
    gx0, gy0, gx1, gy1 = shapely.bounds(geoms).T
    top, left, bottom, right = tile.cut
    # distance from each edge that cuts the scene (inf for the scene's own edges)
    gaps = np.full((k.size, 4), np.inf)
    for edge, cuts, gap in ((0, top, gy0 - r_off), (1, left, gx0 - c_off), (2, bottom, r_off + h - gy1),
                            (3, right, c_off + w - gx1)):  # fmt: skip
        if cuts:
            gaps[:, edge] = gap
    # a soft mask often stops a pixel or two short of the tile edge that cuts the object:
    # within edge_margin counts as cut. It can also stop further short (8-20 px for a hull at
    # 1.5 m): within near_margin the part is only near the edge, and the merge decides
    cut = (gaps <= edge_margin).any(axis=1)
    near_by = (gaps <= (edge_margin if near_margin is None else near_margin)) & ~(gaps <= edge_margin)
    near = near_by @ np.array([TOP, LEFT, BOTTOM, RIGHT])
    columns = zip(geoms.tolist(), scores[k].astype(float).tolist(), labels[k].astype(int).tolist(),
                  cut.tolist(), shapely.area(geoms).tolist(), near.tolist(), strict=True)  # fmt: skip
    out = [InstancePart(g, s, lb, tile.index, c, a, nb) for g, s, lb, c, a, nb in columns]
    return suppress_fragments(out, ios_threshold=fragment_ios)


def suppress_fragments(parts: list[InstancePart], *, ios_threshold: float = 0.6) -> list[InstancePart]:
    """Within one tile, drop a part that lies mostly (``ios_threshold`` of its area) inside a
    better-scored part of the same class: a model's second, partial detection of one object.
    Box NMS misses these because the two boxes differ in size.

    Parts are taken best first (by score, then area) and returned in that order; a part is dropped
    when it lies that much inside a part taken before it and kept, so a dropped part never causes
    another drop.
    """
    n = len(parts)
    if n < 2:
        return parts
    geoms = np.array([p.geometry for p in parts], dtype=object)
    scores = np.array([p.score for p in parts], dtype=np.float64)
    areas = np.array([p.area_px for p in parts], dtype=np.float64)
    labels = np.array([p.label for p in parts])
    best_first = np.lexsort((-areas, -scores))
    rank = np.empty(n, np.int64)
    rank[best_first] = np.arange(n)
    if ios_threshold <= 0:  # any better part of the class covers "enough": the best one per class stays
        i, j = np.nonzero((labels[:, None] == labels[None, :]) & (rank[None, :] < rank[:, None]))
        hits = np.ones(i.size, bool)
    else:  # only parts that intersect can hold a share of each other
        i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
        pair = (labels[i] == labels[j]) & (rank[j] < rank[i])
        i, j = i[pair], j[pair]
        hits = shapely.area(shapely.intersection(geoms[i], geoms[j])) >= ios_threshold * areas[i]
    i, j = i[hits], j[hits]
    # whether a part goes depends on whether the parts that cover it stay: settle them best first
    dropped = np.zeros(n, bool)
    by_rank = np.lexsort((rank[j], rank[i]))
    for a, b in zip(i[by_rank].tolist(), j[by_rank].tolist(), strict=True):
        if not dropped[a] and not dropped[b]:
            dropped[a] = True
    return [parts[k] for k in best_first.tolist() if not dropped[k]]


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
    transform = Affine.translation(col_off + 1, row_off + 1)  # one pixel off, as in mask_to_geometry
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
        found = list(features.shapes(regions.astype(np.int32), mask=sel, transform=transform, connectivity=4))
        if not found:
            continue
        values, xy, ring_offsets, poly_offsets = _ragged(found)
        xy = xy - 1
        polys = shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, (ring_offsets, poly_offsets))
        i = values.astype(np.int64) - 1
        out.extend(
            SemanticPiece(g, label, p, c)
            for g, p, c in zip(
                polys.tolist(), prob_sums[i].tolist(), counts[i].astype(int).tolist(), strict=True
            )
        )
    return out
