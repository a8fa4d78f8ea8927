"""GDAL settings geoseg applies around every raster access, and the driver allow-list."""

from __future__ import annotations

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


class _Env(rasterio.Env):
    """rasterio.Env whose entering and leaving are serialised across threads."""

    def __enter__(self):
        with _ENV_LOCK:
            return super().__enter__()

    def __exit__(self, *exc):
        with _ENV_LOCK:
            return super().__exit__(*exc)


def gdal_env(**options) -> rasterio.Env:
    """A rasterio.Env with geoseg's safe defaults; keyword options override them."""
    settings = {
        "GDAL_VRT_ENABLE_PYTHON": "NO",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_CACHEMAX": int(os.environ.get("GDAL_CACHEMAX", "256")),
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.png,.jpg,.jpeg",
    }
    settings.update(options)
    return _Env(**settings)
