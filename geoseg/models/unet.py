"""U-Net (Ronneberger et al., 2015) as a geoseg semantic segmenter, written for tiled inference.

An encoder of ``depth`` levels halves the resolution and doubles the channels at each level
(``base_width``, ``2 * base_width``, ...); a decoder brings the resolution back level by level and
joins each level to the encoder's features of the same resolution (skip connections), so the output
keeps sharp boundaries. Options:

- ``down``: ``"maxpool"`` (2 x 2 max-pool) or ``"strided"`` (3 x 3 convolution with stride 2);
- ``up``: ``"transpose"`` (2 x 2 transposed convolution with stride 2) or ``"interp"``
  (``interp_mode`` ``"bilinear"`` or ``"nearest"`` interpolation followed by a 3 x 3 convolution);
- ``norm``: ``"batch"`` (default), ``"instance"`` or ``"none"``.

**Why BatchNorm and not InstanceNorm.** In eval mode BatchNorm applies fixed statistics learnt in
training, so every output pixel depends only on the input pixels in its receptive field. InstanceNorm
normalises each feature map by the mean and variance of *the image it is given*: a tile that holds
mostly lung and a tile that holds mostly soft tissue are normalised differently, so the same pixel
gets a different value in each of two overlapping tiles (visible seams after stitching) and a
different value again when the whole image is run at once. Tiled output then depends on how the
image was tiled. ``norm="instance"`` is kept for comparisons and for whole-image use only.

**Stride.** The network's total stride is ``2 ** depth``: a tile's height and width must be
multiples of it (the input is never padded silently), and :class:`UNetSegmenter` exposes it as
``stride`` so that geoseg aligns tile positions to it.

**Normalisation.** Raw values first go through an optional CT window stored in the checkpoint
(``normalization.window = {"center": C, "width": W}``): values are clipped to
``[C - W/2, C + W/2]`` and scaled to ``[0, 1]``, so Hounsfield units from any scanner map to the same
range. Then the per-band ``mean``/``std`` apply, and NaN (nodata) becomes 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.errors import ModelError
from geoseg.models.base import TorchSegmenter, checkpoint_kwargs
from geoseg.models.checkpoint import register_architecture

DOWN = ("maxpool", "strided")
UP = ("transpose", "interp")
NORMS = ("batch", "instance", "none")


class InputSizeError(ModelError, ValueError):
    """An input whose height or width is not a multiple of the network's stride."""


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def _conv(cin: int, cout: int, norm: str, *, stride: int = 1) -> list[nn.Module]:
    # a bias before a normalisation layer is redundant
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=norm == "none"),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
    ]


def conv_block(cin: int, cout: int, norm: str) -> nn.Sequential:
    """Two 3 x 3 convolutions, each followed by the normalisation and a ReLU."""
    return nn.Sequential(*_conv(cin, cout, norm), *_conv(cout, cout, norm))


class Down(nn.Module):
    """Halve the resolution, then a convolution block to ``cout`` channels."""

    def __init__(self, cin: int, cout: int, *, down: str, norm: str) -> None:
        super().__init__()
        if down == "maxpool":
            self.down = nn.MaxPool2d(2)
        else:
            self.down = nn.Sequential(*_conv(cin, cin, norm, stride=2))
        self.block = conv_block(cin, cout, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.down(x))


class Up(nn.Module):
    """Double the resolution to ``cout`` channels, join the skip features, a convolution block."""

    def __init__(self, cin: int, cout: int, *, up: str, norm: str, interp_mode: str) -> None:
        super().__init__()
        if up == "transpose":
            self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        else:
            align = False if interp_mode == "bilinear" else None
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode=interp_mode, align_corners=align),
                nn.Conv2d(cin, cout, 3, padding=1),
            )
        self.block = conv_block(2 * cout, cout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """The U-Net module: ``(N, in_channels, H, W)`` -> logits ``(N, num_classes, H, W)``.

    ``H`` and ``W`` must be multiples of :attr:`stride` (``2 ** depth``); other sizes raise
    :class:`InputSizeError` (a ``ValueError``) naming the size and the multiple.

    >>> net = UNet(in_channels=1, num_classes=2, depth=2, base_width=4)
    >>> net.stride, tuple(net(torch.zeros(1, 1, 8, 12)).shape)
    (4, (1, 2, 8, 12))
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        *,
        depth: int = 4,
        base_width: int = 16,
        down: str = "maxpool",
        up: str = "transpose",
        norm: str = "batch",
        interp_mode: str = "bilinear",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"U-Net depth must be at least 1, got {depth}")
        if base_width < 1:
            raise ValueError(f"U-Net base_width must be at least 1, got {base_width}")
        for name, value, allowed in (("down", down, DOWN), ("up", up, UP), ("norm", norm, NORMS)):
            if value not in allowed:
                raise ValueError(f"U-Net {name} must be one of {', '.join(allowed)}, got {value!r}")
        if interp_mode not in ("bilinear", "nearest"):
            raise ValueError(f"U-Net interp_mode must be bilinear or nearest, got {interp_mode!r}")
        self.depth, self.stride = depth, 2**depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.stem = conv_block(in_channels, widths[0], norm)
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1], down=down, norm=norm) for i in range(depth))
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], up=up, norm=norm, interp_mode=interp_mode)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def check_size(self, height: int, width: int) -> None:
        if height % self.stride or width % self.stride:
            raise InputSizeError(
                f"U-Net input {height} x {width}: height and width must be multiples of {self.stride} "
                f"(2 ** depth {self.depth})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_size(x.shape[-2], x.shape[-1])
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)


def apply_window(x: Any, center: float, width: float) -> Any:
    """Clip raw values (e.g. Hounsfield units) to the window ``center +/- width / 2`` and scale it
    to ``[0, 1]``. Works on NumPy arrays and torch tensors; NaN stays NaN.

    >>> apply_window(np.array([-2000.0, -600.0, 0.0, 500.0]), -600, 1500).round(3).tolist()
    [0.0, 0.5, 0.9, 1.0]
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    lo, hi = center - width / 2, center + width / 2
    return (x.clip(lo, hi) - lo) / (hi - lo)


class UNetSegmenter(TorchSegmenter):
    """A :class:`UNet` behind the segmenter contract: task ``"semantic"``, output per tile
    ``(num_classes, H, W)`` probabilities (softmax over classes; a sigmoid when the network has one
    output channel, whose class is then the foreground), ``stride = 2 ** depth``."""

    def __init__(
        self,
        module: UNet,
        *,
        classes: Sequence[str],
        in_channels: int,
        window: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(
            module, task="semantic", classes=classes, in_channels=in_channels, stride=module.stride, **kwargs
        )
        self.window = dict(window) if window else None

    def normalize(self, tiles: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ModelError(
                f"U-Net '{self.name}': expects tiles (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        self.module.check_size(x.shape[-2], x.shape[-1])
        if self.window:
            x = apply_window(x, self.window["center"], self.window["width"])
        x = (x - self.mean) / self.std
        return torch.nan_to_num(x, nan=0.0).to(self.device)

    def forward(self, x: torch.Tensor) -> np.ndarray:
        logits = self.module(x)
        if logits.shape[1] == 1:
            return torch.sigmoid(logits).cpu().numpy()
        return torch.softmax(logits, dim=1).cpu().numpy()


def build_unet(config: dict, *, in_channels: int, num_classes: int) -> UNet:
    """A :class:`UNet` from a checkpoint's ``config`` (the builder's keyword arguments)."""
    return UNet(in_channels, num_classes, **config)


@register_architecture("unet")
def _load(meta: dict, state: dict[str, torch.Tensor]) -> UNetSegmenter:
    module = build_unet(meta["config"], in_channels=meta["in_channels"], num_classes=len(meta["classes"]))
    module.load_state_dict(state)
    window = (meta.get("normalization") or {}).get("window")
    return UNetSegmenter(module, window=window, **checkpoint_kwargs(meta))


def random_init(
    in_channels: int = 1,
    num_classes: int = 2,
    depth: int = 4,
    base_width: int = 16,
    down: str = "maxpool",
    up: str = "transpose",
    norm: str = "batch",
    classes: Sequence[str] | None = None,
    window: Sequence[float] | None = None,
    seed: int = 0,
) -> UNetSegmenter:
    """An untrained U-Net (``--model geoseg.models.unet:random_init``), for timing and tests.

    ``classes`` defaults to ``background, class1, ...`` (one name when ``num_classes`` is 1);
    ``window`` is an optional ``[center, width]`` applied to raw values.
    """
    if classes is None:
        classes = (
            ["background"] + [f"class{i}" for i in range(1, num_classes)] if num_classes > 1 else ["class1"]
        )
    if len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names for {num_classes} classes")
    torch.manual_seed(seed)
    module = UNet(in_channels, num_classes, depth=depth, base_width=base_width, down=down, up=up, norm=norm)
    win = {"center": float(window[0]), "width": float(window[1])} if window is not None else None
    return UNetSegmenter(module, classes=classes, in_channels=in_channels, window=win)
