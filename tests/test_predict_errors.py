"""Bad input to `geoseg predict`: a clear one-line error naming the input, a non-zero exit, and no
output file left behind (or, for empty-but-valid input, an empty result)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from geoseg.cli.main import cli
from tests.helpers import write_raster

FACTORY = "geoseg.models.plugins:threshold_instances"


def predict(scene, out, *extra):
    return CliRunner().invoke(cli, ["predict", str(scene), "-o", str(out), *map(str, extra)])


def assert_clean_failure(result, out, *needles):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]


def test_missing_file(tmp_path):
    out = tmp_path / "o.geojson"
    assert_clean_failure(
        predict(tmp_path / "missing.tif", out, "-m", FACTORY), out, "missing.tif", "no such file"
    )


def test_corrupt_tiff(tmp_path, real_data):
    out = tmp_path / "o.geojson"
    r = predict(real_data / "corrupt.tif", out, "-m", FACTORY, "--bands", 1)
    assert_clean_failure(r, out, "corrupt.tif", "cannot read")


def test_all_nodata_scene_gives_empty_collection(tmp_path, real_data):
    out = tmp_path / "o.geojson"
    r = CliRunner().invoke(
        cli,
        [
            "predict",
            str(real_data / "all-nodata.tif"),
            "-m",
            FACTORY,
            "--bands",
            "1",
            "-o",
            str(out),
            "--stats",
            str(tmp_path / "s.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["features"] == []
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["tiles_run"] == 0 and stats["tiles_skipped"] == stats["tiles"] > 1


def test_scene_smaller_than_a_tile(tmp_path, real_data):
    out = tmp_path / "o.geojson"
    r = predict(
        real_data / "float_raster_with_nodata.tif", out, "-m", FACTORY, "--model-arg", "threshold=0.1"
    )
    assert r.exit_code == 0, r.output
    feats = json.loads(out.read_text())["features"]
    assert len(feats) >= 1


def test_float_scene_with_nan(tmp_path):
    a = np.zeros((300, 300), np.float32)
    a[50:80, 150:200] = 5.0
    a[200:230, 50:130] = 5.0
    a[:, :100] = np.nan  # the second object is partly under NaN: only its valid part is found
    out = tmp_path / "o.gpkg"
    r = predict(
        write_raster(tmp_path / "f.tif", a),
        out,
        "-m",
        FACTORY,
        "--model-arg",
        "threshold=1",
        "--tile-size",
        128,
        "--overlap",
        16,
    )
    assert r.exit_code == 0, r.output
    import geopandas as gpd

    got = gpd.read_file(out)
    assert sorted(got["area_px"]) == [30 * 30, 30 * 50]


def test_band_count_does_not_fit_the_model(tmp_path, real_data):
    out = tmp_path / "o.geojson"
    r = predict(real_data / "RGB.byte.tif", out, "-m", FACTORY)
    assert_clean_failure(r, out, "RGB.byte.tif", "3 band(s)", "expects 1", "--bands")


def test_checkpoint_that_is_a_pickle(tmp_path, real_data):
    ckpt = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(3)}, ckpt)
    out = tmp_path / "o.geojson"
    assert_clean_failure(predict(real_data / "RGB.byte.tif", out, "-m", ckpt), out, "model.pt", "pickle")
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"a": 1}))
    assert_clean_failure(predict(real_data / "RGB.byte.tif", out, "-m", raw), out, "raw.pkl", "pickle")


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("no_such_module_xyz:factory", "cannot import module 'no_such_module_xyz'"),
        ("geoseg.models.plugins:no_such_factory", "has no 'no_such_factory'"),
        ("geoseg.errors:GeosegError", "lacks"),
    ],
)
def test_unknown_factory(tmp_path, real_data, spec, needle):
    out = tmp_path / "o.geojson"
    assert_clean_failure(predict(real_data / "RGB.byte.tif", out, "-m", spec), out, spec, needle)


def test_missing_checkpoint_file(tmp_path, real_data):
    out = tmp_path / "o.geojson"
    r = predict(real_data / "RGB.byte.tif", out, "-m", tmp_path / "nope.safetensors")
    assert_clean_failure(r, out, "nope.safetensors", "no such file")


def test_bad_factory_argument(tmp_path, real_data):
    out = tmp_path / "o.geojson"
    r = predict(real_data / "RGB.byte.tif", out, "-m", FACTORY, "--model-arg", "colour=red")
    assert_clean_failure(r, out, FACTORY, "rejected its arguments")


def test_usage_errors_exit_2(tmp_path, real_data):
    r = predict(real_data / "RGB.byte.tif", tmp_path / "o.xyz", "-m", FACTORY)
    assert r.exit_code == 1 and "cannot tell the format" in r.output
    r = predict(real_data / "RGB.byte.tif", tmp_path / "o.geojson", "-m", FACTORY, "--bands", "a,b")
    assert r.exit_code == 2
    r = predict(
        real_data / "RGB.byte.tif",
        tmp_path / "o.geojson",
        "-m",
        FACTORY,
        "--bands",
        1,
        "--tile-size",
        64,
        "--overlap",
        64,
    )
    assert r.exit_code == 1 and "overlap" in r.output


def test_verbose_shows_traceback(tmp_path):
    r = CliRunner().invoke(cli, ["-v", "predict", str(tmp_path / "missing.tif"), "-m", FACTORY])
    assert r.exit_code == 1 and r.exc_info is not None and "SceneError" in repr(r.exc_info[1])
