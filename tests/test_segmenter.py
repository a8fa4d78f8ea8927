"""Plugging in a model through module:factory; the model is loaded once per worker process."""

from __future__ import annotations

import sys

import numpy as np
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.inference.engine import predict_scene
from geoseg.inference.options import PredictOptions
from geoseg.models.plugins import ThresholdInstances
from geoseg.models.segmenter import ModelSpec, Segmenter, get_segmenter
from tests.helpers import write_raster

USER_MODULE = """
import numpy as np
CALLS = []

class Brightest:
    task = "instance"
    classes = ["background", "bright"]
    in_channels = 1

    def predict(self, tiles):
        out = []
        for t in tiles:
            m = np.nan_to_num(t[0]) > 100
            out.append({"masks": m[None], "scores": np.array([0.9]), "labels": np.array([1])}
                       if m.any() else {"masks": np.zeros((0,) + m.shape, bool),
                                        "scores": np.zeros(0), "labels": np.zeros(0, int)})
        return out

def make(**kwargs):
    CALLS.append(kwargs)
    return Brightest()
"""


def test_user_factory_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    a = np.zeros((700, 700), np.uint8)
    a[10:30, 10:30] = 200
    a[400:420, 600:620] = 200
    write_raster(tmp_path / "s.tif", a)
    r = CliRunner().invoke(
        cli,
        [
            "-q",
            "predict",
            "s.tif",
            "-m",
            "my_models:make",
            "-o",
            "o.gpkg",
            "--tile-size",
            "256",
            "--workers",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    import my_models

    assert len(my_models.CALLS) == 1  # loaded once for the whole run, not per task
    import geopandas as gpd

    got = gpd.read_file(tmp_path / "o.gpkg")
    assert list(got["class"]) == ["bright", "bright"] and (got["score"] == 0.9).all()


def test_model_cache_is_per_spec():
    a = ModelSpec("geoseg.models.plugins:threshold_instances", (("threshold", 1),))
    b = ModelSpec("geoseg.models.plugins:threshold_instances", (("threshold", 2),))
    assert get_segmenter(a) is get_segmenter(a)
    assert get_segmenter(a) is not get_segmenter(b)
    assert a.key != b.key


def test_builtin_plugins_follow_the_contract():
    seg = ThresholdInstances(threshold=0.5)
    assert isinstance(seg, Segmenter)
    tiles = np.zeros((2, 1, 32, 32), np.float32)
    tiles[0, 0, 2:5, 2:5] = 1
    tiles[0, 0, 10:12, 20:30] = 1
    preds = seg.predict(tiles)
    assert preds[0]["masks"].shape == (2, 32, 32) and len(preds[1]["scores"]) == 0


def test_torch_tensors_are_accepted(tmp_path):
    import torch

    class TorchOut(ThresholdInstances):
        def predict(self, tiles):
            return [{k: torch.as_tensor(v) for k, v in p.items()} for p in super().predict(tiles)]

    a = np.zeros((100, 100), np.uint8)
    a[10:20, 10:20] = 200
    path = write_raster(tmp_path / "s.tif", a)
    spec = ModelSpec.of(TorchOut(threshold=100))  # a segmenter object handed in: no factory, no file
    got = predict_scene(path, spec, PredictOptions(tile_size=64, overlap=8)).features
    assert len(got) == 1 and got["area_px"].iloc[0] == 100
