"""Soft Dice losses for training semantic models.

**Soft Dice loss** per class ``c``::

    loss_c = 1 - (2 * sum(p_c * t_c) + smooth_nr) / (sum(p_c) + sum(t_c) + smooth_dr)

with ``p`` the softmax (or, for one output channel, sigmoid) probabilities and ``t`` the one-hot
truth; sums run over each image's pixels (``per_image=True``) or over the whole batch
(``per_image=False``, steadier when many images lack a class), then the mean is taken over images
and classes. This equals ``monai.losses.DiceLoss`` with the same ``smooth_nr``, ``smooth_dr``,
``include_background`` and ``batch = not per_image``. Hard-mask scores, and their empty-mask
convention, are in :mod:`geoseg.evaluation.dice`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
