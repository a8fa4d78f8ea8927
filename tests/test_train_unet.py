"""`geoseg train unet`: a short seeded run is reproducible and writes a self-describing checkpoint
(window, normalisation, tile size, command, validation Dice); bad inputs give one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from geoseg.cli.main import cli
from geoseg.models.checkpoint import load_checkpoint, read_metadata
from geoseg.models.unet import UNetSegmenter
from geoseg.synth.lungs import write_lungs
from geoseg.training.unet import _crop, labels_of, load_pairs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("lungs")
    write_lungs(d / "train", 6, size=64, seed=1, patients=1)
    write_lungs(d / "val", 3, size=64, seed=2, patients=1)
    return d


def train(d, out, seed=0, extra=()):
    args = [
        "-q",
        "train",
        "unet",
        "--images",
        str(d / "train" / "images"),
        "--masks",
        str(d / "train" / "masks"),
        "--val-images",
        str(d / "val" / "images"),
        "--val-masks",
        str(d / "val" / "masks"),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--tile",
        "32",
        "--depth",
        "2",
        "--base-width",
        "4",
        "--seed",
        str(seed),
        "-o",
        str(out),
        *extra,
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    return read_metadata(out), load_file(out)


def test_same_seed_same_run_and_a_self_describing_checkpoint(data, tmp_path):
    meta1, w1 = train(data, tmp_path / "1.safetensors")
    meta2, w2 = train(data, tmp_path / "2.safetensors")
    same = {k: v for k, v in meta1["metrics"].items() if k != "minutes"}
    assert same == {k: v for k, v in meta2["metrics"].items() if k != "minutes"}
    assert all(np.array_equal(w1[k].numpy(), w2[k].numpy()) for k in w1)
    _, w3 = train(data, tmp_path / "3.safetensors", seed=1, extra=("--epochs", "1"))
    assert not all(np.array_equal(w1[k].numpy(), w3[k].numpy()) for k in w1)

    assert meta1["architecture"] == "unet" and meta1["task"] == "semantic"
    assert meta1["config"] == {
        "depth": 2,
        "base_width": 4,
        "down": "maxpool",
        "up": "transpose",
        "norm": "batch",
    }
    assert meta1["classes"] == ["background", "lung"] and meta1["in_channels"] == 1
    norm = meta1["normalization"]
    assert (
        norm["window"] == {"center": -600.0, "width": 1500.0} and len(norm["mean"]) == len(norm["std"]) == 1
    )
    assert 0 < norm["mean"][0] < 1  # statistics of windowed values
    assert (meta1["tile_size"], meta1["overlap"]) == (32, 8)
    training = meta1["training"]
    assert (
        "geoseg train unet" in training["command"] and training["seed"] == 0 and training["data_fingerprint"]
    )
    assert (training["train_slices"], training["val_slices"]) == (6, 3)
    assert {"mean_dice", "worst_dice", "worst_id", "mean_iou", "epoch"} <= set(meta1["metrics"])
    assert 0 <= meta1["metrics"]["worst_dice"] <= meta1["metrics"]["mean_dice"] <= 1

    seg = load_checkpoint(tmp_path / "1.safetensors")
    assert isinstance(seg, UNetSegmenter) and seg.stride == 4 and seg.window == norm["window"]
    hu = np.load(next((data / "val" / "images").iterdir())).astype(np.float32)
    assert seg.predict(hu[None, None]).shape == (1, 2, 64, 64)


def test_no_window_and_held_out_share(data, tmp_path):
    out = tmp_path / "nw.safetensors"
    args = [
        "-q",
        "train",
        "unet",
        "--images",
        str(data / "train" / "images"),
        "--masks",
        str(data / "train" / "masks"),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--tile",
        "32",
        "--depth",
        "2",
        "--base-width",
        "2",
        "--window",
        "none",
        "--val-fraction",
        "0.34",
        "--min-area",
        "12",
        "--complete=-400,-500",
        "--class-intensity",
        "0.5",
        "--class-floor=-950",
        "-o",
        str(out),
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    meta = read_metadata(out)
    assert "window" not in meta["normalization"] and meta["normalization"]["mean"][0] < -100  # raw HU
    assert (meta["training"]["train_slices"], meta["training"]["val_slices"]) == (4, 2)
    assert meta["min_area"] == 12.0  # the default of predictions with this checkpoint
    assert meta["complete"] == {"lung": {"below": -400.0, "body_above": -500.0, "overlap": 0.3}}
    assert meta["training"]["class_intensity"] == 0.5 and meta["training"]["class_shift"] == [-200.0, 50.0]
    assert meta["training"]["class_floor"] == -950.0


def test_recorded_command_leaves_out_global_options(monkeypatch):
    from geoseg.cli.train import _arguments

    monkeypatch.setattr("sys.argv", ["geoseg", "-q", "train", "unet", "--images", "a b", "--epochs", "3"])
    assert _arguments("unet") == ["--images", "a b", "--epochs", "3"]
    monkeypatch.setattr("sys.argv", ["geoseg", "train", "maskrcnn", "--train", "s.tif", "t.geojson"])
    assert _arguments("maskrcnn") == ["--train", "s.tif", "t.geojson"]


def test_bad_inputs_are_one_line_errors(data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["train", "unet", "--epochs", "1", "-o", str(tmp_path / "x.safetensors")]
    r = CliRunner().invoke(cli, [*base, "--images", str(empty), "--masks", str(empty)])
    assert r.exit_code == 1 and str(empty) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    masks = tmp_path / "masks"
    masks.mkdir()
    first = sorted((data / "train" / "images").iterdir())[0]
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(masks / f"{first.stem}.png")
    images = tmp_path / "images"
    images.mkdir()
    (images / first.name).write_bytes(first.read_bytes())
    r = CliRunner().invoke(cli, [*base, "--images", str(images), "--masks", str(masks)])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1 and "64" in r.stderr
    assert not (tmp_path / "x.safetensors").exists()
    r = CliRunner().invoke(cli, [*base, "--images", str(images), "--masks", str(masks), "--tile", "40"])
    assert r.exit_code == 2 and "multiple of the U-Net stride 16" in r.stderr
    r = CliRunner().invoke(cli, [*base, "--images", str(images), "--masks", str(masks), "--window", "abc"])
    assert r.exit_code == 2 and "CENTER,WIDTH" in r.stderr


def test_loader_and_labels(data):
    pairs = load_pairs(str(data / "train" / "images"), str(data / "train" / "masks"))
    assert len(pairs) == 6 and pairs[0][0] == "p000_z000"
    pid, image, mask = pairs[0]
    assert image.dtype == np.float32 and image.shape == (1, 64, 64) and mask.shape == (64, 64)
    assert set(np.unique(labels_of(np.array([[0, 255]], np.uint8), 2)).tolist()) == {0, 1}
    assert labels_of(np.array([[0, 2]], np.uint8), 3).tolist() == [[0, 2]]


def test_crop_keeps_image_and_mask_aligned():
    import torch

    image = torch.zeros(1, 64, 64)
    image[0, 20:40, 10:30] = 1.0
    label = (image[0] > 0.5).long()
    rng = np.random.default_rng(0)
    for augment in (False, True):
        for _ in range(5):
            x, y = _crop(image, label, 32, rng, augment)
            assert x.shape == (1, 32, 32) and y.shape == (32, 32)
            if y.any():
                # bright pixels (the object) lie where the mask says, whatever the flip/rotation
                assert float(x[0][y == 1].mean()) > float(x[0][y == 0].mean()) + 0.5


def test_streak_artefacts_change_the_image_not_the_mask():
    import torch

    image = torch.zeros(1, 64, 64)
    label = torch.zeros(64, 64, dtype=torch.long)
    label[20:40, 20:40] = 1
    plain = _crop(image, label, 32, np.random.default_rng(3), False)
    streaked = _crop(image, label, 32, np.random.default_rng(3), False, streaks=1.0)
    assert torch.equal(plain[0], streaked[0]) and torch.equal(plain[1], streaked[1])  # only with augment
    x, y = _crop(image, label, 32, np.random.default_rng(3), True, streaks=1.0)
    x0, y0 = _crop(image, label, 32, np.random.default_rng(3), True, streaks=0.0)
    assert torch.equal(y, y0)
    lines = (x - x0).abs()
    assert float(lines.max()) > 0.05 and float((lines > 0.05).float().mean()) < 0.5  # thin lines, not a wash


def test_strong_augmentation_changes_intensities_not_the_mask():
    import torch

    image = torch.zeros(1, 64, 64)
    image[0, 20:40, 10:30] = 1.0
    label = (image[0] > 0.5).long()
    seen = []
    for seed in range(6):
        x, y = _crop(image, label, 32, np.random.default_rng(seed), True, streaks=1.0, strong=True)
        again = _crop(image, label, 32, np.random.default_rng(seed), True, streaks=1.0, strong=True)
        assert torch.equal(x, again[0]) and torch.equal(y, again[1])  # seeded
        assert x.shape == (1, 32, 32) and set(y.unique().tolist()) <= {0, 1}
        if y.any() and (y == 0).any():
            assert float(x[0][y == 1].mean()) > float(x[0][y == 0].mean()) + 0.3  # the object stays brighter
        seen.append(float(x[0][y == 0].std()) if (y == 0).any() else 0.0)
    assert max(seen) > 0.05  # noise, blur or streaks reached the background


def test_evaluation_only_slices_are_refused(tmp_path):
    held_out = tmp_path / "b"
    write_lungs(held_out, 2, size=64, seed=5, family="b")
    out = tmp_path / "x.safetensors"
    r = CliRunner().invoke(cli, ["train", "unet", "--epochs", "1", "--images", str(held_out / "images"),
                                 "--masks", str(held_out / "masks"), "-o", str(out)])  # fmt: skip
    assert r.exit_code == 1 and "evaluation-only" in r.stderr and str(held_out / "images") in r.stderr
    assert len(r.stderr.strip().splitlines()[-1:]) == 1 and not out.exists()


def test_fine_tuning_starts_from_a_checkpoint_and_keeps_its_layout_and_window(data, tmp_path):
    base_meta, base_w = train(data, tmp_path / "base.safetensors")
    args = ["-q", "train", "unet", "--images", str(data / "train" / "images"), "--masks",
            str(data / "train" / "masks"), "--val-images", str(data / "val" / "images"), "--val-masks",
            str(data / "val" / "masks"), "--epochs", "1", "--batch-size", "2", "--tile", "32", "--lr", "1e-4",
            "--strong-augment", "-o", str(tmp_path / "tuned.safetensors")]  # fmt: skip
    r = CliRunner().invoke(cli, [*args, "--init", str(tmp_path / "base.safetensors")])
    assert r.exit_code == 0, r.output
    meta, w = read_metadata(tmp_path / "tuned.safetensors"), load_file(tmp_path / "tuned.safetensors")
    assert meta["config"] == base_meta["config"] and meta["normalization"] == base_meta["normalization"]
    assert meta["training"]["init"]["checkpoint"] == "base.safetensors"
    assert meta["training"]["init"]["training"]["epochs"] == 2
    # one epoch at a small rate moves the weights a little from the checkpoint's
    first = "enc.0.block.0.weight" if "enc.0.block.0.weight" in w else next(iter(w))
    assert 0 < float((w[first] - base_w[first]).abs().max()) < float(base_w[first].abs().max())
    # a layout option is refused with --init; so is a checkpoint of another architecture
    r = CliRunner().invoke(
        cli, [*args, "--init", str(tmp_path / "base.safetensors"), "--depth", "3", "--overwrite"]
    )
    assert r.exit_code == 2 and "--depth" in r.output
    tanker = Path(__file__).parents[1] / "geoseg" / "weights" / "tankers-light.safetensors"
    r = CliRunner().invoke(cli, [*args, "--init", str(tanker), "--overwrite"])
    assert r.exit_code == 1 and "is a maskrcnn model, not unet" in r.output


def test_class_intensity_changes_the_class_not_the_rest_and_never_below_air():
    import torch

    from geoseg.training.unet import _class_intensity

    image = torch.full((1, 64, 64), 0.5)
    image[0, :, :8] = -2.0  # air: the darkest value
    image[0, 16:48, 16:48] = -1.0  # the class ...
    image[0, 30:32, 30:32] = 1.0  # ... with a vessel its mask leaves out (a small hole)
    label = torch.zeros(64, 64, dtype=torch.long)
    label[16:48, 16:48] = 1
    label[30:32, 30:32] = 0
    floor = image.amin(dim=(1, 2))
    moved = 0
    for seed in range(8):
        x = _class_intensity(image.clone(), label, np.random.default_rng(seed), (-3.0, 0.5), floor)
        again = _class_intensity(image.clone(), label, np.random.default_rng(seed), (-3.0, 0.5), floor)
        assert torch.equal(x, again)  # seeded
        assert torch.equal(x[0, :, :8], image[0, :, :8]) and torch.equal(x[0, 56:], image[0, 56:])  # kept
        assert float(x.min()) >= -2.0  # never darker than the image's air
        moved += abs(float(x[0, 24, 24]) - (-1.0)) > 0.05
    assert moved >= 6  # the class's density changed in (nearly) every draw
    still = (0.0, 0.0)
    flat = [_class_intensity(image.clone(), label, np.random.default_rng(k), still, floor) for k in range(8)]
    assert min(float(x[0, 30, 30]) for x in flat) < 0.5  # some draws flatten the vessel towards the class
    x, y = _crop(image, label, 32, np.random.default_rng(0), True, intensity=1.0, shift=(-0.5, 0.5))
    assert x.shape == (1, 32, 32) and set(y.unique().tolist()) <= {0, 1}


def test_class_floor_keeps_the_class_median_above_it_and_its_texture():
    import torch

    from geoseg.training.unet import _class_intensity

    rng = np.random.default_rng(5)
    image = torch.full((1, 64, 64), 0.5)
    image[0, :, :8] = -2.0  # air
    texture = torch.from_numpy(rng.normal(0, 0.1, (32, 32)).astype(np.float32))
    image[0, 16:48, 16:48] = -1.0 + texture  # the class, with a texture
    label = torch.zeros(64, 64, dtype=torch.long)
    label[16:48, 16:48] = 1
    floor = image.amin(dim=(1, 2))
    inner = (slice(None), slice(20, 44), slice(20, 44))  # away from the soft edge
    for seed in range(12):
        free = _class_intensity(image.clone(), label, np.random.default_rng(seed), (-3.0, -3.0), floor)
        held = _class_intensity(image.clone(), label, np.random.default_rng(seed), (-3.0, -3.0), floor,
                                torch.tensor([-1.6]))  # fmt: skip
        assert float(free[inner].max()) == -2.0  # unbounded: clipped at air, a uniform region
        still = _class_intensity(image.clone(), label, np.random.default_rng(seed), (0.0, 0.0), floor)
        assert -1.62 < float(held[inner].median()) < -1.58  # bounded: the median stops at the floor ...
        step = held[inner] - still[inner]  # ... by one shift of the whole class: its texture is kept
        assert float(step.max() - step.min()) < 1e-5 and abs(float(step.mean()) + 0.6) < 0.02
        assert float(held[inner].min()) > -2.0  # nothing reaches air
    up = _class_intensity(
        image.clone(), label, np.random.default_rng(0), (0.4, 0.4), floor, torch.tensor([-1.6])
    )
    assert float(up[inner].median()) > -0.7  # shifts up are not bounded


def test_calibrate_air_trains_on_calibrated_slices_and_records_it(data, tmp_path):
    """Slices from a scanner that reads air 50 HU high train like the originals with
    --calibrate-air (the normalisation sees the same values), and the checkpoint records the air
    reference that geoseg predict calibrates slices to."""
    shifted = tmp_path / "shifted"
    for part in ("train", "val"):
        (shifted / part / "images").mkdir(parents=True)
        (shifted / part / "masks").symlink_to(data / part / "masks")
        for f in sorted((data / part / "images").glob("*.npy")):
            np.save(shifted / part / "images" / f.name, np.load(f).astype(np.float32) + 50)
    means = []
    for d, name in ((data, "a"), (shifted, "b")):
        meta, _ = train(
            d, tmp_path / f"{name}.safetensors", extra=["--window", "none", "--calibrate-air=-1000"]
        )
        assert meta["radiometry"] == {"statistic": "air", "reference": [-1000.0]}
        means.append(meta["normalization"]["mean"][0])
    assert means[0] == pytest.approx(means[1], abs=1.0)
    plain, _ = train(shifted, tmp_path / "c.safetensors", extra=["--window", "none"])
    from geoseg.io.slices import air_offset

    shifts = [air_offset(np.load(f))[0] for f in sorted(shifted.glob("train/images/*.npy"))]
    assert "radiometry" not in plain and np.mean(shifts) < -30  # the copies read air 30-60 HU high
    assert plain["normalization"]["mean"][0] + np.mean(shifts) == pytest.approx(means[1], abs=0.5)


def test_validation_scores_predictions_as_geoseg_predict_delivers_them():
    """Checkpoints are selected on what users get: specks under the minimum area dropped, lungs
    completed to the air-filled regions they mostly fill (as geoseg predict does)."""
    from geoseg.inference.complete import complete_labels
    from geoseg.training.unet import as_predicted

    hu = np.full((64, 64), -1000.0, np.float32)
    hu[6:58, 6:58] = 40.0  # the body
    hu[12:52, 12:28] = -850.0  # a lung: an air-filled region inside it
    hu[40:46, 40:46] = -990.0  # bowel gas
    pred = np.zeros((64, 64), np.int64)
    pred[12:30, 12:28] = 1  # the model found 45 % of the lung...
    pred[44:46, 36:38] = 1  # ...and a 4-pixel speck
    out = as_predicted(pred, 10, {1: {"below": -400.0, "body_above": -500.0, "overlap": 0.3}}, hu)
    assert out[12:52, 12:28].all() and out.sum() == 40 * 16  # the whole lung, no speck, no gas
    assert (as_predicted(pred) == pred).all()  # nothing to apply: unchanged
    low = complete_labels(pred, hu, {1: {"below": -400.0, "body_above": -500.0, "overlap": 0.5}})
    assert (low == pred).all()  # 45 % is under an overlap of 0.5: not completed


def test_intensity_augmentation_keeps_a_calibrated_air_level_in_place():
    """With an anchor (the calibrated air, normalised), gain is applied about it and no offset is
    added, in the basic and the strong augmentation; without one, the whole crop moves."""
    from geoseg.training.unet import _gain_offset, _strong_intensity

    rng = np.random.default_rng(0)
    x = torch.zeros(1, 32, 32)
    x[:, 8:24, 8:24] = 2.0  # air at 0, tissue at 2 (normalised units)
    anchor = torch.zeros(1, 1, 1)
    for _ in range(20):
        y = _gain_offset(x, rng, (0.9, 1.1), 0.1, anchor)
        assert torch.equal(y[:, :8], x[:, :8]) and 1.8 <= float(y[0, 16, 16]) <= 2.2
    moved = [float(_gain_offset(x, rng, (0.9, 1.1), 0.1, None)[0, 0, 0]) for _ in range(20)]
    assert max(abs(v) for v in moved) > 0.02
    wide = torch.zeros(1, 64, 64)
    wide[:, 24:40, 24:40] = 2.0
    air = [float(_strong_intensity(wide, rng, anchor)[0, :12].mean()) for _ in range(20)]  # far from edges
    assert max(abs(v) for v in air) < 0.05  # noise and kernels average out; no offset
