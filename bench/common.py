"""Helpers shared by the benchmarks: peak RSS of a command, and timing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (peak resident set size in MB, wall seconds). Uses GNU time."""
    gnu_time = shutil.which("time") or "/usr/bin/time"
    t0 = time.perf_counter()
    proc = subprocess.run([gnu_time, "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return kb / 1024, wall


def rerun_line(argv: list[str]) -> str:
    return "rerun: .venv/bin/python " + " ".join(argv)


def objects_scene(work: Path, side: int) -> tuple[Path, int]:
    """The boxes scene of the memory benchmarks (one object per 200 x 200 px), made once."""
    from geoseg.synth.scenes import random_boxes, shapes_scene

    scene = Path(work) / f"objects_{side}.tif"
    n = side * side // 40000
    if not scene.exists():
        shapes_scene(scene, side, side, random_boxes(side, side, n, seed=side), seed=side)
    return scene, n
