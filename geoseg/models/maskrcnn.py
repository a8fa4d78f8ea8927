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
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from geoseg.checkpoint import register_architecture
from geoseg.models.base import TorchSegmenter, checkpoint_kwargs

#: torchvision's anchor aspect ratios (height / width), used when a config names none
DEFAULT_ANCHOR_RATIOS = [0.5, 1.0, 2.0]
#: anchor sizes per FPN level (torchvision's defaults)
ANCHOR_SIZES = (32, 64, 128, 256, 512)

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
    """A torchvision Mask R-CNN behind the segmenter contract (instance task)."""

    def __init__(self, module: MaskRCNN, *, classes: Sequence[str], in_channels: int, **kwargs) -> None:
        # no stride alignment: torchvision pads each image itself, and instances are merged anyway
        super().__init__(module, task="instance", classes=classes, in_channels=in_channels, **kwargs)

    def forward(self, x: torch.Tensor) -> list[dict]:
        no_resize(self.module, x.shape[-2], x.shape[-1])
        out = self.module(list(x))
        return [
            {
                "boxes": o["boxes"].cpu().numpy(),
                "scores": o["scores"].cpu().numpy(),
                "labels": o["labels"].cpu().numpy(),
                "masks": o["masks"][:, 0].cpu().numpy(),
            }
            for o in out
        ]


@register_architecture("maskrcnn")
def _load(meta: dict, state: dict[str, torch.Tensor]) -> MaskRCNNSegmenter:
    # a checkpoint whose config names no anchors or mask size was trained with torchvision's
    config = {"anchor_ratios": DEFAULT_ANCHOR_RATIOS, "mask_roi_size": 14, **meta["config"]}
    module = build_maskrcnn(config, in_channels=meta["in_channels"], num_classes=len(meta["classes"]))
    module.load_state_dict(state)
    return MaskRCNNSegmenter(module, **checkpoint_kwargs(meta))


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
