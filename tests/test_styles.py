"""GeoPackage outputs carry geoseg's default QGIS style (outlines only, labelled with length or
score) in their ``layer_styles`` table; QGIS applies it on open (checked where QGIS is installed)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET

import geopandas as gpd
import pytest
import shapely

from geoseg.io.vectors import read_layer, write_vectors

QGIS_CHECK = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from qgis.core import QgsApplication, QgsVectorLayer
app = QgsApplication([], False); app.initQgis()
layer = QgsVectorLayer(sys.argv[1], "objects", "ogr")
sym = layer.renderer().symbol().symbolLayer(0)
print(layer.isValid(), int(sym.brushStyle()), sym.strokeColor().name(), layer.labelsEnabled(),
      layer.labeling().settings().fieldName)
app.exitQgis()
"""


def _objects(ship: bool) -> gpd.GeoDataFrame:
    cols = {"id": [1, 2], "class": ["tanker"] * 2, "score": [0.91, 0.8]}
    if ship:
        cols["length_m"] = [212.0, None]
    return gpd.GeoDataFrame(cols, geometry=[shapely.box(0, 0, 50, 10), shapely.box(80, 0, 90, 60)],
                            crs="EPSG:32631")  # fmt: skip


@pytest.mark.parametrize("ship", [True, False])
def test_gpkg_has_a_default_style_and_still_reads_as_one_layer(tmp_path, ship):
    path = tmp_path / "objects.gpkg"
    write_vectors(_objects(ship), path)
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM layer_styles"
        ).fetchall()
    assert len(rows) == 1
    table, geometry, default, qml = rows[0]
    assert (table, geometry, default) == ("objects", "geom", 1)
    root = ET.fromstring(qml)
    fill = root.find(".//layer[@class='SimpleFill']")
    assert fill.find("Option/Option[@name='style']").get("value") == "no"  # outline only
    label = root.find(".//text-style").get("fieldName")
    assert ("length_m" in label) == ship and "score" in label
    got = read_layer(path)
    assert len(got) == 2 and got.crs == "EPSG:32631"
    write_vectors(_objects(ship), path, overwrite=True)  # written again: still one style
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM layer_styles").fetchone() == (1,)


@pytest.mark.skipif(shutil.which("qgis") is None, reason="QGIS is not installed here")
def test_qgis_applies_the_style_on_open(tmp_path):
    path = tmp_path / "objects.gpkg"
    write_vectors(_objects(True), path)
    r = subprocess.run(["/usr/bin/python3", "-c", QGIS_CHECK, str(path)], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    valid, brush, colour, labels, expression = r.stdout.split(maxsplit=4)
    assert (valid, brush, colour, labels) == ("True", "0", "#ff00ff", "True"), r.stderr
    assert "length_m" in expression
