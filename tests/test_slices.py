"""Slices through the scene API (NumPy, DICOM, NIfTI, PNG) and image/mask pairs."""

from __future__ import annotations

import os
import pickle
import shutil
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from rasterio.windows import Window

from geoseg.errors import SceneError
from geoseg.io.refs import SceneRef, SliceRef, open_scene
from geoseg.io.slices import SliceScene, load_pairs, read_dicom

CT_SMALL = pydicom.data.get_testdata_file("CT_small.dcm")
ANATOMICAL = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")


def _png(path, array):
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


@pytest.fixture
def folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    np.save(images / "a.npy", rng.integers(-1000, 400, (40, 30)).astype(np.int16))
    _png(masks / "a.png", (rng.random((40, 30)) > 0.5) * 255)
    np.save(images / "b.npy", rng.random((3, 20, 24)).astype(np.float32))  # (C, H, W)
    np.save(masks / "b.npy", (rng.random((20, 24)) > 0.5).astype(np.uint8) * 7)
    _png(images / "c.png", rng.integers(0, 255, (16, 18)))
    _png(masks / "c.png", np.eye(16, 18) * 255)
    shutil.copy(CT_SMALL, images / "d.dcm")
    _png(masks / "d.png", np.zeros((128, 128)))
    _png(masks / "orphan.png", np.zeros((5, 5)))  # a mask without an image is ignored
    return images, masks


def test_load_pairs_matches_by_stem_and_normalises(folders):
    images, masks = folders
    pairs = load_pairs(images, masks)
    assert [p[0] for p in pairs] == ["a", "b", "c", "d"]
    for _, image, mask in pairs:
        assert image.dtype == np.float32 and image.ndim == 3
        assert mask.dtype == np.uint8 and mask.shape == image.shape[1:] and set(np.unique(mask)) <= {0, 1}
    a, b, c, d = (p for p in pairs)
    assert np.array_equal(a[1][0], np.load(images / "a.npy"))
    assert b[1].shape == (3, 20, 24) and np.array_equal(b[2], np.load(masks / "b.npy") > 0)
    assert np.array_equal(c[2], np.eye(16, 18))
    ds = pydicom.dcmread(CT_SMALL)  # DICOM in HU: stored values times slope plus intercept
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(d[1][0], expected) and d[1].min() < -800


def test_nifti_volume_pairs_give_one_pair_per_slice(tmp_path):
    images, masks = tmp_path / "i", tmp_path / "m"
    images.mkdir()
    masks.mkdir()
    vol = nib.load(ANATOMICAL)
    data = np.asarray(vol.dataobj)
    nib.save(vol, images / "head.nii.gz")
    nib.save(nib.Nifti1Image((data > 50).astype(np.uint8), vol.affine), masks / "head.nii.gz")
    pairs = load_pairs(images, masks)
    assert len(pairs) == data.shape[2] and pairs[3][0] == "head_0003"
    assert np.array_equal(pairs[3][1][0], data[:, :, 3]) and np.array_equal(pairs[3][2], data[:, :, 3] > 50)
    assert len(load_pairs(images, masks, axis=0)) == data.shape[0]


@pytest.mark.parametrize(
    "setup, message",
    [
        ("mask_size", r"mask '.*a\.png': shape 41 x 30 differs from its image '.*a\.npy' \(40 x 30\)"),
        ("no_mask", r"image '.*a\.npy': no mask named 'a\.\*'"),
        ("empty", r"images folder '.*': no images"),
        ("bad_dicom", r"DICOM '.*d\.dcm': not readable"),
        ("volume_dims", r"volume '.*flat\.nii': expected 3 dimensions .* got 2"),
        ("pickle", r"'.*a\.npy': not a plain NumPy array"),
    ],
)
def test_load_pairs_errors_are_one_line_and_name_the_file(folders, setup, message):
    images, masks = folders
    if setup == "mask_size":
        _png(masks / "a.png", np.zeros((41, 30)))
    elif setup == "no_mask":
        (masks / "a.png").unlink()
    elif setup == "empty":
        for f in images.iterdir():
            f.unlink()
    elif setup == "bad_dicom":
        (images / "d.dcm").write_bytes(b"not a dicom file" * 20)
    elif setup == "volume_dims":
        nib.save(nib.Nifti1Image(np.zeros((8, 9), np.int16), np.eye(4)), images / "flat.nii")
        nib.save(nib.Nifti1Image(np.zeros((8, 9), np.uint8), np.eye(4)), masks / "flat.nii")
    elif setup == "pickle":
        np.save(images / "a.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SceneError, match=message) as info:
        load_pairs(images, masks)
    assert "\n" not in str(info.value)


def test_dicom_scene_is_a_pixel_space_slice_in_hu():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pixel space is expected: no NoCRSWarning
        with open_scene(CT_SMALL) as sc:
            assert isinstance(sc, SliceScene)
            assert (sc.width, sc.height, sc.count, sc.crs) == (128, 128, 1, None)
            assert sc.transform.is_identity and sc.name == "CT_small"
            block = sc.read(Window(100, 120, 50, 50))  # clipped to the slice like a raster read
            assert block.shape == (1, 8, 28) and block.dtype == np.float32
            whole = sc.read(Window(0, 0, 128, 128))
            ref = pickle.loads(pickle.dumps(sc.ref))
    assert np.array_equal(whole[0], read_dicom(CT_SMALL))
    with ref.open() as again:
        assert np.array_equal(again.read(Window(0, 0, 128, 128)), whole)
    windowed = read_dicom(CT_SMALL, hu_window=(40, 400))
    assert windowed.min() == -160 and windowed.max() == 240


def test_unreadable_dicom_is_a_scene_error(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(open(CT_SMALL, "rb").read()[:600])  # header without its pixels
    with pytest.raises(SceneError, match=r"DICOM '.*broken\.dcm': not readable"):
        open_scene(bad)


def test_numpy_stacks_and_nifti_slices(tmp_path):
    stack = np.arange(3 * 20 * 30, dtype=np.float32).reshape(3, 20, 30)
    np.save(tmp_path / "stack.npy", stack)
    with pytest.raises(SceneError, match="holds 3 slices; choose one"):
        open_scene(tmp_path / "stack.npy")
    with SliceRef(str(tmp_path / "stack.npy"), index=2).open() as sc:
        assert np.array_equal(sc.read(Window(0, 0, 30, 20))[0], stack[2]) and sc.name == "stack_0002"
    with pytest.raises(SceneError, match="slice 3 does not exist"):
        SliceRef(str(tmp_path / "stack.npy"), index=3).open()
    data = np.asarray(nib.load(ANATOMICAL).dataobj)
    with SliceRef(ANATOMICAL, index=7, axis=1).open() as sc:
        assert (sc.height, sc.width, sc.slices) == (33, 25, 41)
        assert np.array_equal(sc.read(Window(0, 0, 25, 33))[0], data[:, 7, :])
        assert np.array_equal(sc.affine, nib.load(ANATOMICAL).affine)
    np.save(tmp_path / "five.npy", np.zeros((1, 1, 1, 2, 2)))
    with pytest.raises(SceneError, match="got 5 dimensions"):
        SceneRef(str(tmp_path / "five.npy")).open()


def test_png_without_georeferencing_is_a_pixel_space_scene(tmp_path):
    path = _png(tmp_path / "slice.png", np.arange(64 * 48).reshape(48, 64) % 256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_scene(path) as sc:
            assert sc.pixel_space and sc.crs is None and (sc.width, sc.height) == (64, 48)
