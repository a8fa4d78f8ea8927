"""Exceptions raised by geoseg. Each message names the input and what is wrong, in one line."""

from __future__ import annotations


class GeosegError(Exception):
    """Base class of every error geoseg reports to a user."""


class SceneError(GeosegError):
    """A scene cannot be opened or read."""


class ModelError(GeosegError):
    """A model spec, factory or checkpoint cannot be loaded or does not fit the input."""


class CheckpointError(ModelError):
    """A checkpoint file is not a valid geoseg safetensors checkpoint."""


class OutputError(GeosegError):
    """An output cannot be written (exists, unsupported format, no CRS for GeoJSON...)."""


class EvalError(GeosegError):
    """Inputs to evaluation cannot be read or compared."""


def one_line(exc: BaseException, *, typed: bool = False) -> str:
    """An error's message on one line: GDAL's own message where rasterio keeps it in the cause of
    a generic error; the exception's type when it has no message, and in front of one that is not
    geoseg's with ``typed``."""
    cause = exc.__cause__ or exc.__context__
    text = str(exc)
    if cause is not None and "previous exception" in text:
        text = str(cause)
    text = " ".join(text.split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if typed and not isinstance(exc, GeosegError) else text
