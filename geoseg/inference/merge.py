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
:func:`geoseg.inference.vectorize.suppress_fragments` already removed these), and is dropped. A better-scored
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

from geoseg.inference.tiling import Tile
from geoseg.inference.vectorize import BOTTOM, LEFT, RIGHT, TOP, InstancePart, SemanticPiece


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
    ids = np.unique(tile_ids).astype(np.int64)
    table = np.array([tiles[int(t)].core_bounds if core else tiles[int(t)].bounds for t in ids], dtype=float)
    return table.reshape(-1, 4)[np.searchsorted(ids, tile_ids)][:, [1, 0, 3, 2]]


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
    # the same pixels seen by two tiles give the same polygon: no overlay needed to know they are
    # one object (their IoU is 1, and only pairs not linked by IoU are looked at again below)
    inter = geoms[a].copy()
    other = (
        ~shapely.equals_exact(geoms[a], geoms[b], tolerance=0) if iou_threshold < 1 else np.ones(a.size, bool)
    )
    inter[other] = shapely.intersection(geoms[a[other]], geoms[b[other]])
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
    i, j = np.concatenate([a, b]).astype(np.int64), np.concatenate([b, a]).astype(np.int64)
    near = np.array([p.near for p in parts], dtype=np.int64)
    cut = np.array([p.cut for p in parts], dtype=bool)
    sel = (near[i] > 0) & ~cut[i]
    i, j = i[sel], j[sel]
    if i.size == 0:
        return parts
    c0, r0, c1, r1 = _window_boxes(np.array([parts[k].tile for k in i.tolist()]), tiles).T
    x0, y0, x1, y1 = shapely.bounds(np.array([parts[k].geometry for k in j.tolist()], dtype=object)).T
    goes_on = (
        ((near[i] & TOP) > 0) & (y0 < r0 - beyond)
        | ((near[i] & LEFT) > 0) & (x0 < c0 - beyond)
        | ((near[i] & BOTTOM) > 0) & (y1 > r1 + beyond)
        | ((near[i] & RIGHT) > 0) & (x1 > c1 + beyond)
    )
    for k in np.unique(i[goes_on]).tolist():
        parts[k] = replace(parts[k], cut=True)
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
    n_groups, group = connected_components(graph, directed=False)
    # per group, best first: a whole view before a cut one, then by score, area and tile
    cut = np.array([p.cut for p in parts], dtype=bool)
    scores = np.array([p.score for p in parts], dtype=np.float64)
    areas = np.array([p.area_px for p in parts], dtype=np.float64)
    tile_ids = np.array([p.tile for p in parts], dtype=np.int64)
    order = np.lexsort((np.arange(n), tile_ids, -areas, -scores, cut, group))
    start = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])
    size = np.diff(np.r_[start, n])
    best = order[start]
    # a group whose best part is whole and whose other whole parts all are the same object as it
    # (IoU at least iou_threshold, as two tiles' views of one object are) is that part; the rest
    # (other whole views that may be other objects, or all parts cut) go through _merge_group
    member_best = np.repeat(best, size)
    other_whole = np.flatnonzero(~cut[order] & (order != member_best))
    w, wb = order[other_whole], member_best[other_whole]
    simple = ~cut[best]
    if w.size:
        same = _ious(parts, w, wb, iou_threshold) >= iou_threshold
        simple[np.repeat(np.arange(n_groups), size)[other_whole][~same]] = False
    top_score = np.maximum.reduceat(scores[order], start).tolist()
    merged: list = [None] * n_groups  # per group (in group order) an object, or a list of them
    for g, i in zip(np.flatnonzero(simple).tolist(), best[simple].tolist(), strict=True):
        p = parts[i]
        merged[g] = MergedObject(p.geometry, top_score[g], p.label, int(size[g]))
    for g in np.flatnonzero(~simple).tolist():
        members = np.sort(order[start[g] : start[g] + size[g]])  # in the order the parts came
        merged[g] = _merge_group([parts[i] for i in members.tolist()], tiles, iou_threshold)
    objects: list[MergedObject] = []
    for m in merged:
        if isinstance(m, list):
            objects.extend(m)
        else:
            objects.append(m)
    return drop_contained(objects)


def _ious(parts: Sequence[InstancePart], i: np.ndarray, j: np.ndarray, iou_threshold: float) -> np.ndarray:
    """IoU of parts ``i[k]`` and ``j[k]``, as :func:`_iou` computes it (1 for identical polygons)."""
    g1 = np.array([parts[k].geometry for k in i.tolist()], dtype=object)
    g2 = np.array([parts[k].geometry for k in j.tolist()], dtype=object)
    out = np.ones(i.size)
    other = ~shapely.equals_exact(g1, g2, tolerance=0) if iou_threshold < 1 else np.ones(i.size, bool)
    inter = shapely.area(shapely.intersection(g1[other], g2[other]))
    union = shapely.area(g1[other]) + shapely.area(g2[other]) - inter
    out[other] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


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
    scores = np.array([o.score for o in objects], dtype=np.float64)
    rank = np.empty(len(objects), np.int64)
    rank[np.lexsort((-areas, -scores))] = np.arange(len(objects))
    dropped: set[int] = set()
    # most-trusted first, so that a dropped object never causes another drop
    for k in np.argsort(rank[b], kind="stable").tolist():
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


def simplify_objects(
    objects: Sequence[MergedObject], tolerance: float | None, *, coverage: bool = False
) -> list[MergedObject]:
    """``objects`` with outlines simplified by up to ``tolerance`` pixels (None or 0: as they are).

    Instances are simplified one by one (Douglas-Peucker, topology kept: holes stay, rings never
    cross). Semantic regions form a coverage, so with ``coverage`` they are simplified together
    and edges two regions share stay shared (``shapely.coverage_simplify``). A polygon that would
    come out invalid is repaired, and one that would vanish keeps its exact outline.
    """
    if not tolerance or not objects:
        return list(objects)
    geoms = np.array([o.geometry for o in objects], dtype=object)
    if coverage:
        simple = shapely.coverage_simplify(geoms, tolerance)
    else:
        simple = shapely.simplify(geoms, tolerance, preserve_topology=True)
    out = []
    for o, g in zip(objects, simple, strict=True):
        if not shapely.is_valid(g):
            g = polygonal(shapely.make_valid(g))
        if g is None or g.is_empty or g.area <= 0:
            g = o.geometry
        out.append(MergedObject(g, o.score, o.label, o.parts))
    return out


def dissolve_semantic(pieces: Sequence[SemanticPiece]) -> list[MergedObject]:
    """Dissolve per-core semantic pieces by class; score = mean winning probability.

    Only the pieces that meet another piece of their class (across the edge of a core) go through
    the union: a valid polygon that meets none is already one of the dissolved polygons."""
    merged: list[MergedObject] = []
    labels = np.array([p.label for p in pieces], dtype=np.int64)
    for label in np.unique(labels).tolist():
        mine = np.flatnonzero(labels == label)
        geoms = np.array([pieces[i].geometry for i in mine.tolist()], dtype=object)
        prob_sum = np.array([pieces[i].prob_sum for i in mine.tolist()], dtype=np.float64)
        pixels = np.array([pieces[i].pixels for i in mine.tolist()], dtype=np.float64)
        a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
        joins = np.zeros(geoms.size, bool)
        joins[a[a != b]] = True
        # and whatever the union would change: parts of multipolygons, invalid or empty polygons
        joins |= (shapely.get_type_id(geoms) != shapely.GeometryType.POLYGON) | ~shapely.is_valid(geoms)
        joins |= shapely.is_empty(geoms)
        alone = np.flatnonzero(~joins)
        joined = shapely.get_parts(shapely.union_all(geoms[joins])) if joins.any() else np.array([], object)
        joined = joined[shapely.get_type_id(joined) == shapely.GeometryType.POLYGON]
        # every joining piece lies inside exactly one of the joined polygons
        prob, pix = np.zeros(joined.size), np.zeros(joined.size)
        if joined.size:
            members = np.flatnonzero(joins)
            piece_idx, poly_idx = shapely.STRtree(joined).query(
                shapely.point_on_surface(geoms[members]), predicate="within"
            )
            np.add.at(prob, poly_idx, prob_sum[members][piece_idx])
            np.add.at(pix, poly_idx, pixels[members][piece_idx])
        dissolved = np.concatenate([geoms[alone], joined])
        prob, pix = np.concatenate([prob_sum[alone], prob]), np.concatenate([pixels[alone], pix])
        score = np.divide(prob, pix, out=np.zeros_like(prob), where=pix != 0)
        merged.extend(MergedObject(g, s, label, 1) for g, s in zip(dissolved, score.tolist(), strict=True))
    return merged
