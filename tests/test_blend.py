"""Blended tiled inference of semantic models: seams, memory, masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.errors import ModelError
from geoseg.evaluation.dice import dice_score
from geoseg.inference.blend import BLENDS, Stitcher, blend_window
from geoseg.inference.engine import blended_probabilities, predict_blended, predict_semantic
from geoseg.inference.options import PredictOptions
from geoseg.inference.tiling import TileGrid
from geoseg.models.segmenter import ModelSpec
from tests.helpers import write_raster

THRESHOLD = ModelSpec("geoseg.models.plugins:threshold_semantic", (("threshold", 100), ("sharpness", 0.05)))
POINTWISE = ModelSpec("tests.factories:pointwise_torch")
WEIGHTS = Path(__file__).resolve().parents[1] / "geoseg" / "weights" / "lungs-unet.safetensors"


@pytest.fixture(scope="module")
def noisy_scene(tmp_path_factory) -> Path:
    """A 333 x 410 float raster (not a multiple of any tile) with a nodata corner."""
    rng = np.random.default_rng(1)
    a = (rng.random((333, 410)) * 200).astype(np.float32)
    a[:150, :170] = np.nan
    return write_raster(tmp_path_factory.mktemp("blend") / "noisy.tif", a, nodata=np.nan)


@pytest.mark.parametrize("kind", BLENDS)
def test_blend_windows_are_positive_symmetric_and_peak_in_the_middle(kind):
    w = blend_window(64, kind)
    assert w.min() > 0 and np.allclose(w, w[::-1]) and w[31] == w.max()
    if kind == "gaussian":  # sigma = tile / 8
        assert w[0] == pytest.approx(np.exp(-(31.5**2) / (2 * 8.0**2)))


@pytest.mark.parametrize("model", [THRESHOLD, POINTWISE], ids=["threshold", "torch-1x1"])
@pytest.mark.parametrize("kind", BLENDS)
def test_pointwise_tiled_equals_whole_image(noisy_scene, model, kind):
    whole = blended_probabilities(
        str(noisy_scene), model, PredictOptions(tile_size=512, overlap=0), blend=kind
    )
    tiled = blended_probabilities(
        str(noisy_scene), model, PredictOptions(tile_size=96, overlap=40), blend=kind
    )
    assert whole.shape == tiled.shape == (2, 333, 410)
    assert np.array_equal(np.isnan(whole), np.isnan(tiled)) and np.isnan(whole[:, :150, :170]).all()
    assert np.nanmax(np.abs(tiled - whole)) <= 1e-6
    assert np.allclose(np.nansum(tiled, axis=0)[150:], 1, atol=1e-5)


def test_blocks_wait_for_a_row_of_overlaps_not_the_whole_scene():
    def peak(height: int, width: int) -> tuple[int, int]:
        grid = TileGrid(height, width, size=128, overlap=32)
        st = Stitcher(grid, 2, lambda r, c, p: None, blend="gaussian")
        ones = np.ones((2, 128, 128), np.float32)
        for t in grid:
            st.add(t, ones[:, : int(t.window.height), : int(t.window.width)])
        assert st.done and not st.acc
        return st.peak_bytes, height * width * 2 * 4

    short, _ = peak(128 + 96 * 5, 1000)  # rows of tiles 96 px apart, the last one too
    tall, full = peak(128 + 96 * 40, 1000)
    assert tall == short  # independent of the scene's height
    uneven, _ = peak(4000, 1000)  # the last row of tiles overlaps the one before by more
    assert max(tall, uneven) <= 1000 * 128 * 2 * 4 < full / 20  # a strip of tiles, not the scene


def test_unet_seams_dice(tmp_path):
    """Tiles of 128 and 256 (stride-aligned, Gaussian blending) vs the whole 512 x 512 slice. The
    trained lung U-Net is judged on its own mask (P >= 0.5). Without it, a random U-Net is judged
    at the median of its whole-image probabilities: its P >= 0.5 mask is nearly all foreground,
    which would make the comparison trivially pass."""
    from geoseg.synth.lungs import lung_slices

    lung = next(s for s in lung_slices(3, size=512, seed=5) if s.kind == "lung")
    path = tmp_path / "slice.npy"
    np.save(path, lung.image)
    trained = WEIGHTS.exists()
    if trained:  # a private copy: every run below uses the same weights
        shutil.copyfile(WEIGHTS, tmp_path / "unet.safetensors")
    model = ModelSpec(str(tmp_path / "unet.safetensors") if trained else "geoseg.models.unet:random_init")
    whole = blended_probabilities(str(path), model, PredictOptions(tile_size=512, overlap=0))[-1]
    threshold = 0.5 if trained else float(np.median(whole))
    assert 0.1 < (whole >= threshold).mean() < 0.9
    # a 128 tile is smaller than the network's receptive field: it needs a wider overlap (48, not 32)
    for size, overlap in ((128, 48), (256, 64)):
        tiled = blended_probabilities(str(path), model, PredictOptions(tile_size=size, overlap=overlap))[-1]
        assert dice_score(tiled >= threshold, whole >= threshold) >= 0.999


def test_tiles_are_aligned_to_the_unet_stride(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((200, 328), np.float32))
    model = ModelSpec("geoseg.models.unet:random_init", (("depth", 3), ("base_width", 4)))
    got = []
    result = predict_blended(
        str(tmp_path / "s.npy"), model, PredictOptions(tile_size=64, overlap=16), outlines=False,
        mask=lambda r, c, b: got.append(b.shape),
    )  # fmt: skip
    assert result.stats["stride"] == 8 and result.stats["tiles_run"] == result.stats["tiles"] == 4 * 7
    grid = TileGrid(200, 328, size=64, overlap=16, align=8)
    assert all(t.window.row_off % 8 == 0 and t.window.col_off % 8 == 0 for t in grid)
    assert sum(h * w for h, w in got) == 200 * 328  # the blocks cover the slice exactly once


def test_raster_mask_is_a_tiled_compressed_geotiff_with_the_input_geometry(tmp_path):
    yy, xx = np.mgrid[:600, :700]
    a = (100 + 90 * np.sin(yy / 37.0) * np.cos(xx / 23.0)).astype(np.uint8)
    a[a == 100] = 99  # P(foreground) = 0.5 exactly would be a tie
    transform = from_origin(440000, 3750000, 10, 10)
    scene = write_raster(tmp_path / "s.tif", a, crs="EPSG:32611", transform=transform)
    out = tmp_path / "mask.tif"
    opts = PredictOptions(tile_size=256, overlap=32, workers=2)
    result = predict_semantic(str(scene), THRESHOLD, opts, blend="cosine", mask_path=out)
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32611 and ds.transform == transform and ds.shape == (600, 700)
        assert ds.profile["tiled"] and ds.compression.name.lower() == "deflate" and ds.dtypes[0] == "uint8"
        assert np.array_equal(ds.read(1), (a >= 100).astype(np.uint8))
    feats = result.features
    assert feats.crs.to_epsg() == 32611 and len(feats) > 0 and not result.stats["pixel_space"]
    assert feats.area.sum() == pytest.approx((a >= 100).sum() * 100)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_instance_models_are_refused(noisy_scene):
    with pytest.raises(ModelError, match="needs a semantic model"):
        predict_blended(str(noisy_scene), ModelSpec("geoseg.models.plugins:threshold_instances"))


def _specks() -> tuple[np.ndarray, np.ndarray]:
    """A 300 x 300 image: one large region that crosses many tiles, a 2 x 2 speck, a lone pixel and
    a 3 x 3 speck on a tile seam; and the mask expected once regions under 10 pixels are dropped."""
    a = np.zeros((300, 300), np.uint8)
    a[40:190, 30:230] = 200
    a[60:80, 100:120] = 0  # a hole, which stays a hole
    a[250:252, 250:252] = 200
    a[10, 280] = 200
    a[47:50, 255:258] = 200
    expected = np.zeros_like(a)
    expected[40:190, 30:230] = 1
    expected[60:80, 100:120] = 0
    return a, expected


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_min_area_drops_small_regions_from_mask_and_outlines_alike(tmp_path, suffix):
    from PIL import Image

    a, expected = _specks()
    if suffix == ".tif":
        scene = write_raster(tmp_path / "s.tif", a)
    else:
        scene = tmp_path / "s.png"
        Image.fromarray(a).save(scene)
    opts = PredictOptions(tile_size=64, overlap=16, min_area=10)
    model = ModelSpec("geoseg.models.plugins:threshold_semantic", (("threshold", 100), ("sharpness", 0.05)))
    result = predict_semantic(str(scene), model, opts, blend="constant", mask_path=tmp_path / f"m{suffix}")
    with rasterio.open(tmp_path / f"m{suffix}") as ds:
        assert np.array_equal(ds.read(1), expected)
    assert len(result.features) == 1  # the large region, with its hole
    assert result.features.geometry.iloc[0].geom_type == "Polygon"
    assert len(result.features.geometry.iloc[0].interiors) == 1
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left
    # without a minimum area every speck is there, in both outputs
    plain = predict_semantic(str(scene), model, PredictOptions(tile_size=64, overlap=16), blend="constant",
                             mask_path=tmp_path / f"p{suffix}")  # fmt: skip
    with rasterio.open(tmp_path / f"p{suffix}") as ds:
        assert np.array_equal(ds.read(1), (a > 100).astype(np.uint8))
    assert len(plain.features) == 4


def test_min_area_defaults_to_the_checkpoints():
    from types import SimpleNamespace

    from geoseg.inference.tasks import resolve_min_area

    seg = SimpleNamespace(metadata={"min_area": 16.0})
    assert resolve_min_area(PredictOptions(), seg) == 16.0
    assert resolve_min_area(PredictOptions(min_area=0), seg) == 0.0  # told otherwise
    assert resolve_min_area(PredictOptions(), SimpleNamespace(metadata=None)) == 0.0


@pytest.mark.slow
def test_blended_masks_on_a_dask_distributed_cluster_equal_local_ones(noisy_scene, tmp_path):
    """Tiles run in two worker processes (scene and model travel by reference) and are blended
    here: the mask and outlines equal an in-process run's."""
    from dask.distributed import Client, LocalCluster

    opts = PredictOptions(tile_size=64, overlap=16, batch_size=2, min_area=5)
    local = predict_semantic(str(noisy_scene), THRESHOLD, opts, mask_path=tmp_path / "local.tif")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            remote = predict_semantic(str(noisy_scene), THRESHOLD, opts, mask_path=tmp_path / "remote.tif",
                                      scheduler=client)  # fmt: skip
            assert sum(client.run(lambda: 1).values()) == 2  # two workers really ran
    with rasterio.open(tmp_path / "local.tif") as a, rasterio.open(tmp_path / "remote.tif") as b:
        assert np.array_equal(a.read(1), b.read(1)) and a.read(1).any()
    assert remote.stats["tiles_run"] == local.stats["tiles_run"] > 0
    assert len(remote.features) == len(local.features) > 0
    assert remote.features.geometry.union_all().symmetric_difference(
        local.features.geometry.union_all()
    ).area == pytest.approx(0.0, abs=1e-6)
