"""The vectorised merge gives exactly what the straightforward one did: the same objects, in the
same order, with the same geometry, score and part count. The reference (geoseg's merge before it
was vectorised: a Python loop per group, per pair of a near part, per object's rank) lives here."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.inference.merge import _clean_overlap, merge_instances, polygonal
from geoseg.inference.tiling import TileGrid
from geoseg.inference.vectorize import BOTTOM, LEFT, RIGHT, TOP, InstancePart, instance_parts
from geoseg.models.plugins import ThresholdInstances

# --- the reference ------------------------------------------------------------------------------


def ref_window_boxes(tile_ids, tiles, core=False):
    out = np.empty((len(tile_ids), 4))
    for i, t in enumerate(tile_ids):
        r0, c0, r1, c1 = tiles[int(t)].core_bounds if core else tiles[int(t)].bounds
        out[i] = (c0, r0, c1, r1)
    return out


def ref_link_parts(parts, tiles, iou_threshold, ios_threshold):
    geoms = np.array([p.geometry for p in parts], dtype=object)
    tile_ids = np.array([p.tile for p in parts])
    labels = np.array([p.label for p in parts])
    cut = np.array([p.cut for p in parts], dtype=bool)
    near = np.array([p.near for p in parts]) > 0
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    sel = (a < b) & (tile_ids[a] != tile_ids[b]) & (labels[a] == labels[b])
    a, b = a[sel], b[sel]
    if a.size == 0:
        return a, b
    areas = shapely.area(geoms)
    inter = shapely.intersection(geoms[a], geoms[b])
    inter_area = shapely.area(inter)
    link = inter_area >= iou_threshold * np.maximum(areas[a] + areas[b] - inter_area, 1e-12)
    wa, wb = ref_window_boxes(tile_ids[a], tiles), ref_window_boxes(tile_ids[b], tiles)
    strip = np.column_stack([np.maximum(wa[:, 0], wb[:, 0]), np.maximum(wa[:, 1], wb[:, 1]),
                             np.minimum(wa[:, 2], wb[:, 2]), np.minimum(wa[:, 3], wb[:, 3])])  # fmt: skip
    sw, sh = strip[:, 2] - strip[:, 0], strip[:, 3] - strip[:, 1]
    either_cut = cut[a] | cut[b] | near[a] | near[b]
    m = ~link & either_cut & (sw > 0) & (sh > 0) & (inter_area > 0)
    if m.any():
        boxes = shapely.box(strip[m, 0], strip[m, 1], strip[m, 2], strip[m, 3])
        sa = shapely.area(shapely.intersection(geoms[a[m]], boxes))
        sb = shapely.area(shapely.intersection(geoms[b[m]], boxes))
        ratio_ok = inter_area[m] >= ios_threshold * np.maximum(np.minimum(sa, sb), 1e-12)
        for k in np.flatnonzero(~ratio_ok):
            ratio_ok[k] = _clean_overlap(geoms[a[m][k]], geoms[b[m][k]], boxes[k])
        link[m] = ratio_ok
    m = ~link & cut[a] & cut[b] & (np.minimum(sw, sh) == 0) & (np.maximum(sw, sh) > 0)
    if m.any():
        seams = shapely.linestrings(np.stack([strip[m][:, [0, 1]], strip[m][:, [2, 3]]], axis=1))
        link[m] = shapely.length(shapely.intersection(inter[m], seams)) > 0
    return a[link], b[link]


def ref_confirm_cuts(parts, tiles, a, b, beyond=2.0):
    parts = list(parts)
    for i, j in ((int(x), int(y)) for pair in zip(a, b, strict=True) for x, y in (pair, pair[::-1])):
        p = parts[i]
        if not p.near or p.cut:
            continue
        r0, c0, r1, c1 = tiles[p.tile].bounds
        x0, y0, x1, y1 = parts[j].geometry.bounds
        past = (p.near & TOP and y0 < r0 - beyond, p.near & LEFT and x0 < c0 - beyond,
                p.near & BOTTOM and y1 > r1 + beyond, p.near & RIGHT and x1 > c1 + beyond)  # fmt: skip
        if any(past):
            parts[i] = replace(p, cut=True)
    return parts


def ref_iou(g1, g2):
    inter = shapely.intersection(g1, g2).area
    union = g1.area + g2.area - inter
    return inter / union if union > 0 else 0.0


def ref_merge_group(group, tiles, iou_threshold):
    if len(group) == 1:
        p = group[0]
        return [(p.geometry, p.score, p.label, 1)]
    score, label = max(p.score for p in group), group[0].label
    whole = sorted((p for p in group if not p.cut), key=lambda p: (-p.score, -p.area_px, p.tile))
    if whole:
        kept = []
        for p in whole:
            if all(ref_iou(p.geometry, k.geometry) < iou_threshold for k in kept):
                kept.append(p)
        if len(kept) == 1:
            return [(kept[0].geometry, score, label, len(group))]
        return [(k.geometry, k.score, label, 1) for k in kept]
    geoms = np.array([p.geometry for p in group], dtype=object)
    cores = ref_window_boxes(np.array([p.tile for p in group]), tiles, core=True)
    core_geoms = shapely.box(cores[:, 0], cores[:, 1], cores[:, 2], cores[:, 3])
    owned = shapely.intersection(geoms, core_geoms)
    leftover = shapely.difference(shapely.union_all(geoms), shapely.union_all(core_geoms))
    geom = polygonal(shapely.union_all(np.append(owned, leftover)))
    if geom is None:
        geom = max(group, key=lambda p: p.area_px).geometry
    return [(geom, score, label, len(group))]


def ref_drop_contained(objects, ios_threshold=0.8):
    if len(objects) < 2:
        return objects
    geoms = np.array([o[0] for o in objects], dtype=object)
    areas = shapely.area(geoms)
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    labels = np.array([o[2] for o in objects])
    sel = (a != b) & (labels[a] == labels[b])
    a, b = a[sel], b[sel]
    if a.size == 0:
        return objects
    inside = shapely.area(shapely.intersection(geoms[a], geoms[b]))
    ranked = sorted(range(len(objects)), key=lambda i: (-objects[i][1], -areas[i]))
    rank = {int(i): r for r, i in enumerate(ranked)}
    dropped = set()
    for k in sorted(range(a.size), key=lambda k: rank[int(b[k])]):
        i, j = int(a[k]), int(b[k])
        if rank[j] < rank[i] and j not in dropped and inside[k] >= ios_threshold * areas[i]:
            dropped.add(i)
    return [o for n, o in enumerate(objects) if n not in dropped]


def reference_merge(parts, tiles, iou_threshold=0.5, ios_threshold=0.5):
    n = len(parts)
    if n == 0:
        return []
    a, b = ref_link_parts(parts, tiles, iou_threshold, ios_threshold)
    parts = ref_confirm_cuts(parts, tiles, a, b)
    _, group = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(n, n)), directed=False)
    order = np.argsort(group, kind="stable")
    merged = []
    for members in np.split(order, np.flatnonzero(np.diff(group[order])) + 1):
        merged.extend(ref_merge_group([parts[i] for i in members], tiles, iou_threshold))
    return ref_drop_contained(merged)


def assert_same_objects(got, expected):
    assert len(got) == len(expected)
    for o, (geom, score, label, count) in zip(got, expected, strict=True):
        assert shapely.equals_exact(o.geometry, geom, tolerance=0), (o.geometry.wkt, geom.wkt)
        assert (o.score, o.label, o.parts) == (score, label, count)


# --- scenes -------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    size=st.sampled_from([16, 24, 32]),
    overlap=st.sampled_from([0, 1, 4, 8]),
    density=st.floats(0.05, 0.6),
)
def test_threshold_plugin_tiles_merge_as_before(seed, size, overlap, density):
    rng = np.random.default_rng(seed)
    image = (rng.random((70, 90)) < density).astype(np.float32)
    grid = TileGrid(*image.shape, size=size, overlap=overlap)
    seg = ThresholdInstances(threshold=0.5)
    parts, tiles = [], {}
    for t in grid:
        r0, c0, r1, c1 = t.bounds
        parts.extend(instance_parts(seg.predict(image[None, None, r0:r1, c0:c1])[0], t, near_margin=3))
        tiles[t.index] = t
    assert_same_objects(merge_instances(parts, tiles), reference_merge(parts, tiles))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(0, 60),
    iou=st.sampled_from([0.3, 0.5, 0.9]),
    ios=st.sampled_from([0.3, 0.5]),
)
def test_detector_like_parts_merge_as_before(seed, n, iou, ios):
    """Parts as a detector gives them: overlapping views of a few objects from several tiles, some
    identical, some a little off, nested partial detections, random cut and near flags, ties in
    score and area, two classes."""
    rng = np.random.default_rng(seed)
    tiles = {t.index: t for t in TileGrid(120, 120, size=50, overlap=20)}
    centres = rng.integers(10, 110, (max(1, n // 3), 2))
    parts = []
    for _ in range(n):
        cy, cx = centres[rng.integers(len(centres))]
        tile = tiles[int(rng.integers(len(tiles)))]
        h, w = rng.integers(3, 30, 2)
        dy, dx = rng.integers(-2, 3, 2) * (rng.random() < 0.5)  # half identical, half a little off
        geom = shapely.box(cx - w // 2 + dx, cy - h // 2 + dy, cx + w - w // 2 + dx, cy + h - h // 2 + dy)
        if rng.random() < 0.2:  # a polygon with a notch: not every overlay is of boxes
            geom = geom.difference(shapely.box(cx, cy, cx + 3, cy + 3))
        r0, c0, r1, c1 = tile.bounds
        geom = polygonal(shapely.intersection(geom, shapely.box(c0, r0, c1, r1)))
        if geom is None or geom.geom_type != "Polygon":
            continue
        near = int(rng.choice([0, 0, TOP, LEFT, BOTTOM | RIGHT]))
        parts.append(InstancePart(geom, float(rng.choice([0.6, 0.8, 0.95])), int(rng.integers(1, 3)),
                                  tile.index, bool(rng.random() < 0.3), geom.area, near))  # fmt: skip
    got = merge_instances(parts, tiles, iou_threshold=iou, ios_threshold=ios)
    assert_same_objects(got, reference_merge(parts, tiles, iou, ios))


def reference_dissolve(pieces):
    merged = []
    for label in sorted({p.label for p in pieces}):
        mine = [p for p in pieces if p.label == label]
        geoms = np.array([p.geometry for p in mine], dtype=object)
        dissolved = shapely.get_parts(shapely.union_all(geoms))
        dissolved = np.array([g for g in dissolved if isinstance(g, shapely.Polygon)], dtype=object)
        if dissolved.size == 0:
            continue
        piece_idx, poly_idx = shapely.STRtree(dissolved).query(
            shapely.point_on_surface(geoms), predicate="within"
        )
        prob, pix = np.zeros(len(dissolved)), np.zeros(len(dissolved))
        np.add.at(prob, poly_idx, [mine[i].prob_sum for i in piece_idx])
        np.add.at(pix, poly_idx, [mine[i].pixels for i in piece_idx])
        merged.extend(
            (g, float(p / c) if c else 0.0, label) for g, p, c in zip(dissolved, prob, pix, strict=True)
        )
    return merged


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31), size=st.sampled_from([16, 24, 40]), overlap=st.sampled_from([0, 4, 8]))
def test_semantic_dissolve_as_before(seed, size, overlap):
    """The same polygons (the union's own where pieces meet, the pieces themselves where they meet
    none) with the same mean probabilities, as unioning every piece of a class did."""
    from geoseg.inference.merge import dissolve_semantic
    from geoseg.inference.vectorize import semantic_pieces

    rng = np.random.default_rng(seed)
    classes = ["background", "a", "b"]
    blobs = rng.random((3, 60, 70))
    blobs[1:] *= rng.random((2, 1, 1)) + 0.2  # regions of each class, with holes and islands
    probs = (blobs / blobs.sum(0)).astype(np.float32)
    pieces = []
    for t in TileGrid(60, 70, size=size, overlap=overlap):
        r0, c0, r1, c1 = t.bounds
        pieces.extend(semantic_pieces(probs[:, r0:r1, c0:c1], t, classes))
    got, expected = dissolve_semantic(pieces), reference_dissolve(pieces)
    assert len(got) == len(expected)
    remaining = list(got)
    for geom, score, label in expected:
        match = next(o for o in remaining if o.label == label and o.geometry.equals(geom))
        assert match.score == score
        remaining.remove(match)
