"""Training a U-Net on image/mask pairs: random crops with flips, small rotations and scalings,
intensity jitter and, optionally, streak artefacts; Dice + cross-entropy, AdamW on a one-cycle
schedule, validation Dice on whole slices after every epoch (:func:`geoseg.evaluation.dice.dice_score`,
empty slices included) of the predictions as ``geoseg predict`` delivers them with the checkpoint's
defaults (minimum area, region completion), best checkpoint kept. Seeded: the same data, seed and
machine give the same weights and metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.errors import GeosegError
from geoseg.evaluation.dice import class_scores
from geoseg.inference.complete import complete_labels
from geoseg.inference.complete import settings as completion_settings
from geoseg.io.fingerprints import arrays_fingerprint
from geoseg.io.slices import air_offset
from geoseg.io.slices import load_pairs as slices_load_pairs
from geoseg.models.unet import UNet, apply_window
from geoseg.training.loop import Fit, start_from, training_record
from geoseg.training.losses import dice_ce_loss

Pair = tuple[str, np.ndarray, np.ndarray]  # id, image float32 (C, H, W), mask uint8 (H, W)


@dataclass
class UNetTrainOptions:
    epochs: int = 20
    batch_size: int = 8
    tile: int = 256  # training crop size; also the tile size recorded for inference
    depth: int = 4
    base_width: int = 12
    down: str = "maxpool"
    up: str = "transpose"
    norm: str = "batch"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    window: tuple[float, float] | None = None  # (center, width) applied to raw values
    classes: tuple[str, ...] = ("background", "lung")
    seed: int = 0
    val_fraction: float = 0.15  # share of the training pairs held out when no validation folders
    augment: bool = True
    strong_augment: bool = False  # wider geometry and intensity, blur/sharpen, noise spectra (see _crop)
    streaks: float = 0.0  # share of training crops given synthetic streak artefacts
    class_intensity: float = 0.0  # share of crops whose classes get another density and texture
    class_shift: tuple[float, float] = (-200.0, 50.0)  # its density range: raw units through the window
    class_floor: float | None = None  # the class's median never shifted below this (raw units)
    complete: tuple[float, float] | None = None  # recorded: (below, body_above) completion of each class
    gas_below: float | None = None  # recorded with complete: regions of a median under it are not the class
    min_area: float = 0.0  # recorded: predictions drop regions under this many pixels by default
    spacing: float | None = None  # recorded as spacing_mm: slices at another spacing are resampled to it
    calibrate_air: float | None = None  # HU the air outside the body is shifted to (recorded: radiometry)
    init: str | None = None  # a geoseg U-Net checkpoint to start from (fine-tuning)
    extra: dict = field(default_factory=dict)  # recorded in the checkpoint's training section


def load_pairs(images_dir: str, masks_dir: str) -> list[Pair]:
    """Image/mask pairs (every slice format geoseg reads: :func:`geoseg.io.slices.load_pairs`).
    A folder written as evaluation-only data (``geoseg synth lungs --family b``: its ``lungs.json``
    beside or above it says ``"evaluation_only": true``) is refused."""
    for folder in (Path(images_dir), Path(images_dir).parent):
        index = folder / "lungs.json"
        if index.is_file():
            try:
                held_out = json.loads(index.read_text()).get("evaluation_only") is True
            except (ValueError, AttributeError):
                held_out = False
            if held_out:
                raise GeosegError(f"folder '{images_dir}': is evaluation-only data ({index} says so); "
                                  "models are never trained or selected on it")  # fmt: skip
            break
    return list(slices_load_pairs(images_dir, masks_dir))


def labels_of(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Class labels of a mask: for two classes any non-zero value is the foreground (masks stored as
    0/255 work); otherwise values are class indices."""
    if num_classes <= 2:
        return (mask > 0).astype(np.int64)
    if mask.max() >= num_classes:
        raise GeosegError(f"mask holds value {int(mask.max())} but there are only {num_classes} classes")
    return mask.astype(np.int64)


def calibrate_pairs(pairs: list[Pair], air: float) -> list[Pair]:
    """The pairs with each image shifted so that the air outside the body reads ``air`` (HU), as
    ``geoseg predict`` calibrates slices for a checkpoint trained so
    (:func:`~geoseg.io.slices.air_offset`)."""
    return [(i, x + air_offset(x, air).astype(np.float32)[:, None, None], m) for i, x, m in pairs]


def data_fingerprint(pairs: list[Pair]) -> str:
    """A short hash of the training data itself (ids, pixels and masks)."""
    return arrays_fingerprint(pairs)


def _prepare(pairs: list[Pair], window, mean=None, std=None):
    """Windowed images (float32) and their per-band mean/std (computed here when not given)."""
    images = [apply_window(p[1], *window) if window else p[1] for p in pairs]
    if mean is None:
        flat = np.concatenate([im.reshape(im.shape[0], -1) for im in images], axis=1)
        mean = np.nanmean(flat, axis=1).tolist()
        std = np.maximum(np.nanstd(flat, axis=1), 1e-3).tolist()
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    images = [np.nan_to_num((im - m) / s).astype(np.float32) for im in images]
    return images, mean, std


def _line_artefacts(size: int, rng: np.random.Generator, strong: bool = False) -> torch.Tensor:
    """A few bright and dark lines through one point, like CT streak artefacts (normalised units);
    ``strong``: more of them, up to twice as bright, some broad (bands a few pixels wide)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(0, size, 2)
    out = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 12 if strong else 6))):
        t = rng.uniform(0, np.pi)
        d = np.abs((xx - cx) * np.sin(t) - (yy - cy) * np.cos(t))
        amp = rng.uniform(0.1, 1.2 if strong else 0.6) * (1 if rng.random() < 0.5 else -1)
        width = rng.uniform(0.6, 6.0) if strong and rng.random() < 0.3 else rng.uniform(0.6, 1.6)
        out += amp * np.exp(-0.5 * (d / width) ** 2)
    return torch.from_numpy(out)[None]


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur over the last two axes."""
    from scipy import ndimage

    sigmas = (0,) * (x.ndim - 2) + (sigma, sigma)
    return torch.from_numpy(ndimage.gaussian_filter(x.numpy(), sigmas, mode="nearest"))


def _gain_offset(x: torch.Tensor, rng, gain: tuple[float, float], offset: float, anchor) -> torch.Tensor:
    """A random gain (about ``anchor``, or about 0) and offset (up to ``offset``; none with an
    anchor, whose value stays put: the calibrated air of CT slices)."""
    if anchor is None:
        return x * rng.uniform(*gain) + rng.uniform(-offset, offset)
    return anchor + (x - anchor) * rng.uniform(*gain)


def _strong_intensity(x: torch.Tensor, rng: np.random.Generator, anchor=None) -> torch.Tensor:
    """Scanner and reconstruction differences on a normalised crop: gain and offset, blur or a sharp
    kernel's overshoot, and noise that is white or correlated over a few pixels. With ``anchor``
    (per band, normalised), gain keeps that value where it is and there is no offset."""
    x = _gain_offset(x, rng, (0.85, 1.2), 0.3, anchor)
    r = rng.random()
    if r < 0.3:
        x = _blur(x, rng.uniform(0.5, 1.5))
    elif r < 0.5:
        x = x + rng.uniform(0.3, 1.0) * (x - _blur(x, 1.2))
    noise = torch.from_numpy(rng.normal(0, 1, x.shape).astype(np.float32))
    if rng.random() < 0.5:
        noise = _blur(noise, rng.uniform(0.7, 2.0))
        noise = noise / noise.std().clamp_min(1e-6)
    return x + noise * rng.uniform(0, 0.15)


def _class_intensity(
    x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, shift: tuple[float, float],
    floor: torch.Tensor, median_floor: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """The crop's foreground (every class) given another density and texture, the way organs differ
    between patients (lungs from emphysema to poorly aerated, with few or many vessels): in half
    the crops its texture is pulled towards its median (by 50-100 %, with the holes under 150
    pixels its mask leaves, such as vessels), then it is shifted by a draw from ``shift``
    (normalised units). Edges are soft (a 1-pixel Gaussian, like
    partial volume), and nothing gets darker than ``floor`` (per band: the image's darkest value,
    air in CT). ``median_floor`` (per band) bounds the shift instead: the class's median does not
    go below it, so a lung made as dark as emphysema keeps its noise and texture above air, where
    clipping at ``floor`` would turn it into a uniform air-filled region (bowel gas, trachea)."""
    from scipy import ndimage

    fg = (y > 0).numpy()
    if not fg.any():
        return x
    holes, n = ndimage.label(ndimage.binary_fill_holes(fg) & ~fg)
    if n:  # vessels and nodules the class's mask leaves out change with it; larger holes (organs) do not
        small = np.bincount(holes.ravel()) < 150
        small[0] = False
        fg = fg | small[holes]
    fg = torch.from_numpy(fg)
    weight = _blur(fg[None].float(), 1.0)
    flatten = rng.random() < 0.5
    if flatten or median_floor is not None:
        level = torch.stack([band[fg].median() for band in x])[:, None, None]
    if flatten:
        x = x + weight * rng.uniform(0.5, 1.0) * (level - x)
    delta = float(rng.uniform(*shift))
    if median_floor is not None:  # the median goes down by at most its distance above the floor
        room = (median_floor[:, None, None] - level).clamp(max=0.0)
        delta = torch.maximum(torch.full_like(level, delta), room)
    x = x + weight * delta
    return torch.maximum(x, floor[:, None, None])


def _crop(
    image: torch.Tensor,
    label: torch.Tensor,
    tile: int,
    rng: np.random.Generator,
    augment: bool,
    streaks: float = 0.0,
    strong: bool = False,
    intensity: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    floor: torch.Tensor | None = None,
    median_floor: torch.Tensor | None = None,
    anchor: torch.Tensor | None = None,
):
    """One ``tile x tile`` training crop, rotated/scaled/flipped when ``augment``; with probability
    ``streaks`` it also gets synthetic streak artefacts (which are never the class). ``strong``
    widens rotation (+-20 degrees) and scale (0.75-1.3) and adds :func:`_strong_intensity`. With
    probability ``intensity`` its classes get another density and texture
    (:func:`_class_intensity`, ``shift``, ``floor`` and ``median_floor``). ``anchor`` (per band,
    normalised units: the air of calibrated CT slices) is a value intensity changes leave in place:
    gain is applied about it and no offset is added, so the calibration the slices got is kept."""
    _, h, w = image.shape
    half = tile / 2
    cx = rng.uniform(min(half, w / 2), max(w - half, w / 2))
    cy = rng.uniform(min(half, h / 2), max(h - half, h / 2))
    if augment:
        turn, zoom = (20, (0.75, 1.3)) if strong else (12, (0.85, 1.15))
        angle, scale = math.radians(rng.uniform(-turn, turn)), rng.uniform(*zoom)
        flip = -1.0 if rng.random() < 0.5 else 1.0
    else:
        angle, scale, flip = 0.0, 1.0, 1.0
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    # output pixel offsets -> input pixel offsets, then into grid_sample's normalised coordinates
    theta = torch.tensor(
        [
            [c * flip * tile / w, -s * tile / w, 2 * cx / w - 1],
            [s * flip * tile / h, c * tile / h, 2 * cy / h - 1],
        ],
        dtype=torch.float32,
    )[None]
    grid = F.affine_grid(theta, [1, 1, tile, tile], align_corners=False)
    x = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    y = F.grid_sample(
        label[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    y = y[0, 0].long()
    if augment:
        if intensity > 0 and rng.random() < intensity:
            x = _class_intensity(
                x, y, rng, shift, image.amin(dim=(1, 2)) if floor is None else floor, median_floor
            )
        if strong:
            x = _strong_intensity(x, rng, anchor)
        else:
            x = _gain_offset(x, rng, (0.9, 1.1), 0.1, anchor)
            x = x + torch.from_numpy(rng.normal(0, rng.uniform(0, 0.05), x.shape).astype(np.float32))
        if streaks > 0 and rng.random() < streaks:
            x = x + _line_artefacts(tile, rng, strong)
    return x, y


def _pad_to(x: np.ndarray, stride: int) -> np.ndarray:
    h, w = x.shape[-2:]
    ph, pw = -h % stride, -w % stride
    if not (ph or pw):
        return x
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)])


@torch.inference_mode()
def predict_labels(model: UNet, image: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Class labels ``(H, W)`` of one normalised image ``(C, H, W)`` (padded to the stride inside)."""
    h, w = image.shape[-2:]
    x = torch.from_numpy(_pad_to(image, model.stride))[None].to(device)
    logits = model(x)[0, :, :h, :w]
    if logits.shape[0] == 1:
        return (logits[0] > 0).long().cpu().numpy()
    return logits.argmax(0).cpu().numpy()


def as_predicted(pred: np.ndarray, min_area: float = 0.0, completion: dict | None = None,
                 values: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Class labels as ``geoseg predict`` delivers them with a checkpoint's defaults: regions
    (4-connected, per class) under ``min_area`` pixels dropped, then ``completion`` (class index ->
    its settings, :func:`geoseg.inference.complete.complete_labels`) over the raw ``values``."""
    from scipy import ndimage

    if min_area > 0:
        pred = pred.copy()
        for label in np.unique(pred[pred > 0]):
            regions, n = ndimage.label(pred == label)
            small = np.bincount(regions.ravel()) < min_area
            small[0] = False
            pred[small[regions]] = 0
    if completion and values is not None:
        pred = complete_labels(pred, values, completion)
    return pred


def validate(model: UNet, images: list[np.ndarray], labels: list[np.ndarray], ids: list[str],
             num_classes: int, device: str = "cpu", *, min_area: float = 0.0, completion: dict | None = None,
             raw: list[np.ndarray] | None = None) -> dict:  # fmt: skip
    """Per-slice Dice (mean over the foreground classes, empty-mask convention of
    :mod:`geoseg.evaluation.dice`) summarised as mean, worst and the worst slice's id; mean IoU too.
    The predictions are scored as delivered (:func:`as_predicted`: ``min_area``, and ``completion``
    over each slice's first band of ``raw``)."""
    model.eval()
    classes = max(num_classes, 2)
    dices, ious = [], []
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        pred = predict_labels(model, image, device)
        pred = as_predicted(pred, min_area, completion, raw[k][0] if raw is not None else None)
        dices.append(float(class_scores(pred, label, classes).mean()))
        ious.append(float(class_scores(pred, label, classes, metric="iou").mean()))
    worst = int(np.argmin(dices))
    return {
        "mean_dice": round(float(np.mean(dices)), 5),
        "worst_dice": round(dices[worst], 5),
        "worst_id": ids[worst],
        "mean_iou": round(float(np.mean(ious)), 5),
        "val_slices": len(dices),
    }


def train_unet(
    images_dir: str,
    masks_dir: str,
    output: str,
    opts: UNetTrainOptions,
    *,
    val_images: str | None = None,
    val_masks: str | None = None,
    command: str | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Train, validate after every epoch and keep the best checkpoint (by mean validation Dice, then
    worst-slice Dice) at ``output``. Returns the metrics of the kept checkpoint."""
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pairs = load_pairs(images_dir, masks_dir)
    if val_images:
        val_pairs = load_pairs(val_images, val_masks)
    else:
        n_val = max(1, int(round(len(pairs) * opts.val_fraction)))
        if len(pairs) - n_val < 1:
            raise GeosegError(f"folder '{images_dir}': {len(pairs)} pair(s) are too few to hold some out")
        order = np.random.default_rng(opts.seed + 1).permutation(len(pairs))
        val_pairs = [pairs[i] for i in sorted(order[:n_val])]
        pairs = [pairs[i] for i in sorted(order[n_val:])]
    if opts.calibrate_air is not None:  # as geoseg predict will see slices (checkpoint radiometry)
        pairs, val_pairs = (
            calibrate_pairs(pairs, opts.calibrate_air),
            calibrate_pairs(val_pairs, opts.calibrate_air),
        )
    channels = {p[1].shape[0] for p in pairs + val_pairs}
    if len(channels) != 1:
        raise GeosegError(f"folder '{images_dir}': images have different band counts {sorted(channels)}")
    in_channels = channels.pop()
    n_out = len(opts.classes)

    start = start_from(opts.init, "unet", in_channels, n_out) if opts.init else None
    window = opts.window
    if start:  # a fine-tuned model keeps its checkpoint's window, normalisation and layout
        norm = start["meta"]["normalization"]
        window = (norm["window"]["center"], norm["window"]["width"]) if norm.get("window") else None
        train_x, mean, std = _prepare(pairs, window, norm["mean"], norm["std"])
    else:
        train_x, mean, std = _prepare(pairs, window)
    val_x, _, _ = _prepare(val_pairs, window, mean, std)
    train_y = [torch.from_numpy(labels_of(p[2], n_out)) for p in pairs]
    val_y = [labels_of(p[2], n_out) for p in val_pairs]
    train_x = [torch.from_numpy(x) for x in train_x]

    config = {"depth": opts.depth, "base_width": opts.base_width, "down": opts.down, "up": opts.up,
              "norm": opts.norm}  # fmt: skip
    if start:
        config, model = dict(start["meta"]["config"]), start["module"]
        if opts.tile % (2 ** config["depth"]):
            raise GeosegError(f"checkpoint '{opts.init}': its U-Net stride {2 ** config['depth']} does not "
                              f"divide the crop size {opts.tile}")  # fmt: skip
    else:
        model = UNet(in_channels, n_out, **config)
    model = model.to(device)
    fmt = torch.channels_last
    model = model.to(memory_format=fmt)
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(pairs) / opts.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        optim, max_lr=opts.lr, total_steps=opts.epochs * steps_per_epoch, pct_start=0.2
    )
    normalization: dict = {"mean": mean, "std": std}
    if window:
        normalization["window"] = {"center": float(window[0]), "width": float(window[1])}
    if opts.gas_below is not None and not opts.complete:
        raise GeosegError("--gas-below is a setting of region completion: give --complete as well")
    completion = opts.complete and {"below": float(opts.complete[0]), "body_above": float(opts.complete[1]),
                                    "overlap": 0.3}  # fmt: skip
    if completion and opts.gas_below is not None:
        completion["gas_below"] = float(opts.gas_below)
    meta = {
        "architecture": "unet",
        "config": config,
        "task": "semantic",
        "classes": list(opts.classes),
        "bands": list(range(1, in_channels + 1)),
        "in_channels": in_channels,
        "normalization": normalization,
        "tile_size": opts.tile,
        "overlap": opts.tile // 4,
        "min_area": float(opts.min_area),
        **({"complete": {c: completion for c in opts.classes[1:]}} if completion else {}),
        **({"spacing_mm": [float(opts.spacing)] * 2} if opts.spacing else {}),
        **(
            {"radiometry": {"statistic": "air", "reference": [float(opts.calibrate_air)]}}
            if opts.calibrate_air is not None
            else {}
        ),
        "training": training_record(
            command,
            data_fingerprint=data_fingerprint(pairs + val_pairs),
            seed=opts.seed,
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            tile=opts.tile,
            lr=opts.lr,
            augment=opts.augment,
            **({"strong_augment": True} if opts.strong_augment else {}),
            **({"init": start["record"]} if start else {}),
            streaks=opts.streaks,
            **(
                {
                    "class_intensity": opts.class_intensity,
                    "class_shift": list(opts.class_shift),
                    **({"class_floor": opts.class_floor} if opts.class_floor is not None else {}),
                }
                if opts.class_intensity
                else {}
            ),  # fmt: skip
            train_slices=len(pairs),
            val_slices=len(val_pairs),
            validated_as="predicted (min_area, complete)",
            loss="dice+ce (batch dice, foreground classes)",
            device=device,
            **opts.extra,
        ),  # fmt: skip
    }
    # class density shifts in normalised units: raw units (HU) through a window, else standard deviations
    scale = 1.0 / window[1] / float(np.mean(std)) if window else 1.0
    shift = (opts.class_shift[0] * scale, opts.class_shift[1] * scale)
    floors = [x.amin(dim=(1, 2)) for x in train_x]

    def normalised(value: float) -> torch.Tensor:  # raw units through the images' window and normalisation
        raw = np.full((in_channels, 1, 1), value, np.float32)
        return torch.from_numpy(_prepare([(None, raw, None)], window, mean, std)[0][0])

    median_floor = normalised(opts.class_floor)[:, 0, 0] if opts.class_floor is not None else None
    val_completion = completion_settings(meta, list(opts.classes))  # validated as geoseg predict delivers
    # intensity augmentation keeps the calibrated air where it is
    anchor = normalised(opts.calibrate_air) if opts.calibrate_air is not None else None
    fit = Fit(model, optim, sched, output=output, meta=meta, smoothing=0.1,
              score=lambda m: (m["mean_dice"], m["worst_dice"]))  # fmt: skip
    step = 0
    for epoch in range(1, opts.epochs + 1):
        model.train()
        order = rng.permutation(len(pairs))
        for b in range(steps_per_epoch):
            idx = order[b * opts.batch_size : (b + 1) * opts.batch_size]
            if len(idx) < opts.batch_size:  # keep batches full (BatchNorm statistics)
                idx = np.concatenate([idx, rng.integers(0, len(pairs), opts.batch_size - len(idx))])
            crops = [
                _crop(
                    train_x[i],
                    train_y[i],
                    opts.tile,
                    rng,
                    opts.augment,
                    opts.streaks,
                    opts.strong_augment,
                    opts.class_intensity,
                    shift,
                    floors[i],
                    median_floor,
                    anchor,
                )  # fmt: skip
                for i in idx
            ]
            x = torch.stack([c[0] for c in crops]).to(device).contiguous(memory_format=fmt)
            y = torch.stack([c[1] for c in crops]).to(device)
            fit.step(dice_ce_loss(model(x), y, include_background=False, per_image=False))
            step += 1
            if progress:
                progress(epoch, opts.epochs, {"loss": fit.loss_avg, "step": step})
        ids = [p[0] for p in val_pairs]
        metrics = validate(model, val_x, val_y, ids, n_out, device, min_area=opts.min_area,
                           completion=val_completion, raw=[p[1] for p in val_pairs])  # fmt: skip
        del metrics["val_slices"]
        metrics = fit.validated({**metrics, "epoch": epoch})
        if progress:
            progress(epoch, opts.epochs, {**metrics, "best_dice": fit.best["mean_dice"], "epoch_done": True})
    return fit.best
