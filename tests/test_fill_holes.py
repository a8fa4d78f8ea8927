"""Classes a checkpoint lists in ``fill_holes`` come out solid: holes filled, parts inside a hole joined."""

from __future__ import annotations

import numpy as np
import shapely

import geoseg
from geoseg.models.plugins import ThresholdInstances
from tests.helpers import write_raster


def scene(tmp_path):
    a = np.zeros((400, 400), np.uint8)
    a[100:300, 100:300] = 200  # a hull ...
    a[150:250, 150:250] = 0  # ... with a dark hole in it (the superstructure the mask skipped)
    a[190:210, 190:210] = 200  # and an island inside the hole
    a[20:40, 20:60] = 200  # a plain object
    return write_raster(tmp_path / "s.tif", a)


def model(solid):
    m = ThresholdInstances(threshold=100)
    m.metadata = {"fill_holes": solid}
    return m


def holes(result):
    return sum(shapely.get_num_interior_rings(shapely.get_parts(g)).sum() for g in result.features.geometry)


def test_listed_classes_are_filled_and_islands_join(tmp_path):
    path = scene(tmp_path)
    solid = geoseg.predict(path, model(["object"]), tile_size=256, overlap=64)
    assert len(solid.features) == 2 and holes(solid) == 0
    assert solid.stats["holes_filled"] == 1
    big = solid.features.sort_values("area_px").iloc[-1]
    assert big["area_px"] == 200 * 200  # the whole hull, island included, as one polygon
    assert big.geometry.geom_type == "Polygon"


def test_other_classes_and_keep_holes_keep_them(tmp_path):
    path = scene(tmp_path)
    for result in (
        geoseg.predict(path, model(["tanker"]), tile_size=256, overlap=64),  # another class is listed
        geoseg.predict(path, model(["object"]), tile_size=256, overlap=64, keep_holes=True),
        geoseg.predict(path, ThresholdInstances(threshold=100), tile_size=256, overlap=64),  # no metadata
    ):
        assert len(result.features) == 3 and holes(result) == 1  # the ring, and the island apart
        assert result.stats["holes_filled"] == 0


def test_the_shipped_tanker_model_fills_holes():
    from geoseg.models.checkpoint import read_metadata
    from geoseg.models.segmenter import builtin_model

    assert read_metadata(builtin_model("tankers-light"))["fill_holes"] == ["tanker"]
