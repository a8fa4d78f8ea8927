"""Merged objects in scene pixel space to georeferenced features with flat, typed properties.

Every feature has ``id``, ``class``, ``score``, ``area_m2``, ``area_px``, ``tile_parts``, ``scene``,
``model``, ``model_hash`` and ``detected_at``. Measures of the object's shape come on top only where
the model asks for them (its ``measures``, see :mod:`geoseg.models.segmenter`): ``"ship"`` adds
``length_m``, ``beam_m`` and ``heading_deg`` (:func:`geoseg.inference.attributes.ship_attributes`).
"""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geoseg.clock import utc_now
from geoseg.inference.attributes import ship_attributes
from geoseg.inference.merge import MergedObject
from geoseg.io.georef import geodesic_areas, pixel_to_crs, pyproj_crs, to_lonlat
from geoseg.models.segmenter import ModelSpec, Segmenter


def to_features(
    objects: Sequence[MergedObject], seg: Segmenter, model: ModelSpec, meta: dict
) -> gpd.GeoDataFrame:
    """Georeference merged objects and give them flat, typed, stable properties."""
    n = len(objects)
    pixel_geoms = np.array([o.geometry for o in objects], dtype=object).reshape(n)
    labels = np.array([o.label for o in objects], dtype=np.int64).reshape(n)
    # stable order and ids: by position (top to bottom, left to right), then class
    bounds = shapely.bounds(pixel_geoms).reshape(-1, 4)
    order = np.lexsort((labels, bounds[:, 0], bounds[:, 1]))
    objects = [objects[i] for i in order]
    pixel_geoms, labels = pixel_geoms[order], labels[order]
    geoms = pixel_to_crs(pixel_geoms, meta["transform"]) if n else pixel_geoms
    crs = meta["crs"]
    area_m2 = geodesic_areas(to_lonlat(geoms, crs)) if crs is not None and n else np.full(n, np.nan)
    now = utc_now()
    df = pd.DataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "class": pd.array(class_names(list(seg.classes), labels), dtype="string"),
            "score": np.array([round(o.score, 4) for o in objects], dtype=np.float64),
            "area_m2": pd.array(np.round(area_m2, 2), dtype="Float64"),
            "area_px": shapely.area(pixel_geoms).astype(np.float64),
            "tile_parts": np.array([o.parts for o in objects], dtype=np.int32),
            "scene": pd.array([meta["name"]] * n, dtype="string"),
            "model": pd.array([model.name] * n, dtype="string"),
            "model_hash": pd.array([model.key] * n, dtype="string"),
            "detected_at": pd.array([now] * n, dtype="string"),
        }
    )
    df["area_m2"] = df["area_m2"].where(~np.isnan(area_m2), None) if n else df["area_m2"]
    if seg.task == "instance" and "ship" in getattr(seg, "measures", ()):
        dims = ship_attributes(geoms, crs)  # null without a CRS
        for col in dims.columns:
            df.insert(df.columns.get_loc("area_px"), col, dims[col].to_numpy())
    crs = pyproj_crs(crs)
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(np.asarray(geoms, dtype=object).reshape(n), crs=crs))


def class_names(classes: list[str], labels: np.ndarray) -> np.ndarray:
    """The class name of each label; a label outside ``classes`` is named by its number.

    >>> class_names(["background", "tanker"], np.array([1, 1, 7])).tolist()
    ['tanker', 'tanker', '7']
    """
    names = np.array(classes + [""], dtype=object)
    known = (labels >= 0) & (labels < len(classes))
    out = names[np.where(known, labels, len(classes))]
    out[~known] = [str(int(v)) for v in labels[~known]]
    return out
