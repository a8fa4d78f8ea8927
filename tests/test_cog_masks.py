"""Class masks of rasters are Cloud Optimized GeoTIFFs with overviews, written window by window and
renamed into place when complete."""

from __future__ import annotations

import numpy as np
import rasterio

import geoseg
from geoseg.inference.engine import predict_blended
from geoseg.inference.options import PredictOptions
from geoseg.models.segmenter import ModelSpec
from tests.helpers import objects_array, write_raster

MODEL = ModelSpec("geoseg.models.plugins:threshold_semantic", (("threshold", 100),))


def test_raster_mask_is_a_cog_with_overviews_and_the_scene_grid(tmp_path):
    scene = write_raster(tmp_path / "scene.tif", objects_array(1100, 900, seed=2))
    out = tmp_path / "mask.tif"
    result = geoseg.predict(scene, MODEL, mask=out, tile_size=256, overlap=64)
    assert result.mask == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "scene.tif"]  # no temporary left
    with rasterio.open(out) as m, rasterio.open(scene) as s:
        assert m.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        levels = m.overviews(1)
        assert levels[:2] == [2, 4] and max(m.width, m.height) / levels[-1] <= 256  # down to one block
        assert m.block_shapes[0] == (256, 256) and m.compression.value == "DEFLATE"
        assert m.crs == s.crs and m.transform == s.transform and m.dtypes[0] == "uint8"
        got = m.read(1)
        overview = m.read(1, out_shape=(m.height // 4, m.width // 4))
    # the same classes the stitcher produced, block by block
    want = np.zeros_like(got)

    def keep(r0, c0, block):
        want[r0 : r0 + block.shape[0], c0 : c0 + block.shape[1]] = block

    predict_blended(str(scene), MODEL, PredictOptions(tile_size=256, overlap=64), mask=keep, outlines=False)
    assert np.array_equal(got, want) and got.any()
    assert set(np.unique(overview)) <= set(np.unique(got))  # nearest overviews: class indexes, never averaged
