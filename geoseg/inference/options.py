"""The options of a prediction, declared once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PredictOptions:
    """Knobs of :func:`predict_scene`. ``tile_size``/``overlap`` None: the model's own, else 512/64."""

    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    min_area: float | None = None  # pixels, on merged objects; None: the model's own (else 0)
    object_limits: bool = True  # drop objects outside the checkpoint's object_limits (sizes)
    # metres per pixel to read the scene at; None: the model's max_gsd, for scenes coarser than
    # that; 0: the scene's own grid
    gsd: float | None = None
    rotated_view: bool | None = None  # also see tiles turned 45 degrees; None: the model's setting
    # a part ending within this many pixels of a tile edge that cuts the scene may go on beyond it
    # (a soft mask often stops short of the edge): it counts as cut when a neighbouring tile sees
    # the object continue past that edge. None: a quarter of the overlap, at least 4
    edge_margin: int | None = None
    iou_threshold: float = 0.5
    ios_threshold: float = 0.5
    workers: int = 1
    # where the model runs: auto (a GPU where the worker has one), cpu, cuda or cuda:N
    device: str = "auto"
