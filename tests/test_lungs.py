"""The committed lung U-Net on freshly synthesised patients it never saw (seeds no training,
validation or evaluation set used): mean Dice >= 0.97 and worst slice >= 0.90 over whole walks
(empty slices included, scored with geoseg.evaluation.dice's convention), clearly above the threshold
baseline. The checkpoint is made again by `make lung-model`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg.evaluation.baselines import threshold_lungs
from geoseg.evaluation.dice import dice_score
from geoseg.models.checkpoint import load_checkpoint, read_metadata
from geoseg.models.unet import UNetSegmenter
from geoseg.synth.lungs import lung_slices

MODEL = Path(__file__).resolve().parents[1] / "geoseg" / "weights" / "lungs-unet.safetensors"


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    """Dice of the masks geoseg predict delivers with the checkpoint's defaults (air calibration,
    minimum area, region completion), and of the threshold baseline."""
    import geoseg

    tmp = tmp_path_factory.mktemp("lungs")
    slices = list(lung_slices(8, size=512, seed=777, patients=1))
    slices += list(lung_slices(6, size=512, seed=778, patients=1))
    unet, baseline, kinds = [], [], []
    for k, s in enumerate(slices):
        np.save(tmp / f"{k}.npy", s.image)
        geoseg.predict(tmp / f"{k}.npy", MODEL, mask=tmp / f"{k}.mask.npy")
        unet.append(dice_score(np.load(tmp / f"{k}.mask.npy") == 1, s.mask))
        baseline.append(dice_score(threshold_lungs(s.image), s.mask))
        kinds.append(s.kind)
    return np.array(unet), np.array(baseline), kinds


def test_checkpoint_describes_itself():
    meta = read_metadata(MODEL)
    assert meta["architecture"] == "unet" and meta["classes"] == ["background", "lung"]
    assert meta["normalization"]["window"] == {"center": -600.0, "width": 1500.0}
    assert "geoseg train unet" in meta["training"]["command"]
    assert MODEL.stat().st_size < 5_000_000
    assert isinstance(load_checkpoint(MODEL, device="cpu"), UNetSegmenter)


def test_committed_model_on_unseen_patients(scores):
    unet, baseline, kinds = scores
    assert {"apex", "lung", "base", "abdomen"} <= set(kinds)  # empty slices are part of the score
    assert unet.mean() >= 0.97, unet.round(3)
    assert unet.min() >= 0.90, unet.round(3)
    assert baseline.mean() <= unet.mean() - 0.1, baseline.round(3)
