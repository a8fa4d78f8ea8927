"""Picklable references to scenes and slices: what a task receives instead of an open dataset, and
the one way geoseg opens an image path (a raster through GDAL, a NumPy, DICOM or NIfTI slice through
:mod:`geoseg.io.slices`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from geoseg.errors import SceneError
from geoseg.io.scene import Scene
from geoseg.io.slices import SliceScene, is_slice_file


@dataclass(frozen=True)
class SceneRef:
    """A picklable description of a scene: what a Dask task receives instead of a dataset.

    Parameters
    ----------
    path
        A local path or any GDAL-readable URI (``/vsis3/...``, ``https://...``).
    bands
        1-based band indexes to read, in order; None reads every band.
    crs
        A CRS to assign when the raster has none (like ``gdal_translate -a_srs``).
    gsd
        Read the scene resampled (bilinear) to this ground sample distance in metres; None reads
        it on its own grid.
    offset
        Added to every value read, one number per band (a radiometric match to a model's training
        data); None adds nothing.
    """

    path: str
    bands: tuple[int, ...] | None = None
    crs: str | None = None
    gsd: float | None = None
    offset: tuple[float, ...] | None = None

    def open(self, *, warn: bool = True) -> Scene | SliceScene:
        """The open scene; its ``ref`` reopens it as it is (bands chosen, CRS assigned). ``warn``:
        say when a raster has no CRS (:class:`~geoseg.io.scene.NoCRSWarning`)."""
        if is_slice_file(self.path):  # NumPy, DICOM, NIfTI: see geoseg.io.slices
            if self.gsd is not None:
                raise SceneError(f"scene '{self.path}': a slice has no ground sample distance to resample")
            if self.offset is not None:
                raise SceneError(f"scene '{self.path}': a radiometric offset is for rasters, not slices")
            return _slice_with_ref(SliceScene(self.path, bands=self.bands))
        sc = Scene(self.path, bands=self.bands, crs=self.crs, gsd=self.gsd, offset=self.offset, warn=warn)
        sc.ref = SceneRef(sc.path, tuple(sc.bands), sc.assigned_crs, sc.gsd, sc.offset)
        return sc


@dataclass(frozen=True)
class SliceRef(SceneRef):
    """A picklable description of one slice (see :class:`SceneRef`).

    Parameters
    ----------
    index
        Which slice of a stack or volume; None for a file that holds one slice.
    axis
        Axis of a NIfTI volume the slices are taken along (default 2); NumPy stacks are always
        sliced along their first axis.
    hu_window
        ``(center, width)``: clip DICOM values (in HU) to this window.
    spacing
        ``(rows, columns)`` mm: see the slice resampled to this pixel spacing where its file
        records another (see :class:`~geoseg.io.slices.SliceScene`).
    air
        HU: shift the slice so that the air outside the body reads this (a CT scanner's
        calibration, :func:`~geoseg.io.slices.air_offset`); None reads it as it is.
    """

    index: int | None = None
    axis: int | None = None
    hu_window: tuple[float, float] | None = None
    spacing: tuple[float, float] | None = None
    air: float | None = None

    def open(self, *, warn: bool = True) -> SliceScene:  # a slice is in pixel space: nothing to warn of
        return _slice_with_ref(SliceScene(self.path, bands=self.bands, index=self.index, axis=self.axis,
                                          hu_window=self.hu_window, spacing=self.spacing,
                                          air=self.air))  # fmt: skip


def _slice_with_ref(sc: SliceScene) -> SliceScene:
    sc.ref = SliceRef(sc.path, tuple(sc.bands), index=sc.index, axis=sc.axis, hu_window=sc.hu_window,
                      spacing=sc.spacing, air=sc.air)  # fmt: skip
    return sc


def open_scene(
    path: str | os.PathLike,
    *,
    bands: Sequence[int] | None = None,
    crs: str | None = None,
    gsd: float | None = None,
) -> Scene | SliceScene:
    """Open a raster scene (or a NumPy, DICOM or NIfTI slice) for windowed reading (see
    :class:`~geoseg.io.scene.Scene`)."""
    return SceneRef(str(path), tuple(bands) if bands else None, crs, gsd).open()
