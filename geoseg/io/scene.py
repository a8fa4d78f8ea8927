"""Scene: the one place where geoseg opens an image path; everything downstream takes windows.

A scene is read window by window as float32 ``(C, H, W)`` raw band values with NaN wherever the
source has nodata, a mask, or NaN. A whole scene is never read at once.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geoseg.errors import SceneError, one_line
from geoseg.io.gdal import ALLOWED_DRIVERS, MAX_PIXELS, gdal_env
from geoseg.io.georef import ground_sample_distance

#: the most pixels :meth:`Scene.overview` reads whole from a raster that has no overviews
FULL_READ_LIMIT = 4096 * 4096


class NoCRSWarning(UserWarning):
    """A scene has no CRS: its geometries stay in the raster's own coordinate space."""


@dataclass
class Scene:
    """An open raster scene. Use as a context manager, or call :meth:`close`.

    Attributes: ``width``, ``height``, ``count`` (selected bands), ``bands`` (1-based indexes),
    ``crs`` (``rasterio.crs.CRS`` or None), ``transform`` (``affine.Affine``), ``name``,
    ``native_gsd`` (metres; None without a CRS).

    With ``gsd``, the scene is seen on a grid of that ground sample distance (same CRS, origin and
    orientation): width, height and transform are the grid's, and each window is read from the
    matching fractional window of the raster, resampled bilinearly by GDAL as it is read.

    With ``offset`` (one number per selected band), every value read has it added: a radiometric
    match of the scene to the data a model was trained on (see :meth:`band_medians`).
    """

    path: str
    bands: Sequence[int] | None = None
    crs: CRS | str | None = None
    gsd: float | None = None
    offset: tuple[float, ...] | None = None
    #: warn (NoCRSWarning) when the raster has no CRS; off where it was said once already
    warn: bool = field(default=True, repr=False)
    #: the :class:`geoseg.io.refs.SceneRef` that reopens this scene as it is (set by its ``open``)
    ref: Any = field(default=None, init=False, repr=False)
    _ds: rasterio.io.DatasetReader | None = field(default=None, init=False, repr=False)
    _grid: tuple[int, int, Affine] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = str(self.path)
        is_uri = "://" in self.path or self.path.startswith("/vsi")
        if not is_uri and not os.path.exists(self.path):
            raise SceneError(f"scene '{self.path}': no such file")
        if not is_uri and os.path.isdir(self.path):
            raise SceneError(f"scene '{self.path}': is a directory, not a raster")
        try:
            # an image with no georeferencing at all is a pixel-space slice (see pixel_space)
            with gdal_env(), warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(self.path)
        except RasterioError as exc:
            raise SceneError(f"scene '{self.path}': not a readable raster ({one_line(exc)})") from exc
        self._ds = ds
        try:
            self._validate(ds)
            if self.gsd is not None:
                self._resample(float(self.gsd))
        except SceneError:
            self.close()
            raise

    def _validate(self, ds) -> None:
        if ds.driver not in ALLOWED_DRIVERS:
            raise SceneError(f"scene '{self.path}': raster driver {ds.driver} is not allowed")
        if ds.width * ds.height > MAX_PIXELS:
            raise SceneError(
                f"scene '{self.path}': {ds.width} x {ds.height} pixels exceeds the limit of "
                f"{MAX_PIXELS} (GEOSEG_MAX_PIXELS)"
            )
        bands = tuple(self.bands) if self.bands else tuple(range(1, ds.count + 1))
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise SceneError(f"scene '{self.path}': band {bad[0]} does not exist (the raster has {ds.count})")
        self.bands = bands
        if self.offset is not None:
            self.offset = tuple(float(v) for v in self.offset)
            if len(self.offset) != len(bands) or not all(math.isfinite(v) for v in self.offset):
                raise SceneError(
                    f"scene '{self.path}': an offset needs one finite number per band ({len(bands)}), "
                    f"got {list(self.offset)}"
                )
        if self.crs is not None:
            self.crs = CRS.from_user_input(self.crs)
        elif ds.crs is not None:
            self.crs = ds.crs
        elif not self.pixel_space and self.warn:
            warnings.warn(
                f"scene '{self.path}' has no CRS: geometries stay in its own coordinate space "
                "(assign one with --crs)",
                NoCRSWarning,
                stacklevel=3,
            )

    def _resample(self, gsd: float) -> None:
        native = self.native_gsd
        if native is None:
            raise SceneError(
                f"scene '{self.path}': has no CRS, so it has no ground sample distance to resample"
            )
        if not gsd > 0:
            raise SceneError(f"scene '{self.path}': cannot resample to a ground sample distance of {gsd} m")
        factor = native / gsd
        if abs(factor - 1) < 1e-6:
            return
        ds = self._ds
        width, height = max(1, round(ds.width * factor)), max(1, round(ds.height * factor))
        if width * height > MAX_PIXELS:
            raise SceneError(
                f"scene '{self.path}': {width} x {height} pixels at {gsd:g} m exceeds the limit of "
                f"{MAX_PIXELS} (GEOSEG_MAX_PIXELS)"
            )
        self._grid = (width, height, ds.transform * Affine.scale(ds.width / width, ds.height / height))

    # -- metadata ---------------------------------------------------------------------------
    @property
    def tags(self) -> dict[str, str]:
        """The raster's dataset metadata (GDAL's default domain)."""
        return dict(self._ds.tags())

    def describe(self) -> dict:
        """The raster's header as plain values (``geoseg info``): driver, size, bands, types,
        nodata, CRS, ground sample distance, bounds, tiling, compression, overviews."""
        ds = self._ds
        crs = self.crs
        bounds = None
        if crs is not None:
            from rasterio.warp import transform_bounds

            bounds = [round(v, 6) for v in transform_bounds(crs, "EPSG:4326", *ds.bounds, densify_pts=21)]
        return {
            "path": self.path,
            "driver": ds.driver,
            "width": ds.width,
            "height": ds.height,
            "bands": ds.count,
            "dtypes": sorted(set(ds.dtypes)),
            "nodata": ds.nodata,
            "crs": None if crs is None else crs.to_string(),
            "gsd_m": None if self.native_gsd is None else round(self.native_gsd, 4),
            "transform": list(ds.transform)[:6],
            "lonlat_bounds": bounds,
            "blocks": [list(b) for b in sorted(set(ds.block_shapes))],
            "compression": ds.compression.value if ds.compression else None,
            "overviews": ds.overviews(1),
            "pixel_space": self.pixel_space,
        }

    @functools.cached_property
    def native_gsd(self) -> float | None:
        """Ground sample distance of the raster's own grid in metres, at its centre (computed once:
        it builds a local projection)."""
        if self.crs is None:
            return None
        ds = self._ds
        return ground_sample_distance(ds.transform, self.crs, ds.width, ds.height)

    @property
    def width(self) -> int:
        return self._grid[0] if self._grid else self._ds.width

    @property
    def height(self) -> int:
        return self._grid[1] if self._grid else self._ds.height

    @property
    def count(self) -> int:
        return len(self.bands)

    @property
    def dtype(self) -> str:
        """The numpy dtype name of the scene's (first) band as stored, e.g. ``uint8``."""
        return self._ds.dtypes[self.bands[0] - 1]

    @property
    def transform(self) -> Affine:
        return self._grid[2] if self._grid else self._ds.transform

    @property
    def pixel_space(self) -> bool:
        """True for an image with no georeferencing at all (no CRS, no geotransform, no GCPs), such
        as a PNG slice: its pixel coordinates are its expected space, so no NoCRSWarning."""
        ds = self._ds
        return self.crs is None and ds.crs is None and ds.transform.is_identity and not ds.gcps[0]

    @property
    def name(self) -> str:
        return Path(self.path.rstrip("/")).stem

    @property
    def assigned_crs(self) -> str | None:
        """The CRS given to a raster that has none (WKT), else None."""
        return self.crs.to_wkt() if (self.crs is not None and self._ds.crs != self.crs) else None

    # -- reading ----------------------------------------------------------------------------
    def read(self, window: Window) -> np.ndarray:
        """Read ``window`` as float32 ``(C, h, w)``; nodata, masked and NaN pixels become NaN."""
        try:
            with gdal_env():
                if self._grid is None:
                    data = self._ds.read(self.bands, window=window, masked=True)
                else:
                    data = self._read_resampled(window)
        except RasterioError as exc:
            raise SceneError(
                f"scene '{self.path}': cannot read window at row {int(window.row_off)}, "
                f"col {int(window.col_off)} ({one_line(exc)})"
            ) from exc
        out = np.ma.filled(data.astype(np.float32, copy=False), np.nan)
        if self.offset is not None:
            out += np.asarray(self.offset, np.float32)[:, None, None]
        return out

    def band_medians(self, grid: int = 8, side: int = 128) -> np.ndarray:
        """Each selected band's median over a regular ``grid x grid`` sample of ``side``-pixel
        windows spread over the scene (on its own grid, without ``offset``; nodata left out): the
        level of the scene's dominant surface (the sea, for a tanker scene) at the cost of reading
        ``grid**2`` small windows, whatever the scene's size and overviews. NaN where a band has
        no data in the sample."""
        ds = self._ds
        side_w, side_h = min(side, ds.width), min(side, ds.height)
        cols = np.linspace(0, ds.width - side_w, grid).round().astype(int)
        rows = np.linspace(0, ds.height - side_h, grid).round().astype(int)
        samples = []
        try:
            with gdal_env():
                for r in np.unique(rows):
                    for c in np.unique(cols):
                        window = Window(int(c), int(r), side_w, side_h)
                        data = ds.read(self.bands, window=window, masked=True).astype(np.float32)
                        samples.append(np.ma.filled(data, np.nan).reshape(len(self.bands), -1))
        except RasterioError as exc:
            raise SceneError(f"scene '{self.path}': cannot read a sample ({one_line(exc)})") from exc
        values = np.concatenate(samples, axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-nodata band: NaN
            return np.nanmedian(values, axis=1)

    def _read_resampled(self, window: Window) -> np.ma.MaskedArray:
        ds, (width, height, _) = self._ds, self._grid
        fx, fy = ds.width / width, ds.height / height
        col, row = window.col_off * fx, window.row_off * fy
        w, h = min(window.width * fx, ds.width - col), min(window.height * fy, ds.height - row)
        src = Window(col, row, w, h)
        shape = (len(self.bands), int(window.height), int(window.width))
        return ds.read(self.bands, window=src, out_shape=shape, resampling=Resampling.bilinear, masked=True)

    def overview(
        self, max_side: int, *, full_read_limit: int = FULL_READ_LIMIT, resampling: str = "average"
    ) -> tuple[np.ndarray | None, Affine, str]:
        """A picture of the whole raster at most ``max_side`` pixels a side, as float32
        ``(C, h, w)`` with NaN for nodata, with its transform (picture pixel -> the raster's
        coordinates) and a note on where it came from.

        It is read from the raster's smallest overview that is still at least ``max_side`` a side
        (or its largest one), so only that overview is read, locally or over HTTP. A raster
        without overviews is read decimated only up to ``full_read_limit`` pixels; a larger one
        gives no picture (``None``) rather than a read of the whole scene.
        """
        ds = self._ds
        side, pixels = max(ds.width, ds.height), ds.width * ds.height
        factor = max(1.0, side / max_side)
        levels = ds.overviews(self.bands[0])
        usable = [k for k, f in enumerate(levels) if side / f >= max_side]
        if usable:
            level = usable[-1]
        elif pixels <= full_read_limit or not levels:  # overviews smaller than asked: the raster itself
            level = None
        else:
            level = 0
        if level is None and factor > 1 and pixels > full_read_limit:
            return None, ds.transform * Affine.scale(factor), (
                f"no overviews: {ds.width} x {ds.height} is too large to read whole for a picture "
                "(add overviews, e.g. gdaladdo -r average)"
            )  # fmt: skip
        if level is not None:
            note = f"overview 1:{levels[level]}"
        elif factor > 1:
            note = "read whole" + ("" if levels else " (no overviews)")
        else:
            note = "full resolution"
        width, height = max(1, round(ds.width / factor)), max(1, round(ds.height / factor))
        try:
            with gdal_env(), warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with contextlib.ExitStack() as stack:
                    src = ds
                    if level is not None:  # only that overview is read
                        src = stack.enter_context(rasterio.open(self.path, overview_level=level))
                    data = src.read(self.bands, out_shape=(len(self.bands), height, width),
                                    resampling=Resampling[resampling], masked=True)  # fmt: skip
        except RasterioError as exc:
            raise SceneError(f"scene '{self.path}': cannot read an overview ({one_line(exc)})") from exc
        transform = ds.transform * Affine.scale(ds.width / width, ds.height / height)
        return np.ma.filled(data.astype(np.float32, copy=False), np.nan), transform, note

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
