"""bench/robustness.py runs end to end on a few lung slices of both families and reports each
family, the baseline and the split by condition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_robustness_report_runs_on_both_lung_families(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "robustness.py"), "lungs", "--slices", "6", "--seed", "11",
         "--work", str(tmp_path), "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "lungs family A" in text and "lungs family B" in text and "rerun:" in text
    assert text.count("baseline Dice") == 2 and "by kind:" in text
    report = json.loads((tmp_path / "r.json").read_text())["lungs"]
    assert len(report["a"]) == 6 and len(report["b"]) == 6
    assert all(0.0 <= r["unet"] <= 1.0 and 0.0 <= r["baseline"] <= 1.0 for r in report["b"])
    assert text.count("alone    Dice") == 2  # the model without its region completion, beside it
    assert all(0.0 <= r["alone"] <= 1.0 for r in report["a"] + report["b"])
