"""What geoseg's two training recipes share: the optimisation step, a smoothed loss, and keeping
the best checkpoint seen at validation (:class:`Fit`); the ``training`` record of a checkpoint's
metadata (:func:`training_record`); the checkpoint fine-tuning starts from (:func:`start_from`)."""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from geoseg.errors import GeosegError
from geoseg.models.checkpoint import load_checkpoint, save_checkpoint


def start_from(path: str, architecture: str, bands: int, n_classes: int) -> dict:
    """What fine-tuning starts from: the network (``module``, built by the checkpoint's own loader,
    so its weights are trainable) and metadata (``meta``) of the geoseg checkpoint at ``path``,
    checked against the architecture being trained, the training data's bands and the classes, and
    the ``record`` the new checkpoint keeps of it (``training.init``: file name, SHA-256 and the
    checkpoint's own training record). Raises GeosegError."""
    seg = load_checkpoint(path)
    meta = seg.metadata
    if meta["architecture"] != architecture:
        raise GeosegError(f"checkpoint '{path}': is a {meta['architecture']} model, not {architecture}")
    if meta["in_channels"] != bands or len(meta["classes"]) != n_classes:
        raise GeosegError(
            f"checkpoint '{path}': has {meta['in_channels']} band(s) and {len(meta['classes'])} classes; "
            f"the training data have {bands} band(s) and {n_classes} classes"
        )
    if not (meta.get("normalization") or {}).get("mean"):
        raise GeosegError(f"checkpoint '{path}': records no normalisation to keep")
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    record = {"checkpoint": os.path.basename(path), "sha256": digest}
    if "training" in meta:
        record["training"] = meta["training"]
    return {"meta": meta, "module": seg.module, "record": record}


def training_record(command: str | None, **fields: Any) -> dict:
    """The checkpoint's ``training`` metadata: the command that made it (this process's command
    line unless given) and the recipe's settings."""
    return {"command": command or " ".join(sys.argv), **fields}


class Fit:
    """One model's optimisation, step by step, and the best checkpoint so far.

    ``step(loss)`` back-propagates ``loss``, clips gradients to ``clip`` (if given), steps the
    optimiser and the schedule, and keeps an exponential average of the loss (weight ``smoothing``
    for the newest value). ``validated(metrics)`` adds the smoothed loss and the minutes since the
    start; the checkpoint is written to ``output`` (with ``meta`` and the metrics) whenever
    ``score(metrics)`` is at least the best so far, so ties go to the later weights.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optim: torch.optim.Optimizer,
        sched,
        *,
        output: str,
        meta: dict,
        score: Callable[[dict], Any],
        smoothing: float,
        clip: float | None = None,
    ) -> None:
        self.model, self.optim, self.sched = model, optim, sched
        self.output, self.meta, self.score = output, meta, score
        self.smoothing, self.clip = smoothing, clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.loss_avg = math.nan
        self.best: dict | None = None
        self.started = time.perf_counter()

    def step(self, loss: torch.Tensor) -> float:
        self.optim.zero_grad()
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optim.step()
        self.sched.step()
        value = loss.item()
        a = self.smoothing
        self.loss_avg = value if math.isnan(self.loss_avg) else (1 - a) * self.loss_avg + a * value
        return value

    def validated(self, metrics: dict) -> dict:
        """Record ``metrics`` of the current weights; returns them (with loss and minutes)."""
        metrics.update(
            loss=round(self.loss_avg, 4), minutes=round((time.perf_counter() - self.started) / 60, 2)
        )
        if self.best is None or self.score(metrics) >= self.score(self.best):
            self.best = metrics
            save_checkpoint(self.output, self.model.state_dict(), {**self.meta, "metrics": metrics})
        return metrics
