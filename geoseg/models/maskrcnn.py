"""Mask R-CNN (torchvision) as a geoseg instance segmenter.

Two configurations: ``resnet50`` with a 256-channel FPN (torchvision's standard model; it can start
from torchvision's COCO weights where a network allows) and a light ``resnet18`` with a 64-channel
FPN and slim heads that trains from scratch on a CPU. Normalisation is geoseg's (per band, stored
in the checkpoint); torchvision's own transform is set to identity and never resizes a tile.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign, masks_to_boxes
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from geoseg.models.base import TorchSegmenter, checkpoint_kwargs
from geoseg.models.checkpoint import register_architecture

#: torchvision's anchor aspect ratios (height / width), used when a config names none
DEFAULT_ANCHOR_RATIOS = [0.5, 1.0, 2.0]
#: anchor sizes per FPN level (torchvision's defaults)
ANCHOR_SIZES = (32, 64, 128, 256, 512)
#: the measures of a Mask R-CNN's objects unless its checkpoint says otherwise (``measures``)
SHIP_MEASURES = ("ship",)

#: named configurations; any key can be overridden in a checkpoint's config
CONFIGS = {
    "light": {
        "backbone": "resnet18",
        "fpn_channels": 64,
        "representation_size": 256,
        "mask_channels": 64,
        "mask_layers": 4,
        "detections_per_img": 100,
        # tankers are 5-7 times longer than wide: anchors as elongated as their boxes
        "anchor_ratios": [0.25, 0.5, 1.0, 2.0, 4.0],
        # masks of 56 x 56 per box: hulls side by side a few pixels apart stay apart
        "mask_roi_size": 28,
    },
    "resnet50": {
        "backbone": "resnet50",
        "fpn_channels": 256,
        "representation_size": 1024,
        "mask_channels": 256,
        "mask_layers": 4,
        "detections_per_img": 100,
    },
}


def build_maskrcnn(config: dict, *, in_channels: int, num_classes: int, pretrained: bool = False) -> MaskRCNN:
    """Build a torchvision Mask R-CNN from a config dict (see :data:`CONFIGS`).

    ``pretrained`` loads torchvision's COCO weights for the ``resnet50`` configuration (this
    downloads them once; geoseg never does so unless asked).
    """
    cfg = {**CONFIGS.get(config.get("name", "light"), CONFIGS["light"]), **config}
    if pretrained:
        if cfg["backbone"] != "resnet50" or in_channels != 3:
            raise ValueError("pretrained weights exist only for resnet50 with 3 bands")
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights, maskrcnn_resnet50_fpn

        model = maskrcnn_resnet50_fpn(weights=MaskRCNN_ResNet50_FPN_Weights.DEFAULT)
        in_features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, num_classes)
    else:
        body = getattr(resnet, cfg["backbone"])(weights=None, norm_layer=nn.BatchNorm2d)
        if in_channels != 3:
            body.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        widths = (
            [64, 128, 256, 512] if cfg["backbone"] in ("resnet18", "resnet34") else [256, 512, 1024, 2048]
        )
        backbone = BackboneWithFPN(
            body,
            return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
            in_channels_list=widths,
            out_channels=cfg["fpn_channels"],
            extra_blocks=LastLevelMaxPool(),
        )
        c, rep = cfg["fpn_channels"], cfg["representation_size"]
        ratios = tuple(float(r) for r in cfg.get("anchor_ratios", DEFAULT_ANCHOR_RATIOS))
        anchors = AnchorGenerator(tuple((s,) for s in ANCHOR_SIZES), (ratios,) * len(ANCHOR_SIZES))
        model = MaskRCNN(
            backbone,
            num_classes=None,
            rpn_anchor_generator=anchors,
            # the mask head sees the RoI at this size and predicts masks twice as fine; a long hull
            # in an axis-aligned box needs more than torchvision's 14 (28) for its beam
            mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], int(cfg.get("mask_roi_size", 14)), 2),
            box_head=TwoMLPHead(c * 7 * 7, rep),
            box_predictor=FastRCNNPredictor(rep, num_classes),
            mask_head=MaskRCNNHeads(c, [cfg["mask_channels"]] * cfg["mask_layers"], 1),
            mask_predictor=MaskRCNNPredictor(cfg["mask_channels"], cfg["mask_channels"], num_classes),
            image_mean=[0.0] * in_channels,
            image_std=[1.0] * in_channels,
            box_detections_per_img=cfg["detections_per_img"],
        )
    model.transform.image_mean = [0.0] * in_channels
    model.transform.image_std = [1.0] * in_channels
    return model


def no_resize(model: MaskRCNN, height: int, width: int) -> None:
    """Make torchvision's transform keep ``height x width`` images at their size."""
    model.transform.min_size = (min(height, width),)
    model.transform.max_size = max(height, width)


def instance_target(masks: np.ndarray) -> dict:
    """torchvision's training target for instance masks (K, H, W): boxes, labels (1) and masks."""
    boxes = []
    for m in masks:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(masks), dtype=torch.int64),
        "masks": torch.from_numpy(np.ascontiguousarray(masks)),
    }


class MaskRCNNSegmenter(TorchSegmenter):
    """A torchvision Mask R-CNN behind the segmenter contract (instance task).

    With ``rotated_view`` each tile is also seen turned by 45 degrees, and every object is taken
    from the view in which it lies closer to the image axes (see :func:`rotated_views`). A
    detector's boxes are axis-aligned: a hull lying diagonally has a box that also holds its
    neighbours in an anchorage, and their masks run together. Turned by 45 degrees, the same hulls
    have tight boxes. Only tiles with a diagonal, elongated detection are turned, and a turned tile
    costs about twice a straight one.

    ``measures`` names the measure sets its objects get (see :mod:`geoseg.models.segmenter`): ship
    length, beam and heading unless told otherwise, since geoseg's Mask R-CNN finds tankers.
    """

    def __init__(
        self, module: MaskRCNN, *, classes: Sequence[str], in_channels: int, rotated_view: bool = False,
        measures: Sequence[str] = SHIP_MEASURES, **kwargs,
    ) -> None:  # fmt: skip
        # no stride alignment: torchvision pads each image itself, and instances are merged anyway
        super().__init__(module, task="instance", classes=classes, in_channels=in_channels, **kwargs)
        self.rotated_view = bool(rotated_view)
        self.measures = tuple(measures)

    @torch.inference_mode()
    def predict(self, tiles: np.ndarray, *, rotated_view: bool | None = None) -> list[dict]:
        """Predictions for ``tiles``; ``rotated_view`` None: this model's own setting."""
        x = self.normalize(tiles)
        if rotated_view if rotated_view is not None else self.rotated_view:
            return [_to_numpy(o) for o in rotated_views(self._run, x)]
        return [_to_numpy(o) for o in self._run(x)]

    def _run(self, x: torch.Tensor) -> list[dict]:
        no_resize(self.module, x.shape[-2], x.shape[-1])
        return self.module(list(x))


def _to_numpy(o: dict) -> dict:
    return {
        "boxes": o["boxes"].cpu().numpy(),
        "scores": o["scores"].cpu().numpy(),
        "labels": o["labels"].cpu().numpy(),
        "masks": o["masks"][:, 0].cpu().numpy(),
    }


def _turn_grid(src: tuple[int, int], dst: tuple[int, int], degrees: float, device) -> torch.Tensor:
    """A ``grid_sample`` grid that fills a ``dst`` image from a ``src`` image turned by ``degrees``
    about the two images' centres (pixel centres at integer positions)."""
    (sh, sw), (dh, dw) = src, dst
    a = np.radians(degrees)
    cos, sin = float(np.cos(a)), float(np.sin(a))
    ys, xs = torch.meshgrid(
        torch.arange(dh, dtype=torch.float32, device=device) - (dh - 1) / 2,
        torch.arange(dw, dtype=torch.float32, device=device) - (dw - 1) / 2,
        indexing="ij",
    )
    # the source point of each destination pixel: the inverse turn
    sx = cos * xs + sin * ys + (sw - 1) / 2
    sy = -sin * xs + cos * ys + (sh - 1) / 2
    # grid_sample's coordinates (align_corners=False): -1 and 1 are the outer pixel edges
    return torch.stack([(2 * sx + 1) / sw - 1, (2 * sy + 1) / sh - 1], dim=-1)[None]


def _axis_deviation(masks: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask (K, H, W): the angle in degrees between its long axis and the nearer image axis
    (0 to 45), from second moments, and its elongation (long / short axis of the moment ellipse)."""
    k, h, w = masks.shape
    if k == 0:
        return torch.zeros(0, device=masks.device), torch.zeros(0, device=masks.device)
    m = (masks >= threshold).float()
    ys = torch.arange(h, dtype=torch.float32, device=masks.device).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32, device=masks.device).view(1, 1, w)
    n = m.sum((1, 2)).clamp(min=1)
    cy, cx = (m * ys).sum((1, 2)) / n, (m * xs).sum((1, 2)) / n
    dy, dx = ys - cy.view(-1, 1, 1), xs - cx.view(-1, 1, 1)
    mxx, myy, mxy = (
        (m * dx * dx).sum((1, 2)) / n,
        (m * dy * dy).sum((1, 2)) / n,
        (m * dx * dy).sum((1, 2)) / n,
    )
    theta = torch.rad2deg(0.5 * torch.atan2(2 * mxy, mxx - myy)) % 90
    deviation = torch.minimum(theta, 90 - theta)
    half = torch.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    big, small = (mxx + myy) / 2 + half, ((mxx + myy) / 2 - half).clamp(min=1e-6)
    return deviation, torch.sqrt(big / small)


#: an object is taken from a view where its axis lies within this many degrees of the image axes;
#: over 22.5 so that objects near the bisector are in both views (the duplicate is dropped later)
VIEW_TOLERANCE = 27.5
#: masks less elongated than this have no meaningful axis: the straight view keeps them
MIN_ELONGATION = 1.5


def rotated_views(run, x: torch.Tensor, *, every_tile: bool = False) -> list[dict]:
    """Run the detector ``run`` on tiles ``x`` (B, C, H, W) as they are and turned by 45 degrees;
    keep each object from the view in which its axis lies closer to the image axes.

    The turned view is a canvas large enough to hold the whole turned tile; outside the tile it
    holds the tile's median per band. Its masks are turned back onto the tile and their boxes
    measured again. Objects near the 22.5 degree bisector come from both views; the within-tile
    fragment suppression downstream keeps the better one.

    Only tiles whose straight view found an elongated object lying diagonally (one the straight
    view does not keep) are turned and run again: a tile of open sea, or of hulls along the image
    axes, costs one view, not three (the turned canvas has twice a tile's pixels).
    ``every_tile`` turns every tile, for comparison.
    """
    straights = run(x)
    keeps, need = [], []
    for i, straight in enumerate(straights):
        dev, elong = _axis_deviation(straight["masks"][:, 0])
        keep_s = (dev <= VIEW_TOLERANCE) | (elong < MIN_ELONGATION)
        keeps.append(keep_s)
        if every_tile or not bool(keep_s.all()):
            need.append(i)
    others = dict(zip(need, _turned_run(run, x[need]) if need else [], strict=True))
    out = []
    for i, (straight, keep_s) in enumerate(zip(straights, keeps, strict=True)):
        merged = {k: straight[k][keep_s] for k in ("boxes", "scores", "labels", "masks")}
        if i in others:
            merged = {k: torch.cat([v, others[i][k]]) for k, v in merged.items()}
        order = torch.argsort(merged["scores"], descending=True)
        out.append({k: v[order] for k, v in merged.items()})
    return out


def _turned_run(run, x: torch.Tensor) -> list[dict]:
    """The detections of ``run`` on tiles ``x`` turned by 45 degrees that lie close to the turned
    view's axes, turned back onto the tiles (boxes measured again on the turned-back masks)."""
    b, c, h, w = x.shape
    side = int(np.ceil((h + w) / np.sqrt(2)))
    grid_in = _turn_grid((h, w), (side, side), 45.0, x.device)
    grid_out = _turn_grid((side, side), (h, w), -45.0, x.device)
    inside = torch.nn.functional.grid_sample(
        torch.ones(1, 1, h, w, device=x.device),
        grid_in,
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )[0]
    fill = x.flatten(2).median(dim=2).values.view(b, c, 1, 1)
    turned = torch.nn.functional.grid_sample(
        x, grid_in.expand(b, -1, -1, -1), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    turned = turned * inside + fill * (1 - inside)
    out = []
    for other in run(turned):
        dev, elong = _axis_deviation(other["masks"][:, 0])
        keep_t = torch.nonzero((dev <= VIEW_TOLERANCE) & (elong >= MIN_ELONGATION)).flatten()
        back = torch.nn.functional.grid_sample(
            other["masks"][keep_t], grid_out.expand(len(keep_t), -1, -1, -1), mode="bilinear",
            padding_mode="zeros", align_corners=False,
        )  # fmt: skip
        on = back[:, 0] > 0.05
        found = on.flatten(1).any(1)
        back, keep_t = back[found], keep_t[found]
        # masks_to_boxes gives the last pixel's index; boxes end one past it
        boxes = masks_to_boxes(on[found]) + torch.tensor([0.0, 0.0, 1.0, 1.0], device=x.device)
        out.append({"boxes": boxes, "scores": other["scores"][keep_t], "labels": other["labels"][keep_t],
                    "masks": back})  # fmt: skip
    return out


@register_architecture("maskrcnn")
def _load(meta: dict, state: dict[str, torch.Tensor]) -> MaskRCNNSegmenter:
    # a checkpoint whose config names no anchors or mask size was trained with torchvision's
    config = {"anchor_ratios": DEFAULT_ANCHOR_RATIOS, "mask_roi_size": 14, **meta["config"]}
    module = build_maskrcnn(config, in_channels=meta["in_channels"], num_classes=len(meta["classes"]))
    module.load_state_dict(state)
    return MaskRCNNSegmenter(
        module,
        rotated_view=bool(meta.get("rotated_view", False)),
        # checkpoints made before the key existed are tanker models: they keep ship measures
        measures=meta.get("measures", SHIP_MEASURES),
        **checkpoint_kwargs(meta),
    )


def random_init(
    config: str = "light",
    in_channels: int = 3,
    classes: Sequence[str] = ("background", "tanker"),
    seed: int = 0,
) -> MaskRCNNSegmenter:
    """An untrained Mask R-CNN (``--model geoseg.models.maskrcnn:random_init``), for timing."""
    torch.manual_seed(seed)
    module = build_maskrcnn({"name": config}, in_channels=in_channels, num_classes=len(classes))
    return MaskRCNNSegmenter(
        module, classes=classes, in_channels=in_channels, mean=[128.0] * in_channels, std=[64.0] * in_channels
    )
