"""Built-in segmenters that need no training: for tests and for checking a set-up end to end.

``geoseg.models.plugins:threshold_instances`` finds each 4-connected region above a threshold as one
instance; ``geoseg.models.plugins:threshold_semantic`` gives a pointwise foreground probability. Both are
deterministic and pointwise, so tiled output must equal whole-image output exactly.
``geoseg.models.plugins:latency_instances`` is ``threshold_instances`` that also waits a fixed time per tile,
as a GPU-bound detector would keep its caller waiting without using its CPU: with it, N workers
on a machine of fewer cores still show whether geoseg keeps N workers busy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.special import expit


class ThresholdInstances:
    """Instance segmenter: every 4-connected region where ``band > threshold`` is one object."""

    task = "instance"

    def __init__(
        self,
        *,
        band: int = 1,
        threshold: float = 0.5,
        in_channels: int = 1,
        classes: Sequence[str] = ("background", "object"),
    ) -> None:
        if not 1 <= band <= in_channels:
            raise ValueError(f"band {band} is outside 1..{in_channels}")
        self.band, self.threshold = band, float(threshold)
        self.in_channels = in_channels
        self.classes = list(classes)
        self.name = f"threshold_instances(band={band}, threshold={threshold})"

    def predict(self, tiles: np.ndarray) -> list[dict]:
        out = []
        for tile in tiles:
            fg = np.nan_to_num(tile[self.band - 1], nan=-np.inf) > self.threshold
            labels, n = ndimage.label(fg)
            masks = labels[None, :, :] == np.arange(1, n + 1)[:, None, None]
            boxes = np.array(
                [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels)],
                dtype=np.float32,
            ).reshape(-1, 4)
            out.append(
                {
                    "masks": masks,
                    "boxes": boxes,
                    "scores": np.ones(n, np.float32),
                    "labels": np.ones(n, np.int64),
                }
            )
        return out


class LatencyInstances(ThresholdInstances):
    """:class:`ThresholdInstances` that sleeps ``seconds_per_tile`` for every tile it is given."""

    def __init__(self, *, seconds_per_tile: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds_per_tile = float(seconds_per_tile)
        self.name = f"latency_instances({self.seconds_per_tile:g} s/tile, threshold={self.threshold:g})"

    def predict(self, tiles: np.ndarray) -> list[dict]:
        time.sleep(self.seconds_per_tile * len(tiles))
        return super().predict(tiles)


class ThresholdSemantic:
    """Semantic segmenter: P(foreground) = sigmoid(sharpness * (band - threshold)), pointwise."""

    task = "semantic"

    def __init__(
        self,
        *,
        band: int = 1,
        threshold: float = 0.5,
        sharpness: float = 10.0,
        in_channels: int = 1,
        classes: Sequence[str] = ("background", "foreground"),
    ) -> None:
        if not 1 <= band <= in_channels:
            raise ValueError(f"band {band} is outside 1..{in_channels}")
        self.band, self.threshold, self.sharpness = band, float(threshold), float(sharpness)
        self.in_channels = in_channels
        self.classes = list(classes)
        self.name = f"threshold_semantic(band={band}, threshold={threshold})"

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(tiles[:, self.band - 1], nan=-np.inf).astype(np.float64)
        fg = expit(self.sharpness * (x - self.threshold))
        return np.stack([1.0 - fg, fg], axis=1).astype(np.float32)


#: factories for ``--model geoseg.models.plugins:threshold_instances`` / ``...:threshold_semantic``
threshold_instances = ThresholdInstances
latency_instances = LatencyInstances
threshold_semantic = ThresholdSemantic
