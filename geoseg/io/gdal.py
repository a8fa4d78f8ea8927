"""GDAL settings geoseg applies around every raster access, and the driver allow-list."""

from __future__ import annotations

import contextlib
import os
import threading

import rasterio

#: Raster drivers geoseg opens. VRT is left out on purpose: a VRT can point at any file or URL.
ALLOWED_DRIVERS = frozenset(
    {"GTiff", "COG", "PNG", "JPEG", "JP2OpenJPEG", "HFA", "ENVI", "netCDF", "BMP", "GPKG", "NITF"}
)

#: Refuse rasters whose header declares more pixels than this (guards against decompression bombs).
MAX_PIXELS = int(os.environ.get("GEOSEG_MAX_PIXELS", str(2**34)))


# GDAL's configuration options are process-wide: entering or leaving an environment sets them
# (and starts GDAL in a new thread), and two threads doing so at once can crash GDAL. geoseg's
# threads (a run's model and CPU threads, the thread that plans the next scene) take turns.
_ENV_LOCK = threading.Lock()


_inside = threading.local()  # .depth: how many of geoseg's default environments this thread is in


class _Env(rasterio.Env):
    """rasterio.Env whose entering and leaving are serialised across threads."""

    def __init__(self, *, default: bool = False, **settings) -> None:
        super().__init__(**settings)
        self._default = default

    def __enter__(self):
        with _ENV_LOCK:
            out = super().__enter__()
        if self._default:
            _inside.depth = getattr(_inside, "depth", 0) + 1
        return out

    def __exit__(self, *exc):
        if self._default:
            _inside.depth -= 1
        with _ENV_LOCK:
            return super().__exit__(*exc)


def gdal_env(**options) -> contextlib.AbstractContextManager:
    """A rasterio.Env with geoseg's safe defaults; keyword options override them. Inside one with
    the defaults already (a batch's reads, say), another with the defaults is a no-op, as rasterio's
    own ``ensure_env`` does it: entering and leaving an environment costs more than reading a tile."""
    if not options and getattr(_inside, "depth", 0) > 0:
        return contextlib.nullcontext()
    settings = {
        "GDAL_VRT_ENABLE_PYTHON": "NO",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_CACHEMAX": int(os.environ.get("GDAL_CACHEMAX", "256")),
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.png,.jpg,.jpeg",
    }
    settings.update(options)
    return _Env(default=not options, **settings)
