"""Measures only where the model asks for them: ship length, beam and heading for models that
declare ``measures = ("ship",)`` (geoseg's Mask R-CNN, from its checkpoint), none for the others."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import torch
from click.testing import CliRunner
from rasterio.transform import from_origin

from geoseg.inference.features import to_features
from geoseg.inference.merge import MergedObject
from geoseg.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from geoseg.models.plugins import ThresholdInstances
from geoseg.models.segmenter import ModelSpec

SHIP = ["length_m", "beam_m", "heading_deg"]
COMMITTED = "geoseg/weights/tankers-light.safetensors"


def _features(seg):
    hull = shapely.Polygon([(10, 10), (110, 10), (120, 15), (110, 20), (10, 20)])  # 110 x 10 px, bow east
    transform = from_origin(400000, 5600000, 2.0, 2.0)
    meta = {"crs": "EPSG:32631", "transform": transform, "name": "s", "path": "s"}
    return to_features([MergedObject(hull, 0.9, 1, 1)], seg, ModelSpec("x:y"), meta)


def test_a_model_without_measures_gets_no_ship_columns():
    got = _features(ThresholdInstances())  # no measures attribute: none asked for
    assert not set(SHIP) & set(got.columns)
    assert got["area_m2"].iloc[0] == pytest.approx(4 * (100 * 10 + 50), rel=1e-3)


def test_a_model_that_asks_for_ship_measures_gets_them():
    seg = ThresholdInstances()
    seg.measures = ("ship",)
    got = _features(seg)
    assert list(got.columns[got.columns.get_loc("score") + 2 :][:3]) == SHIP  # before area_px, as ever
    assert got["length_m"].iloc[0] == pytest.approx(220, rel=0.01)
    assert abs(got["heading_deg"].iloc[0] - 90) < 3  # the tapered end points east


def test_committed_tanker_model_declares_ship_measures():
    assert read_metadata(COMMITTED)["measures"] == ["ship"]


@pytest.mark.parametrize("declared, expected", [(None, ("ship",)), ([], ()), (["ship"], ("ship",))])
def test_maskrcnn_measures_come_from_the_checkpoint(tmp_path, declared, expected):
    """A Mask R-CNN checkpoint made before the key existed is a tanker model: ship measures."""
    from geoseg.models.maskrcnn import build_maskrcnn

    torch.manual_seed(0)
    config = {"name": "light", "backbone": "resnet18", "fpn_channels": 16, "representation_size": 32,
              "mask_channels": 8, "mask_layers": 1, "detections_per_img": 10, "anchor_ratios": [1.0],
              "mask_roi_size": 14}  # fmt: skip
    module = build_maskrcnn(config, in_channels=3, num_classes=2)
    meta = {"architecture": "maskrcnn", "config": config, "task": "instance",
            "classes": ["background", "tanker"], "bands": [1, 2, 3], "in_channels": 3}  # fmt: skip
    if declared is not None:
        meta["measures"] = declared
    save_checkpoint(tmp_path / "m.safetensors", module.state_dict(), meta)
    assert load_checkpoint(tmp_path / "m.safetensors").measures == expected


@pytest.mark.slow
def test_geoseg_train_maskrcnn_records_ship_measures(tmp_path):
    from geoseg.cli.main import cli
    from geoseg.synth.tankers import tanker_scene

    for name, seed in (("a", 1), ("v", 2)):
        tanker_scene(tmp_path / f"{name}.tif", size=300, gsd=1.5, n_tankers=2, seed=seed,
                     truth=tmp_path / f"{name}.geojson")  # fmt: skip
    out = tmp_path / "m.safetensors"
    args = ["-q", "train", "maskrcnn", "--train", tmp_path / "a.tif", tmp_path / "a.geojson",
            "--val", tmp_path / "v.tif", tmp_path / "v.geojson", "--iterations", 1, "--val-chips", 1,
            "--chip-size", 128, "--batch-size", 1, "-o", out]  # fmt: skip
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    assert read_metadata(out)["measures"] == ["ship"]
    assert np.isfinite(read_metadata(out)["object_limits"]["length_m"]).all()
