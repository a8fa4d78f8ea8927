"""`geoseg predict` end to end: tiling invariance, outputs, and clear errors on bad input."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.inference.engine import predict_scene
from geoseg.inference.options import PredictOptions
from geoseg.models.segmenter import ModelSpec
from tests.helpers import objects_array, write_raster

THRESHOLD = ModelSpec("geoseg.models.plugins:threshold_instances", (("threshold", 100),))


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def objects_scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "objects.tif"
    return write_raster(path, objects_array())


@pytest.fixture(scope="module")
def whole(objects_scene):
    """The reference: the whole scene segmented at once (one tile)."""
    result = predict_scene(objects_scene, THRESHOLD, PredictOptions(tile_size=4096, overlap=0))
    assert result.stats["tiles"] == 1
    return result.features


def match_ious(ref: gpd.GeoDataFrame, got: gpd.GeoDataFrame) -> np.ndarray:
    """For each reference object, the best IoU of any output object."""
    rg, gg = ref.geometry.values, got.geometry.values
    tree = shapely.STRtree(gg)
    best = np.zeros(len(rg))
    for i, g in enumerate(rg):
        for j in tree.query(g, predicate="intersects"):
            inter = shapely.intersection(g, gg[j]).area
            best[i] = max(best[i], inter / (g.area + gg[j].area - inter))
    return best


def test_reference_scene_has_the_hard_cases(whole):
    px = whole.to_crs(whole.crs)  # native CRS, 2 m pixels
    assert (px.geometry.bounds["maxx"] - px.geometry.bounds["minx"]).max() > 2 * 1024 * 2
    assert any(len(g.interiors) > 0 for g in px.geometry if g.geom_type == "Polygon")


@pytest.mark.slow
@pytest.mark.parametrize("tile_size", [256, 512, 1024])
@pytest.mark.parametrize("overlap", [0, 32, 128])
def test_tiling_invariance(objects_scene, whole, tile_size, overlap):
    result = predict_scene(objects_scene, THRESHOLD, PredictOptions(tile_size=tile_size, overlap=overlap))
    got = result.features
    assert result.stats["tiles"] > 1
    assert len(got) == len(whole)
    ious = match_ious(whole, got)
    assert ious.min() >= 0.99, f"worst IoU {ious.min():.4f}"
    holes = sum(len(g.interiors) for g in got.geometry if g.geom_type == "Polygon")
    assert holes == sum(len(g.interiors) for g in whole.geometry if g.geom_type == "Polygon")


def test_pairs_three_pixels_apart_stay_two(tmp_path):
    a = np.zeros((600, 600), np.uint8)
    a[250:330, 240:254] = 200  # the gap (cols 254..256) sits on the 256 seam
    a[250:330, 257:270] = 200
    path = write_raster(tmp_path / "pair.tif", a)
    for overlap in (0, 32, 128):
        got = predict_scene(path, THRESHOLD, PredictOptions(tile_size=256, overlap=overlap)).features
        assert len(got) == 2


def test_geojson_is_rfc7946(objects_scene, tmp_path):
    out = tmp_path / "o.geojson"
    r = run_cli(
        "-q",
        "predict",
        objects_scene,
        "-m",
        THRESHOLD.spec,
        "--model-arg",
        "threshold=100",
        "--tile-size",
        512,
        "-o",
        out,
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    feats = doc["features"]
    assert feats and [f["id"] for f in feats] == list(range(1, len(feats) + 1))
    props = feats[0]["properties"]
    assert {"id", "score", "class", "area_m2", "scene", "model", "detected_at"} <= set(props)
    assert props["class"] == "object" and props["scene"] == "objects"
    assert props["area_m2"] == pytest.approx(props["area_px"] * 4, rel=0.01)  # 2 m pixels
    for f in feats:
        geom = shapely.geometry.shape(f["geometry"])
        assert geom.is_valid
        for poly in getattr(geom, "geoms", [geom]):
            assert poly.exterior.is_ccw
            assert all(not ring.is_ccw for ring in poly.interiors)
            xs, ys = np.array(poly.exterior.coords).T
            assert ((-180 <= xs) & (xs <= 180) & (-90 <= ys) & (ys <= 90)).all()
    coord = json.dumps(feats[0]["geometry"]["coordinates"][0][0][0])
    assert len(coord.split(".")[-1]) <= 7
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


@pytest.mark.parametrize("fmt", ["gpkg", "fgb", "parquet"])
def test_native_crs_formats(objects_scene, tmp_path, fmt):
    out = tmp_path / f"o.{fmt}"
    r = run_cli(
        "-q", "predict", objects_scene, "-m", THRESHOLD.spec, "--model-arg", "threshold=100", "-o", out
    )
    assert r.exit_code == 0, r.output
    got = gpd.read_parquet(out) if fmt == "parquet" else gpd.read_file(out)
    assert got.crs.to_epsg() == 32633
    assert "fid" not in got.columns and got["id"].is_unique
    assert got.geometry.is_valid.all()


def test_stdout_and_stats(objects_scene, tmp_path):
    stats = tmp_path / "stats.json"
    r = run_cli(
        "-q", "predict", objects_scene, "-m", THRESHOLD.spec, "--model-arg", "threshold=100", "--stats", stats
    )
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["type"] == "FeatureCollection"
    s = json.loads(stats.read_text())
    assert s["objects"] == len(doc["features"]) and s["tiles_run"] == s["tiles"]


def test_no_overwrite_without_flag(objects_scene, tmp_path):
    out = tmp_path / "o.geojson"
    out.write_text("keep me")
    r = CliRunner().invoke(cli, ["predict", str(objects_scene), "-m", THRESHOLD.spec, "-o", str(out)])
    assert r.exit_code == 1 and "already exists" in r.output
    assert out.read_text() == "keep me"
    r = run_cli(
        "-q",
        "predict",
        objects_scene,
        "-m",
        THRESHOLD.spec,
        "--model-arg",
        "threshold=100",
        "-o",
        out,
        "--overwrite",
    )
    assert r.exit_code == 0 and json.loads(out.read_text())["features"]


def test_semantic_tiled_equals_whole(objects_scene):
    spec = ModelSpec("geoseg.models.plugins:threshold_semantic", (("threshold", 100),))
    whole = predict_scene(objects_scene, spec, PredictOptions(tile_size=4096, overlap=0)).features
    tiled = predict_scene(objects_scene, spec, PredictOptions(tile_size=256, overlap=32)).features
    assert len(whole) == len(tiled) > 50
    assert match_ious(whole, tiled).min() >= 0.999
    assert whole.area.sum() == pytest.approx(tiled.area.sum())


def test_workers_give_the_same_objects(objects_scene, whole):
    got = predict_scene(objects_scene, THRESHOLD, PredictOptions(tile_size=512, workers=2)).features
    assert len(got) == len(whole) and match_ious(whole, got).min() >= 0.99


def test_masks_that_stop_short_of_the_tile_edge_still_join(tmp_path):
    a = np.zeros((300, 600), np.uint8)
    a[100:120, 150:330] = 200  # cut by tile 0 (cols 0..256) and tile 1 (cols 192..448)
    path = write_raster(tmp_path / "bar.tif", a)
    model = ModelSpec("tests.factories:short_of_edges", (("stop", 12),))
    opts = PredictOptions(tile_size=256, overlap=64)  # default margin: a quarter of the overlap, 16
    got = predict_scene(path, model, opts).features
    assert len(got) == 1
    assert got.geometry.iloc[0].equals(predict_scene(path, THRESHOLD, opts).features.geometry.iloc[0])
    # with a margin under the shortfall, each tile's piece looks whole: two objects
    assert (
        len(predict_scene(path, model, PredictOptions(tile_size=256, overlap=64, edge_margin=4)).features)
        == 2
    )
