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
