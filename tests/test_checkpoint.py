"""Checkpoints: safetensors + JSON metadata; loading never unpickles and explains what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from geoseg.cli.main import cli
from geoseg.errors import CheckpointError
from geoseg.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from geoseg.models.pointwise import build_pointwise
from tests.helpers import write_raster

META = {
    "architecture": "pointwise",
    "config": {"hidden": 4},
    "task": "semantic",
    "classes": ["background", "water"],
    "bands": [1],
    "in_channels": 1,
    "normalization": {"mean": [100.0], "std": [50.0]},
    "tile_size": 128,
    "overlap": 16,
    "training": {"command": "handmade in tests", "data_fingerprint": None, "seed": 0},
    "metrics": {},
}


def pointwise_state():
    torch.manual_seed(0)
    module = build_pointwise(1, 2, hidden=4)
    with torch.no_grad():  # class 1 wins where the normalised value is positive (raw > 100)
        module[0].weight.zero_()
        module[0].bias.zero_()
        module[0].weight[0, 0] = 1.0
        module[2].weight.zero_()
        module[2].bias.zero_()
        module[2].weight[1, 0] = 10.0
        module[2].bias[0] = 1e-3
    return module.state_dict()


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "water.safetensors"
    save_checkpoint(path, pointwise_state(), META)
    return path


def test_round_trip(ckpt):
    meta = read_metadata(ckpt)
    assert meta["architecture"] == "pointwise" and meta["geoseg_version"]
    seg = load_checkpoint(ckpt)
    assert seg.task == "semantic" and seg.in_channels == 1 and seg.tile_size == 128
    probs = seg.predict(np.array([[[[50.0, 150.0]]]], np.float32))
    assert probs.shape == (1, 2, 1, 2) and probs[0, 1, 0, 1] > 0.9 and probs[0, 0, 0, 0] > 0.5


def test_predict_uses_the_checkpoint_tile_size(ckpt, tmp_path):
    a = np.full((300, 300), 50, np.uint8)
    a[100:200, 100:200] = 200
    scene = write_raster(tmp_path / "s.tif", a)
    stats = tmp_path / "stats.json"
    r = CliRunner().invoke(
        cli,
        [
            "-q",
            "predict",
            str(scene),
            "-m",
            str(ckpt),
            "-o",
            str(tmp_path / "o.geojson"),
            "--stats",
            str(stats),
        ],
    )
    assert r.exit_code == 0, r.output
    s = json.loads(stats.read_text())
    assert (s["tile_size"], s["overlap"]) == (128, 16)
    feats = json.loads((tmp_path / "o.geojson").read_text())["features"]
    assert len(feats) == 1 and feats[0]["properties"]["class"] == "water"
    assert feats[0]["properties"]["area_px"] == 100 * 100


def test_safetensors_without_metadata(tmp_path):
    path = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="has no geoseg metadata"):
        load_checkpoint(path)


def test_metadata_missing_keys(tmp_path):
    path = tmp_path / "partial.safetensors"
    save_file({"w": torch.zeros(2)}, path, metadata={"geoseg": json.dumps({"format": "geoseg-checkpoint/1"})})
    with pytest.raises(CheckpointError, match="metadata lacks architecture"):
        load_checkpoint(path)


def test_unknown_architecture(tmp_path):
    path = tmp_path / "x.safetensors"
    save_checkpoint(path, pointwise_state(), {**META, "architecture": "transformer9000"})
    with pytest.raises(CheckpointError, match="unknown architecture 'transformer9000'"):
        load_checkpoint(path)


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "x.safetensors"
    save_checkpoint(path, pointwise_state(), {**META, "config": {"hidden": 16}})
    with pytest.raises(CheckpointError, match="weights do not fit pointwise"):
        load_checkpoint(path)


def test_pickle_is_never_loaded(tmp_path, monkeypatch):
    path = tmp_path / "evil.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    monkeypatch.setattr("pickle.load", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr("torch.load", lambda *a, **k: pytest.fail("torch.load called"))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_not_safetensors(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)


def test_checkpoint_bands_are_used_when_not_given(tmp_path):
    path = tmp_path / "band2.safetensors"
    save_checkpoint(path, pointwise_state(), {**META, "bands": [2]})
    a = np.zeros((3, 100, 100), np.uint8)
    a[1, 20:40, 20:40] = 200  # only band 2 has the object
    a[0, 60:90, 60:90] = 200
    scene = write_raster(tmp_path / "rgb.tif", a)
    out = tmp_path / "o.geojson"
    r = CliRunner().invoke(cli, ["-q", "predict", str(scene), "-m", str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    feats = json.loads(out.read_text())["features"]
    assert len(feats) == 1 and feats[0]["properties"]["area_px"] == 400


def test_maskrcnn_checkpoint_without_anchor_ratios_loads_with_torchvisions(tmp_path):
    """Checkpoints written before anchors were configurable keep loading (3 anchors a place)."""
    from geoseg.models.maskrcnn import DEFAULT_ANCHOR_RATIOS, build_maskrcnn

    torch.manual_seed(0)
    config = {"name": "light", "backbone": "resnet18", "fpn_channels": 64, "representation_size": 256,
              "mask_channels": 64, "mask_layers": 4, "detections_per_img": 100}  # fmt: skip
    old = build_maskrcnn({**config, "anchor_ratios": DEFAULT_ANCHOR_RATIOS}, in_channels=3, num_classes=2)
    meta = {"architecture": "maskrcnn", "config": config, "task": "instance",
            "classes": ["background", "tanker"], "bands": [1, 2, 3], "in_channels": 3,
            "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3}}  # fmt: skip
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, old.state_dict(), meta)
    seg = load_checkpoint(path)
    assert seg.module.rpn.head.cls_logits.out_channels == 3
    new = build_maskrcnn(config, in_channels=3, num_classes=2)  # today's light config
    assert new.rpn.head.cls_logits.out_channels == 5
