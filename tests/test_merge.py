"""Cross-tile merging: seen twice -> once; cut -> whole; longer than a tile -> whole; close -> two."""

from __future__ import annotations

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from geoseg.inference.merge import merge_instances
from geoseg.inference.tiling import TileGrid
from geoseg.inference.vectorize import InstancePart, instance_parts, mask_to_geometry
from geoseg.models.plugins import ThresholdInstances


def tiled_objects(image: np.ndarray, size: int, overlap: int) -> list[shapely.Geometry]:
    """Run the threshold plug-in tile by tile over ``image`` and merge, without any files."""
    grid = TileGrid(*image.shape, size=size, overlap=overlap)
    seg = ThresholdInstances(threshold=0.5)
    parts, tiles = [], {}
    for t in grid:
        r0, c0, r1, c1 = t.bounds
        pred = seg.predict(image[None, None, r0:r1, c0:c1].astype(np.float32))[0]
        parts.extend(instance_parts(pred, t))
        tiles[t.index] = t
    return [o.geometry for o in merge_instances(parts, tiles)]


def whole_objects(image: np.ndarray) -> list[shapely.Geometry]:
    labels, n = ndimage.label(image > 0.5)
    return [mask_to_geometry(labels == i) for i in range(1, n + 1)]


def assert_same_objects(expected, got):
    assert len(got) == len(expected)
    remaining = list(got)
    for e in expected:
        match = next((g for g in remaining if g.equals(e)), None)
        assert match is not None, f"no output equals {e.wkt[:80]}"
        remaining.remove(match)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    size=st.sampled_from([16, 24, 32]),
    overlap=st.sampled_from([0, 1, 4, 8]),
    density=st.floats(0.05, 0.6),
)
def test_tiled_merge_equals_whole_image_components(seed, size, overlap, density):
    rng = np.random.default_rng(seed)
    image = (rng.random((70, 90)) < density).astype(np.uint8)
    assert_same_objects(whole_objects(image), tiled_objects(image, size, overlap))


def _part(geom, tile, cut, score=0.9):
    return InstancePart(geom, score, 1, tile, cut, geom.area)


def _two_tiles(overlap=20):
    grid = TileGrid(100, 180, size=100, overlap=overlap)
    return {t.index: t for t in grid}


def test_seen_twice_with_slightly_different_masks_is_one():
    tiles = _two_tiles()
    a = shapely.box(82, 40, 95, 60)
    b = shapely.box(83, 40, 96, 61)  # the neighbour's slightly different view
    merged = merge_instances([_part(a, 0, False, 0.8), _part(b, 1, False, 0.9)], tiles)
    assert len(merged) == 1 and merged[0].score == 0.9 and merged[0].geometry.equals(b)


def test_cut_fragment_and_whole_view_give_the_whole_object():
    tiles = {t.index: t for t in TileGrid(100, 180, size=100, overlap=40)}  # tile 1 = cols 80..180
    frag = shapely.box(70, 40, 100, 50)  # tile 0 (cols 0..100) cuts it at col 100
    whole = shapely.box(81, 40, 110, 50)  # seen whole in tile 1
    merged = merge_instances([_part(frag, 0, True), _part(whole, 1, False)], tiles)
    assert len(merged) == 1 and merged[0].geometry.equals(whole)


def test_two_close_objects_each_seen_whole_stay_two():
    tiles = _two_tiles()
    left = shapely.box(82, 40, 89, 70)
    right = shapely.box(88, 40, 95, 70)  # masks overlap by a pixel column (a soft model's bleed)
    merged = merge_instances([_part(left, 0, False), _part(right, 1, False)], tiles)
    assert len(merged) == 2


def test_partial_second_detection_from_another_tile_is_dropped():
    tiles = _two_tiles()
    hull = shapely.box(82, 30, 95, 90)  # seen whole in tile 1
    piece = shapely.box(83, 60, 94, 89)  # tile 0 saw only its stern: IoU 0.4, wholly inside
    beside = shapely.box(96, 30, 109, 90)  # a neighbour seen by tile 1: stays
    merged = merge_instances(
        [_part(hull, 1, False, 0.95), _part(piece, 0, False, 0.9), _part(beside, 1, False, 0.5)], tiles
    )
    assert sorted(m.geometry.bounds for m in merged) == sorted([hull.bounds, beside.bounds])
    # a confident hull inside a doubtful mask over two hulls stays (so does the mask)
    pair = shapely.box(82, 30, 109, 90)
    merged = merge_instances([_part(pair, 1, False, 0.85), _part(hull, 0, False, 0.99)], tiles)
    assert len(merged) == 2
    # two views that overlap without one lying inside the other both stay
    other = shapely.box(83, 10, 94, 50)  # 20 of its 40 rows inside the hull
    merged = merge_instances([_part(hull, 1, False), _part(other, 0, False)], tiles)
    assert len(merged) == 2


def test_a_part_near_a_tile_edge_is_cut_only_if_another_tile_sees_the_object_go_on():
    from geoseg.inference.merge import confirm_cuts
    from geoseg.inference.vectorize import LEFT, RIGHT

    tiles = _two_tiles()  # tile 0: cols 0..100, tile 1: cols 80..180
    stops_short = InstancePart(shapely.box(50, 40, 90, 50), 0.9, 1, 0, False, 400.0, RIGHT)  # 10 px short
    goes_on = _part(shapely.box(84, 40, 130, 50), 1, False)
    ends_there = _part(shapely.box(60, 40, 88, 50), 1, False)  # another view, not past col 100
    got = confirm_cuts([stops_short, goes_on, ends_there], tiles, np.array([0, 0]), np.array([1, 2]))
    assert got[0].cut and not got[1].cut and not got[2].cut
    got = confirm_cuts([stops_short, ends_there], tiles, np.array([0]), np.array([1]))
    assert not got[0].cut  # near the edge, but nobody saw it continue: whole
    left = InstancePart(shapely.box(92, 40, 130, 50), 0.9, 1, 1, False, 380.0, LEFT)  # 12 px from col 80
    got = confirm_cuts(
        [left, _part(shapely.box(40, 40, 99, 50), 0, True)], tiles, np.array([1]), np.array([0])
    )
    assert got[0].cut


def test_cut_fragment_does_not_swallow_a_close_neighbour():
    tiles = {t.index: t for t in TileGrid(100, 180, size=100, overlap=20)}  # seam strip cols 80..100
    frag = shapely.box(60, 40, 100, 50)  # cut by tile 0's right edge
    other = shapely.box(81, 49, 99, 60)  # a neighbour seen whole in tile 1, touching by one row
    rest = shapely.box(80, 40, 130, 49)  # the fragment's continuation in tile 1 (cut at col 80)
    parts = [_part(frag, 0, True), _part(other, 1, False), _part(rest, 1, True)]
    merged = merge_instances(parts, tiles)
    assert len(merged) == 2
    # each tile contributes what it owns (cores split at col 90)
    expected = shapely.box(60, 40, 90, 50).union(shapely.box(90, 40, 130, 49))
    assert any(m.geometry.equals(other) for m in merged)
    assert any(m.geometry.equals(expected) for m in merged)


def test_object_longer_than_a_tile_is_one_whole_polygon():
    image = np.zeros((40, 200), np.uint8)
    image[10:20, 5:195] = 1
    got = tiled_objects(image, 32, 8)
    assert len(got) == 1 and got[0].equals(shapely.box(5, 10, 195, 20))


def test_polygonising_at_the_scene_origin_is_exact_and_silent():
    import warnings

    m = np.zeros((6, 6), bool)
    m[0:3, 0:4] = True
    m[1, 1] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rasterio warns on an identity transform
        g = mask_to_geometry(m)
    assert g.bounds == (0.0, 0.0, 4.0, 3.0) and g.area == 11 and len(g.interiors) == 1
    assert shapely.equals(shapely.affinity.translate(g, 7, 5), mask_to_geometry(m, 5, 7))
