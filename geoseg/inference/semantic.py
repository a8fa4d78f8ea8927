"""Semantic prediction of a raster, a slice, or every slice of a stack or volume, to a class mask
file and outlines, with blended tiles (:mod:`geoseg.inference.blend`) and masks written by
:mod:`geoseg.io.masks`.

A raster's mask is a GeoTIFF with its CRS and transform, written window by window; a slice's mask
has the slice's shape; a volume's (NIfTI, or a ``.npy`` stack) has the volume's shape, and a NIfTI
mask keeps the input's affine. Outlines are in the scene's CRS for georeferenced rasters and in
pixel coordinates (x = column, y = row) for slices, with a ``slice`` column for volumes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from geoseg.inference.tasks import PredictOptions, SceneResult
from geoseg.io.scene import SceneRef
from geoseg.io.slices import SliceScene, is_slice_file
from geoseg.models.segmenter import ModelSpec


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
    carry ``pixel_space`` (True for slices: outlines are in pixel coordinates). Runs on
    :mod:`geoseg.inference.engine`, in this process or on the cluster of ``scheduler``.
    """
    from geoseg.inference.engine import Outputs, run_scene

    outcome = run_scene(
        scene, model, opts, Outputs(overwrite=overwrite), progress=progress, scheduler=scheduler,
        blend=blend, mask_path=mask_path, axis=axis, slices=slices, hu_window=hu_window,
    )  # fmt: skip
    return SceneResult(outcome.features, outcome.stats)


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
