"""The committed tanker model end to end on scenes it never saw: found once each, whole, measured.

The thresholds pin what the committed model does today (a regression guard), measured on these
seeded scenes: F1 0.79 / 0.75, no duplicates, at most one seam split, length within 2-3 %, beam
8-13 %, heading within 0.5 deg. They sit below the product's targets (F1 >= 0.9, no splits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.models.maskrcnn import random_init
from geoseg.synth.tankers import tanker_scene

MODEL = Path(__file__).resolve().parents[1] / "geoseg" / "weights" / "tankers-light.safetensors"


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed, gsd, crs", [(901, 1.5, "EPSG:32631"), (902, 2.2, "EPSG:32750")], ids=["north-1.5m", "south-2.2m"]
)
def test_committed_model_on_an_unseen_scene(tmp_path, seed, gsd, crs):
    scene, truth = tmp_path / "s.tif", tmp_path / "truth.geojson"
    tanker_scene(scene, size=2048, gsd=gsd, crs=crs, n_tankers=24, seed=seed, truth=truth)
    out, report = tmp_path / "tankers.geojson", tmp_path / "eval.json"
    r = CliRunner().invoke(cli, ["-q", "predict", str(scene), "-m", str(MODEL), "-o", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["eval", str(out), str(truth), "-o", str(report)])
    assert r.exit_code == 0, r.output
    rep = json.loads(report.read_text())
    # a regression guard a little under today's F1 (0.83 and 0.89 on these small scenes, which
    # are mostly anchorage clusters); duplicates, seam splits and attribute errors at the targets
    assert rep["f1"] >= 0.78, rep
    assert rep["duplicates"] == 0 and rep["seam_splits"] == 0, rep
    assert rep["median_length_error_pct"] <= 5 and rep["median_beam_error_pct"] <= 10, rep
    assert rep["median_heading_error_deg"] <= 2, rep
    props = json.loads(out.read_text())["features"][0]["properties"]
    assert {"length_m", "beam_m", "heading_deg", "score", "class", "model", "model_hash", "scene",
            "detected_at"} <= set(props)  # fmt: skip
    assert props["class"] == "tanker" and props["model"] == MODEL.name


def test_resnet50_configuration_runs():
    seg = random_init("resnet50", in_channels=3)
    preds = seg.predict(np.random.default_rng(0).uniform(0, 255, (1, 3, 128, 128)).astype(np.float32))
    assert set(preds[0]) >= {"masks", "scores", "labels", "boxes"}
    assert preds[0]["masks"].shape[1:] == (128, 128)
