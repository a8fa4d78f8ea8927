"""Training Mask R-CNN on labelled scenes: chips, augmentation, one-cycle SGD, validation F1,
best checkpoint kept. Seeded: the same data, seed and machine give the same metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from geoseg.evaluation.objects import match_greedy, precision_recall_f1
from geoseg.models.maskrcnn import (
    CONFIGS,
    SHIP_MEASURES,
    MaskRCNNSegmenter,
    build_maskrcnn,
    instance_target,
    no_resize,
)
from geoseg.training.chips import (
    augment,
    band_stats,
    chip_window,
    fingerprint,
    instance_targets,
    load_labelled,
    photometric,
    size_limits,
)
from geoseg.training.loop import Fit, start_from, training_record


@dataclass
class TrainOptions:
    config: str = "light"
    iterations: int = 1500
    batch_size: int = 4
    chip_size: int = 256
    lr: float = 0.02
    weight_decay: float = 1e-4
    val_every: int = 250
    val_chips: int = 48
    seed: int = 0
    classes: tuple[str, ...] = ("background", "tanker")
    pretrained: bool = False
    focus: float = 0.5  # share of chips centred on a labelled object; the rest are uniform
    hard_negatives: float = 0.0  # share of chips drawn from windows where the model saw false objects
    mining_chips: int = 32  # uniform windows scanned for false objects at each validation
    # recorded for inference: scenes coarser than max_gsd metres are resampled to it before the
    # model sees them; rotated_view turns on the 45-degree second view (see geoseg.models.maskrcnn)
    max_gsd: float | None = None
    rotated_view: bool = False
    solid: bool = True  # the classes have no holes: recorded as fill_holes
    match_radiometry: bool = False  # record the training scenes' band medians (see radiometry_record)
    strong_augment: bool = False  # photometric changes of most chips (see geoseg.training.chips.photometric)
    init: str | None = None  # a geoseg Mask R-CNN checkpoint to start from (fine-tuning)


def radiometry_record(scenes) -> dict:
    """The checkpoint's ``radiometry``: per band, the median over ``scenes`` (open
    :class:`~geoseg.io.scene.Scene` objects) of each one's
    :meth:`~geoseg.io.scene.Scene.band_medians`, which geoseg predict matches each scene to."""
    medians = np.stack([sc.band_medians() for sc in scenes])
    return {"statistic": "median", "reference": [round(float(v), 3) for v in np.nanmedian(medians, axis=0)]}


@dataclass
class HardNegatives:
    """Windows of training scenes in which the model, at its last check, found objects that are not
    in the labels (bright coastlines, cloud edges, wakes...). Chips drawn from them teach it what a
    tanker is not, which uniform sampling shows too rarely to matter."""

    windows: list = field(default_factory=list)  # (scene index, Window)
    limit: int = 256

    def add(self, found: list) -> None:
        self.windows = (found + self.windows)[: self.limit]

    def draw(self, rng: np.random.Generator):
        return self.windows[int(rng.integers(len(self.windows)))]


def mine_hard_negatives(seg, scenes, rng, opts, *, score: float = 0.5, inside: float = 0.2) -> list:
    """Scan ``opts.mining_chips`` uniform windows; keep those holding a detection (score >= ``score``)
    of which less than ``inside`` of the mask lies on a labelled object."""
    picks = []
    for _ in range(opts.mining_chips):
        i = int(rng.integers(len(scenes)))
        picks.append((i, chip_window(scenes[i], rng, opts.chip_size, focus=0.0)))
    found = []
    for k in range(0, len(picks), 4):
        batch = picks[k : k + 4]
        images = [scenes[i].scene.read(w) for i, w in batch]
        if len({im.shape for im in images}) > 1:  # a scene smaller than a chip
            preds = [seg.predict(im[None])[0] for im in images]
        else:
            preds = seg.predict(np.stack(images))
        for (i, w), p in zip(batch, preds, strict=True):
            masks = p["masks"][p["scores"] >= score] >= 0.5
            if not len(masks):
                continue
            truth = instance_targets(scenes[i], w, min_pixels=1).any(0)
            on_truth = (masks & truth).reshape(len(masks), -1).sum(1)
            if (on_truth < inside * masks.reshape(len(masks), -1).sum(1)).any():
                found.append((i, w))
    return found


def _batch(scenes, rng, opts, mean, std, hard: HardNegatives, top: float = 255.0):
    images, targets = [], []
    for _ in range(opts.batch_size):
        if hard.windows and rng.random() < opts.hard_negatives:
            i, window = hard.draw(rng)
            ls = scenes[i]
        else:
            ls = scenes[int(rng.integers(len(scenes)))]
            window = chip_window(ls, rng, opts.chip_size, focus=opts.focus)
        image = ls.scene.read(window)
        masks = instance_targets(ls, window)
        image, masks = augment(image, masks, rng)
        if opts.strong_augment and rng.random() < 0.8:
            image = photometric(image, rng, top)
        x = torch.nan_to_num((torch.from_numpy(image) - mean) / std)
        images.append(x)
        targets.append(instance_target(masks))
    return images, targets


def chip_f1(seg: MaskRCNNSegmenter, chips: list[tuple[np.ndarray, np.ndarray]], iou: float = 0.5) -> dict:
    """Object F1 at mask IoU >= ``iou`` over validation chips (greedy one-to-one matching)."""
    tp = n_pred = n_true = 0
    ious = []
    for i in range(0, len(chips), 4):
        batch = chips[i : i + 4]
        preds = seg.predict(np.stack([c[0] for c in batch]))
        for (_, truth), p in zip(batch, preds, strict=True):
            keep = p["scores"] >= 0.5
            pm = p["masks"][keep] >= 0.5
            n_pred += len(pm)
            n_true += len(truth)
            if not len(pm) or not len(truth):
                continue
            t = truth.reshape(len(truth), -1).astype(np.float32)
            q = pm.reshape(len(pm), -1).astype(np.float32)
            inter = q @ t.T
            union = q.sum(1)[:, None] + t.sum(1)[None, :] - inter
            m = inter / np.maximum(union, 1)
            rows, cols = np.indices(m.shape)
            matched, _, found = match_greedy(cols.ravel(), rows.ravel(), m.ravel(), iou)
            ious += found
            tp += len(matched)
    precision, recall, f1 = precision_recall_f1(tp, n_pred, n_true)
    return {
        "f1": round(f1, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "mean_iou": round(float(np.mean(ious)), 4) if ious else None,
        "val_objects": n_true,
    }


def train_maskrcnn(
    train: list[tuple[str, str]],
    val: list[tuple[str, str]],
    output: str,
    opts: TrainOptions,
    *,
    command: str | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Train, validate every ``opts.val_every`` iterations and keep the best checkpoint at ``output``.

    Returns the metrics of the kept checkpoint.
    """
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scenes = [load_labelled(s, lab) for s, lab in train]
    val_scenes = [load_labelled(s, lab) for s, lab in val]
    bands = len(scenes[0].scene.bands)
    start = start_from(opts.init, "maskrcnn", bands, len(opts.classes)) if opts.init else None
    if start:  # a fine-tuned model keeps the normalisation its weights were trained with
        mean, std = start["meta"]["normalization"]["mean"], start["meta"]["normalization"]["std"]
    else:
        mean, std = band_stats(scenes, np.random.default_rng(opts.seed + 1))
    top = 255.0 if scenes[0].scene.dtype == "uint8" else float(np.max(np.add(mean, np.multiply(4, std))))
    mean_t = torch.tensor(mean).view(-1, 1, 1)
    std_t = torch.tensor(std).view(-1, 1, 1)

    vrng = np.random.default_rng(opts.seed + 2)
    val_chips = []
    for i in range(opts.val_chips):
        ls = val_scenes[i % len(val_scenes)]
        window = chip_window(ls, vrng, opts.chip_size, focus=0.8)
        val_chips.append((ls.scene.read(window), instance_targets(ls, window)))

    if start:
        config, model = start["meta"]["config"], start["module"]
    else:
        config = {**CONFIGS[opts.config], "name": opts.config}
        model = build_maskrcnn(
            config, in_channels=bands, num_classes=len(opts.classes), pretrained=opts.pretrained
        )
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=opts.lr, momentum=0.9, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        optim, max_lr=opts.lr, total_steps=opts.iterations, pct_start=0.15
    )
    meta = {
        "architecture": "maskrcnn",
        "config": config,
        "task": "instance",
        "classes": list(opts.classes),
        "bands": list(scenes[0].scene.bands),
        "in_channels": bands,
        "normalization": {"mean": mean, "std": std},
        "tile_size": 2 * opts.chip_size,
        "overlap": opts.chip_size // 2,
        # the sizes of the training objects (plus 20 %): predictions outside are dropped by default
        "object_limits": size_limits(scenes),
        # its objects are hulls: geoseg predict gives them length, beam and heading
        "measures": list(SHIP_MEASURES),
        **({"max_gsd": float(opts.max_gsd)} if opts.max_gsd else {}),
        **({"rotated_view": True} if opts.rotated_view else {}),
        **({"fill_holes": [c for c in opts.classes if c != "background"]} if opts.solid else {}),
        **({"radiometry": radiometry_record([ls.scene for ls in scenes])} if opts.match_radiometry else {}),
        "training": training_record(
            command,
            data_fingerprint=fingerprint(train + val),
            seed=opts.seed,
            iterations=opts.iterations,
            batch_size=opts.batch_size,
            chip_size=opts.chip_size,
            focus=opts.focus,
            hard_negatives=opts.hard_negatives,
            lr=opts.lr,
            device=device,
            **({"strong_augment": True} if opts.strong_augment else {}),
            **({"init": start["record"]} if start else {}),
        ),  # fmt: skip
    }
    fit = Fit(
        model, optim, sched, output=output, meta=meta, score=lambda m: m["f1"], smoothing=0.05, clip=10.0
    )
    hard = HardNegatives()
    mrng = np.random.default_rng(opts.seed + 3)
    for it in range(1, opts.iterations + 1):
        model.train()
        images, targets = _batch(scenes, rng, opts, mean_t, std_t, hard, top)
        no_resize(model, opts.chip_size, opts.chip_size)
        losses = model(
            [x.to(device) for x in images], [{k: v.to(device) for k, v in t.items()} for t in targets]
        )
        fit.step(sum(losses.values()))
        if it % opts.val_every == 0 or it == opts.iterations:
            seg = MaskRCNNSegmenter(
                model, classes=opts.classes, in_channels=bands, mean=mean, std=std, device=device
            )
            metrics = fit.validated({**chip_f1(seg, val_chips), "iteration": it})
            if opts.hard_negatives > 0 and it < opts.iterations:
                hard.add(mine_hard_negatives(seg, scenes, mrng, opts))
                metrics["hard_windows"] = len(hard.windows)
            if progress:
                progress(it, opts.iterations, {"loss": fit.loss_avg, **metrics, "best_f1": fit.best["f1"]})
        elif progress:
            progress(it, opts.iterations, {"loss": fit.loss_avg})
    for ls in scenes + val_scenes:
        ls.scene.close()
    return fit.best
