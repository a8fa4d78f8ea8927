"""``geoseg info MODEL|SCENE``: a checkpoint's card and a scene's summary, as text or JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import geoseg
from geoseg.cli.main import cli


def _run(*args):
    r = CliRunner().invoke(cli, ["info", *args])
    return r.exit_code, r.output


def test_model_card_from_metadata():
    code, text = _run("tankers-light")
    assert code == 0
    for line in (
        "architecture    maskrcnn",
        "task            instance",
        "tile_size       512",
        "max_gsd         1.5",
    ):
        assert line in text
    assert "geoseg train maskrcnn" in text  # the command that made it
    code, out = _run("lungs-unet", "--json")
    card = json.loads(out)
    assert card["architecture"] == "unet" and card["min_area"] == 400.0
    assert card["complete"] == {
        "lung": {"below": -400.0, "body_above": -500.0, "overlap": 0.3, "gas_below": -975.0}
    }
    assert card["radiometry"] == {"statistic": "air", "reference": [-1000.0]}
    assert card["normalization"]["window"] == {"center": -600.0, "width": 1500.0}
    assert card["metrics"]["mean_dice"] > 0.9 and len(card["model_hash"]) == 16


def test_factory_card():
    card = geoseg.info("geoseg.models.plugins:threshold_instances")
    assert card["task"] == "instance" and card["in_channels"] == 1


@pytest.mark.slow
def test_scene_summary_counts_the_tiles_predict_runs(tmp_path):
    from geoseg.synth.tankers import tanker_scene

    scene, _ = tanker_scene(tmp_path / "coarse.tif", size=900, gsd=2.2, seed=5, n_tankers=2, crs="EPSG:32750")
    code, out = _run(str(scene), "--json")
    card = json.loads(out)
    assert code == 0 and card["crs"] == "EPSG:32750" and card["gsd_m"] == pytest.approx(2.2, rel=1e-3)
    assert card["width"] == 900 and card["bands"] == 3 and card["dtypes"] == ["uint8"]
    south, north = card["lonlat_bounds"][1], card["lonlat_bounds"][3]
    assert -90 < south < north < 0  # UTM 50S
    at = card["at_model"]
    assert at["read_at_gsd_m"] == 1.5
    stats = geoseg.predict(scene, "tankers-light").stats  # resampled to the model's 1.5 m
    assert at["tiles"] == stats["tiles"]
    code, text = _run(str(scene))
    assert code == 0 and "EPSG:32750" in text and "at_model" in text


def test_slice_summary_and_bad_input(tmp_path):
    np.save(tmp_path / "stack.npy", np.zeros((3, 64, 80), np.int16))
    card = geoseg.info(tmp_path / "stack.npy", model="lungs-unet")
    assert card["kind"] == "slice" and card["slices"] == 3 and (card["width"], card["height"]) == (80, 64)
    assert card["at_model"]["tile_size"] == 256
    (tmp_path / "bad.tif").write_bytes(b"not a raster")
    code, out = _run(str(tmp_path / "bad.tif"))
    assert code == 1 and len(out.strip().splitlines()) == 1 and "bad.tif" in out
