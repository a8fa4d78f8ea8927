"""CT air calibration: a checkpoint whose ``radiometry`` is ``{"statistic": "air", ...}`` was trained on
slices shifted so that the air outside the body reads -1000 HU; geoseg predict shifts every slice
the same way (another scanner's offset), unless told not to, and ``geoseg train unet
--calibrate-air`` records it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import rasterio

import geoseg
from geoseg.errors import ModelError
from geoseg.io.refs import SliceRef
from geoseg.io.slices import SliceScene, air_offset
from geoseg.models.plugins import ThresholdSemantic


def chest(shift: float = 0.0, padding: bool = False) -> np.ndarray:
    """A 256 x 256 slice: air at -1000, a body at 40 HU with two lungs at -850, noise; plus ``shift``
    (a scanner's offset); ``padding``: -2048 outside the reconstruction circle."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    a = np.full((256, 256), -1000.0) + rng.normal(0, 20, (256, 256))
    body = ((xx - 128) / 100) ** 2 + ((yy - 128) / 70) ** 2 < 1
    a[body] = 40 + rng.normal(0, 20, body.sum())
    for cx in (85, 171):
        lung = ((xx - cx) / 32) ** 2 + ((yy - 128) / 45) ** 2 < 1
        a[lung] = -850 + rng.normal(0, 20, lung.sum())
    a = a + shift
    if padding:
        a[np.hypot(xx - 128, yy - 128) > 127] = -2048
    return a.astype(np.float32)


def model(air):
    """Foreground above -950 HU (body and lungs; the air outside is background)."""
    m = ThresholdSemantic(threshold=-950, sharpness=0.1)
    m.metadata = {"radiometry": {"statistic": "air", "reference": [air]}} if air is not None else {}
    return m


def test_air_offset_reads_the_air_outside_the_body():
    assert air_offset(chest()).tolist() == pytest.approx([0.0], abs=2)
    assert air_offset(chest(45)).tolist() == pytest.approx([-45.0], abs=2)
    # padding outside the reconstruction circle is not air; the lungs inside the body are not either
    assert air_offset(chest(-30, padding=True)).tolist() == pytest.approx([30.0], abs=2)
    body_only = np.full((64, 64), 40.0, np.float32)  # the body fills the field of view: no air to read
    assert air_offset(body_only).tolist() == [0.0]
    assert air_offset(np.stack([chest(10), chest(-20)])).tolist() == pytest.approx([-10.0, 20.0], abs=2)


def test_a_calibrated_slice_is_read_shifted_and_reopens_so(tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, chest(60))
    ref = pickle.loads(pickle.dumps(SliceRef(str(path), air=-1000.0)))
    with ref.open() as sc, SliceScene(str(path)) as plain:
        from rasterio.windows import Window

        w = Window(0, 0, 256, 256)
        assert sc.air_shift == pytest.approx((-60.0,), abs=2)
        assert np.allclose(sc.read(w), plain.read(w) + np.float32(sc.air_shift[0]))
        assert sc.ref.air == -1000.0 and plain.air_shift is None


def test_a_slice_from_another_scanner_gives_the_same_mask_as_the_original(tmp_path):
    def run(image, m, name, **kw):
        src, mask = tmp_path / f"{name}.npy", tmp_path / f"{name}.tif"
        np.save(src, image)
        res = geoseg.predict(src, m, mask=mask, tile_size=128, overlap=32, **kw)
        with rasterio.open(mask) as ds:
            return res, ds.read(1)

    base, base_mask = run(chest(), model(-1000.0), "base")
    assert abs(base.stats["air_offset"][0]) < 2
    assert 0.3 < (base_mask == 1).mean() < 0.6  # the body, not the air around it
    res, mask = run(chest(80), model(-1000.0), "bright")  # air at -920: above the model's threshold
    assert res.stats["air_offset"][0] == pytest.approx(-80.0, abs=2)
    assert (mask == base_mask).mean() > 0.999
    asis, asis_mask = run(chest(80), model(-1000.0), "asis", no_match_radiometry=True)
    assert "air_offset" not in asis.stats and (asis_mask == 1).mean() > 0.9  # the air is taken too
    plain, plain_mask = run(chest(80), model(None), "plain")  # a checkpoint without it
    assert "air_offset" not in plain.stats and (plain_mask == 1).mean() > 0.9


def test_a_bad_air_record_is_a_one_line_error(tmp_path):
    np.save(tmp_path / "s.npy", chest())
    m = model(-1000.0)
    m.metadata["radiometry"]["reference"] = [-1000.0, -1000.0]
    with pytest.raises(ModelError, match="air statistic takes one value"):
        geoseg.predict(tmp_path / "s.npy", m, tile_size=128, overlap=32)


def test_the_committed_lung_model_is_calibrated_by_air_and_leaves_gas_out():
    from geoseg.models.checkpoint import read_metadata
    from geoseg.models.segmenter import ModelSpec

    meta = read_metadata(ModelSpec.resolve("lungs-unet").spec)
    assert meta["radiometry"] == {"statistic": "air", "reference": [-1000.0]}
    assert meta["complete"]["lung"]["gas_below"] == -975.0
    assert "--calibrate-air=-1000" in meta["training"]["command"]


def test_a_ct_slice_from_a_miscalibrated_scanner_gets_the_same_lungs(tmp_path):
    """The committed lung model on one phantom slice as written and as a scanner reading 40 HU low
    would give it: the calibration brings both to the same values, so the masks agree."""
    from geoseg.evaluation.dice import dice_score
    from geoseg.synth.lungs import make_patient, render_slice, walk

    p = make_patient(77, 0)
    z = float(walk(p, 9, np.random.default_rng(5))[4])
    image, truth = render_slice(p, z, 512, np.random.default_rng(9))
    masks = []
    for name, shift in (("as-is", 0.0), ("low", -40.0)):
        np.save(tmp_path / f"{name}.npy", image.astype(np.float32) + shift)
        res = geoseg.predict(tmp_path / f"{name}.npy", "lungs-unet", mask=tmp_path / f"{name}.tif")
        assert res.stats["air_offset"][0] == pytest.approx(
            -float(np.median(image[:20, :20])) - 1000 - shift, abs=3
        )
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            masks.append(ds.read(1) == 1)
    assert dice_score(masks[0], truth) >= 0.97 and dice_score(masks[1], masks[0]) >= 0.99
