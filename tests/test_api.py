"""geoseg's Python API: ``geoseg.predict`` for both model families, with a model given as a
checkpoint path, a shipped name, a factory string or an object built here, gives the same features
as ``geoseg predict``; ``Result.write``, ``open_scene``, ``load_model`` and ``evaluate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

import geoseg
from geoseg.cli.main import cli
from geoseg.errors import ModelError
from geoseg.io.slices import read_mask
from tests.helpers import objects_array, write_raster

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "geoseg" / "weights"


class Squares:
    """A segmenter written in a notebook: each 4-connected region brighter than ``level`` is an
    object (no file, no factory string)."""

    task = "instance"
    classes = ["background", "object"]
    in_channels = 1
    name = "squares"

    def __init__(self, level: float) -> None:
        self.level = level

    def predict(self, tiles):
        out = []
        for tile in tiles:
            labels, n = ndimage.label(np.nan_to_num(tile[0], nan=0.0) > self.level)
            masks = (
                np.stack([labels == k for k in range(1, n + 1)])
                if n
                else np.zeros((0, *tile.shape[1:]), bool)
            )
            out.append({"masks": masks, "scores": np.ones(n, np.float32), "labels": np.ones(n, np.int64)})
        return out


def _features(path: Path) -> list[dict]:
    doc = json.loads(Path(path).read_text())
    for f in doc["features"]:
        f["properties"].pop("detected_at")
        f["properties"].pop("model", None)  # names the model as it was given
        f["properties"].pop("model_hash", None)
    return doc["features"]


def _same(a, b) -> bool:
    return len(a.features) == len(b.features) and bool(
        a.features.geometry.geom_equals(b.features.geometry).all()
    )


def _cli(*args: str) -> None:
    r = CliRunner().invoke(cli, ["-q", *args])
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def objects_scene(tmp_path_factory) -> Path:
    return write_raster(tmp_path_factory.mktemp("api") / "objects.tif", objects_array(700, 650, seed=3))


def test_a_segmenter_object_gives_what_the_cli_gives_with_the_factory(objects_scene, tmp_path):
    result = geoseg.predict(objects_scene, Squares(level=100), tile_size=256, overlap=32)
    assert isinstance(result, geoseg.Result) and len(result.features) > 10
    assert result.stats["tiles_run"] == result.stats["tiles"] and not result.pixel_space
    result.write(tmp_path / "api.geojson")
    _cli("predict", str(objects_scene), "-m", "geoseg.models.plugins:threshold_instances",
         "--model-arg", "threshold=100", "--tile-size", "256", "--overlap", "32",
         "-o", str(tmp_path / "cli.geojson"))  # fmt: skip
    assert _features(tmp_path / "api.geojson") == _features(tmp_path / "cli.geojson")
    # the same object through open_scene, an options object and keywords on top
    with geoseg.open_scene(objects_scene) as scene:
        again = geoseg.predict(scene, Squares(level=100), options=geoseg.PredictOptions(tile_size=256),
                               overlap=32)  # fmt: skip
    assert _same(again, result)


def test_a_factory_string_with_model_args(objects_scene):
    via_factory = geoseg.predict(objects_scene, "geoseg.plugins:threshold_instances",
                                 model_args={"threshold": 100}, tile_size=256, overlap=32)  # fmt: skip
    via_object = geoseg.predict(objects_scene, Squares(level=100), tile_size=256, overlap=32)
    assert len(via_factory.features) == len(via_object.features)
    assert _same(via_factory, via_object)


@pytest.mark.slow
def test_the_shipped_tanker_model_by_name_path_and_object(tmp_path):
    from geoseg.synth.tankers import tanker_scene

    scene, truth = tanker_scene(tmp_path / "scene.tif", size=1024, gsd=1.5, seed=11, n_tankers=4)
    by_name = geoseg.predict(scene, "tankers-light", output=tmp_path / "name.geojson")
    assert by_name.output == str(tmp_path / "name.geojson") and (tmp_path / "name.geojson").exists()
    _cli(
        "predict",
        str(scene),
        "-m",
        str(WEIGHTS / "tankers-light.safetensors"),
        "-o",
        str(tmp_path / "cli.geojson"),
    )
    assert _features(tmp_path / "name.geojson") == _features(tmp_path / "cli.geojson")
    model = geoseg.load_model("tankers-light", device="cpu")
    assert model.metadata["architecture"] == "maskrcnn"  # metadata is part of the model, declared
    by_object = geoseg.predict(scene, model)
    assert _same(by_object, by_name)
    report = geoseg.evaluate(by_name, truth)
    assert report["f1"] >= 0.75 and report["duplicates"] == 0
    assert geoseg.evaluate(tmp_path / "cli.geojson", truth)["f1"] == report["f1"]


@pytest.mark.slow
def test_the_shipped_lung_model_on_a_slice_with_a_mask(tmp_path):
    from geoseg.synth.lungs import lung_slices

    s = next(iter(lung_slices(1, size=256, seed=4)))
    np.save(tmp_path / "ct.npy", s.image)
    result = geoseg.predict(tmp_path / "ct.npy", "lungs-unet", mask=tmp_path / "api.png")
    assert result.pixel_space and result.mask == str(tmp_path / "api.png")
    result.write(tmp_path / "api.geojson")
    _cli("predict", str(tmp_path / "ct.npy"), "-m", "lungs-unet", "--mask", str(tmp_path / "cli.png"),
         "-o", str(tmp_path / "cli.geojson"))  # fmt: skip
    assert np.array_equal(read_mask(tmp_path / "api.png"), read_mask(tmp_path / "cli.png"))
    assert json.loads((tmp_path / "api.geojson").read_text())["coordinates"] == "pixel"
    assert _features(tmp_path / "api.geojson") == _features(tmp_path / "cli.geojson")
    np.save(tmp_path / "truth.npy", s.mask.astype(np.uint8))
    report = geoseg.evaluate(tmp_path / "api.png", tmp_path / "truth.npy")
    assert report["mean_dice"] > 0.9


def test_options_are_checked_by_name_and_value(objects_scene):
    with pytest.raises(TypeError, match="unknown option 'tilesize'"):
        geoseg.predict(objects_scene, Squares(1), tilesize=256)
    with pytest.raises(ValueError, match="'tile_size' must be at least 16"):
        geoseg.predict(objects_scene, Squares(1), tile_size=8)
    with pytest.raises(ValueError, match="'gsd' must be a number > 0"):
        geoseg.predict(objects_scene, Squares(1), gsd="fine")
    with pytest.raises(ModelError, match="masks are written for semantic models only"):
        geoseg.predict(objects_scene, Squares(1), mask="m.tif")
    with pytest.raises(ModelError, match="resampling is for instance models"):
        geoseg.predict(objects_scene, "geoseg.models.plugins:threshold_semantic", gsd=2.0)
    with pytest.raises(ModelError, match="lacks"):
        geoseg.predict(objects_scene, object())


def test_readme_one_liner_runs_as_the_readme_says(tmp_path):
    """The README's first Python example, word for word, in a folder holding a scene.tif."""
    from geoseg.synth.tankers import tanker_scene

    tanker_scene(tmp_path / "scene.tif", size=512, gsd=1.5, seed=3, n_tankers=2)
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith('python -c "import geoseg;'))
    code = line.removeprefix("python -c ").strip().strip('"')
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "t.geojson").read_text())
    assert doc["type"] == "FeatureCollection"


def test_model_cache_is_bounded_and_takes_objects():
    from geoseg.models.segmenter import MODELS, ModelCache, ModelSpec, get_segmenter

    cache = ModelCache(maxsize=2)
    specs = [ModelSpec("geoseg.models.plugins:threshold_instances", (("threshold", t),)) for t in (1, 2, 3)]
    first = cache.get(specs[0], "cpu")
    cache.get(specs[1], "cpu")
    assert cache.get(specs[0], "cpu") is first  # used again: the most recent
    cache.get(specs[2], "cpu")
    assert len(cache) == 2 and cache.get(specs[0], "cpu") is first  # specs[1] went first
    obj = Squares(3)
    assert get_segmenter(ModelSpec.of(obj), "cpu") is obj  # handed in, used as it is
    assert all(v is not obj for v in MODELS._items.values())  # and never cached


def test_loading_a_factory_leaves_sys_path_as_it_was(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "from geoseg.models.plugins import ThresholdInstances\n"
        "def make(threshold=1):\n    return ThresholdInstances(threshold=threshold)\n"
    )
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    seg = geoseg.load_model("mymodels:make", threshold=5)
    assert seg.threshold == 5 and sys.path == before


def test_a_scene_without_crs_is_warned_of_once(tmp_path):
    import warnings

    from affine import Affine

    from geoseg.io.scene import NoCRSWarning

    path = write_raster(tmp_path / "nocrs.tif", objects_array(300, 300, seed=1), crs=None,
                        transform=Affine(2, 0, 100, 0, -2, 900))  # fmt: skip
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = geoseg.predict(path, Squares(level=100), tile_size=128, overlap=16, workers=2)
    assert len(result.features) > 0 and result.features.crs is None
    assert [type(w.message) for w in seen if issubclass(w.category, NoCRSWarning)] == [NoCRSWarning]
