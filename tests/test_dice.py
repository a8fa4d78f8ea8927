"""Dice/IoU metrics against MONAI's DiceMetric and MeanIoU (empty masks included), and the soft Dice
losses against monai.losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss
from monai.metrics import DiceMetric, MeanIoU

from geoseg.evaluation.dice import class_scores, dice_score, iou_score
from geoseg.training.losses import dice_ce_loss, soft_dice_loss


def random_cases(seed: int = 0, n: int = 40, size: int = 16):
    """Random truth/prediction pairs (N, H, W), a quarter with empty truth, some empty predictions."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, size, size)) < rng.uniform(0.02, 0.5, (n, 1, 1))
    pred = truth ^ (rng.random((n, size, size)) < rng.uniform(0, 0.3, (n, 1, 1)))
    truth[: n // 4] = False  # empty truth ...
    pred[: n // 8] = False  # ... half of them with an empty prediction, half with false positives
    pred[n // 4 : n // 4 + 3] = False  # truth but nothing predicted
    return pred, truth


def monai_scores(metric_cls, pred, truth, ignore_empty):
    metric = metric_cls(include_background=True, reduction="none", ignore_empty=ignore_empty)
    return metric(torch.from_numpy(pred[:, None]).float(), torch.from_numpy(truth[:, None]).float())[
        :, 0
    ].numpy()


@pytest.mark.parametrize("ours, metric_cls", [(dice_score, DiceMetric), (iou_score, MeanIoU)])
def test_metrics_match_monai_without_ignore_empty(ours, metric_cls):
    pred, truth = random_cases()
    expected = monai_scores(metric_cls, pred, truth, ignore_empty=False)
    got = ours(pred, truth)
    assert got.shape == (len(pred),)
    assert np.allclose(got, expected, atol=1e-6)
    # the empty-mask convention, case by case
    empty_truth = ~truth.any((1, 2))
    empty_pred = ~pred.any((1, 2))
    assert (got[empty_truth & empty_pred] == 1.0).all() and (empty_truth & empty_pred).sum() == 5
    assert (got[empty_truth & ~empty_pred] == 0.0).all() and (empty_truth & ~empty_pred).sum() == 5
    assert (got[~empty_truth & empty_pred] == 0.0).all()


@pytest.mark.parametrize("ours, metric_cls", [(dice_score, DiceMetric), (iou_score, MeanIoU)])
def test_monai_default_ignores_empty_truth_where_geoseg_scores_it(ours, metric_cls):
    pred, truth = random_cases(seed=1)
    monai = monai_scores(metric_cls, pred, truth, ignore_empty=True)
    got = ours(pred, truth)
    empty_truth = ~truth.any((1, 2))
    assert np.isnan(monai[empty_truth]).all() and not np.isnan(got).any()
    assert np.allclose(got[~empty_truth], monai[~empty_truth], atol=1e-6)
    # so a mean over slices with MONAI's default hides false positives on empty slices
    assert np.nanmean(monai) > got.mean()


def test_single_pair_floats_and_shape_errors():
    t = np.zeros((8, 8), bool)
    t[2:6, 2:6] = True
    assert dice_score(t, t) == 1.0 and iou_score(t, t) == 1.0
    assert isinstance(dice_score(t, t), float)
    assert dice_score(np.zeros_like(t), t) == 0.0
    with pytest.raises(ValueError, match="differs"):
        dice_score(t, t[:4])


def test_class_scores_per_class():
    truth = np.zeros((2, 8, 8), int)
    truth[:, :4] = 1
    truth[:, 6:] = 2
    pred = truth.copy()
    pred[1, 6:] = 1  # class 2 missed in image 1 (predicted as 1)
    s = class_scores(pred, truth, 3)
    assert s.shape == (2, 2)
    assert np.allclose(s[0], [1, 1]) and s[1, 1] == 0.0 and 0 < s[1, 0] < 1
    assert class_scores(pred, truth, 3, include_background=True).shape == (2, 3)
    y_pred = torch.nn.functional.one_hot(torch.from_numpy(pred), 3).permute(0, 3, 1, 2)
    y = torch.nn.functional.one_hot(torch.from_numpy(truth), 3).permute(0, 3, 1, 2)
    monai = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(y_pred, y).numpy()
    assert np.allclose(s, monai)
    iou = class_scores(pred, truth, 3, metric="iou")
    assert np.allclose(
        iou, MeanIoU(include_background=False, reduction="none", ignore_empty=False)(y_pred, y)
    )


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("smooth", [1e-5, 1.0])
def test_soft_dice_matches_monai_softmax(include_background, per_image, smooth):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 12, 12, generator=g)
    target = torch.randint(0, 3, (4, 12, 12), generator=g)
    target[0] = 0  # an image without foreground
    ours = soft_dice_loss(logits, target, include_background=include_background, per_image=per_image,
                          smooth_nr=smooth, smooth_dr=smooth)  # fmt: skip
    ref = DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True, batch=not per_image,
                   smooth_nr=smooth, smooth_dr=smooth)(logits, target[:, None])  # fmt: skip
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("per_image", [True, False])
def test_soft_dice_matches_monai_sigmoid(per_image):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 10, 10, generator=g)
    target = (torch.rand(3, 10, 10, generator=g) < 0.3).long()
    ours = soft_dice_loss(logits, target, per_image=per_image)
    ref = DiceLoss(sigmoid=True, batch=not per_image)(logits, target[:, None].float())
    assert torch.allclose(ours, ref, atol=1e-6)


def test_loss_has_gradients_and_vanishes_on_a_perfect_prediction():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 2, (2, 16, 16), generator=g)
    logits = torch.randn(2, 2, 16, 16, generator=g, requires_grad=True)
    loss = dice_ce_loss(logits, target, include_background=False, per_image=False)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    perfect = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 40 - 20
    assert float(soft_dice_loss(perfect, target)) < 1e-4
    assert float(dice_ce_loss(perfect, target)) < 1e-4
    wrong = -perfect
    assert float(soft_dice_loss(wrong, target)) > 0.99
    one = target[:, None].float() * 40 - 20
    assert float(dice_ce_loss(one, target)) < 1e-4  # one channel: sigmoid + BCE


def test_dice_ce_matches_monai():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 2, 12, 12, generator=g)
    target = torch.randint(0, 2, (3, 12, 12), generator=g)
    ours = dice_ce_loss(logits, target, include_background=True, per_image=True)
    ref = DiceCELoss(to_onehot_y=True, softmax=True)(logits, target[:, None])
    assert torch.allclose(ours, ref, atol=1e-6)
    ours_w = dice_ce_loss(logits, target, dice_weight=0.3, ce_weight=2.0)
    ref_w = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.3, lambda_ce=2.0)(
        logits, target[:, None]
    )
    assert torch.allclose(ours_w, ref_w, atol=1e-6)
