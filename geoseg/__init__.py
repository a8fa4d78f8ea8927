"""geoseg: segment objects in very large images and hand them over as clean vectors and masks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geoseg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
