"""Shared helpers: small generated rasters and the real rasters in ../shared/data/real."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture
def real_data(tmp_path) -> Path:
    """A private copy of the real CC0 rasters (see their README in ../shared/data/real)."""
    if not REAL.exists():
        pytest.fail(f"real test rasters not found at {REAL}")
    dst = tmp_path / "real"
    shutil.copytree(REAL, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst
