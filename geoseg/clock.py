"""Timestamps as geoseg writes them: ISO 8601, UTC, whole seconds, ``Z``."""

from __future__ import annotations

import datetime as dt


def utc_now() -> str:
    """Now, e.g. ``2026-12-01T13:44:08Z``."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
