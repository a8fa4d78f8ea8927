"""Georeferencing: object centroids survive the round trip through EPSG:4326 (RFC 7946 GeoJSON)
within one pixel, in both hemispheres, for rotated transforms, a real scene, a global raster and
across the antimeridian."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from rasterio.transform import from_origin
from scipy import ndimage

from geoseg.cli.main import cli
from geoseg.inference.vectorize import mask_to_geometry
from tests.helpers import write_raster

FACTORY = "geoseg.models.plugins:threshold_instances"


def predict_geojson(scene, out, *extra):
    args = ["-q", "predict", str(scene), "-m", FACTORY, "-o", str(out), *map(str, extra)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    return gpd.read_file(out)


def squares_scene(path, crs, transform, shape=(1200, 1100)):
    """Scene with 20 x 20 px squares (some on 512 seams); returns true centroids in the CRS."""
    a = np.zeros(shape, np.uint8)
    corners = [(5, 5), (500, 500), (100, 900), (1000, 200), (700, 1070), (1170, 1070)]
    truth = []
    for r, c in corners:
        a[r : r + 20, c : c + 20] = 200
        truth.append(transform * (c + 10, r + 10))
    write_raster(path, a, crs=crs, transform=transform)
    return np.array(truth)


def assert_centroids_within_a_pixel(got_native: gpd.GeoDataFrame, truth: np.ndarray, pixel: float):
    c = np.column_stack([got_native.geometry.centroid.x, got_native.geometry.centroid.y])
    assert len(c) == len(truth)
    d = np.sqrt(((c[:, None, :] - truth[None, :, :]) ** 2).sum(-1)).min(axis=0)
    assert d.max() < pixel, f"worst centroid error {d.max():.3f} vs pixel {pixel}"


@pytest.mark.parametrize(
    "crs, origin",
    [("EPSG:32633", (500000, 6650000)), ("EPSG:32733", (300000, 7100000))],
    ids=["north-utm", "south-utm"],
)
def test_utm_round_trip(tmp_path, crs, origin):
    transform = from_origin(*origin, 10.0, 10.0)
    truth = squares_scene(tmp_path / "s.tif", crs, transform)
    got = predict_geojson(tmp_path / "s.tif", tmp_path / "o.geojson", "--tile-size", 512)
    assert got.crs.to_epsg() == 4326
    assert_centroids_within_a_pixel(got.to_crs(crs), truth, 10.0)
    assert got["area_m2"].to_numpy() == pytest.approx(400 * 100, rel=0.01)


def test_rotated_transform(tmp_path, real_data):
    with rasterio.open(real_data / "rotated.tif") as src:
        band, transform = src.read(1), src.transform
    mask = band > 74
    truth_px = mask_to_geometry(mask).centroid
    truth = np.array([transform * (truth_px.x, truth_px.y)])
    got = predict_geojson(
        real_data / "rotated.tif",
        tmp_path / "o.geojson",
        "--crs",
        "EPSG:32618",
        "--model-arg",
        "threshold=74",
        "--tile-size",
        16,
        "--overlap",
        4,
    )
    assert_centroids_within_a_pixel(got.to_crs(32618), truth, 10.0)


def test_rotated_synthetic_with_crs(tmp_path):
    # 30 degrees rotation, 5 m pixels, in UTM 33N
    transform = Affine.translation(500000, 6650000) @ Affine.rotation(30) @ Affine.scale(5, -5)
    truth = squares_scene(tmp_path / "s.tif", "EPSG:32633", transform)
    got = predict_geojson(tmp_path / "s.tif", tmp_path / "o.geojson", "--tile-size", 256, "--overlap", 32)
    assert_centroids_within_a_pixel(got.to_crs(32633), truth, 5.0)


def test_real_landsat_scene(tmp_path, real_data):
    path = real_data / "RGB.byte.tif"
    with rasterio.open(path) as src:
        band, transform, nodata = src.read(1), src.transform, src.nodata
    labels, n = ndimage.label((band > 180) & (band != nodata))
    sizes = ndimage.sum_labels(np.ones_like(band), labels, np.arange(1, n + 1))
    big = np.flatnonzero(sizes >= 30) + 1
    truth = np.array([transform * tuple(mask_to_geometry(labels == i).centroid.coords[0]) for i in big])
    got = predict_geojson(
        path,
        tmp_path / "o.geojson",
        "--bands",
        1,
        "--model-arg",
        "threshold=180",
        "--min-area",
        30,
        "--tile-size",
        256,
        "--overlap",
        32,
    )
    assert len(truth) >= 3
    assert_centroids_within_a_pixel(got.to_crs(32618), truth, 300.0)


def test_global_epsg4326_raster(tmp_path):
    transform = from_origin(-180, 90, 0.1, 0.1)  # 3600 x 1800 spans the globe
    truth = squares_scene(tmp_path / "g.tif", "EPSG:4326", transform, shape=(1800, 3600))
    got = predict_geojson(tmp_path / "g.tif", tmp_path / "o.geojson", "--tile-size", 1024)
    assert_centroids_within_a_pixel(got, truth, 0.1)
    assert (got.area_m2 > 0).all()
    near_pole = got.loc[got.geometry.centroid.y.idxmax(), "area_m2"]
    assert near_pole < got["area_m2"].median()  # geodesic areas shrink towards the pole


def test_antimeridian_split(tmp_path):
    # UTM 60N around 180 degrees east at 10 N: x of 180E is ~829 km
    transform = from_origin(828000, 1110000, 20.0, 20.0)
    a = np.zeros((400, 400), np.uint8)
    a[100:140, 20:100] = 200  # crosses easting ~829 km, i.e. the antimeridian
    write_raster(tmp_path / "am.tif", a, crs="EPSG:32660", transform=transform)
    out = tmp_path / "am.geojson"
    predict_geojson(tmp_path / "am.tif", out)
    feats = json.loads(out.read_text())["features"]
    assert len(feats) == 1
    geom = shapely.geometry.shape(feats[0]["geometry"])
    assert geom.geom_type == "MultiPolygon"
    lons = np.concatenate([np.array(p.exterior.coords)[:, 0] for p in geom.geoms])
    assert lons.min() < -179.9 and lons.max() > 179.9 and np.abs(lons).max() <= 180
    assert feats[0]["properties"]["area_m2"] == pytest.approx(40 * 80 * 400, rel=0.01)


def test_no_crs_refuses_geojson_and_writes_native(tmp_path, real_data):
    r = CliRunner().invoke(
        cli,
        [
            "predict",
            str(real_data / "rotated.tif"),
            "-m",
            FACTORY,
            "--model-arg",
            "threshold=74",
            "-o",
            str(tmp_path / "o.geojson"),
        ],
    )
    assert r.exit_code == 1 and "has no CRS" in r.output
    assert not (tmp_path / "o.geojson").exists()
    r = CliRunner().invoke(
        cli,
        [
            "-q",
            "predict",
            str(real_data / "rotated.tif"),
            "-m",
            FACTORY,
            "--model-arg",
            "threshold=74",
            "-o",
            str(tmp_path / "o.gpkg"),
        ],
    )
    assert r.exit_code == 0 and "no CRS" in r.output  # the warning
    got = gpd.read_file(tmp_path / "o.gpkg")
    assert got.crs is None and len(got) == 1 and got["area_m2"].isna().all()


def test_geodesic_areas_are_pyprojs_geometry_by_geometry():
    """The one-pass areas equal pyproj's per-geometry ones exactly: polygons with holes,
    multipolygons, either ring orientation, lines, collections, empties and None."""
    from pyproj import Geod

    from geoseg.io.georef import geodesic_areas

    rng = np.random.default_rng(3)
    geod = Geod(ellps="WGS84")
    geoms = []
    for _ in range(300):
        lon, lat = rng.uniform(-179, 179), rng.uniform(-80, 80)
        w, h = rng.uniform(1e-5, 1e-2, 2)
        shell = shapely.box(lon, lat, lon + w, lat + h, ccw=bool(rng.integers(2)))
        holes = [shapely.box(lon + w * f, lat + h * f, lon + w * (f + 0.1), lat + h * (f + 0.1)).exterior
                 for f in rng.uniform(0.05, 0.8, rng.integers(0, 4)) if rng.random() < 0.9]  # fmt: skip
        poly = shapely.Polygon(shell.exterior, holes[:1])  # holes may overlap: one is enough
        kind = rng.integers(5)
        if kind == 0:
            geoms.append(shapely.MultiPolygon([poly, shapely.affinity.translate(poly, 0.5)]))
        elif kind == 1:
            geoms.append(shapely.GeometryCollection([poly, shapely.LineString([(lon, lat), (lon + w, lat)])]))
        else:
            geoms.append(poly)
    geoms += [None, shapely.Polygon(), shapely.MultiPolygon()]
    geoms = np.array(geoms, dtype=object)
    expected = [abs(geod.geometry_area_perimeter(g)[0]) if g is not None else np.nan for g in geoms]
    got = geodesic_areas(geoms)
    np.testing.assert_array_equal(got, expected)  # bit for bit, NaN where NaN
    np.testing.assert_array_equal(geodesic_areas(geoms[:200:2]), expected[:200:2])  # polygons alone


def test_a_crs_is_parsed_once_and_kept_as_given_when_it_is_pyproj_s_or_none():
    from pyproj import CRS
    from rasterio.crs import CRS as RasterioCRS

    from geoseg.io.georef import pyproj_crs

    utm = RasterioCRS.from_epsg(32633)
    first = pyproj_crs(utm)
    assert isinstance(first, CRS) and first.to_epsg() == 32633
    assert pyproj_crs(RasterioCRS.from_epsg(32633)) is first  # parsed once, by its WKT
    assert pyproj_crs(first) is first and pyproj_crs(None) is None
    assert pyproj_crs("EPSG:4326").equals(CRS.from_epsg(4326))


def test_inside_a_default_gdal_environment_another_one_is_a_no_op():
    import contextlib

    import rasterio

    from geoseg.io.gdal import gdal_env

    assert not isinstance(gdal_env(), contextlib.nullcontext)
    with gdal_env():
        assert rasterio.env.getenv()["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
        inner = gdal_env()
        assert isinstance(inner, contextlib.nullcontext)
        with inner:
            assert rasterio.env.getenv()["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
        assert not isinstance(gdal_env(GDAL_CACHEMAX=64), contextlib.nullcontext)  # other options: a new one
    with contextlib.suppress(RuntimeError), gdal_env():
        raise RuntimeError("left by an error")
    assert not isinstance(gdal_env(), contextlib.nullcontext)  # outside again, also after an error
