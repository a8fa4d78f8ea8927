"""geoseg: segment objects in very large images and hand them over as clean vectors and masks.

The Python API (see ``docs/python.md``)::

    import geoseg

    result = geoseg.predict("scene.tif", "tankers-light")   # a GeoDataFrame in result.features
    result.write("tankers.gpkg")

:func:`predict`, :class:`Result`, :func:`open_scene`, :func:`load_model` and :func:`evaluate` are
imported on first use, so ``import geoseg`` stays light (no torch, no GDAL) until one is needed.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geoseg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

#: public name -> the module that defines it
_API = {
    "predict": "geoseg.api",
    "Result": "geoseg.api",
    "evaluate": "geoseg.api",
    "info": "geoseg.api",
    "open_scene": "geoseg.io.refs",
    "load_model": "geoseg.models.segmenter",
    "PredictOptions": "geoseg.inference.options",
    "GeosegError": "geoseg.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
