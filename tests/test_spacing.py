"""Pixel spacing of slices: DICOM ``PixelSpacing`` and NIfTI zooms are read, slices are seen at the
checkpoint's ``spacing_mm``, and masks and outlines come back on the input's grid."""

from __future__ import annotations

import json
import os

import numpy as np
import pydicom
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.evaluation.dice import dice_score
from geoseg.io.refs import SliceRef
from geoseg.io.slices import pixel_spacing, resize_labels
from geoseg.synth.lungs import make_patient, render_slice, walk

CT_SMALL = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm")


def write_dicom(path, hu: np.ndarray, spacing: float) -> str:
    """A CT slice of ``hu`` (int16 HU) with that pixel spacing, from pydicom's own CT file."""
    ds = pydicom.dcmread(CT_SMALL)
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = np.ascontiguousarray(hu, dtype="<i2").tobytes()
    ds.save_as(path)
    return str(path)


def phantom(size: int):
    """The same phantom slice (a patient geoseg's lung model never saw) at ``size`` pixels."""
    p = make_patient(77, 0)
    z = float(walk(p, 9, np.random.default_rng(5))[4])  # through the middle of the lungs
    image, mask = render_slice(p, z, size, np.random.default_rng(9))
    return image, mask, p.fov / size


def test_pixel_spacing_is_read_from_dicom_and_nifti(tmp_path):
    import nibabel as nib

    assert pixel_spacing(CT_SMALL) == pytest.approx((0.661468, 0.661468))
    vol = nib.Nifti1Image(np.zeros((40, 30, 5), np.int16), np.diag([0.8, 0.6, 3.0, 1]))
    nib.save(vol, tmp_path / "v.nii.gz")
    assert pixel_spacing(tmp_path / "v.nii.gz") == pytest.approx((0.8, 0.6))  # slices along axis 2
    assert pixel_spacing(tmp_path / "v.nii.gz", axis=0) == pytest.approx((0.6, 3.0))
    np.save(tmp_path / "s.npy", np.zeros((8, 8), np.float32))
    assert pixel_spacing(tmp_path / "s.npy") is None  # NumPy records none


def test_a_slice_is_seen_at_another_spacing_and_maps_back(tmp_path):
    hu = np.zeros((200, 300), np.int16)
    hu[50:150, 60:240] = 500
    path = write_dicom(tmp_path / "s.dcm", hu, 1.0)
    with SliceRef(path, spacing=(2.0, 2.0)).open() as sc:
        assert (sc.height, sc.width) == (100, 150) and sc.input_shape == (200, 300)
        assert sc.transform.a == pytest.approx(2.0) and sc.transform.e == pytest.approx(2.0)
        assert sc.native_spacing == (1.0, 1.0)
    with SliceRef(path, spacing=(1.005, 1.005)).open() as sc:  # within 1 %: the file's own grid
        assert (sc.height, sc.width) == (200, 300) and sc.transform.is_identity


@pytest.mark.slow
def test_the_same_slice_at_half_and_twice_the_spacing_gives_the_same_lungs(tmp_path):
    """One phantom slice written at 0.5x, 1x and 2x the lung model's spacing: each mask is on its
    input's grid, and the three agree (Dice >= 0.97 on a common grid)."""
    masks, outlines = {}, {}
    for size in (256, 512, 1024):
        image, truth, spacing = phantom(size)
        path = write_dicom(tmp_path / f"ct{size}.dcm", image, spacing)
        mask, out = tmp_path / f"m{size}.png", tmp_path / f"o{size}.geojson"
        r = CliRunner().invoke(
            cli, ["predict", path, "-m", "lungs-unet", "--mask", str(mask), "-o", str(out)]
        )
        assert r.exit_code == 0, r.output
        with rasterio.open(mask) as ds:
            masks[size] = ds.read(1)
        assert masks[size].shape == (size, size)
        assert dice_score(masks[size] > 0, truth) >= 0.95
        outlines[size] = json.loads(out.read_text())["features"]
        xs = [x for f in outlines[size] for ring in f["geometry"]["coordinates"] for x, _ in ring]
        assert max(xs) <= size and max(xs) > size / 2  # in the input's pixels, across the slice
    common = {s: resize_labels(m, (512, 512)) > 0 for s, m in masks.items()}
    for a, b in ((256, 512), (1024, 512), (256, 1024)):
        assert dice_score(common[a], common[b]) >= 0.97, (a, b)
