"""Dice and IoU of hard masks, for scoring semantic models (the soft Dice losses that train them
are in :mod:`geoseg.training.losses`).

**Empty-mask convention.** A slice whose truth is empty scores 1.0 when the
prediction is empty too, and 0.0 when the prediction has any pixel at all (a false positive on an
empty slice is a complete miss, however small). A slice with truth and an empty prediction scores
0.0. These are MONAI's ``DiceMetric(ignore_empty=False)`` and ``MeanIoU(ignore_empty=False)``
values; MONAI's default ``ignore_empty=True`` gives NaN for every empty-truth slice instead (so a
mean over slices skips them), which hides false positives on slices without the class.
"""

from __future__ import annotations

import numpy as np


def _overlap(pred, truth):
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    if pred.ndim < 2:
        raise ValueError(f"masks must have at least 2 dimensions (H, W), got shape {pred.shape}")
    axes = (-2, -1)
    inter = np.logical_and(pred, truth).sum(axes)
    return inter, pred.sum(axes), truth.sum(axes)


def _finish(values):
    return float(values) if np.ndim(values) == 0 else values


def dice_score(pred, truth):
    """Dice of hard masks ``2 |P & T| / (|P| + |T|)`` over the last two axes (H, W).

    Returns a float for one ``(H, W)`` pair, an array for stacks ``(..., H, W)``. Empty truth and
    empty prediction give 1.0; empty truth and any predicted pixel give 0.0.

    >>> t = np.zeros((4, 4), bool); t[:2] = True
    >>> p = np.zeros((4, 4), bool); p[:1] = True
    >>> round(dice_score(p, t), 4), dice_score(t, t)
    (0.6667, 1.0)
    >>> empty = np.zeros((4, 4), bool)
    >>> dice_score(empty, empty), dice_score(p, empty)
    (1.0, 0.0)
    """
    inter, p, t = _overlap(pred, truth)
    denom = p + t
    return _finish(np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), 1.0))


def iou_score(pred, truth):
    """Intersection over union of hard masks over the last two axes, with the same empty-mask
    convention as :func:`dice_score` (both empty: 1.0; empty truth, any predicted pixel: 0.0).

    >>> t = np.zeros((4, 4), bool); t[:2] = True
    >>> p = np.zeros((4, 4), bool); p[:1] = True
    >>> iou_score(p, t), iou_score(np.zeros((4, 4)), np.zeros((4, 4)))
    (0.5, 1.0)
    """
    inter, p, t = _overlap(pred, truth)
    union = p + t - inter
    return _finish(np.where(union > 0, inter / np.maximum(union, 1), 1.0))


def class_scores(pred_labels, truth_labels, num_classes: int, *, include_background: bool = False,
                 metric: str = "dice") -> np.ndarray:  # fmt: skip
    """Per-class Dice (or IoU with ``metric="iou"``) of label maps ``(..., H, W)``; the result has
    the leading shape plus one last axis of classes (class 0 left out unless
    ``include_background``)."""
    fn = {"dice": dice_score, "iou": iou_score}[metric]
    pred_labels, truth_labels = np.asarray(pred_labels), np.asarray(truth_labels)
    first = 0 if include_background else 1
    scores = [fn(pred_labels == c, truth_labels == c) for c in range(first, num_classes)]
    return np.stack([np.asarray(s, dtype=np.float64) for s in scores], axis=-1)
