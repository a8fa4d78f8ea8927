"""Merging per-tile results into whole objects.

Instances (:func:`merge_instances`). Neighbouring tiles overlap, so one object can be (a) seen whole
in two tiles, (b) cut by one tile's edge and whole in the next, (c) longer than a tile and cut in
every tile it touches, or (d) a few pixels from another object. Two parts from different tiles
are linked when

- they are the same object seen twice: IoU >= ``iou_threshold``; or
- at least one is cut by its tile's edge (or ends near it), and, inside the strip the two windows
  share, either
  their intersection covers at least ``ios_threshold`` of the smaller one's share of the strip,
  or the two agree exactly there (each connected piece of one inside the strip lies wholly inside
  or wholly outside the other, as when both tiles saw the same pixels); or
- the windows only abut (no overlap) and the two parts share a stretch of the seam line: their
  pixels are 4-adjacent across it.

A part that ends near an edge of its tile without touching it (a soft mask often stops 8-20 px
short of the edge that cuts the object) counts as cut there when a part linked to it, from another
tile, goes on past that edge: that tile saw the object continue. Otherwise it is whole: an object
that ends near a tile edge is not taken apart because of it.

Linked parts form groups (connected components). A group with a part that no tile edge cuts is
that object, seen whole: the best such part is kept (and any other whole part that is clearly a
different object stays an object of its own). A group whose parts are all cut is assembled from
what each tile owns (its core), plus anything that lies outside those cores. Parts of different
classes are never linked.

Last, an object that lies almost wholly (80 %) inside a better-scored object of its class is a
second, partial detection of that object by a neighbouring tile (within one tile,
:func:`geoseg.vectorize.suppress_fragments` already removed these), and is dropped. A better-scored
object inside a worse one stays: it is more often a hull inside a mask that ran over two hulls.

Semantic pieces (:func:`dissolve_semantic`) come from disjoint tile cores, so they are dissolved
per class; pieces that share an edge become one polygon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.tiling import Tile
from geoseg.vectorize import BOTTOM, LEFT, RIGHT, TOP, InstancePart, SemanticPiece


@dataclass
class MergedObject:
    """A whole object in scene pixel space."""

    geometry: shapely.Geometry
    score: float
    label: int
    parts: int  # how many tile parts were merged into it


def polygonal(geom: shapely.Geometry) -> shapely.Geometry | None:
    """The polygonal part of ``geom`` (drops points and lines left by clipping)."""
    if geom is None or geom.is_empty:
        return None
    if isinstance(geom, shapely.Polygon | shapely.MultiPolygon):
        return geom
    polys = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon) and p.area > 0]
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def _window_boxes(tile_ids: np.ndarray, tiles: Mapping[int, Tile], core: bool = False) -> np.ndarray:
    """(N, 4) array of (xmin, ymin, xmax, ymax) of each part's tile window (or core)."""
    out = np.empty((len(tile_ids), 4))
    for i, t in enumerate(tile_ids):
        r0, c0, r1, c1 = tiles[int(t)].core_bounds if core else tiles[int(t)].bounds
        out[i] = (c0, r0, c1, r1)
    return out


def link_parts(
    parts: Sequence[InstancePart],
    tiles: Mapping[int, Tile],
    *,
    iou_threshold: float = 0.5,
    ios_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) of parts that belong to one object (see the module docstring)."""
    geoms = np.array([p.geometry for p in parts], dtype=object)
    tile_ids = np.array([p.tile for p in parts])
    labels = np.array([p.label for p in parts])
    cut = np.array([p.cut for p in parts], dtype=bool)
    near = np.array([p.near for p in parts]) > 0
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    sel = (a < b) & (tile_ids[a] != tile_ids[b]) & (labels[a] == labels[b])
    a, b = a[sel], b[sel]
    if a.size == 0:
        return a, b
    areas = shapely.area(geoms)
    inter = shapely.intersection(geoms[a], geoms[b])
    inter_area = shapely.area(inter)
    union_area = areas[a] + areas[b] - inter_area
    link = inter_area >= iou_threshold * np.maximum(union_area, 1e-12)

    wa, wb = _window_boxes(tile_ids[a], tiles), _window_boxes(tile_ids[b], tiles)
    strip = np.column_stack(
        [np.maximum(wa[:, 0], wb[:, 0]), np.maximum(wa[:, 1], wb[:, 1]),
         np.minimum(wa[:, 2], wb[:, 2]), np.minimum(wa[:, 3], wb[:, 3])]
    )  # fmt: skip
    sw, sh = strip[:, 2] - strip[:, 0], strip[:, 3] - strip[:, 1]
    either_cut = cut[a] | cut[b] | near[a] | near[b]

    # Windows overlap: compare the parts inside the shared strip.
    m = ~link & either_cut & (sw > 0) & (sh > 0) & (inter_area > 0)
    if m.any():
        boxes = shapely.box(strip[m, 0], strip[m, 1], strip[m, 2], strip[m, 3])
        sa = shapely.area(shapely.intersection(geoms[a[m]], boxes))
        sb = shapely.area(shapely.intersection(geoms[b[m]], boxes))
        ratio_ok = inter_area[m] >= ios_threshold * np.maximum(np.minimum(sa, sb), 1e-12)
        # Consistent views (both tiles agree on the strip's pixels) can share just a small piece of
        # the strip when the object connects elsewhere; they share whole pieces, never part of one.
        for k in np.flatnonzero(~ratio_ok):
            ratio_ok[k] = _clean_overlap(geoms[a[m][k]], geoms[b[m][k]], boxes[k])
        link[m] = ratio_ok

    # Windows abut: parts that share a stretch of the seam hold 4-adjacent pixels: one object.
    m = ~link & cut[a] & cut[b] & (np.minimum(sw, sh) == 0) & (np.maximum(sw, sh) > 0)
    if m.any():
        seams = shapely.linestrings(np.stack([strip[m][:, [0, 1]], strip[m][:, [2, 3]]], axis=1))
        link[m] = shapely.length(shapely.intersection(inter[m], seams)) > 0
    return a[link], b[link]


def confirm_cuts(
    parts: Sequence[InstancePart],
    tiles: Mapping[int, Tile],
    a: np.ndarray,
    b: np.ndarray,
    *,
    beyond: float = 2.0,
) -> list[InstancePart]:
    """``parts``, where each part that ends near an edge of its tile is marked cut if a part linked
    to it (pairs ``a``, ``b``) reaches more than ``beyond`` pixels past that edge."""
    parts = list(parts)
    for i, j in ((int(x), int(y)) for pair in zip(a, b, strict=True) for x, y in (pair, pair[::-1])):
        p = parts[i]
        if not p.near or p.cut:
            continue
        r0, c0, r1, c1 = tiles[p.tile].bounds
        x0, y0, x1, y1 = parts[j].geometry.bounds
        if (
            (p.near & TOP and y0 < r0 - beyond)
            or (p.near & LEFT and x0 < c0 - beyond)
            or (p.near & BOTTOM and y1 > r1 + beyond)
            or (p.near & RIGHT and x1 > c1 + beyond)
        ):
            parts[i] = replace(p, cut=True)
    return parts


def _clean_overlap(g1: shapely.Geometry, g2: shapely.Geometry, strip: shapely.Geometry) -> bool:
    """True when each connected piece of either part inside the strip lies wholly inside the other
    part or wholly outside it (what two tiles that see the same pixels produce)."""
    for mine, other in ((g1, g2), (g2, g1)):
        for piece in shapely.get_parts(polygonal(shapely.intersection(mine, strip))):
            inside = shapely.intersection(piece, other).area
            if 1e-9 * piece.area < inside < piece.area * (1 - 1e-9):
                return False
    return True


def merge_instances(
    parts: Sequence[InstancePart],
    tiles: Mapping[int, Tile],
    *,
    iou_threshold: float = 0.5,
    ios_threshold: float = 0.5,
) -> list[MergedObject]:
    """Merge per-tile instance parts into whole objects (see the module docstring)."""
    n = len(parts)
    if n == 0:
        return []
    a, b = link_parts(parts, tiles, iou_threshold=iou_threshold, ios_threshold=ios_threshold)
    parts = confirm_cuts(parts, tiles, a, b)
    graph = coo_matrix((np.ones(a.size), (a, b)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    merged: list[MergedObject] = []
    for members in np.split(order, bounds):
        merged.extend(_merge_group([parts[i] for i in members], tiles, iou_threshold))
    return drop_contained(merged)


def drop_contained(objects: list[MergedObject], *, ios_threshold: float = 0.8) -> list[MergedObject]:
    """Drop each object lying ``ios_threshold`` of its area or more inside a better-scored (then
    larger) object of the same class; the order of the others is kept."""
    if len(objects) < 2:
        return objects
    geoms = np.array([o.geometry for o in objects], dtype=object)
    areas = shapely.area(geoms)
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    labels = np.array([o.label for o in objects])
    sel = (a != b) & (labels[a] == labels[b])
    a, b = a[sel], b[sel]
    if a.size == 0:
        return objects
    inside = shapely.area(shapely.intersection(geoms[a], geoms[b]))
    rank = {
        int(i): r
        for r, i in enumerate(sorted(range(len(objects)), key=lambda i: (-objects[i].score, -areas[i])))
    }
    dropped: set[int] = set()
    # most-trusted first, so that a dropped object never causes another drop
    for k in sorted(range(a.size), key=lambda k: rank[int(b[k])]):
        i, j = int(a[k]), int(b[k])
        if rank[j] < rank[i] and j not in dropped and inside[k] >= ios_threshold * areas[i]:
            dropped.add(i)
    return [o for n, o in enumerate(objects) if n not in dropped]


def _merge_group(
    group: list[InstancePart], tiles: Mapping[int, Tile], iou_threshold: float
) -> list[MergedObject]:
    if len(group) == 1:
        p = group[0]
        return [MergedObject(p.geometry, p.score, p.label, 1)]
    score = max(p.score for p in group)
    label = group[0].label
    whole = sorted((p for p in group if not p.cut), key=lambda p: (-p.score, -p.area_px, p.tile))
    if whole:
        kept: list[InstancePart] = []
        for p in whole:  # the best whole view; other whole views only if clearly another object
            if all(_iou(p.geometry, k.geometry) < iou_threshold for k in kept):
                kept.append(p)
        if len(kept) == 1:
            return [MergedObject(kept[0].geometry, score, label, len(group))]
        return [MergedObject(k.geometry, k.score, label, 1) for k in kept]
    # Every part is cut: each tile contributes what it owns, plus anything outside those cores.
    geoms = np.array([p.geometry for p in group], dtype=object)
    cores = _window_boxes(np.array([p.tile for p in group]), tiles, core=True)
    core_geoms = shapely.box(cores[:, 0], cores[:, 1], cores[:, 2], cores[:, 3])
    owned = shapely.intersection(geoms, core_geoms)
    leftover = shapely.difference(shapely.union_all(geoms), shapely.union_all(core_geoms))
    geom = polygonal(shapely.union_all(np.append(owned, leftover)))
    if geom is None:  # cannot happen for non-empty parts; keep the largest part to be safe
        geom = max(group, key=lambda p: p.area_px).geometry
    return [MergedObject(geom, score, label, len(group))]


def _iou(g1: shapely.Geometry, g2: shapely.Geometry) -> float:
    inter = shapely.intersection(g1, g2).area
    union = g1.area + g2.area - inter
    return inter / union if union > 0 else 0.0


def dissolve_semantic(pieces: Sequence[SemanticPiece]) -> list[MergedObject]:
    """Dissolve per-core semantic pieces by class; score = mean winning probability."""
    merged: list[MergedObject] = []
    labels = sorted({p.label for p in pieces})
    for label in labels:
        mine = [p for p in pieces if p.label == label]
        geoms = np.array([p.geometry for p in mine], dtype=object)
        dissolved = shapely.get_parts(shapely.union_all(geoms))
        dissolved = np.array([g for g in dissolved if isinstance(g, shapely.Polygon)], dtype=object)
        if dissolved.size == 0:
            continue
        # every piece lies inside exactly one dissolved polygon
        probe = shapely.point_on_surface(geoms)
        tree = shapely.STRtree(dissolved)
        piece_idx, poly_idx = tree.query(probe, predicate="within")
        prob = np.zeros(len(dissolved))
        pix = np.zeros(len(dissolved))
        np.add.at(prob, poly_idx, [mine[i].prob_sum for i in piece_idx])
        np.add.at(pix, poly_idx, [mine[i].pixels for i in piece_idx])
        for g, p, c in zip(dissolved, prob, pix, strict=True):
            merged.append(MergedObject(g, float(p / c) if c else 0.0, label, 1))
    return merged
