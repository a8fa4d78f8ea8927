"""Shared fixtures: the real CC0 test rasters in tests/data (see their README there)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parent / "data"


@pytest.fixture
def real_data(tmp_path) -> Path:
    """A private copy of the real CC0 rasters of tests/data."""
    if not REAL.exists():
        pytest.fail(f"real test rasters not found at {REAL}")
    dst = tmp_path / "real"
    shutil.copytree(REAL, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst
