"""Vectorising instance masks: one polygonising call per tile gives exactly the polygons, flags and
order of polygonising mask by mask, and the vectorised fragment suppression decides as the greedy
loop over a growing list of rivals did. The references (the straightforward per-mask code geoseg
had before) live here, not in the package."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio import features
from rasterio.errors import NotGeoreferencedWarning
from scipy import ndimage
from shapely.geometry import shape

from geoseg.inference.tiling import TileGrid
from geoseg.inference.vectorize import (
    BOTTOM,
    LEFT,
    RIGHT,
    TOP,
    InstancePart,
    instance_parts,
    mask_windows,
    masks_to_geometries,
    suppress_fragments,
)

_FOUR = ndimage.generate_binary_structure(2, 1)


# --- references: one mask, one polygonising call; the greedy loop over kept rivals -------------


def reference_geometry(mask: np.ndarray, row_off: int, col_off: int, min_area: float = 0):
    """The largest 4-connected region of ``mask`` as a polygon in scene pixels, or None."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    crop = np.ascontiguousarray(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], dtype=np.uint8)
    regions, n = ndimage.label(crop, structure=_FOUR)
    if n > 1:
        crop = (regions == np.argmax(np.bincount(regions.ravel())[1:]) + 1).astype(np.uint8)
    transform = Affine.translation(col_off + cols[0], row_off + rows[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        found = features.shapes(crop, mask=crop.astype(bool), transform=transform, connectivity=4)
        parts = [shape(g) for g, _ in found]
    parts = [p for p in parts if p.area >= max(min_area, 1e-9)]
    if not parts:
        return None
    geom = max(parts, key=lambda p: p.area)
    return geom if geom.is_valid else shapely.make_valid(geom)


def reference_suppress(parts, ios_threshold=0.6):
    if len(parts) < 2:
        return parts
    order = sorted(range(len(parts)), key=lambda i: (-parts[i].score, -parts[i].area_px))
    kept = []
    for i in order:
        p = parts[i]
        rivals = [k.geometry for k in kept if k.label == p.label]
        if rivals:
            inside = shapely.area(shapely.intersection(p.geometry, np.array(rivals, dtype=object)))
            if inside.max() >= ios_threshold * p.area_px:
                continue
        kept.append(p)
    return kept


def reference_parts(pred, tile, *, score_threshold=0.5, mask_threshold=0.5, min_area=0, fragment_ios=0.6,
                    edge_margin=4, near_margin=None):  # fmt: skip
    scores = np.asarray(pred["scores"]).reshape(-1)
    labels = np.asarray(pred["labels"]).reshape(-1)
    boxes = np.asarray(pred["boxes"]) if "boxes" in pred else None
    h, w = int(tile.window.height), int(tile.window.width)
    r_off, c_off = int(tile.window.row_off), int(tile.window.col_off)
    out = []
    for k in np.flatnonzero(scores >= score_threshold):
        m = np.asarray(pred["masks"][k])
        m = m[0] if m.ndim == 3 else m
        y0, x0, y1, x1 = 0, 0, h, w
        if boxes is not None:
            bx0, by0, bx1, by1 = boxes[k]
            x0, y0 = max(0, int(np.floor(bx0)) - 1), max(0, int(np.floor(by0)) - 1)
            x1, y1 = min(w, int(np.ceil(bx1)) + 1), min(h, int(np.ceil(by1)) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
        sub = m[y0:y1, x0:x1]
        geom = reference_geometry(sub if sub.dtype == bool else sub >= mask_threshold, r_off + y0, c_off + x0,
                                  min_area)  # fmt: skip
        if geom is None:
            continue
        gx0, gy0, gx1, gy1 = geom.bounds
        top, left, bottom, right = tile.cut
        gaps = np.array([gy0 - r_off if top else np.inf, gx0 - c_off if left else np.inf,
                         r_off + h - gy1 if bottom else np.inf,
                         c_off + w - gx1 if right else np.inf])  # fmt: skip
        cut = bool((gaps <= edge_margin).any())
        near_by = (gaps <= (edge_margin if near_margin is None else near_margin)) & ~(gaps <= edge_margin)
        near = int(np.dot(near_by, [TOP, LEFT, BOTTOM, RIGHT]))
        out.append(InstancePart(geom, float(scores[k]), int(labels[k]), tile.index, cut, geom.area, near))
    return reference_suppress(out, fragment_ios)


def assert_same_parts(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        # the same coordinates in the same order, not just the same shape
        assert shapely.equals_exact(g.geometry, e.geometry, tolerance=0), (g.geometry.wkt, e.geometry.wkt)
        assert (g.score, g.label, g.tile, g.cut, g.area_px, g.near) == (
            e.score, e.label, e.tile, e.cut, e.area_px, e.near,
        )  # fmt: skip


# --- random predictions ------------------------------------------------------------------------


def random_masks(rng, k: int, h: int, w: int, soft: bool) -> np.ndarray:
    """``k`` overlapping masks: unions of random rectangles with holes cut and specks sprinkled, so
    masks have several regions (ties for the largest too), holes, pinches and diagonal contacts."""
    out = np.zeros((k, h, w), np.float32 if soft else bool)
    for i in range(k):
        m = np.zeros((h, w), bool)
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        for _ in range(rng.integers(1, 5)):
            r0, c0 = cy + rng.integers(-12, 12), cx + rng.integers(-12, 12)
            r1, c1 = r0 + rng.integers(1, 16), c0 + rng.integers(1, 16)
            m[max(0, r0) : max(0, r1), max(0, c0) : max(0, c1)] = True
        m &= ~(rng.random((h, w)) < rng.uniform(0, 0.25))  # holes, pinches, split regions
        m |= rng.random((h, w)) < 0.004  # specks far from the object
        if soft:
            out[i] = np.where(m, rng.uniform(0.5, 1.0, (h, w)), rng.uniform(0.0, 0.5, (h, w)))
        else:
            out[i] = m
    return out


def boxes_of(masks: np.ndarray, threshold: float, rng, jitter: bool) -> np.ndarray:
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks >= threshold if masks.dtype != bool else masks):
        r, c = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if r.size:
            boxes[i] = (c[0], r[0], c[-1] + 1, r[-1] + 1)
    if jitter:  # a detector's boxes are not the masks' own: a little off, some empty or outside
        boxes += rng.uniform(-3, 3, boxes.shape).astype(np.float32)
        boxes[rng.random(len(boxes)) < 0.1] = (5, 5, 5, 9)
    return boxes


@pytest.mark.filterwarnings("error")  # not even rasterio's warning of an identity transform
@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    k=st.integers(0, 30),
    soft=st.booleans(),
    with_boxes=st.sampled_from(["none", "exact", "jittered"]),
    torchvision_shape=st.booleans(),
    score_threshold=st.sampled_from([0.0, 0.5]),
    min_area=st.sampled_from([0, 3]),
    near_margin=st.sampled_from([None, 10]),
    fragment_ios=st.sampled_from([0.0, 0.6, 1.0]),
)
def test_one_call_per_tile_equals_one_call_per_mask(
    seed, k, soft, with_boxes, torchvision_shape, score_threshold, min_area, near_margin, fragment_ios
):
    rng = np.random.default_rng(seed)
    grid = TileGrid(int(rng.integers(40, 160)), int(rng.integers(40, 160)), size=48, overlap=8)
    tile = grid.tiles()[int(rng.integers(0, len(grid)))]
    h, w = int(tile.window.height), int(tile.window.width)
    masks = random_masks(rng, k, h, w, soft)
    # scores with ties, so the order among equals is pinned down too
    pred = {"masks": masks[:, None] if torchvision_shape else masks,
            "scores": rng.choice([0.3, 0.6, 0.9, 1.0], k).astype(np.float32),
            "labels": rng.integers(1, 3, k)}  # fmt: skip
    if with_boxes != "none":
        pred["boxes"] = boxes_of(masks, 0.5, rng, with_boxes == "jittered")
    kw = dict(score_threshold=score_threshold, min_area=min_area, near_margin=near_margin,
              fragment_ios=fragment_ios)  # fmt: skip
    assert_same_parts(instance_parts(pred, tile, **kw), reference_parts(pred, tile, **kw))
    # the engine cuts each mask to its window in the forward-pass task: the same parts from there
    cropped = {k: v for k, v in pred.items() if k != "masks"}
    cropped["mask_crops"] = mask_windows(pred, h, w, score_threshold=score_threshold)
    assert_same_parts(instance_parts(cropped, tile, **kw), reference_parts(pred, tile, **kw))


def test_a_lattice_tile_of_the_threshold_plugin():
    from geoseg.models.plugins import ThresholdInstances

    image = np.zeros((300, 300), np.float32)
    r = (np.arange(300) + 3) % 20  # squares 2 px from the tile's top and left edges: cut there
    image[((r >= 5) & (r < 15))[:, None] & ((r >= 5) & (r < 15))[None, :]] = 200
    image[100:140, 100:140] = 200  # a bigger square with a hole, over four lattice squares
    image[110:120, 110:130] = 0
    tile = TileGrid(600, 600, size=300, overlap=40).tiles()[4]  # cut on all four sides
    pred = ThresholdInstances(threshold=100).predict(image[None, None])[0]
    got = instance_parts(pred, tile, near_margin=16)
    assert_same_parts(got, reference_parts(pred, tile, near_margin=16))
    assert len(got) == ndimage.label(image > 100)[1] == 15 * 15 - 4 + 1
    assert any(p.cut for p in got) and any(p.near for p in got) and any(p.geometry.interiors for p in got)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(0, 40), ios=st.sampled_from([0.0, 0.3, 0.6, 1.0]))
def test_vectorised_fragment_suppression_equals_the_greedy_loop(seed, n, ios):
    rng = np.random.default_rng(seed)
    x0, y0 = rng.integers(0, 40, n), rng.integers(0, 40, n)
    geoms = shapely.box(x0, y0, x0 + rng.integers(1, 25, n), y0 + rng.integers(1, 25, n))
    # nested boxes as a detector's partial second detections, and ties in score and area
    scores = rng.choice([0.5, 0.7, 0.9], n)
    parts = [InstancePart(g, float(s), int(lb), 0, False, g.area) for g, s, lb in
             zip(geoms, scores, rng.integers(1, 3, n), strict=True)]  # fmt: skip
    got, expected = suppress_fragments(parts, ios_threshold=ios), reference_suppress(parts, ios)
    assert [id(p) for p in got] == [id(p) for p in expected]


def test_masks_to_geometries_keeps_holes_and_overlaps():
    a = np.zeros((8, 8), bool)
    a[1:7, 1:7] = True
    a[3:5, 3:5] = False  # a hole
    b = a.copy()  # the same pixels again: overlapping masks are polygonised independently
    empty = np.zeros((3, 3), bool)
    got = masks_to_geometries([a, b, empty], [10, 10, 0], [20, 20, 0])
    assert got[2] is None
    assert got[0].equals(got[1]) and got[0].area == 32 and len(got[0].interiors) == 1
    assert got[0].bounds == (21.0, 11.0, 27.0, 17.0)


def reference_label_pieces(labels, score, row_off, col_off, classes, valid=None):
    out = []
    for label, name in enumerate(classes):
        if name == "background":
            continue
        sel = labels == label
        if valid is not None:
            sel &= valid
        if not sel.any():
            continue
        regions, n = ndimage.label(sel, structure=_FOUR)
        prob_sums = ndimage.sum_labels(score, regions, np.arange(1, n + 1))
        counts = ndimage.sum_labels(sel, regions, np.arange(1, n + 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            shift = Affine.translation(col_off, row_off)
            found = list(features.shapes(regions.astype(np.int32), mask=sel, transform=shift, connectivity=4))
        for g, value in found:
            i = int(value) - 1
            out.append((shape(g), label, float(prob_sums[i]), int(counts[i])))
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), with_valid=st.booleans())
def test_label_pieces_built_at_once_equal_shape_by_shape(seed, with_valid):
    from geoseg.inference.vectorize import label_pieces

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, (int(rng.integers(1, 40)), int(rng.integers(1, 40))))
    score = rng.random(labels.shape).astype(np.float32)
    valid = rng.random(labels.shape) < 0.9 if with_valid else None
    got = label_pieces(labels, score, 7, 11, ["background", "a", "b"], valid)
    expected = reference_label_pieces(labels, score, 7, 11, ["background", "a", "b"], valid)
    assert len(got) == len(expected)
    for p, (geom, label, prob_sum, pixels) in zip(got, expected, strict=True):
        assert shapely.equals_exact(p.geometry, geom, tolerance=0)
        assert (p.label, p.prob_sum, p.pixels) == (label, prob_sum, pixels)
