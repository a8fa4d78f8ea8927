"""Semantic prediction of a raster, a slice, or every slice of a stack or volume, to a class mask
file and outlines, with blended tiles (:mod:`geoseg.blend`) and masks written by :mod:`geoseg.masks`.

A raster's mask is a GeoTIFF with its CRS and transform, written window by window; a slice's mask
has the slice's shape; a volume's (NIfTI, or a ``.npy`` stack) has the volume's shape, and a NIfTI
mask keeps the input's affine. Outlines are in the scene's CRS for georeferenced rasters and in
pixel coordinates (x = column, y = row) for slices, with a ``slice`` column for volumes.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext

import geopandas as gpd
import numpy as np
import pandas as pd

from geoseg.blend import predict_blended
from geoseg.errors import SceneError
from geoseg.masks import MaskWriter
from geoseg.pipeline import PredictOptions, SceneResult
from geoseg.scene import NoCRSWarning, SceneRef
from geoseg.segmenter import ModelSpec
from geoseg.slices import VOLUME_EXTENSIONS, SliceRef, SliceScene, extension, is_slice_file, read_volume


def predict_semantic(
    scene: SceneRef | str,
    model: ModelSpec | str,
    opts: PredictOptions = PredictOptions(),
    *,
    blend: str = "gaussian",
    mask_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    axis: int | None = None,
    slices: Sequence[int] | None = None,
    hu_window: tuple[float, float] | None = None,
    progress=None,
    scheduler=None,
) -> SceneResult:
    """Segment ``scene`` with a semantic model; write its class mask to ``mask_path`` if given.

    ``axis`` (NIfTI volumes, default 2) and ``slices`` (default: every slice) choose the slices of
    a stack or volume; ``hu_window=(center, width)`` clips DICOM values. The result's ``stats``
    carry ``pixel_space`` (True for slices: outlines are in pixel coordinates).
    """
    started = time.perf_counter()
    ref = scene if isinstance(scene, SceneRef) else SceneRef(str(scene))
    model = model if isinstance(model, ModelSpec) else ModelSpec(model)
    if not is_slice_file(ref.path):
        return _predict_raster(ref, model, opts, blend, mask_path, overwrite, progress, scheduler)

    with SliceScene(ref.path, bands=ref.bands, index=0, axis=axis, hu_window=hu_window) as first:
        count, height, width = first.slices, first.height, first.width
    nifti = read_volume(ref.path) if extension(ref.path) in VOLUME_EXTENSIONS else None
    volume = nifti is not None or count > 1
    if nifti is not None:
        vol_axis = 2 if axis is None else axis
        shape = tuple(nifti.shape[:3])
    else:
        vol_axis, shape = 0, (count, height, width)
    chosen = list(range(count)) if slices is None else sorted(set(slices))
    bad = [k for k in chosen if not 0 <= k < count]
    if bad:
        raise SceneError(f"scene '{ref.path}': slice {bad[0]} does not exist (it has {count})")
    writer = None
    if mask_path is not None:
        writer = MaskWriter(mask_path, shape if volume else (height, width), axis=vol_axis, nifti=nifti,
                            overwrite=overwrite)  # fmt: skip
    frames, stats = [], []
    with writer or nullcontext():  # the mask appears only if every slice succeeds
        for done, k in enumerate(chosen, 1):
            one = SliceRef(ref.path, ref.bands, index=k if volume else None, axis=axis, hu_window=hu_window)
            sinks = writer.sinks(k if volume else None) if writer is not None else {}
            result = predict_blended(one, model, opts, blend=blend, scheduler=scheduler,
                                     progress=None if volume else progress, **sinks)  # fmt: skip
            if volume:
                result.features.insert(1, "slice", np.int32(k))
                if progress:
                    progress(done, len(chosen))
            frames.append(result.features)
            stats.append(result.stats)
    features = _concat(frames)
    total = {
        "scene": ref.path,
        "pixel_space": True,
        "slices": len(chosen),
        "width": width,
        "height": height,
        "blend": blend,
        "tiles": sum(s["tiles"] for s in stats),
        "tiles_run": sum(s["tiles_run"] for s in stats),
        "tiles_skipped": sum(s["tiles_skipped"] for s in stats),
        "objects": len(features),
        "model_seconds": sum(s["model_seconds"] for s in stats),
        "tile_size": stats[0]["tile_size"],
        "overlap": stats[0]["overlap"],
        "stride": stats[0]["stride"],
        "mask": None if mask_path is None else str(mask_path),
        "seconds": time.perf_counter() - started,
    }
    return SceneResult(features, total)


def _predict_raster(ref, model, opts, blend, mask_path, overwrite, progress, scheduler) -> SceneResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoCRSWarning)  # reported when the caller opened it
        with ref.open() as sc:
            crs, transform, height, width = sc.crs, sc.transform, sc.height, sc.width
            pixel_space = bool(getattr(sc, "pixel_space", False))
    writer = None
    if mask_path is not None:
        writer = MaskWriter(mask_path, (height, width), crs=crs, transform=transform, overwrite=overwrite)
    with writer or nullcontext():
        sinks = writer.sinks() if writer is not None else {}
        result = predict_blended(
            ref, model, opts, blend=blend, scheduler=scheduler, progress=progress, **sinks
        )
    result.stats.update(pixel_space=pixel_space, mask=None if mask_path is None else str(mask_path))
    return result


def _concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    if len(frames) == 1:
        return frames[0]
    gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=frames[0].crs)
    gdf["id"] = np.arange(1, len(gdf) + 1, dtype=np.int64)
    return gdf


def open_check(ref: SceneRef, *, axis: int | None = None, hu_window=None) -> bool:
    """Open ``ref`` once (a bad input fails here, before a model is loaded); True when the scene is
    in pixel space (a slice, or an image without any georeferencing)."""
    if is_slice_file(ref.path):
        SliceScene(ref.path, bands=ref.bands, index=0, axis=axis, hu_window=hu_window).close()
        return True
    with ref.open() as sc:
        return bool(getattr(sc, "pixel_space", False))


def parse_slices(text: str | None) -> list[int] | None:
    """``"0,3,5-7"`` -> ``[0, 3, 5, 6, 7]``; None stays None (every slice).

    >>> parse_slices("0,3,5-7")
    [0, 3, 5, 6, 7]
    """
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"'{text}' is not a list of slice numbers like 0,3,5-7")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return out
