"""The U-Net: every down/up/norm variant keeps the input size, sizes off the stride are refused, the
architecture round-trips through a checkpoint with its CT window, and BatchNorm (not InstanceNorm)
gives tile-independent outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.errors import ModelError
from geoseg.models.checkpoint import architectures, load_checkpoint, read_metadata, save_checkpoint
from geoseg.models.segmenter import ModelSpec, load_segmenter
from geoseg.models.unet import InputSizeError, UNet, UNetSegmenter, apply_window, random_init


@pytest.mark.parametrize("down", ["maxpool", "strided"])
@pytest.mark.parametrize("up", ["transpose", "interp"])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_variants_keep_the_size(down, up, norm):
    torch.manual_seed(0)
    net = UNet(2, 3, depth=3, base_width=4, down=down, up=up, norm=norm).eval()
    out = net(torch.randn(2, 2, 24, 40))
    assert out.shape == (2, 3, 24, 40) and torch.isfinite(out).all()
    assert net.stride == 8


def test_widths_double_per_level():
    net = UNet(1, 2, depth=3, base_width=5)
    assert [d.block[0].out_channels for d in net.downs] == [10, 20, 40]
    assert net.stem[0].in_channels == 1 and net.head.out_channels == 2


def test_interp_nearest_and_bad_options():
    net = UNet(1, 1, depth=2, base_width=4, up="interp", interp_mode="nearest").eval()
    assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    for kwargs, word in [
        ({"down": "avg"}, "down"),
        ({"up": "pixelshuffle"}, "up"),
        ({"norm": "group"}, "norm"),
        ({"depth": 0}, "depth"),
    ]:
        with pytest.raises(ValueError, match=word):
            UNet(1, 2, **kwargs)


def test_size_not_a_multiple_of_the_stride_is_refused():
    net = UNet(1, 2, depth=4, base_width=2)
    with pytest.raises(ValueError, match=r"100 x 64.*multiples of 16"):
        net(torch.zeros(1, 1, 100, 64))
    seg = UNetSegmenter(net, classes=["background", "lung"], in_channels=1)
    with pytest.raises(InputSizeError, match="multiples of 16") as err:
        seg.predict(np.zeros((1, 1, 64, 72), np.float32))
    assert isinstance(err.value, ModelError)  # the CLI reports it in one line
    with pytest.raises(ModelError, match=r"expects tiles \(N, 1, H, W\)"):
        seg.predict(np.zeros((1, 3, 64, 64), np.float32))


def test_window_clips_and_scales():
    hu = np.array([-3000.0, -1350.0, -600.0, 150.0, 2000.0, np.nan])
    out = apply_window(hu, -600, 1500)
    assert np.allclose(out[:5], [0, 0, 0.5, 1, 1]) and np.isnan(out[5])
    t = apply_window(torch.tensor([-600.0]), -600, 1500)
    assert torch.allclose(t, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="width"):
        apply_window(hu, 0, 0)


def test_probabilities_follow_the_contract():
    seg = random_init(num_classes=2, depth=2, base_width=4)
    assert (seg.task, seg.classes, seg.in_channels, seg.stride) == (
        "semantic",
        ["background", "class1"],
        1,
        4,
    )
    probs = seg.predict(np.random.default_rng(0).normal(size=(3, 1, 32, 32)).astype(np.float32))
    assert probs.shape == (3, 2, 32, 32)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    one = random_init(num_classes=1, depth=2, base_width=4)
    p1 = one.predict(np.zeros((1, 1, 16, 16), np.float32))
    assert p1.shape == (1, 1, 16, 16) and ((p1 > 0) & (p1 < 1)).all() and one.classes == ["class1"]


def test_factory_spec_builds_a_segmenter():
    seg = load_segmenter(
        ModelSpec(
            "geoseg.models.unet:random_init", (("depth", 2), ("base_width", 4), ("window", [-600, 1500]))
        )
    )
    assert isinstance(seg, UNetSegmenter) and seg.window == {"center": -600.0, "width": 1500.0}


def test_checkpoint_round_trip_keeps_window_and_outputs(tmp_path):
    assert "unet" in architectures()
    torch.manual_seed(1)
    net = UNet(1, 2, depth=2, base_width=4, down="strided", up="interp")
    net.train()
    net(torch.randn(4, 1, 16, 16))  # move BatchNorm's running statistics off their defaults
    window = {"center": -600.0, "width": 1500.0}
    meta = {
        "architecture": "unet",
        "config": {"depth": 2, "base_width": 4, "down": "strided", "up": "interp", "norm": "batch"},
        "task": "semantic",
        "classes": ["background", "lung"],
        "in_channels": 1,
        "normalization": {"mean": [0.4], "std": [0.3], "window": window},
        "tile_size": 256,
        "overlap": 64,
    }
    path = tmp_path / "u.safetensors"
    save_checkpoint(path, net.state_dict(), meta)
    seg = load_checkpoint(path)
    assert isinstance(seg, UNetSegmenter) and seg.window == window and seg.stride == 4
    assert (seg.tile_size, seg.overlap) == (256, 64) and read_metadata(path)["normalization"][
        "window"
    ] == window
    hu = np.random.default_rng(0).uniform(-1100, 300, (2, 1, 32, 32)).astype(np.float32)
    expected = torch.softmax(
        net.eval()(torch.from_numpy((apply_window(hu, -600, 1500) - 0.4) / 0.3)), dim=1
    ).detach()
    assert np.allclose(seg.predict(hu), expected.numpy(), atol=1e-5)


def test_batchnorm_is_tile_independent_and_instancenorm_is_not():
    """Away from a tile's own edges (beyond the receptive field), a BatchNorm U-Net in eval mode gives
    exactly the whole-image values; an InstanceNorm U-Net does not, because each tile brings its own
    statistics."""
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(size=(1, 1, 128, 128)).astype(np.float32))
    image[..., :, 64:] += 3.0  # the right half differs, as lung and soft tissue do
    diffs = {}
    for norm in ("batch", "instance"):
        torch.manual_seed(0)
        net = UNet(1, 2, depth=2, base_width=4, norm=norm)
        net.train()
        net(image)  # non-trivial running statistics for BatchNorm
        net.eval()
        with torch.no_grad():
            whole = net(image)
            tile = net(image[..., 32:96, 0:64])
        # compare the tile's centre, far from its cut edges
        diffs[norm] = float((tile[..., 24:40, 24:40] - whole[..., 56:72, 24:40]).abs().max())
    assert diffs["batch"] < 1e-5
    assert diffs["instance"] > 1e-2
