"""Scene: windowed reads as float32 with NaN at nodata; clear errors for bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg.errors import SceneError
from geoseg.io.refs import open_scene
from geoseg.io.scene import NoCRSWarning
from tests.helpers import write_raster


def test_read_window_nodata_becomes_nan(real_data):
    with open_scene(real_data / "RGB.byte.tif") as scene:
        assert (scene.width, scene.height, scene.count) == (791, 718, 3)
        assert scene.crs.to_epsg() == 32618
        data = scene.read(Window(0, 0, 100, 50))
        assert data.dtype == np.float32 and data.shape == (3, 50, 100)
        assert np.isnan(data[:, 0, 0]).all()  # the nodata collar
        inside = scene.read(Window(350, 350, 10, 10))
        assert not np.isnan(inside).any()


def test_band_selection(real_data):
    with open_scene(real_data / "RGBA.uint16.tif", bands=(3, 1)) as scene:
        assert scene.count == 2
        data = scene.read(Window(0, 0, 8, 8))
    with open_scene(real_data / "RGBA.uint16.tif") as scene:
        full = scene.read(Window(0, 0, 8, 8))
    np.testing.assert_array_equal(data, full[[2, 0]])


def test_bad_band(real_data):
    with pytest.raises(SceneError, match="band 5 does not exist"):
        open_scene(real_data / "RGBA.uint16.tif", bands=(5,))


def test_float_nodata_and_nan(tmp_path):
    a = np.arange(20 * 20, dtype=np.float32).reshape(20, 20)
    a[0, 0] = -9999
    a[1, 1] = np.nan
    path = write_raster(tmp_path / "f.tif", a, nodata=-9999)
    with open_scene(path) as scene:
        data = scene.read(Window(0, 0, 20, 20))[0]
    assert np.isnan(data[0, 0]) and np.isnan(data[1, 1]) and data[2, 2] == a[2, 2]


def test_missing_file(tmp_path):
    with pytest.raises(SceneError, match=r"scene '.*nope.tif': no such file"):
        open_scene(tmp_path / "nope.tif")


def test_not_a_raster(tmp_path):
    p = tmp_path / "x.tif"
    p.write_text("hello")
    with pytest.raises(SceneError, match="not a readable raster"):
        open_scene(p)


def test_corrupt_blocks_fail_on_read_with_the_file_named(real_data):
    with open_scene(real_data / "corrupt.tif") as scene:
        scene.read(Window(0, 0, 512, 512))  # this block is intact
        with pytest.raises(SceneError, match="corrupt.tif': cannot read window .*IReadBlock failed"):
            scene.read(Window(512, 512, 512, 512))


def test_vrt_is_refused(tmp_path, real_data):
    vrt = tmp_path / "x.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="10" rasterYSize="15"><VRTRasterBand dataType="Byte" band="1">'
        f"<SimpleSource><SourceFilename>{real_data / 'rotated.tif'}</SourceFilename>"
        f"<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    with pytest.raises(SceneError, match="driver VRT is not allowed"):
        open_scene(vrt)


def test_pixel_cap(tmp_path, monkeypatch):
    path = write_raster(tmp_path / "big.tif", np.zeros((64, 64), np.uint8))
    monkeypatch.setattr("geoseg.io.scene.MAX_PIXELS", 1000)
    with pytest.raises(SceneError, match="exceeds the limit"):
        open_scene(path)


def test_no_crs_warns_and_crs_can_be_assigned(real_data):
    with pytest.warns(NoCRSWarning, match="has no CRS"):
        open_scene(real_data / "rotated.tif").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_scene(real_data / "rotated.tif", crs="EPSG:32618") as scene:
            assert scene.crs.to_epsg() == 32618
            assert scene.ref.crs is not None  # travels to workers


def test_resampled_scene_is_a_finer_grid_over_the_same_ground(tmp_path):
    # a smooth ramp: bilinear resampling must give the ramp again, on a grid of half the spacing
    cols = np.arange(64, dtype=np.float32)
    ramp = np.broadcast_to(cols, (48, 64)).copy()
    ramp[:8, :8] = -1
    path = write_raster(tmp_path / "ramp.tif", ramp, nodata=-1)  # 2 m pixels, UTM
    with open_scene(path) as native:
        assert native.native_gsd == pytest.approx(2.0, rel=1e-3)  # UTM scale factor near 0.9996
        gsd, origin = native.native_gsd / 2, (native.transform.c, native.transform.f)
    with open_scene(path, gsd=gsd) as fine:
        assert (fine.width, fine.height) == (128, 96)
        assert fine.transform.a == pytest.approx(1.0) and fine.transform.e == pytest.approx(-1.0)
        assert (fine.transform.c, fine.transform.f) == origin
        assert fine.native_gsd == pytest.approx(2.0, rel=1e-3) and fine.ref.gsd == gsd
        data = fine.read(Window(40, 40, 60, 40))[0]
        # fine pixel centre at column j lies at native column (j + 0.5) / 2 - 0.5
        expect = (np.arange(40, 100) + 0.5) / 2 - 0.5
        np.testing.assert_allclose(data, np.broadcast_to(expect, data.shape), atol=1e-3)
        corner = fine.read(Window(0, 0, 12, 12))[0]
        assert np.isnan(corner[:12, :12]).all()  # nodata stays nodata


def test_resampled_rotated_and_geographic_scenes(real_data, tmp_path):
    with open_scene(real_data / "rotated.tif", crs="EPSG:32633") as native:
        gsd = native.native_gsd
        rotation = native.transform.b / native.transform.a
    with open_scene(real_data / "rotated.tif", crs="EPSG:32633", gsd=gsd / 2) as fine:
        assert (fine.width, fine.height) == (20, 30)
        assert fine.transform.b / fine.transform.a == pytest.approx(rotation)  # same orientation
        assert not np.isnan(fine.read(Window(0, 0, 20, 30))).any()
    # 1e-5 degrees of latitude are about 1.1 m
    path = write_raster(
        tmp_path / "ll.tif", np.ones((20, 20), np.uint8), crs="EPSG:4326",
        transform=from_origin(10.0, 55.0, 1e-5 / np.cos(np.radians(55)), 1e-5),
    )  # fmt: skip
    with open_scene(path) as ll:
        assert ll.native_gsd == pytest.approx(1.113, rel=0.01)


def test_resampling_needs_a_crs_and_a_raster(real_data, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoCRSWarning)
        with pytest.raises(SceneError, match="rotated.tif': has no CRS, so it has no ground sample"):
            open_scene(real_data / "rotated.tif", gsd=1.0)
    np.save(tmp_path / "slice.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(SceneError, match="slice.npy': a slice has no ground sample distance"):
        open_scene(tmp_path / "slice.npy", gsd=1.0)


def test_pixel_cap_applies_to_the_resampled_grid(tmp_path, monkeypatch):
    path = write_raster(tmp_path / "small.tif", np.zeros((20, 20), np.uint8))
    monkeypatch.setattr("geoseg.io.scene.MAX_PIXELS", 1000)
    open_scene(path).close()
    with pytest.raises(SceneError, match=r"80 x 80 pixels at 0.5 m exceeds the limit"):
        open_scene(path, gsd=0.5)
