"""``geoseg eval`` on masks: per-slice Dice/IoU, the empty-mask convention, overlays, errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from geoseg.cli.main import cli
from geoseg.errors import EvalError
from geoseg.evaluation.masks import evaluate_masks


def _png(path, mask):
    Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255).save(path)


@pytest.fixture
def folders(tmp_path):
    """Four slices: perfect, half-found, empty/empty and empty truth with a false positive."""
    truth, pred, images = tmp_path / "truth", tmp_path / "pred", tmp_path / "images"
    for d in (truth, pred, images):
        d.mkdir()
    t = np.zeros((64, 64), bool)
    t[10:40, 10:40] = True
    half = t.copy()
    half[25:40] = False
    fp = np.zeros_like(t)
    fp[0:2, 0:2] = True
    cases = {"a": (t, t), "b": (t, half), "c": (~t & False, ~t & False), "d": (np.zeros_like(t), fp)}
    for name, (tm, pm) in cases.items():
        _png(truth / f"{name}.png", tm)
        np.save(pred / f"{name}.npy", pm.astype(np.uint8))  # any mask type, matched by stem
        np.save(images / f"{name}.npy", np.random.default_rng(0).normal(0, 1, (64, 64)).astype(np.float32))
    return pred, truth, images


def test_per_slice_scores_with_the_empty_convention(folders):
    pred, truth, _ = folders
    report = evaluate_masks(pred, truth, worst=2)
    scores = {r["id"]: (r["dice"], r["iou"]) for r in report["per_slice"]}
    assert scores["a"] == (1.0, 1.0) and scores["c"] == (1.0, 1.0)  # empty truth, empty prediction
    assert scores["d"] == (0.0, 0.0)  # empty truth, a false positive
    assert scores["b"] == (pytest.approx(2 * 450 / (900 + 450), abs=1e-6), pytest.approx(0.5))
    assert report["mean_dice"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4, abs=1e-5)
    assert [r["id"] for r in report["worst"]] == ["d", "b"] and report["best"][0]["dice"] == 1.0
    assert report["empty_truth_slices"] == 2 and "empty truth" in report["empty_convention"]


def test_cli_writes_report_and_overlays(folders, tmp_path):
    pred, truth, images = folders
    out, pics = tmp_path / "report.json", tmp_path / "overlays"
    r = CliRunner().invoke(
        cli,
        ["eval", str(pred), str(truth), "-o", str(out), "--overlays", str(pics), "--images", str(images),
         "--worst", "1"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "Dice mean 0.6667" in r.output and "worst slices: d 0.000" in r.output
    assert json.loads(out.read_text())["slices"] == 4
    names = sorted(p.name for p in pics.iterdir())
    assert names == ["best-1-c.png", "worst-1-d.png"]
    pic = np.asarray(Image.open(pics / "worst-1-d.png").convert("RGB"))
    assert pic.shape[1] >= 64 and pic.shape[0] > 64  # the slice plus a caption bar
    assert (pic[:64, :64] == [255, 40, 40]).all(axis=2).sum() == 0  # translucent, over grey
    assert (np.abs(pic[:2, :2].astype(int) - [255, 40, 40]).sum(axis=2) < 200).all()  # the false positive


def test_volumes_count_slice_by_slice(tmp_path):
    truth = np.zeros((20, 30, 6), np.uint8)
    truth[5:15, 5:20, 1:5] = 1
    pred = truth.copy()
    pred[:, :, 4] = 0  # one slice missed entirely
    nib.save(nib.Nifti1Image(truth, np.eye(4)), tmp_path / "t.nii.gz")
    nib.save(nib.Nifti1Image(pred, np.eye(4)), tmp_path / "p.nii.gz")
    report = evaluate_masks(tmp_path / "p.nii.gz", tmp_path / "t.nii.gz")
    assert report["slices"] == 6 and report["min_dice"] == 0.0 and report["worst"][0]["id"] == "t_0004"


def test_bad_inputs(folders, tmp_path):
    pred, truth, _ = folders
    (pred / "a.npy").unlink()
    with pytest.raises(EvalError, match="no mask for truth slice 'a'"):
        evaluate_masks(pred, truth)
    np.save(pred / "a.npy", np.zeros((10, 10), np.uint8))
    with pytest.raises(EvalError, match="shape 10 x 10 differs from its truth"):
        evaluate_masks(pred, truth)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(cli, ["eval", str(empty), str(truth), "-o", str(tmp_path / "r.json")])
    assert r.exit_code == 1 and "no files" in r.output and not (tmp_path / "r.json").exists()
