"""`geoseg train maskrcnn`: a short seeded run is reproducible and writes a self-describing
checkpoint that `geoseg predict` uses with its own tile size; wrong bands are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from geoseg.checkpoint import read_metadata
from geoseg.cli.main import cli
from geoseg.synth_tankers import tanker_scene
from tests.helpers import write_raster


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    tanker_scene(d / "a.tif", size=600, gsd=1.5, n_tankers=6, seed=1, truth=d / "a.geojson")
    tanker_scene(d / "v.tif", size=600, gsd=1.5, n_tankers=6, seed=2, truth=d / "v.geojson")
    return d


def train(d, out, seed=0):
    args = [
        "-q",
        "train",
        "maskrcnn",
        "--train",
        str(d / "a.tif"),
        str(d / "a.geojson"),
        "--val",
        str(d / "v.tif"),
        str(d / "v.geojson"),
        "--iterations",
        "4",
        "--val-every",
        "2",
        "--val-chips",
        "2",
        "--chip-size",
        "128",
        "--batch-size",
        "2",
        "--seed",
        str(seed),
        "-o",
        str(out),
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    return read_metadata(out), load_file(out)


@pytest.mark.slow
def test_same_seed_same_run(data, tmp_path):
    meta1, w1 = train(data, tmp_path / "1.safetensors")
    meta2, w2 = train(data, tmp_path / "2.safetensors")
    timeless = [{k: v for k, v in m["metrics"].items() if k != "minutes"} for m in (meta1, meta2)]
    assert timeless[0] == timeless[1]  # (wall time is not part of reproducibility)
    assert all(np.array_equal(w1[k].numpy(), w2[k].numpy()) for k in w1)
    _, w3 = train(data, tmp_path / "3.safetensors", seed=1)
    assert not all(np.array_equal(w1[k].numpy(), w3[k].numpy()) for k in w1)
    # the checkpoint explains itself
    assert meta1["architecture"] == "maskrcnn" and meta1["config"]["backbone"] == "resnet18"
    assert meta1["classes"] == ["background", "tanker"] and meta1["bands"] == [1, 2, 3]
    assert len(meta1["normalization"]["mean"]) == 3 and meta1["tile_size"] == 256
    assert meta1["training"]["seed"] == 0 and meta1["training"]["data_fingerprint"]
    assert "geoseg train maskrcnn" in meta1["training"]["command"]
    assert {"f1", "precision", "recall", "iteration"} <= set(meta1["metrics"])

    # predict uses the trained tile size; a 1-band scene is refused with one line
    stats = tmp_path / "stats.json"
    r = CliRunner().invoke(
        cli,
        [
            "-q",
            "predict",
            str(data / "v.tif"),
            "-m",
            str(tmp_path / "1.safetensors"),
            "-o",
            str(tmp_path / "o.geojson"),
            "--stats",
            str(stats),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(stats.read_text())["tile_size"] == 256
    one = write_raster(tmp_path / "one.tif", np.zeros((64, 64), np.uint8))
    r = CliRunner().invoke(
        cli, ["predict", str(one), "-m", str(tmp_path / "1.safetensors"), "-o", str(tmp_path / "x.geojson")]
    )
    assert r.exit_code == 1 and "1 band(s) selected" in r.stderr and "expects 3" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.geojson").exists()
