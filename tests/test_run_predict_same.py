"""``geoseg predict`` and ``geoseg run`` give the same outputs for the same model and settings, for
both model families: one engine behind both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.io.slices import read_mask
from tests.helpers import objects_array, write_raster

WEIGHTS = Path(__file__).resolve().parents[1] / "geoseg" / "weights"


def _features(path: Path) -> list[dict]:
    doc = json.loads(path.read_text())
    for f in doc["features"]:
        f["properties"].pop("detected_at")
    return doc["features"]


def _invoke(*args: str) -> None:
    r = CliRunner().invoke(cli, ["-q", *args])
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_semantic_job_over_slices_matches_predict(tmp_path):
    """A nightly job over a folder of CT slices with the committed lung U-Net writes, per slice,
    the mask and the outlines (pixel coordinates) that geoseg predict writes for it."""
    from geoseg.synth.lungs import lung_slices

    slices = tmp_path / "slices"
    slices.mkdir()
    for i, s in enumerate(lung_slices(3, size=256, seed=5)):  # two with lungs, one abdomen
        np.save(slices / f"ct{i}.npy", s.image)
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: lungs\ninputs: [{glob: 'slices/*.npy'}]\nmodel: lungs-unet\n"
        "outputs: {dir: out, mask: png, combined: gpkg}\nstore: store\n"
    )
    _invoke("run", str(job))
    out = tmp_path / "out"
    for i in range(3):
        _invoke("predict", str(slices / f"ct{i}.npy"), "-m", str(WEIGHTS / "lungs-unet.safetensors"),
                "--mask", str(tmp_path / f"ct{i}.png"), "-o", str(tmp_path / f"ct{i}.geojson"))  # fmt: skip
        want, got = read_mask(tmp_path / f"ct{i}.png"), read_mask(out / f"ct{i}.mask.png")
        assert np.array_equal(want, got)
        assert json.loads((out / f"ct{i}.geojson").read_text())["coordinates"] == "pixel"
        assert _features(out / f"ct{i}.geojson") == _features(tmp_path / f"ct{i}.geojson")
    assert read_mask(out / "ct0.mask.png").any() and not read_mask(out / "ct2.mask.png").any()
    import geopandas as gpd

    combined = gpd.read_file(out / "lungs.gpkg")  # slices only: pixel coordinates, no CRS
    assert combined.crs is None and set(combined["scene"]) == {"ct0", "ct1"}
    bounds = combined.total_bounds
    assert bounds[0] >= 0 and bounds[2] <= 256 and bounds[3] <= 256


@pytest.mark.slow
def test_instance_job_matches_predict(tmp_path):
    """The committed tanker model on a synthetic scene, and the threshold model on a raster with
    objects across tile seams: the job's scene file is the predict output."""
    _invoke(
        "synth", "tankers", str(tmp_path / "tankers.tif"), "--size", "900", "--seed", "11", "--gsd", "1.5"
    )
    write_raster(tmp_path / "objects.tif", objects_array(700, 800, seed=4))
    cases = {
        "tankers": ("tankers-light", str(WEIGHTS / "tankers-light.safetensors"), [], ""),
        "objects": ("geoseg.models.plugins:threshold_instances", "geoseg.models.plugins:threshold_instances",
                    ["--model-arg", "threshold=100", "--tile-size", "256", "--overlap", "32"],
                    "model_args: {threshold: 100}\ntiling: {tile_size: 256, overlap: 32}\n"),
    }  # fmt: skip
    for name, (job_model, model, flags, extra) in cases.items():
        job = tmp_path / f"{name}.yaml"
        job.write_text(f"name: {name}\ninputs: [{{glob: '{name}.tif'}}]\nmodel: {job_model}\n{extra}"
                       f"outputs: {{dir: out-{name}, combined: none}}\nstore: store\n")  # fmt: skip
        _invoke("run", str(job))
        _invoke(
            "predict",
            str(tmp_path / f"{name}.tif"),
            "-m",
            model,
            *flags,
            "-o",
            str(tmp_path / f"{name}.geojson"),
        )
        got = _features(tmp_path / f"out-{name}" / f"{name}.geojson")
        assert got == _features(tmp_path / f"{name}.geojson") and len(got) > 0, name
