"""Model factories for tests (``--model tests.factories:NAME``)."""

from __future__ import annotations

import torch

from geoseg.models.base import TorchSegmenter
from geoseg.models.pointwise import build_pointwise


def pointwise_torch(in_channels: int = 1, num_classes: int = 2, seed: int = 0) -> TorchSegmenter:
    """A random 1 x 1 convolution network: each output pixel depends on its own input pixel only."""
    torch.manual_seed(seed)
    module = build_pointwise(in_channels, num_classes, hidden=8)
    classes = ["background"] + [f"class{i}" for i in range(1, num_classes)]
    return TorchSegmenter(
        module,
        task="semantic",
        classes=classes,
        in_channels=in_channels,
        mean=[100.0] * in_channels,
        std=[50.0] * in_channels,
        device="cpu",
    )


def threshold_with_max_gsd(max_gsd: float = 1.0, threshold: float = 100) -> object:
    """The threshold instance model with a checkpoint-like ``max_gsd`` in its metadata."""
    from geoseg.models.plugins import ThresholdInstances

    seg = ThresholdInstances(threshold=threshold)
    seg.metadata = {"max_gsd": float(max_gsd)}
    return seg


def short_of_edges(stop: int = 12, threshold: float = 100) -> object:
    """The threshold instance model, but its masks stop ``stop`` pixels short of every tile edge,
    as a soft mask of an object cut by the tile often does."""
    from geoseg.models.plugins import ThresholdInstances

    class ShortOfEdges(ThresholdInstances):
        def predict(self, tiles):
            out = super().predict(tiles)
            for pred in out:
                m = pred["masks"]
                m[:, :stop], m[:, -stop:], m[:, :, :stop], m[:, :, -stop:] = False, False, False, False
            return out

    return ShortOfEdges(threshold=threshold)


#: concurrent predict calls of :func:`concurrency_probe` models in this process: now, and at most
PROBE = {"now": 0, "peak": 0}


def concurrency_probe(seconds: float = 0.2, threshold: float = 100) -> object:
    """The threshold instance model, holding each batch for ``seconds`` and counting how many of
    its forward passes run at once in this process (``PROBE``)."""
    import threading
    import time

    from geoseg.models.plugins import ThresholdInstances

    lock = threading.Lock()

    class Probe(ThresholdInstances):
        def predict(self, tiles):
            with lock:
                PROBE["now"] += 1
                PROBE["peak"] = max(PROBE["peak"], PROBE["now"])
            try:
                time.sleep(seconds)
                return super().predict(tiles)
            finally:
                with lock:
                    PROBE["now"] -= 1

    return Probe(threshold=threshold)


def semantic_failing_after(calls: int = 1) -> object:
    """The threshold semantic model, whose forward pass fails from its ``calls + 1``-th call on."""
    from geoseg.models.plugins import ThresholdSemantic

    class Failing(ThresholdSemantic):
        seen = 0

        def predict(self, tiles):
            Failing.seen += 1
            if Failing.seen > calls:
                raise RuntimeError("the device fell off the bus")
            return super().predict(tiles)

    return Failing(threshold=100)


def dark_band_semantic(
    lo: float = -900,
    hi: float = -800,
    below: float = -400,
    body: float = -500,
    gas_below: float | None = None,
) -> object:
    """A semantic model that finds only the pixels between ``lo`` and ``hi`` (a lung's darker part),
    with a checkpoint-like region completion to the regions under ``below`` inside the body (and,
    with ``gas_below``, none of the regions whose median is under it)."""
    import numpy as np

    class DarkBand:
        task = "semantic"
        in_channels = 1
        classes = ["background", "lung"]
        name = "dark_band"
        metadata = {"complete": {"lung": {"below": below, "body_above": body, "overlap": 0.3}}}
        if gas_below is not None:
            metadata["complete"]["lung"]["gas_below"] = gas_below

        def predict(self, tiles):
            x = np.nan_to_num(tiles[:, 0], nan=0.0)
            fg = ((x > lo) & (x < hi)).astype(np.float32)
            return np.stack([1.0 - fg, fg], axis=1)

    return DarkBand()
