"""Second data families (lung phantoms B, tanker scenes B): seeded, labelled with their conditions,
built for evaluation only and refused by training; family A's domain randomisation widens what
patients and scanners vary in without touching the plain phantom."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.errors import GeosegError
from geoseg.evaluation.objects import read_vectors
from geoseg.synth.lungs import lung_slices, make_patient, write_lungs
from geoseg.synth.lungs_b import lung_slices_b
from geoseg.training.chips import load_labelled


def test_lung_family_b_is_seeded_and_records_conditions(tmp_path):
    a = list(lung_slices_b(12, size=128, seed=4, patients=2))
    b = list(lung_slices_b(12, size=128, seed=4, patients=2))
    assert all(
        np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b, strict=True)
    )
    kinds = {s.kind for s in a}
    assert {"lung", "abdomen"} <= kinds and ("apex" in kinds or "base" in kinds)
    for s in a:
        assert s.image.dtype == np.int16 and s.mask.dtype == bool and s.image.shape == (128, 128)
        assert s.mask.any() == (s.kind in ("lung", "base"))
        assert set(s.conditions) >= {"streaks", "density", "arms", "metal", "kernel"}
        if s.mask.any():  # lungs are air-like, far below the soft tissue around them
            assert np.median(s.image[s.mask]) < -300  # dense lungs included
    index = write_lungs(tmp_path / "b", 4, size=64, seed=1, family="b")
    on_disk = json.loads((tmp_path / "b" / "lungs.json").read_text())
    assert index["evaluation_only"] is True and on_disk["family"] == "b"
    assert all("conditions" in s and "t" in s for s in on_disk["slices"])


def test_randomized_phantoms_vary_scanner_and_patient_but_not_the_plain_phantom():
    plain = make_patient(9, 0)
    assert (plain.blur, plain.noise_sigma, plain.streak_amp, plain.gain, plain.gamma) == (
        0.5,
        0.7,
        1.0,
        1.0,
        1.0,
    )
    varied = [make_patient(9, i, randomize=True) for i in range(12)]
    fovs = [p.fov for p in varied]
    lung_hu = [p.lung_hu for p in varied]
    assert max(fovs) - min(fovs) > 60 and max(lung_hu) - min(lung_hu) > 150
    gammas = [p.gamma for p in varied]
    assert any(p.blur < 0 for p in varied) and max(gammas) - min(gammas) > 0.2
    # randomising draws from its own stream: the anatomy of the plain patient is kept
    same = make_patient(9, 0, randomize=True)
    assert (same.apex, same.heart, same.carina_z) == (plain.apex, plain.heart, plain.carina_z)
    s_plain = next(lung_slices(3, size=96, seed=9, patients=1))
    s_var = next(lung_slices(3, size=96, seed=9, patients=1, randomize=True))
    assert s_plain.conditions["density"] in ("emphysema", "normal", "dense")
    assert not np.array_equal(s_plain.image, s_var.image)
    # a share of patients: each patient is drawn randomised or plain, seeded
    mixed = {s.patient: s.conditions["randomized"] for s in lung_slices(12, size=64, seed=9, patients=12,
                                                                       randomize=0.5)}  # fmt: skip
    assert set(mixed.values()) == {True, False}
    assert not any(s.conditions["randomized"] for s in lung_slices(2, size=64, seed=9, patients=2))


@pytest.fixture(scope="module")
def scene_b(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "b.tif"
    r = CliRunner().invoke(cli, ["-q", "synth", "tankers", str(out), "--size", "1024", "--gsd", "2.0",
                                 "--seed", "3", "--family", "b", "--haze", "--clusters", "0.8"])  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def test_tanker_family_b_scene_and_truth(scene_b):
    truth = read_vectors(str(scene_b).replace(".tif", ".truth.geojson"), "truth")
    assert len(truth) >= 3 and set(truth["family"]) == {"b"} and (truth["cluster"] >= 0).any()
    assert truth["length_m"].between(70, 420).all() and truth["beam_m"].between(10, 75).all()
    with rasterio.open(scene_b) as src:
        assert src.tags()["GEOSEG_EVALUATION_ONLY"] == "yes" and src.count == 3 and src.overviews(1)
        first = src.read()
    again = scene_b.with_name("again.tif")
    r = CliRunner().invoke(cli, ["-q", "synth", "tankers", str(again), "--size", "1024", "--gsd", "2.0",
                                 "--seed", "3", "--family", "b", "--haze", "--clusters", "0.8"])  # fmt: skip
    assert r.exit_code == 0
    with rasterio.open(again) as src:
        assert np.array_equal(src.read(), first)  # seeded


def test_training_refuses_evaluation_only_scenes(scene_b):
    with pytest.raises(GeosegError, match="evaluation-only"):
        load_labelled(str(scene_b), str(scene_b).replace(".tif", ".truth.geojson"))


def test_haze_is_for_family_b(tmp_path):
    r = CliRunner().invoke(cli, ["synth", "tankers", str(tmp_path / "a.tif"), "--size", "256", "--haze"])
    assert r.exit_code == 2 and "--haze" in r.stderr and not (tmp_path / "a.tif").exists()


def test_randomized_tanker_look_keeps_the_layout(tmp_path):
    from geoseg.synth.tankers import Look, random_look, tanker_scene

    _, plain = tanker_scene(tmp_path / "p.tif", size=512, gsd=2.0, seed=8, n_tankers=3)
    _, varied = tanker_scene(tmp_path / "r.tif", size=512, gsd=2.0, seed=8, n_tankers=3, randomize=True)
    assert plain.geometry.geom_equals(varied.geometry).all()  # same tankers, another look
    with rasterio.open(tmp_path / "p.tif") as a, rasterio.open(tmp_path / "r.tif") as b:
        assert not np.array_equal(a.read(), b.read())
    looks = [random_look(s, 1000, 1000) for s in range(10)]
    assert len({lk.sea for lk in looks}) == 10
    assert any(lk.glint[3] for lk in looks) and any(lk.haze for lk in looks)
    assert Look().sea == (18.0, 38.0, 58.0)  # the plain scene
