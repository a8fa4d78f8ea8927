"""The documentation tells the truth: its examples run as written, the option table is the
registry's, and every checkpoint metadata key is documented once."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.inference.options import BEGIN, END, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), re.S)


def test_the_option_table_is_the_registry():
    text = (ROOT / "docs" / "options.md").read_text()
    table = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert table == markdown_table(), "docs/options.md is stale: run `make docs`"


def test_every_checkpoint_key_is_documented_once():
    from geoseg.models.checkpoint import REQUIRED, read_metadata

    doc = (ROOT / "docs" / "models.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \|", doc.split("## Checkpoints", 1)[1], re.M)
    assert len(rows) == len(set(rows))
    keys = set(REQUIRED)
    for ckpt in (ROOT / "geoseg" / "weights").glob("*.safetensors"):
        keys |= set(read_metadata(ckpt))
    keys |= {"rotated_view"}  # written by `geoseg train maskrcnn --rotated-view`
    assert keys <= set(rows), sorted(keys - set(rows))


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path, monkeypatch):
    """Every `geoseg ...` line of the README, then its Python example, in an empty folder."""
    monkeypatch.chdir(tmp_path)
    readme = ROOT / "README.md"
    commands = [ln for block in _blocks(readme, "") for ln in block.splitlines() if ln.startswith("geoseg ")]
    assert len(commands) >= 5
    for line in commands:
        r = CliRunner().invoke(cli, ["-q", *shlex.split(line)[1:]])
        assert r.exit_code == 0, (line, r.output)
    for code in _blocks(readme, "python"):
        exec(compile(code, str(readme), "exec"), {})
    for name in ("lungs.png", "from_python.png", "tankers.geojson"):
        assert Path(name).exists(), name


@pytest.mark.slow
def test_the_python_guide_runs_as_written(tmp_path, monkeypatch):
    from geoseg.synth.lungs import lung_slices
    from geoseg.synth.tankers import tanker_scene

    tanker_scene(tmp_path / "scene.tif", size=1024, gsd=1.5, seed=21, n_tankers=5,
                 truth=tmp_path / "scene.truth.geojson")  # fmt: skip
    np.save(tmp_path / "ct.npy", next(iter(lung_slices(1, size=256, seed=6))).image)
    monkeypatch.chdir(tmp_path)
    guide = ROOT / "docs" / "python.md"
    blocks = _blocks(guide, "python")
    assert len(blocks) >= 5
    for code in blocks:
        exec(compile(code, str(guide), "exec"), {})
    assert (
        Path("tankers.gpkg").exists() and Path("ct_lungs.png").exists() and Path("ct_lungs.geojson").exists()
    )
