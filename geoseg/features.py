"""Merged objects in scene pixel space to georeferenced features with flat, typed properties."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd

from geoseg.attributes import ship_attributes
from geoseg.georef import geodesic_areas, pixel_to_crs, to_lonlat
from geoseg.merge import MergedObject
from geoseg.segmenter import ModelSpec, Segmenter


def to_features(
    objects: Sequence[MergedObject], seg: Segmenter, model: ModelSpec, meta: dict
) -> gpd.GeoDataFrame:
    """Georeference merged objects and give them flat, typed, stable properties."""
    # stable order and ids: by position (top to bottom, left to right), then class
    bounds = np.array([o.geometry.bounds for o in objects]).reshape(-1, 4)
    order = np.lexsort((np.array([o.label for o in objects]), bounds[:, 0], bounds[:, 1]))
    objects = [objects[i] for i in order]
    pixel_geoms = np.array([o.geometry for o in objects], dtype=object)
    geoms = pixel_to_crs(pixel_geoms, meta["transform"]) if len(objects) else pixel_geoms
    crs = meta["crs"]
    if crs is not None and len(objects):
        area_m2 = geodesic_areas(to_lonlat(geoms, crs))
    else:
        area_m2 = np.full(len(objects), np.nan)
    classes = list(seg.classes)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    df = pd.DataFrame(
        {
            "id": np.arange(1, len(objects) + 1, dtype=np.int64),
            "class": pd.array([_class_name(classes, o.label) for o in objects], dtype="string"),
            "score": np.array([round(o.score, 4) for o in objects], dtype=np.float64),
            "area_m2": pd.array(np.round(area_m2, 2), dtype="Float64"),
            "area_px": np.array([g.area for g in pixel_geoms], dtype=np.float64),
            "tile_parts": np.array([o.parts for o in objects], dtype=np.int32),
            "scene": pd.array([meta["name"]] * len(objects), dtype="string"),
            "model": pd.array([model.name] * len(objects), dtype="string"),
            "model_hash": pd.array([model.key] * len(objects), dtype="string"),
            "detected_at": pd.array([now] * len(objects), dtype="string"),
        }
    )
    df["area_m2"] = df["area_m2"].where(~np.isnan(area_m2), None) if len(objects) else df["area_m2"]
    if seg.task == "instance":  # ship measures: length, beam, heading (null without a CRS)
        dims = ship_attributes(geoms, crs)
        for col in dims.columns:
            df.insert(df.columns.get_loc("area_px"), col, dims[col].to_numpy())
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(list(geoms), crs=crs), crs=crs)


def _class_name(classes: list[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else str(label)
