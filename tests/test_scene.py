"""Scene: windowed reads as float32 with NaN at nodata; clear errors for bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from rasterio.windows import Window

from geoseg.errors import SceneError
from geoseg.scene import NoCRSWarning, open_scene
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
    monkeypatch.setattr("geoseg.scene.MAX_PIXELS", 1000)
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
