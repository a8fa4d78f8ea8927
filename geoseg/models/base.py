"""TorchSegmenter: wraps an ``nn.Module`` in the segmenter contract, with its own normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def checkpoint_kwargs(meta: dict) -> dict:
    """Constructor keywords of a :class:`TorchSegmenter` taken from checkpoint metadata."""
    norm = meta.get("normalization") or {}
    return {
        "classes": meta["classes"],
        "in_channels": meta["in_channels"],
        "mean": norm.get("mean"),
        "std": norm.get("std"),
        "tile_size": meta.get("tile_size"),
        "overlap": meta.get("overlap"),
        "metadata": meta,
    }


class TorchSegmenter:
    """Base of geoseg's torch models: normalises raw bands, fills NaN with 0 after normalising,
    runs the module in eval mode without gradients on its device."""

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        task: str,
        classes: Sequence[str],
        in_channels: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        stride: int = 1,
        tile_size: int | None = None,
        overlap: int | None = None,
        device: str | None = None,
        metadata: dict | None = None,
    ) -> None:
        self.module = module.eval()
        self.task, self.classes, self.in_channels = task, list(classes), int(in_channels)
        self.mean = torch.tensor(mean if mean is not None else [0.0] * in_channels).view(-1, 1, 1)
        self.std = torch.tensor(std if std is not None else [1.0] * in_channels).view(-1, 1, 1)
        self.stride, self.tile_size, self.overlap = stride, tile_size, overlap
        self.name = type(module).__name__
        self.metadata = dict(metadata or {})  # the checkpoint's (geoseg.models.checkpoint)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module.to(self.device)

    def to(self, device: str) -> TorchSegmenter:
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def normalize(self, tiles: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))
        x = (x - self.mean) / self.std
        return torch.nan_to_num(x, nan=0.0).to(self.device)

    @torch.inference_mode()
    def predict(self, tiles: np.ndarray):
        return self.forward(self.normalize(tiles))

    def forward(self, x: torch.Tensor):
        """Semantic default: softmax over the module's logits."""
        return torch.softmax(self.module(x), dim=1).cpu().numpy()
