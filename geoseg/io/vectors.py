"""Writing vector outputs: GeoJSON (RFC 7946), GeoPackage, FlatGeobuf, GeoParquet.

Every write goes to a temporary file in the destination folder and is renamed into place, so a
reader never sees half a file. GeoJSON is written by GDAL with ``RFC7946=YES``: lon/lat WGS84, no
``crs`` member, counter-clockwise exteriors, split at the antimeridian, 7 decimals. The other
formats keep the scene's native CRS.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
import warnings
from pathlib import Path

import geopandas as gpd
import shapely

from geoseg.clock import utc_now
from geoseg.errors import OutputError
from geoseg.io.atomic import atomic_path, check_writable, write_text_atomic

#: format name -> (default extension, OGR driver or None for GeoParquet)
FORMATS = {
    "geojson": (".geojson", "GeoJSON"),
    "gpkg": (".gpkg", "GPKG"),
    "fgb": (".fgb", "FlatGeobuf"),
    "parquet": (".parquet", None),
}
_EXTENSIONS = {
    ".geojson": "geojson",
    ".json": "geojson",
    ".gpkg": "gpkg",
    ".fgb": "fgb",
    ".parquet": "parquet",
    ".geoparquet": "parquet",
}


def format_for(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The output format: ``fmt`` if given, else from the file extension (GeoJSON for stdout)."""
    if fmt:
        if fmt not in FORMATS:
            raise OutputError(f"output format '{fmt}': unknown (choose from {', '.join(FORMATS)})")
        return fmt
    if str(path) == "-":
        return "geojson"
    ext = Path(path).suffix.lower()
    if ext not in _EXTENSIONS:
        raise OutputError(
            f"output '{path}': cannot tell the format from '{ext or 'no extension'}' (use --format)"
        )
    return _EXTENSIONS[ext]


def write_vectors(
    gdf: gpd.GeoDataFrame,
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    overwrite: bool = False,
    layer: str | None = None,
) -> None:
    """Write ``gdf`` atomically to ``path`` (``-`` writes GeoJSON to stdout)."""
    fmt = format_for(path, fmt)
    if fmt == "geojson" and gdf.crs is None:
        raise OutputError(
            f"output '{path}': GeoJSON (RFC 7946) needs lon/lat but the scene has no CRS; "
            "assign one with --crs or write gpkg/fgb/parquet"
        )
    gdf = gdf.copy()
    gdf.geometry = shapely.orient_polygons(gdf.geometry.values, exterior_cw=False)
    if str(path) == "-":
        tmpdir = Path(os.environ.get("TMPDIR", "/tmp"))
        tmp = tmpdir / f"geoseg-{uuid.uuid4().hex}.geojson"
        try:
            _write(gdf, tmp, fmt, layer)
            with open(tmp, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.flush()
        finally:
            tmp.unlink(missing_ok=True)
        return
    path = Path(path)
    check_writable(path, overwrite=overwrite)
    with atomic_path(path) as tmp:
        _write(gdf, tmp, fmt, layer or path.stem)
        if fmt == "gpkg":
            add_default_style(tmp, layer or path.stem, list(gdf.columns))


def _write(gdf: gpd.GeoDataFrame, path: Path, fmt: str, layer: str | None) -> None:
    ext, driver = FORMATS[fmt]
    if fmt == "parquet":
        gdf.to_parquet(path, index=False)
        return
    options: dict = {}
    if fmt == "geojson":
        options = {"RFC7946": "YES", "COORDINATE_PRECISION": "7", "WRITE_NAME": "NO"}
        if "id" in gdf.columns:  # also the Feature's own "id" member; the property stays
            gdf = gdf.assign(_feature_id=gdf["id"])
            options["ID_FIELD"] = "_feature_id"
    elif fmt == "fgb":
        options = {"SPATIAL_INDEX": "YES"}
    gdf.to_file(path, driver=driver, engine="pyogrio", layer=layer, layer_options=options)


def style_qml(columns: list[str]) -> str:
    """geoseg's default QGIS style for a layer of objects: outlines only (magenta, 0.6 mm), so the
    image shows through, labelled with each object's length where it has one, else its score."""
    from xml.sax.saxutils import quoteattr

    label = (
        'coalesce(format_number("length_m", 0) || \' m\', format_number("score", 2))'
        if "length_m" in columns
        else 'format_number("score", 2)'
    )
    qml = (Path(__file__).parent / "styles" / "objects.qml").read_text()
    return qml.replace('fieldName="LABEL_EXPRESSION"', f"fieldName={quoteattr(label)}")


def add_default_style(path: str | os.PathLike, layer: str, columns: list[str]) -> None:
    """Store geoseg's default style for ``layer`` in the GeoPackage's ``layer_styles`` table (the
    table QGIS reads and writes), as the layer's default: QGIS applies it when it opens the layer.
    GDAL lists the table as a second, attribute-only layer (as it does for styles QGIS saves):
    read the objects by their layer name (the file's stem), or with :func:`read_layer`."""
    import sqlite3

    with sqlite3.connect(str(path)) as db:
        db.execute(
            """CREATE TABLE IF NOT EXISTS layer_styles (
                id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
                f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT,
                styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
                update_time DATETIME DEFAULT CURRENT_TIMESTAMP)"""
        )
        (geometry_column,) = db.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
        ).fetchone()
        db.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
            "styleName, styleQML, styleSLD, useAsDefault, description, owner, update_time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
            ("", "", layer, geometry_column, "geoseg", style_qml(columns), "",
             "geoseg default: outlines, labelled with length or score", "geoseg", utc_now()),
        )  # fmt: skip
        db.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles')"
        )


def read_layer(path: str | os.PathLike, **kwargs) -> gpd.GeoDataFrame:
    """Read a vector file's objects: for a GeoPackage, its first layer with geometries (a
    ``layer_styles`` table beside it is not the objects)."""
    import pyogrio

    if str(path).lower().endswith(".gpkg") and "layer" not in kwargs:
        layers = [name for name, geometry in pyogrio.list_layers(path) if geometry is not None]
        if layers:
            kwargs["layer"] = layers[0]
    return gpd.read_file(path, engine="pyogrio", **kwargs)


def write_pixel_geojson(gdf, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write the outlines of a pixel-space scene (a slice) as GeoJSON in pixel coordinates.

    Coordinates are (column, row) of the image, y pointing down; there is no ``crs`` member, and
    the collection says so in a top-level ``"coordinates": "pixel"`` member. This is not RFC 7946
    GeoJSON (which is lon/lat): readers that assume lon/lat place it near (0, 0). ``-`` writes to
    stdout.
    """
    import shapely

    gdf = gdf.copy()
    gdf.geometry = shapely.orient_polygons(gdf.geometry.values, exterior_cw=False)
    doc = json.loads(gdf.to_json(na="null", drop_id=True))
    for feature, fid in zip(doc["features"], gdf["id"] if "id" in gdf.columns else [], strict=False):
        feature["id"] = int(fid)
    doc = {"type": "FeatureCollection", "coordinates": "pixel", "features": doc["features"]}
    text = json.dumps(doc, separators=(",", ":"))
    if str(path) == "-":
        import sys

        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    path = Path(path)
    check_writable(path, overwrite=overwrite)
    write_text_atomic(path, text)


def write_features(
    features: gpd.GeoDataFrame, path: str, *, fmt: str | None = None, overwrite: bool = False,
    pixel_space: bool = False, layer: str | None = None,
) -> None:  # fmt: skip
    """Write a scene's features: GeoJSON in pixel coordinates for a pixel-space scene (a slice),
    any format in the scene's CRS otherwise (see :mod:`geoseg.io.vectors`)."""
    fmt = format_for(path, fmt)
    if pixel_space and fmt == "geojson" and features.crs is None:
        write_pixel_geojson(features, path, overwrite=overwrite)
        return
    with warnings.catch_warnings():
        if pixel_space:  # pixel coordinates are what a slice's outlines are meant to have
            warnings.filterwarnings("ignore", message="'crs' was not provided")
        write_vectors(features, path, fmt=fmt, overwrite=overwrite, layer=layer)
