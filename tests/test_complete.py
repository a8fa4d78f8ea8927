"""Region completion (a checkpoint's ``complete``): a class grown to the intensity regions it mostly
fills."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from geoseg.errors import SceneError
from geoseg.inference import complete as completion
from geoseg.inference import plan
from geoseg.inference.engine import predict_semantic
from geoseg.inference.merge import MergedObject
from geoseg.inference.options import PredictOptions
from geoseg.models.segmenter import ModelSpec

MODEL = ModelSpec("tests.factories:dark_band_semantic")


def phantom() -> np.ndarray:
    """A 160 x 160 CT-like slice in HU: air around a body; in it a lung whose left part is darker
    (-850, what the model finds) than its right part (-700), bowel gas (-1000) and a dense patch."""
    hu = np.full((160, 160), -1000.0, np.float32)
    yy, xx = np.mgrid[0:160, 0:160]
    hu[((yy - 80) / 70) ** 2 + ((xx - 80) / 75) ** 2 < 1] = 40.0
    hu[40:100, 30:70] = -850.0  # lung, darker part
    hu[40:100, 70:110] = -700.0  # lung, lighter part (same region)
    hu[115:130, 60:90] = -1000.0  # gas: dark, but nothing the model marked
    return hu


def lung() -> np.ndarray:
    m = np.zeros((160, 160), bool)
    m[40:100, 30:110] = True
    return m


def test_intensity_regions_inside_the_body_only():
    hu = phantom()
    hu[0:20, 0:20] = -1000.0  # already air: outside the body, touching the border
    regions, n = completion.intensity_regions(hu, -400, -500)
    assert n >= 2
    lung_label = regions[70, 50]
    assert lung_label > 0 and regions[70, 100] == lung_label  # both parts: one region
    assert regions[120, 75] > 0 and regions[120, 75] != lung_label  # the gas is a region of its own
    assert regions[5, 5] == 0 and regions[70, 120] == 0  # outside air, body tissue
    assert (regions[lung()] == lung_label).all()
    assert not (regions[~lung()] == lung_label).any()


def test_complete_objects_grows_only_regions_the_class_mostly_fills():
    hu = phantom()
    found = shapely.box(30, 40, 70, 100)  # the darker half, in pixel space (x, y)
    gas_piece = shapely.box(60, 115, 62, 117)  # 4 of the gas's 450 pixels: under the overlap
    other = MergedObject(shapely.box(130, 70, 135, 75), 0.9, 2, 1)  # another class, untouched
    objects = [MergedObject(found, 0.8, 1, 3), MergedObject(gas_piece, 0.6, 1, 1), other]
    by_class = completion.settings({"complete": {"lung": {"below": -400, "body_above": -500}}},
                                   ["background", "lung", "other"])  # fmt: skip
    assert by_class == {1: {"below": -400.0, "body_above": -500.0, "overlap": 0.3}}
    out, added, removed = completion.complete_objects(objects, hu, by_class)
    assert removed == []  # no gas_below: nothing is taken out
    lungs = [o for o in out if o.label == 1]
    areas = sorted(o.geometry.area for o in lungs)
    assert areas == [4.0, 60 * 80]  # the lung whole, the gas piece as it was
    whole = max(lungs, key=lambda o: o.geometry.area)
    assert whole.geometry.equals(shapely.box(30, 40, 110, 100))
    assert whole.score == pytest.approx(0.8) and whole.parts == 3
    assert [o for o in out if o.label == 2] == [other]
    assert len(added) == 1 and added[0][1] == 1 and added[0][0].equals(shapely.box(70, 40, 110, 100))


def test_predict_completes_mask_and_outlines_alike(tmp_path):
    path = tmp_path / "slice.npy"
    np.save(path, phantom())
    opts = PredictOptions(tile_size=96, overlap=32)
    plain = predict_semantic(str(path), MODEL, PredictOptions(tile_size=96, overlap=32, complete=False),
                             mask_path=tmp_path / "plain.npy")  # fmt: skip
    assert np.load(tmp_path / "plain.npy").sum() == 60 * 40  # the model alone: the darker half
    assert "regions_completed" not in plain.stats
    done = predict_semantic(str(path), MODEL, opts, mask_path=tmp_path / "mask.npy")
    mask = np.load(tmp_path / "mask.npy")
    assert np.array_equal(mask == 1, lung())  # the whole lung; not the gas, not the body
    assert done.stats["regions_completed"] == 1
    assert len(done.features) == 1 and done.features.geometry.iloc[0].area == 60 * 80


def test_too_large_images_are_refused_before_any_tile(tmp_path, monkeypatch):
    path = tmp_path / "slice.npy"
    np.save(path, phantom())
    monkeypatch.setattr(plan, "COMPLETE_MAX_PIXELS", 100 * 100)
    with pytest.raises(SceneError, match=r"slice.npy.*too large for region completion.*--no-complete"):
        predict_semantic(str(path), MODEL, PredictOptions(tile_size=96, overlap=32),
                         mask_path=tmp_path / "m.npy")  # fmt: skip
    assert not (tmp_path / "m.npy").exists()
    predict_semantic(str(path), MODEL, PredictOptions(tile_size=96, overlap=32, complete=False),
                     mask_path=tmp_path / "m.npy")  # fmt: skip


def test_a_georeferenced_raster_is_completed_the_same_way(tmp_path):
    import rasterio

    from tests.helpers import write_raster

    path = write_raster(tmp_path / "ct.tif", phantom())
    done = predict_semantic(
        str(path), MODEL, PredictOptions(tile_size=96, overlap=32), mask_path=tmp_path / "m.tif"
    )
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert np.array_equal(ds.read(1) == 1, lung())
    assert done.stats["regions_completed"] == 1
    assert done.features.to_crs("EPSG:32633").geometry.iloc[0].area == pytest.approx(
        60 * 80 * 4.0
    )  # 2 m pixels


def test_gas_regions_are_taken_out_of_the_class_before_completion():
    """With ``gas_below``, a region at the density of air (the gas, median -1000) is not lung even
    where the model marked most of it; the lung (median -775) is completed as before."""
    hu = phantom()
    found = shapely.box(30, 40, 70, 100)
    gas_piece = shapely.box(60, 115, 85, 130)  # most of the gas region: over the overlap
    objects = [MergedObject(found, 0.8, 1, 3), MergedObject(gas_piece, 0.6, 1, 1)]
    settings = {"complete": {"lung": {"below": -400, "body_above": -500, "gas_below": -975}}}
    by_class = completion.settings(settings, ["background", "lung"])
    assert by_class[1]["gas_below"] == -975.0
    out, added, removed = completion.complete_objects(objects, hu, by_class)
    assert len(out) == 1 and out[0].geometry.equals(shapely.box(30, 40, 110, 100))
    assert len(removed) == 1 and removed[0][0].equals(gas_piece)  # what the model had marked there
    without = completion.settings(
        {"complete": {"lung": {"below": -400, "body_above": -500}}}, ["background", "lung"]
    )
    kept, _, _ = completion.complete_objects(objects, hu, without)
    assert sorted(o.geometry.area for o in kept) == [15 * 30, 60 * 80]  # the gas grown to its region
    labels = np.zeros((160, 160), np.int64)
    labels[40:100, 30:70] = 1
    labels[115:130, 60:85] = 1
    assert np.array_equal(completion.complete_labels(labels, hu, by_class) == 1, lung())
    assert (completion.complete_labels(labels, hu, without)[115:130, 60:90] == 1).all()


def test_predict_leaves_gas_out_of_mask_and_outlines(tmp_path):
    path = tmp_path / "slice.npy"
    hu = phantom()
    hu[115:130, 60:90] = -990.0  # the gas, a little above the air outside (-1000)
    np.save(path, hu)
    opts = PredictOptions(tile_size=96, overlap=32)
    darker = "tests.factories:dark_band_semantic"
    plain = predict_semantic(str(path), ModelSpec(darker, {"lo": -995}), opts, mask_path=tmp_path / "a.npy")
    assert (np.load(tmp_path / "a.npy")[115:130, 60:90] == 1).all()  # the model takes the gas too
    assert "gas_regions_removed" not in plain.stats
    done = predict_semantic(str(path), ModelSpec(darker, {"lo": -995, "gas_below": -975}), opts,
                            mask_path=tmp_path / "b.npy")  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "b.npy") == 1, lung())
    assert done.stats["gas_regions_removed"] == 1
    assert len(done.features) == 1 and done.features.geometry.iloc[0].area == 60 * 80
