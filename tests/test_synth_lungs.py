"""`geoseg synth lungs`: the file layout PART of the slice readers rely on, seeded output, chest-CT
intensities, and the cases that defeat a threshold (which the baseline indeed gets wrong)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from geoseg.cli.main import cli
from geoseg.evaluation.baselines import threshold_lungs
from geoseg.evaluation.dice import dice_score
from geoseg.synth.lungs import lung_slices, make_patient, render_slice


@pytest.fixture(scope="module")
def walk():
    """One patient walked from above the apices to the abdomen at 256 x 256."""
    return list(lung_slices(24, size=256, seed=11, patients=1))


def test_cli_writes_the_documented_layout(tmp_path):
    out = tmp_path / "lungs"
    r = CliRunner().invoke(cli, ["synth", "lungs", str(out), "--slices", "6", "--size", "128", "--seed", "4",
                                 "--patients", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    index = json.loads((out / "lungs.json").read_text())
    assert index["seed"] == 4 and index["size"] == 128 and len(index["slices"]) == 6
    ids = [s["id"] for s in index["slices"]]
    assert ids[0] == "p000_z000" and ids[3] == "p001_z000" and len(set(ids)) == 6
    for s in index["slices"]:
        assert {"id", "patient", "z", "z_mm", "kind"} <= set(s)
        assert s["kind"] in ("apex", "lung", "base", "abdomen")
        image = np.load(out / "images" / f"{s['id']}.npy", allow_pickle=False)
        assert image.dtype == np.int16 and image.shape == (128, 128)
        with Image.open(out / "masks" / f"{s['id']}.png") as im:
            assert im.mode == "L" and im.size == (128, 128)
            mask = np.asarray(im)
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask > 0).any() == (s["kind"] in ("lung", "base"))
    # no temporary files left behind
    assert sorted(p.name for p in out.iterdir()) == ["images", "lungs.json", "masks"]
    # an existing output is not replaced without --overwrite; with it, slices of the old run go
    r = CliRunner().invoke(cli, ["synth", "lungs", str(out), "--slices", "2", "--size", "128"])
    assert r.exit_code == 1 and "--overwrite" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["synth", "lungs", str(out), "--slices", "2", "--size", "64", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert sorted(p.stem for p in (out / "images").iterdir()) == ["p000_z000", "p000_z001"]
    assert len(list((out / "masks").iterdir())) == 2


def test_seeded_and_deterministic():
    a = list(lung_slices(3, size=96, seed=5))
    b = list(lung_slices(3, size=96, seed=5))
    c = list(lung_slices(3, size=96, seed=6))
    assert all(
        np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b, strict=True)
    )
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))
    assert make_patient(5, 0) == make_patient(5, 0) and make_patient(5, 0) != make_patient(5, 1)


def test_walk_covers_every_kind_in_order(walk):
    kinds = [s.kind for s in walk]
    counts = Counter(kinds)
    assert all(counts[k] >= 2 for k in ("apex", "lung", "base", "abdomen")), counts
    order = {"apex": 0, "lung": 1, "base": 2, "abdomen": 3}
    assert [order[k] for k in kinds] == sorted(order[k] for k in kinds)
    assert all(not s.mask.any() for s in walk if s.kind in ("apex", "abdomen"))
    assert all(s.mask.sum() > 200 for s in walk if s.kind in ("lung", "base"))  # no slivers


def test_intensities_are_chest_ct_like(walk):
    lungs = [s for s in walk if s.kind == "lung"]
    parenchyma = np.concatenate([s.image[ndimage.binary_erosion(s.mask, iterations=3)] for s in lungs])
    assert -880 < np.median(parenchyma) < -680
    outside = walk[len(walk) // 2].image[:8, :8]
    assert -1100 < outside.mean() < -900  # air around the body
    assert max(s.image.max() for s in walk) > 600  # cortical bone
    body = walk[len(walk) // 2].image[100:160, 100:160]
    assert ((body > 0) & (body < 80)).mean() > 0.1  # soft tissue


def _air_outside_lungs(s):
    body = ndimage.binary_fill_holes(ndimage.gaussian_filter(s.image.astype(float), 1) > -500)
    air = (s.image < -950) & body & ~ndimage.binary_dilation(s.mask, iterations=2)
    return ndimage.binary_opening(air, iterations=1).sum()


def test_threshold_traps_are_present(walk):
    # trachea above the apices, gas in the abdomen: air inside the body that is not lung
    assert all(_air_outside_lungs(s) > 10 for s in walk if s.kind == "apex")
    assert any(_air_outside_lungs(s) > 50 for s in walk if s.kind == "abdomen")
    # dense lesions inside the lungs (nodules, consolidations) over the walks of a few patients
    dense = 0
    for seed in range(4):
        p = make_patient(seed, 0)
        for lesion in p.lesions:
            z = lesion[3]
            image, mask = render_slice(p, z, 128, np.random.default_rng(0))
            dense += int(((image > -150) & ndimage.binary_erosion(mask)).sum())
    assert dense > 50


def test_threshold_baseline_fails_where_expected(walk):
    scores = {s.id: dice_score(threshold_lungs(s.image), s.mask) for s in walk}
    by_kind = {k: [scores[s.id] for s in walk if s.kind == k] for k in ("apex", "lung", "abdomen")}
    assert np.mean(by_kind["lung"]) > 0.9  # aerated lungs are easy
    assert min(by_kind["apex"]) == 0.0  # the trachea is taken for lung on slices without lung
    assert np.mean(list(scores.values())) < 0.9
