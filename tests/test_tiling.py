"""TileGrid: windows cover the scene with no gaps and no reads outside it; cores partition it."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.inference.tiling import TileGrid


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 3000),
    width=st.integers(1, 3000),
    size=st.sampled_from([16, 64, 100, 256, 512, 1024]),
    overlap_frac=st.floats(0, 0.9),
)
def test_cores_partition_scene_and_windows_stay_inside(height, width, size, overlap_frac):
    overlap = int(size * overlap_frac)
    grid = TileGrid(height, width, size=size, overlap=overlap)
    owned = np.zeros((height, width), np.uint8)
    for t in grid:
        r0, c0, r1, c1 = t.bounds
        assert 0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width
        assert r1 - r0 == min(size, height) and c1 - c0 == min(size, width)
        cr0, cc0, cr1, cc1 = t.core_bounds
        assert r0 <= cr0 < cr1 <= r1 and c0 <= cc0 < cc1 <= c1
        owned[cr0:cr1, cc0:cc1] += 1
        assert t.cut == (r0 > 0, c0 > 0, r1 < height, c1 < width)
    assert (owned == 1).all()


@settings(max_examples=100, deadline=None)
@given(n=st.integers(600, 5000), overlap=st.integers(0, 200))
def test_neighbours_overlap_at_least_as_asked(n, overlap):
    grid = TileGrid(n, n, size=512, overlap=overlap)
    starts = sorted({t.bounds[1] for t in grid})
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + 512 - b >= overlap


def test_tile_transform_is_window_transform():
    transform = Affine(17.32, 5.0, 100.0, 10.0, -8.66, 200.0)  # rotated and sheared
    grid = TileGrid(1000, 900, size=256, overlap=32, transform=transform)
    for t in grid:
        assert t.transform == transform @ Affine.translation(t.window.col_off, t.window.row_off)


def test_alignment_to_stride():
    grid = TileGrid(1000, 1000, size=256, overlap=64, align=32)
    starts = {t.bounds[0] for t in grid}
    assert all(s % 32 == 0 or s == 1000 - 256 for s in starts)
    assert grid.tile_shape == (256, 256)
    small = TileGrid(13, 12, size=256, overlap=64, align=32)
    assert len(small) == 1 and small.tile_shape == (32, 32)


def test_invalid_parameters():
    with pytest.raises(ValueError, match="overlap"):
        TileGrid(100, 100, size=64, overlap=64)
    with pytest.raises(ValueError, match="stride"):
        TileGrid(100, 100, size=64, overlap=10, align=32)
