"""``simplify`` (``--simplify PX``, job key ``predict.simplify``): smaller outlines on request,
every polygon still valid, no object lost; off by default (exact pixel edges)."""

from __future__ import annotations

import numpy as np
import shapely
from click.testing import CliRunner

import geoseg
from geoseg.batch.jobs import load_job
from geoseg.cli.main import cli
from tests.helpers import write_raster


def _discs(path, n=40, seed=0):
    """Discs and rings of many sizes: their outlines are pixel staircases."""
    rng = np.random.default_rng(seed)
    a = np.zeros((600, 600), np.uint8)
    yy, xx = np.mgrid[:600, :600]
    for _ in range(n):
        cy, cx, r = rng.integers(30, 570), rng.integers(30, 570), rng.integers(6, 28)
        d = np.hypot(yy - cy, xx - cx)
        a[d < r] = 200
        if r > 15:
            a[d < r / 3] = 0  # a hole
    return write_raster(path, a)


def _vertices(features) -> int:
    return int(shapely.get_num_coordinates(features.geometry.values).sum())


INSTANCES = "geoseg.models.plugins:threshold_instances"


def test_simplify_keeps_every_object_valid_and_shrinks_outlines(tmp_path):
    scene = _discs(tmp_path / "discs.tif")
    args = {"model_args": {"threshold": 100}, "tile_size": 256, "overlap": 48}
    exact = geoseg.predict(scene, INSTANCES, **args)
    same = geoseg.predict(scene, INSTANCES, simplify=0, **args)
    simple = geoseg.predict(scene, INSTANCES, simplify=1.0, **args)
    assert same.features.geometry.geom_equals(exact.features.geometry).all()  # 0 and unset: exact edges
    assert len(simple.features) == len(exact.features) > 20
    assert shapely.is_valid(simple.features.geometry.values).all()
    assert _vertices(exact.features) > 1.5 * _vertices(simple.features)
    ratio = simple.features.area_px.to_numpy() / exact.features.area_px.to_numpy()
    assert np.all(np.abs(ratio - 1) < 0.08)
    holes = shapely.get_num_interior_rings(simple.features.geometry.values)
    assert (holes == shapely.get_num_interior_rings(exact.features.geometry.values)).all()
    # the command line and a job say it the same way
    out = tmp_path / "cli.gpkg"
    flags = ["--model-arg", "threshold=100", "--tile-size", "256", "--overlap", "48", "--simplify", "1"]
    r = CliRunner().invoke(cli, ["-q", "predict", str(scene), "-m", INSTANCES, *flags, "-o", str(out)])
    assert r.exit_code == 0, r.output
    import geopandas as gpd

    assert _vertices(gpd.read_file(out)) == _vertices(simple.features)


def test_simplify_semantic_regions_stay_valid(tmp_path):
    scene = _discs(tmp_path / "discs.tif", seed=3)
    model = "geoseg.models.plugins:threshold_semantic"
    args = {"model_args": {"threshold": 100}, "tile_size": 256, "overlap": 64}
    exact = geoseg.predict(scene, model, **args)
    simple = geoseg.predict(scene, model, simplify=1.0, **args)
    assert len(simple.features) == len(exact.features) > 10
    assert shapely.is_valid(simple.features.geometry.values).all()
    assert _vertices(exact.features) > 1.5 * _vertices(simple.features)


def test_simplify_job_key(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.tif").write_bytes(b"")
    base = f"name: j\ninputs: [{{glob: 'in/*.tif'}}]\nmodel: {INSTANCES}\noutputs: {{dir: out}}\n"
    (tmp_path / "a.yaml").write_text(base)
    (tmp_path / "b.yaml").write_text(base + "predict:\n  simplify: 1\n")
    plain, simple = load_job(tmp_path / "a.yaml"), load_job(tmp_path / "b.yaml")
    assert simple.options.simplify == 1.0 and plain.options.simplify is None
    assert simple.params_hash() != plain.params_hash()  # simplified outputs are not the exact ones
