"""`geoseg train maskrcnn`: a short seeded run is reproducible and writes a self-describing
checkpoint that `geoseg predict` uses with its own tile size; wrong bands are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from geoseg.cli.main import cli
from geoseg.models.checkpoint import read_metadata
from geoseg.synth.tankers import tanker_scene
from tests.helpers import write_raster


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    tanker_scene(d / "a.tif", size=600, gsd=1.5, n_tankers=6, seed=1, truth=d / "a.geojson")
    tanker_scene(d / "v.tif", size=600, gsd=1.5, n_tankers=6, seed=2, truth=d / "v.geojson")
    return d


def train(d, out, seed=0, *extra):
    args = [
        "-q",
        "train",
        "maskrcnn",
        "--train",
        str(d / "a.tif"),
        str(d / "a.geojson"),
        "--val",
        str(d / "v.tif"),
        str(d / "v.geojson"),
        "--iterations",
        "4",
        "--val-every",
        "2",
        "--val-chips",
        "2",
        "--chip-size",
        "128",
        "--batch-size",
        "2",
        "--hard-negatives",
        "0.5",
        "--seed",
        str(seed),
        "-o",
        str(out),
        *extra,
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    return read_metadata(out), load_file(out)


@pytest.mark.slow
def test_same_seed_same_run(data, tmp_path):
    meta1, w1 = train(data, tmp_path / "1.safetensors")
    meta2, w2 = train(
        data, tmp_path / "2.safetensors", 0, "--max-gsd", "1.2", "--rotated-view", "--match-radiometry"
    )
    timeless = [{k: v for k, v in m["metrics"].items() if k != "minutes"} for m in (meta1, meta2)]
    assert timeless[0] == timeless[1]  # (wall time is not part of reproducibility)
    assert all(np.array_equal(w1[k].numpy(), w2[k].numpy()) for k in w1)
    _, w3 = train(data, tmp_path / "3.safetensors", seed=1)
    assert not all(np.array_equal(w1[k].numpy(), w3[k].numpy()) for k in w1)
    # the checkpoint explains itself
    assert meta1["architecture"] == "maskrcnn" and meta1["config"]["backbone"] == "resnet18"
    assert meta1["classes"] == ["background", "tanker"] and meta1["bands"] == [1, 2, 3]
    assert len(meta1["normalization"]["mean"]) == 3 and meta1["tile_size"] == 256
    assert meta1["training"]["seed"] == 0 and meta1["training"]["data_fingerprint"]
    assert meta1["training"]["hard_negatives"] == 0.5
    # inference settings recorded for geoseg predict; they do not change training
    assert "max_gsd" not in meta1 and "rotated_view" not in meta1 and "radiometry" not in meta1
    assert meta2["max_gsd"] == 1.2 and meta2["rotated_view"] is True
    assert meta2["radiometry"]["statistic"] == "median" and len(meta2["radiometry"]["reference"]) == 3
    from geoseg.models.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "2.safetensors").rotated_view is True
    assert load_checkpoint(tmp_path / "1.safetensors").rotated_view is False
    assert meta1["config"]["anchor_ratios"] == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert "geoseg train maskrcnn" in meta1["training"]["command"]
    assert {"f1", "precision", "recall", "iteration"} <= set(meta1["metrics"])

    # predict uses the trained tile size; a 1-band scene is refused with one line
    stats = tmp_path / "stats.json"
    r = CliRunner().invoke(
        cli,
        [
            "-q",
            "predict",
            str(data / "v.tif"),
            "-m",
            str(tmp_path / "1.safetensors"),
            "-o",
            str(tmp_path / "o.geojson"),
            "--stats",
            str(stats),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(stats.read_text())["tile_size"] == 256
    one = write_raster(tmp_path / "one.tif", np.zeros((64, 64), np.uint8))
    r = CliRunner().invoke(
        cli, ["predict", str(one), "-m", str(tmp_path / "1.safetensors"), "-o", str(tmp_path / "x.geojson")]
    )
    assert r.exit_code == 1 and "1 band(s) selected" in r.stderr and "expects 3" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.geojson").exists()


class _Seeing:
    """A stand-in model that 'finds' one 20 x 20 object at a fixed place of every chip."""

    def __init__(self, at: tuple[int, int]):
        self.at = at

    def predict(self, x):
        out = []
        for im in x:
            m = np.zeros(im.shape[1:], np.float32)
            r, c = self.at
            m[r : r + 20, c : c + 20] = 1.0
            out.append({"scores": np.array([0.9]), "masks": m[None]})
        return out


def test_hard_negative_mining_keeps_windows_with_unlabelled_detections(tmp_path):
    import shapely

    from geoseg.io.refs import open_scene
    from geoseg.training.chips import LabelledScene
    from geoseg.training.maskrcnn import HardNegatives, TrainOptions, mine_hard_negatives

    path = write_raster(tmp_path / "s.tif", np.zeros((3, 64, 64), np.uint8))
    label = shapely.box(0, 0, 32, 64)  # the left half of the scene is a labelled object
    with open_scene(str(path)) as scene:
        ls = LabelledScene(scene, np.array([label], dtype=object))
        opts = TrainOptions(chip_size=64, mining_chips=4)
        rng = np.random.default_rng(0)
        # a detection on the labelled object is no false object; one on the empty right half is
        assert mine_hard_negatives(_Seeing((10, 5)), [ls], rng, opts) == []
        found = mine_hard_negatives(_Seeing((10, 40)), [ls], rng, opts)
        assert len(found) == 4 and all(i == 0 for i, _ in found)
    pool = HardNegatives(limit=5)
    pool.add(found)
    pool.add(found)
    assert len(pool.windows) == 5 and pool.draw(rng) in found


def test_size_limits_come_from_the_labels_and_drop_objects_outside(tmp_path):
    from types import SimpleNamespace

    import geopandas as gpd
    import shapely

    from geoseg.inference.options import PredictOptions
    from geoseg.inference.tasks import apply_object_limits
    from geoseg.training.chips import load_labelled, size_limits

    scene = write_raster(tmp_path / "s.tif", np.zeros((3, 400, 400), np.uint8), crs="EPSG:32631")
    # the raster is at 2 m: hulls of 200 x 30 m and 300 x 50 m
    x0, y0 = 500000, 6000000 - 400
    hulls = [
        shapely.box(x0 + 20, y0 + 20, x0 + 220, y0 + 50),
        shapely.box(x0 + 20, y0 + 100, x0 + 320, y0 + 150),
    ]
    gpd.GeoDataFrame(geometry=hulls, crs="EPSG:32631").to_file(tmp_path / "l.geojson")
    ls = load_labelled(str(scene), str(tmp_path / "l.geojson"))
    limits = size_limits([ls])
    ls.scene.close()
    # (metres on the ground: UTM's scale factor makes 200 grid metres 200.1 true metres)
    assert limits["length_m"] == pytest.approx([160.0, 360.0], abs=0.2)
    assert limits["beam_m"] == pytest.approx([24.0, 60.0], abs=0.2)

    features = gpd.GeoDataFrame(
        {"id": [1, 2, 3, 4], "length_m": [250.0, 40.0, 250.0, None], "beam_m": [40.0, 10.0, 90.0, None]},
        geometry=[shapely.Point(0, 0)] * 4,
    )
    seg = SimpleNamespace(metadata={"object_limits": limits})
    kept, dropped = apply_object_limits(features, seg, PredictOptions())
    assert dropped == 2 and kept["length_m"].iloc[0] == 250.0 and kept["id"].tolist() == [1, 2]
    assert pd_isna(kept["length_m"].iloc[1])  # no measure, no judgement: kept
    same, none = apply_object_limits(features, seg, PredictOptions(object_limits=False))
    assert none == 0 and len(same) == 4


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


@pytest.mark.slow
def test_fine_tuning_starts_from_a_checkpoint_and_keeps_its_normalisation(data, tmp_path):
    base_meta, base_w = train(data, tmp_path / "base.safetensors")
    meta, w = train(data, tmp_path / "tuned.safetensors", 1, "--init", str(tmp_path / "base.safetensors"),
                    "--strong-augment", "--lr", "0.002")  # fmt: skip
    assert meta["normalization"] == base_meta["normalization"] and meta["config"] == base_meta["config"]
    record = meta["training"]["init"]
    assert record["checkpoint"] == "base.safetensors" and len(record["sha256"]) == 64
    assert record["training"]["seed"] == 0 and meta["training"]["strong_augment"] is True
    assert "strong_augment" not in base_meta["training"] and "init" not in base_meta["training"]
    # four small steps move the weights, but they start from the checkpoint's, not from scratch
    _, scratch = train(data, tmp_path / "scratch.safetensors", 1, "--strong-augment", "--lr", "0.002")
    moved = {k: float((w[k].float() - base_w[k].float()).abs().max()) for k in w}
    assert any(v > 0 for v in moved.values())
    head = "roi_heads.box_predictor.cls_score.weight"
    assert (w[head] - base_w[head]).abs().mean() < (scratch[head] - base_w[head]).abs().mean()


def test_fine_tuning_refuses_what_does_not_fit(data, tmp_path):
    base = tmp_path / "base.safetensors"
    lung = Path(__file__).parents[1] / "geoseg" / "weights" / "lungs-unet.safetensors"
    cases = [
        (["--init", str(lung)], "is a unet model, not maskrcnn"),
        (["--init", str(tmp_path / "none.safetensors")], "none.safetensors"),
        (["--init", str(lung), "--pretrained"], "--pretrained"),
        (["--init", str(lung), "--config", "light"], "--config"),
    ]
    for extra, message in cases:
        pairs = ["--train", str(data / "a.tif"), str(data / "a.geojson")]
        pairs += ["--val", str(data / "v.tif"), str(data / "v.geojson")]
        r = CliRunner().invoke(
            cli, ["-q", "train", "maskrcnn", *pairs, "--iterations", "1", "-o", str(base), *extra]
        )
        assert r.exit_code != 0 and message in r.output, (extra, r.output)
        assert not base.exists()


def test_photometric_changes_values_within_range_and_keeps_shape():
    from geoseg.training.chips import photometric

    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).integers(10, 60, (3, 64, 80)).astype(np.float32)
    outs = [photometric(image, rng) for _ in range(40)]
    assert all(o.shape == image.shape and o.dtype == np.float32 for o in outs)
    assert all(o.min() >= 0 and o.max() <= 255 for o in outs)
    assert all(not np.array_equal(o, image) for o in outs)
    # haze brightens some chips a lot; colour shifts move the bands apart
    assert max(float(o.mean()) for o in outs) > image.mean() + 40
    assert np.ptp([o.mean(axis=(1, 2)) - o.mean() for o in outs]) > 10
    a = photometric(image, np.random.default_rng(5))
    assert np.array_equal(a, photometric(image, np.random.default_rng(5)))
    wide = photometric(image * 60, np.random.default_rng(5), top=4000.0)  # a 12-bit-like scene
    assert wide.max() <= 4000 and wide.mean() > 255
