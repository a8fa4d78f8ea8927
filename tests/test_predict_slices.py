"""``geoseg predict`` on slices, stacks and volumes (DICOM, NIfTI, NumPy, PNG) with masks."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image

from geoseg.cli.main import cli
from geoseg.io.slices import read_dicom

CT_SMALL = pydicom.data.get_testdata_file("CT_small.dcm")
ANATOMICAL = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")
THRESHOLD = ["-m", "geoseg.models.plugins:threshold_semantic"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_dicom_end_to_end_mask_and_pixel_outlines(tmp_path):
    out, mask = tmp_path / "ct.geojson", tmp_path / "ct.png"
    r = run(
        "predict",
        CT_SMALL,
        *THRESHOLD,
        "--model-arg",
        "threshold=0.5",
        "--tile-size",
        64,
        "--overlap",
        16,
        "--mask",
        mask,
        "-o",
        out,
    )
    assert r.exit_code == 0, r.output
    assert "CRS" not in r.output  # a slice is in pixel space by design: no warning
    with rasterio.open(mask) as ds:
        got = ds.read(1)
    hu = read_dicom(CT_SMALL)
    assert got.shape == (128, 128) and np.array_equal(got, (hu > 0).astype(np.uint8))
    doc = json.loads(out.read_text())
    assert doc["coordinates"] == "pixel" and "crs" not in doc and doc["features"]
    xs = [x for f in doc["features"] for ring in f["geometry"]["coordinates"] for x, _ in ring]
    assert 0 <= min(xs) and max(xs) <= 128  # pixel columns, not lon/lat
    assert sum(f["properties"]["area_px"] for f in doc["features"]) == got.sum()


def test_nifti_volume_end_to_end_keeps_shape_and_affine(tmp_path):
    mask, out = tmp_path / "head_mask.nii.gz", tmp_path / "head.gpkg"
    r = run(
        "-q",
        "predict",
        ANATOMICAL,
        "-m",
        "geoseg.models.unet:random_init",
        "--model-arg",
        "depth=2",
        "--tile-size",
        32,
        "--overlap",
        16,
        "--mask",
        mask,
        "-o",
        out,
    )
    assert r.exit_code == 0, r.output
    src, got = nib.load(ANATOMICAL), nib.load(mask)
    assert got.shape == src.shape and np.allclose(got.affine, src.affine)
    assert got.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(got.dataobj))) <= {0, 1}
    import geopandas as gpd

    feats = gpd.read_file(out)
    assert feats["slice"].between(0, src.shape[2] - 1).all() and feats["id"].is_unique


def test_nifti_slices_along_another_axis_with_a_threshold(tmp_path):
    mask = tmp_path / "m.nii"
    r = run(
        "-q",
        "predict",
        ANATOMICAL,
        *THRESHOLD,
        "--model-arg",
        "threshold=50",
        "--slice-axis",
        0,
        "--slices",
        "3,10-12",
        "--mask",
        mask,
        "-o",
        tmp_path / "o.geojson",
    )
    assert r.exit_code == 0, r.output
    data = np.asarray(nib.load(ANATOMICAL).dataobj)
    got = np.asarray(nib.load(mask).dataobj)
    expected = np.zeros_like(got)
    for k in (3, 10, 11, 12):
        expected[k] = data[k] > 50
    assert np.array_equal(got, expected)


def test_numpy_stack_gives_a_stack_of_masks(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.normal(0, 1, (3, 70, 50)).astype(np.float32)
    np.save(tmp_path / "stack.npy", stack)
    r = run(
        "-q",
        "predict",
        tmp_path / "stack.npy",
        *THRESHOLD,
        "--model-arg",
        "threshold=0",
        "--tile-size",
        32,
        "--overlap",
        8,
        "--mask",
        tmp_path / "m.npy",
        "-o",
        tmp_path / "o.geojson",
    )
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(tmp_path / "m.npy"), (stack >= 0).astype(np.uint8))


def test_png_slice_gives_a_tiff_mask(tmp_path):
    img = (np.arange(90 * 120).reshape(90, 120) % 256).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "s.png")
    r = run(
        "predict",
        tmp_path / "s.png",
        *THRESHOLD,
        "--model-arg",
        "threshold=127.5",
        "--tile-size",
        64,
        "--overlap",
        16,
        "--blend",
        "constant",
        "--mask",
        tmp_path / "m.tif",
        "-o",
        tmp_path / "o.geojson",
    )
    assert r.exit_code == 0 and "CRS" not in r.output, r.output
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.crs is None and np.array_equal(ds.read(1), (img > 127.5).astype(np.uint8))
    assert json.loads((tmp_path / "o.geojson").read_text())["coordinates"] == "pixel"


@pytest.mark.parametrize(
    "make, extra, message",
    [
        ("bad_dicom", [], r"DICOM '.*bad\.dcm': not readable"),
        ("flat_nifti", [], r"volume '.*flat\.nii': expected 3 dimensions"),
        ("stack", ["--mask", "MASK.png"], r"mask '.*MASK\.png': a volume's mask is written as"),
        ("stack", ["--slices", "7"], r"slice 7 does not exist"),
        ("stack", ["--mask", "EXISTS.npy"], r"already exists"),
    ],
)
def test_bad_inputs_fail_in_one_line_and_write_nothing(tmp_path, make, extra, message):
    if make == "bad_dicom":
        src = tmp_path / "bad.dcm"
        src.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 50)
    elif make == "flat_nifti":
        src = tmp_path / "flat.nii"
        nib.save(nib.Nifti1Image(np.zeros((8, 9), np.int16), np.eye(4)), src)
    else:
        src = tmp_path / "stack.npy"
        np.save(src, np.zeros((2, 32, 32), np.float32))
    (tmp_path / "EXISTS.npy").write_bytes(b"keep")
    extra = [str(tmp_path / e) if e.startswith(("MASK", "EXISTS")) else e for e in extra]
    before = set(os.listdir(tmp_path))
    if "--mask" not in extra:
        extra = [*extra, "--mask", tmp_path / "m.npy"]
    r = run("predict", src, *THRESHOLD, *extra, "-o", tmp_path / "o.geojson")
    assert r.exit_code == 1, r.output
    assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("Error: ")
    assert re_search(message, r.output)
    assert set(os.listdir(tmp_path)) == before and (tmp_path / "EXISTS.npy").read_bytes() == b"keep"


def re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None
