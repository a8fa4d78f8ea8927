"""A checkpoint's ``radiometry`` (its training scenes' band medians): geoseg predict shifts each
scene's bands so that their medians meet it (another sea colour, haze), unless told not to."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from click.testing import CliRunner

import geoseg
from geoseg.cli.main import cli
from geoseg.errors import SceneError
from geoseg.io.refs import SceneRef
from geoseg.io.scene import Scene
from geoseg.models.plugins import ThresholdInstances
from tests.helpers import write_raster


def sea(brighter: float = 0.0, dtype=np.float32) -> np.ndarray:
    """A 600 x 600 'sea' at 40 with some texture, two bright 'hulls' at 140, plus ``brighter``."""
    rng = np.random.default_rng(0)
    a = 40 + rng.normal(0, 3, (600, 600))
    a[100:140, 200:400] = 140
    a[400:420, 50:150] = 140
    return (a + brighter).astype(dtype)


def model(reference):
    m = ThresholdInstances(threshold=100)
    m.metadata = (
        {"radiometry": {"statistic": "median", "reference": [reference]}} if reference is not None else {}
    )
    return m


def test_band_medians_sample_the_scene_and_skip_nodata(tmp_path):
    a = sea()
    a[:300] = -9999  # the upper half has no data
    path = write_raster(tmp_path / "s.tif", a, nodata=-9999)
    with Scene(path) as sc:
        med = sc.band_medians()
    assert med.shape == (1,) and abs(float(med[0]) - 40) < 0.5  # the sea's level, nodata left out
    with Scene(
        write_raster(tmp_path / "empty.tif", np.full((64, 64), -9999, np.float32), nodata=-9999)
    ) as sc:
        assert np.isnan(sc.band_medians()).all()


def test_an_offset_is_added_to_every_read_and_travels_with_the_ref(tmp_path):
    path = write_raster(tmp_path / "s.tif", np.stack([sea(), sea(5)]))
    ref = SceneRef(str(path), offset=(10.0, -5.0))
    ref = pickle.loads(pickle.dumps(ref))
    with ref.open() as sc, Scene(path) as plain:
        from rasterio.windows import Window

        w = Window(0, 0, 64, 64)
        assert np.allclose(sc.read(w), plain.read(w) + np.array([10.0, -5.0], np.float32)[:, None, None])
        assert sc.ref.offset == ref.offset  # reopens as it is, offset included
    with pytest.raises(SceneError, match="one finite number per band"):
        Scene(path, offset=(1.0,))


def test_a_brighter_scene_is_matched_to_the_checkpoint_and_gives_the_same_objects(tmp_path):
    base = geoseg.predict(write_raster(tmp_path / "a.tif", sea()), model(40.0), tile_size=256, overlap=64)
    bright_path = write_raster(tmp_path / "b.tif", sea(brighter=80.0))  # hazy: the sea at 120
    bright = geoseg.predict(bright_path, model(40.0), tile_size=256, overlap=64)
    assert len(base.features) == 2 and abs(base.stats["radiometric_offset"][0]) < 0.5
    assert bright.stats["radiometric_offset"][0] == pytest.approx(-80.0, abs=0.5)
    assert sorted(bright.features.area_px) == sorted(base.features.area_px)  # the same two hulls
    assert bright.features.geometry.union_all().equals(base.features.geometry.union_all())
    asis = geoseg.predict(bright_path, model(40.0), tile_size=256, overlap=64, no_match_radiometry=True)
    assert "radiometric_offset" not in asis.stats and len(asis.features) == 1  # the whole sea is one object
    without = geoseg.predict(bright_path, model(None), tile_size=256, overlap=64)  # a checkpoint without it
    assert "radiometric_offset" not in without.stats and len(without.features) == 1


def test_the_committed_tanker_model_records_radiometry_and_the_flag_turns_it_off(tmp_path):
    from geoseg.models.checkpoint import read_metadata
    from geoseg.models.segmenter import ModelSpec

    record = read_metadata(ModelSpec.resolve("tankers-light").spec)["radiometry"]
    assert record["statistic"] == "median" and len(record["reference"]) == 3
    r = CliRunner().invoke(cli, ["predict", "--help"])
    assert "--no-match-radiometry" in r.output


def test_training_records_the_median_of_its_scenes(tmp_path):
    from geoseg.training.maskrcnn import radiometry_record

    scenes = [Scene(write_raster(tmp_path / f"{k}.tif", sea(brighter=b))) for k, b in enumerate([0, 2, 50])]
    try:
        record = radiometry_record(scenes)
    finally:
        for sc in scenes:
            sc.close()
    assert record["statistic"] == "median" and record["reference"][0] == pytest.approx(42.0, abs=0.5)
