"""Scenes read at another ground sample distance: `--gsd`, and the checkpoint's max_gsd default."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.errors import ModelError
from geoseg.inference.engine import predict_scene
from geoseg.inference.options import PredictOptions
from geoseg.models.segmenter import ModelSpec
from tests.helpers import write_raster

THRESHOLD = ModelSpec("geoseg.models.plugins:threshold_instances", (("threshold", 100),))


def ceiling(max_gsd: float) -> ModelSpec:
    return ModelSpec("tests.factories:threshold_with_max_gsd", (("max_gsd", max_gsd),))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """2 m pixels: three boxes (one across the 256 px tile seam) and a diagonal bar."""
    a = np.zeros((400, 400), np.uint8)
    a[40:80, 30:120] = 200
    a[200:260, 230:290] = 200
    a[300:330, 50:70] = 200
    rr, cc = np.mgrid[:400, :400]
    a[(np.abs((rr - 120) - (cc - 300)) < 6) & (np.abs(rr + cc - 420) < 70)] = 200
    return write_raster(tmp_path_factory.mktemp("gsd") / "boxes.tif", a)


def _same_objects(a, b, min_iou: float):
    assert len(a) == len(b)
    for g in a.geometry:
        iou = max(shapely.intersection(g, h).area / shapely.union(g, h).area for h in b.geometry)
        assert iou >= min_iou


def test_finer_grid_finds_the_same_objects_in_the_same_places(scene):
    native = predict_scene(scene, THRESHOLD, PredictOptions(tile_size=256, overlap=32))
    fine = predict_scene(scene, THRESHOLD, PredictOptions(tile_size=256, overlap=32, gsd=1.0))
    assert native.stats["native_gsd_m"] == pytest.approx(2.0, rel=1e-3)
    assert native.stats["gsd_m"] == native.stats["native_gsd_m"]
    assert (
        fine.stats["gsd_m"] == 1.0
        and fine.stats["width"] == 800
        and fine.stats["tiles"] > native.stats["tiles"]
    )
    assert len(native.features) == 4
    _same_objects(native.features, fine.features, 0.9)
    # the same ground: areas in m2 agree; pixel areas are those of the grid the model saw
    np.testing.assert_allclose(
        np.sort(fine.features["area_m2"]), np.sort(native.features["area_m2"]), rtol=0.05
    )
    np.testing.assert_allclose(
        np.sort(fine.features["area_px"]), 4 * np.sort(native.features["area_px"]), rtol=0.05
    )


def test_checkpoint_max_gsd_resamples_only_coarser_scenes(scene):
    opts = PredictOptions(tile_size=256, overlap=32)
    assert predict_scene(scene, ceiling(1.0), opts).stats["gsd_m"] == 1.0  # 2 m scene: resampled
    assert predict_scene(scene, ceiling(3.0), opts).stats["gsd_m"] == pytest.approx(2.0, rel=1e-3)
    native = PredictOptions(tile_size=256, overlap=32, gsd=0.0)  # --gsd native
    assert predict_scene(scene, ceiling(1.0), native).stats["gsd_m"] == pytest.approx(2.0, rel=1e-3)


def test_cli_gsd(scene, tmp_path):
    out, stats = tmp_path / "o.geojson", tmp_path / "s.json"
    runner = CliRunner()
    r = runner.invoke(cli, ["predict", str(scene), "-m", THRESHOLD.spec, "--model-arg", "threshold=100",
                            "--gsd", "1", "-o", str(out), "--stats", str(stats)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "at 1 m (resampled from 2" in r.stderr
    assert json.loads(stats.read_text())["gsd_m"] == 1.0
    assert len(json.loads(out.read_text())["features"]) == 4
    for bad in ("0", "-2", "fine", "nan"):
        r = runner.invoke(cli, ["predict", str(scene), "-m", THRESHOLD.spec, "--gsd", bad, "-o", str(out),
                                "--overwrite"])  # fmt: skip
        assert r.exit_code == 2 and "is not a ground sample distance" in r.stderr
    r = runner.invoke(cli, ["predict", str(scene), "-m", "geoseg.models.plugins:threshold_semantic",
                            "--gsd", "1", "-o", str(tmp_path / "sem.geojson")])  # fmt: skip
    assert r.exit_code == 2 and "resampling is for instance models" in r.stderr


def test_rotated_view_needs_a_model_that_has_one(scene):
    with pytest.raises(ModelError, match="has no rotated view"):
        predict_scene(scene, THRESHOLD, PredictOptions(rotated_view=True))


def test_slices_have_no_ground_sample_distance(tmp_path):
    a = np.zeros((64, 64), np.float32)
    a[10:20, 10:30] = 200
    np.save(tmp_path / "slice.npy", a)
    result = predict_scene(str(tmp_path / "slice.npy"), ceiling(1.0), PredictOptions())
    assert len(result.features) == 1  # a checkpoint's max_gsd does not apply to pixel space
    assert result.stats["native_gsd_m"] is None and result.stats["gsd_m"] is None
