"""`geoseg eval`: one-to-one matching at IoU 0.5, duplicates and seam splits."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
import shapely
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.evaluation.objects import evaluate

CRS = "EPSG:32633"


def gdf(geoms, crs=CRS):
    return gpd.GeoDataFrame({"id": range(len(geoms))}, geometry=list(geoms), crs=crs)


def box(x, y, w=100, h=40):
    return shapely.box(500000 + x, 6000000 + y, 500000 + x + w, 6000000 + y + h)


def test_counts():
    truth = gdf([box(0, 0), box(500, 0), box(1000, 0), box(1500, 0)])
    pred = gdf(
        [
            box(2, 0),  # match
            box(500, 0),
            box(501, 1),  # match + duplicate
            box(1000, 0, w=48),
            box(1052, 0, w=48),  # truth 3 in two pieces (seam split)
            box(3000, 0),  # false positive
        ]
    )
    r = evaluate(pred, truth)
    assert (r["true_positives"], r["predictions"], r["truths"]) == (2, 6, 4)
    assert r["duplicates"] == 1 and r["seam_splits"] == 1
    assert r["parts"] == 2  # the two pieces of truth 3, each under half of it


def test_parts_are_unmatched_predictions_covering_under_half_of_one_object():
    truth = gdf([box(0, 0, w=300), box(1000, 0)])
    pred = gdf([box(0, 0, w=120), box(1000, 0), box(5000, 0)])
    r = evaluate(pred, truth)
    # 40 % of a long hull is a part (one piece: no seam split); a false positive on open sea is not
    assert r["parts"] == 1 and r["seam_splits"] == 0 and r["true_positives"] == 1
    assert evaluate(gdf([box(0, 0, w=200)]), truth)["parts"] == 0  # two thirds: not a part
    assert r["precision"] == pytest.approx(2 / 6, abs=1e-4) and r["recall"] == 0.5
    assert r["f1"] == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5), abs=1e-4)
    assert 0.95 < r["mean_iou"] <= 1


def test_different_crs_and_empty():
    truth = gdf([box(0, 0), box(500, 0)])
    pred = truth.to_crs(4326)
    r = evaluate(pred, truth)
    assert r["f1"] == 1.0 and r["mean_iou"] == pytest.approx(1.0, abs=1e-6)
    empty = evaluate(gdf([]), gdf([]))
    assert empty["f1"] == 1.0 and empty["precision"] == 1.0 and empty["recall"] == 1.0


def test_cli(tmp_path):
    truth = gdf([box(0, 0), box(500, 0)])
    truth.to_file(tmp_path / "t.gpkg")
    gdf([box(0, 0)]).to_crs(4326).to_file(tmp_path / "p.geojson")
    r = CliRunner().invoke(
        cli, ["eval", str(tmp_path / "p.geojson"), str(tmp_path / "t.gpkg"), "-o", str(tmp_path / "r.json")]
    )
    assert r.exit_code == 0 and "F1 0.667" in r.output and "seam splits 0" in r.output
    assert json.loads((tmp_path / "r.json").read_text())["recall"] == 0.5
    r = CliRunner().invoke(cli, ["eval", "--json", str(tmp_path / "p.geojson"), str(tmp_path / "t.gpkg")])
    assert json.loads(r.output)["true_positives"] == 1
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "nope.geojson"), str(tmp_path / "t.gpkg")])
    assert r.exit_code == 1 and "prediction" in r.output and "nope.geojson" in r.output
