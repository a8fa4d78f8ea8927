"""A pointwise semantic network (1 x 1 convolutions only): each output pixel depends on its own
input pixel alone. It is the reference for seam-free tiling: tiled output must equal whole-image
output exactly."""

from __future__ import annotations

import torch
from torch import nn

from geoseg.models.base import TorchSegmenter, checkpoint_kwargs
from geoseg.models.checkpoint import register_architecture


def build_pointwise(in_channels: int, num_classes: int, hidden: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, num_classes, 1))


@register_architecture("pointwise")
def _load(meta: dict, state: dict[str, torch.Tensor]) -> TorchSegmenter:
    cfg = meta["config"]
    module = build_pointwise(meta["in_channels"], len(meta["classes"]), cfg.get("hidden", 8))
    module.load_state_dict(state)
    return TorchSegmenter(module, task=meta["task"], **checkpoint_kwargs(meta))
