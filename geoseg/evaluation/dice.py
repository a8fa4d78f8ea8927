"""Dice and IoU: soft Dice losses for training semantic models, and hard-mask metrics for scoring them.

**Empty-mask convention of the metrics.** A slice whose truth is empty scores 1.0 when the
prediction is empty too, and 0.0 when the prediction has any pixel at all (a false positive on an
empty slice is a complete miss, however small). A slice with truth and an empty prediction scores
0.0. These are MONAI's ``DiceMetric(ignore_empty=False)`` and ``MeanIoU(ignore_empty=False)``
values; MONAI's default ``ignore_empty=True`` gives NaN for every empty-truth slice instead (so a
mean over slices skips them), which hides false positives on slices without the class.

**Soft Dice loss** per class ``c``::

    loss_c = 1 - (2 * sum(p_c * t_c) + smooth_nr) / (sum(p_c) + sum(t_c) + smooth_dr)

with ``p`` the softmax (or, for one output channel, sigmoid) probabilities and ``t`` the one-hot
truth; sums run over each image's pixels (``per_image=True``) or over the whole batch
(``per_image=False``, steadier when many images lack a class), then the mean is taken over images
and classes. This equals ``monai.losses.DiceLoss`` with the same ``smooth_nr``, ``smooth_dr``,
``include_background`` and ``batch = not per_image``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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


def _one_hot(target: torch.Tensor, channels: int) -> torch.Tensor:
    if target.ndim == 4:  # (N, 1, H, W) labels or (N, C, H, W) one-hot
        if target.shape[1] == channels and channels > 1:
            return target.float()
        target = target[:, 0]
    if channels == 1:
        return (target > 0).float()[:, None]
    return F.one_hot(target.long(), channels).permute(0, 3, 1, 2).float()


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    include_background: bool = True,
    per_image: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
) -> torch.Tensor:
    """Soft Dice loss of ``logits`` ``(N, C, H, W)`` against class labels ``(N, H, W)`` (or
    ``(N, 1, H, W)``, or one-hot ``(N, C, H, W)``): softmax over classes, or a sigmoid when
    ``C == 1`` (then ``target > 0`` is the foreground and ``include_background`` does not apply).

    ``include_background=False`` leaves class 0 out of the mean; ``per_image`` chooses per-image
    sums (True) or one sum over the batch (False). See the module docstring for the formula.
    """
    channels = logits.shape[1]
    probs = torch.sigmoid(logits) if channels == 1 else torch.softmax(logits, dim=1)
    truth = _one_hot(target, channels).to(probs.dtype)
    if channels > 1 and not include_background:
        probs, truth = probs[:, 1:], truth[:, 1:]
    dims = (0, 2, 3) if not per_image else (2, 3)
    inter = (probs * truth).sum(dims)
    denom = probs.sum(dims) + truth.sum(dims)
    return (1.0 - (2.0 * inter + smooth_nr) / (denom + smooth_dr)).mean()


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    **dice_options,
) -> torch.Tensor:
    """``dice_weight * soft Dice + ce_weight * cross-entropy``: softmax cross-entropy for ``C > 1``
    classes, binary cross-entropy with logits for one output channel. ``dice_options`` go to
    :func:`soft_dice_loss`.

    >>> logits = torch.tensor([[[[8.0, -8.0]], [[-8.0, 8.0]]]])  # (1, 2, 1, 2): certain and right
    >>> float(dice_ce_loss(logits, torch.tensor([[[0, 1]]]))) < 1e-3
    True
    """
    dice = soft_dice_loss(logits, target, **dice_options)
    channels = logits.shape[1]
    truth = _one_hot(target, channels)
    if channels == 1:
        ce = F.binary_cross_entropy_with_logits(logits, truth)
    else:
        ce = F.cross_entropy(logits, truth.argmax(1))
    return dice_weight * dice + ce_weight * ce
