"""Evaluation of predicted masks against true masks: per-slice Dice and IoU, and overlay pictures.

Predictions and truths are each a mask file or a folder of them, matched by file stem: 2-D masks
(``.png``, ``.tif``, ``.npy``; any non-zero value is foreground) or volumes (NIfTI, or a
``(N, H, W)`` ``.npy`` stack), which count slice by slice (ids ``<stem>_<slice:04d>``). Scores come
from :mod:`geoseg.evaluation.dice`, whose empty-mask convention holds here: a slice whose truth and prediction
are both empty scores 1.0, and a slice with an empty truth and any predicted pixel scores 0.0, so
slices without the structure count, and false positives on them are penalised fully.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.errors import EvalError, GeosegError
from geoseg.evaluation.dice import dice_score, iou_score
from geoseg.io.atomic import atomic_path
from geoseg.io.slices import (
    DEFAULT_VOLUME_AXIS,
    VOLUME_EXTENSIONS,
    extension,
    file_stem,
    read_image,
    read_mask,
    read_npy,
    read_volume,
    volume_slice,
)

MASK_FILE_EXTENSIONS = (".png", ".tif", ".tiff", ".npy", ".nii", ".nii.gz")
IMAGE_FILE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".dcm", ".nii", ".nii.gz")
CONVENTION = "empty truth and empty prediction: 1.0; empty truth with any predicted pixel: 0.0"


def is_mask_input(path: str | os.PathLike) -> bool:
    """True for a folder or a raster/array/volume file: what :func:`evaluate_masks` compares."""
    return os.path.isdir(path) or extension(path) in MASK_FILE_EXTENSIONS


@dataclass
class _Slices:
    """Lazily read 2-D arrays of a file or a folder, by slice id."""

    loaders: dict[str, Callable[[], np.ndarray]]

    @classmethod
    def scan(
        cls,
        path: str | os.PathLike,
        role: str,
        exts: tuple[str, ...],
        axis: int,
        read2d,
        stem: str | None = None,
    ) -> _Slices:
        """``stem`` names the slices of a single file (so that two files of any names compare)."""
        path = Path(path)
        if not path.exists():
            raise EvalError(f"{role} '{path}': no such file or folder")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            files = [p for p in files if extension(p) in exts]
            if not files:
                raise EvalError(f"{role} folder '{path}': no files ({', '.join(exts)}) in it")
        else:
            files = [path]
        loaders: dict[str, Callable[[], np.ndarray]] = {}
        try:
            for f in files:
                loaders.update(_file_loaders(f, axis, read2d, stem))
        except GeosegError as exc:
            raise EvalError(f"{role}: {exc}") from exc
        return cls(loaders)


def _file_loaders(path: Path, axis: int, read2d, stem: str | None) -> dict[str, Callable[[], np.ndarray]]:
    stem, ext = stem or file_stem(path), extension(path)
    if ext in VOLUME_EXTENSIONS:
        img = read_volume(path)
        return {
            f"{stem}_{k:04d}": (lambda k=k: np.asarray(volume_slice(img, k, axis)))
            for k in range(img.shape[axis])
        }
    if ext == ".npy":
        arr = read_npy(path)
        if arr.ndim == 3 and read2d is read_mask:  # a stack of masks along its first axis
            return {f"{stem}_{k:04d}": (lambda k=k: np.asarray(arr[k])) for k in range(arr.shape[0])}
    return {stem: lambda: read2d(path)}


def _pred_and_truth(pred, truth, axis: int) -> tuple[_Slices, _Slices]:
    """Both scanned; when both are single files their slices share the truth's ids."""
    truths = _Slices.scan(truth, "truth", MASK_FILE_EXTENSIONS, axis, read_mask)
    stem = file_stem(truth) if os.path.isfile(pred) and os.path.isfile(truth) else None
    return _Slices.scan(pred, "prediction", MASK_FILE_EXTENSIONS, axis, read_mask, stem), truths


def _as_mask(a: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(a, dtype=np.float32)) > 0


def evaluate_masks(
    pred: str | os.PathLike,
    truth: str | os.PathLike,
    *,
    axis: int = DEFAULT_VOLUME_AXIS,
    worst: int = 5,
) -> dict:
    """Per-slice Dice and IoU of ``pred`` against ``truth``; a JSON-ready report.

    Every truth slice needs a prediction (else EvalError); predictions without a truth are counted
    in ``unmatched_predictions`` and otherwise ignored. The report holds the mean, median and
    minimum Dice and IoU, the ``worst`` and best slices, and every slice's scores.
    """
    preds, truths = _pred_and_truth(pred, truth, axis)
    missing = sorted(set(truths.loaders) - set(preds.loaders))
    if missing:
        raise EvalError(
            f"prediction '{pred}': no mask for truth slice '{missing[0]}' ({len(missing)} missing)"
        )
    rows = []
    for sid in sorted(truths.loaders):
        t, p = _as_mask(truths.loaders[sid]()), _as_mask(preds.loaders[sid]())
        if t.shape != p.shape:
            raise EvalError(
                f"prediction '{sid}': shape {' x '.join(map(str, p.shape))} differs from its truth "
                f"({' x '.join(map(str, t.shape))})"
            )
        rows.append(
            {
                "id": sid,
                "dice": round(float(dice_score(p, t)), 6),
                "iou": round(float(iou_score(p, t)), 6),
                "truth_pixels": int(t.sum()),
                "predicted_pixels": int(p.sum()),
            }
        )
    dice = np.array([r["dice"] for r in rows])
    iou = np.array([r["iou"] for r in rows])
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["dice"], rows[i]["id"]))
    return {
        "kind": "masks",
        "prediction": str(pred),
        "truth": str(truth),
        "slices": len(rows),
        "empty_truth_slices": sum(r["truth_pixels"] == 0 for r in rows),
        "unmatched_predictions": len(set(preds.loaders) - set(truths.loaders)),
        "empty_convention": CONVENTION,
        "mean_dice": round(float(dice.mean()), 6),
        "median_dice": round(float(np.median(dice)), 6),
        "min_dice": round(float(dice.min()), 6),
        "mean_iou": round(float(iou.mean()), 6),
        "min_iou": round(float(iou.min()), 6),
        "worst": [rows[i] for i in order[:worst]],
        "best": [rows[i] for i in order[::-1][:worst]],
        "per_slice": rows,
    }


def summary(report: dict) -> str:
    """A short human-readable summary of :func:`evaluate_masks`'s report."""
    worst = ", ".join(f"{r['id']} {r['dice']:.3f}" for r in report["worst"])
    return (
        f"slices: {report['slices']} ({report['empty_truth_slices']} with an empty truth)\n"
        f"Dice mean {report['mean_dice']:.4f}  median {report['median_dice']:.4f}  "
        f"min {report['min_dice']:.4f}   IoU mean {report['mean_iou']:.4f}  min {report['min_iou']:.4f}\n"
        f"worst slices: {worst}"
    )


# -- overlays -------------------------------------------------------------------------------------
TRUTH_COLOUR = (0, 230, 0)  # outline
PRED_COLOUR = (255, 40, 40)  # translucent fill


def overlay_image(image: np.ndarray | None, truth: np.ndarray, pred: np.ndarray, caption: str):
    """An RGB picture (PIL image): the image in grey, the prediction filled in translucent red, the
    truth's outline in green, and a caption bar with a legend and ``caption``."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    h, w = truth.shape
    if image is None:
        grey = np.full((h, w), 40, np.uint8)
    else:
        img = np.asarray(image, np.float64)
        img = img[0] if img.ndim == 3 else img
        lo, hi = np.nanpercentile(img, [1, 99]) if np.isfinite(img).any() else (0.0, 1.0)
        grey = (np.clip((np.nan_to_num(img, nan=lo) - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float64)
    rgb[pred] = 0.55 * rgb[pred] + 0.45 * np.array(PRED_COLOUR)
    edge = truth & ~ndimage.binary_erosion(truth, border_value=0)
    edge = ndimage.binary_dilation(edge) if min(h, w) >= 256 else edge  # visible on large slices
    rgb[edge] = TRUTH_COLOUR
    bar = 34
    canvas = Image.new("RGB", (max(w, 360), h + bar), (255, 255, 255))
    canvas.paste(Image.fromarray(rgb.astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([4, h + 5, 14, h + 15], outline=TRUTH_COLOUR, width=2)
    draw.text((18, h + 4), "truth", fill=(0, 0, 0))
    draw.rectangle([60, h + 5, 70, h + 15], fill=PRED_COLOUR)
    draw.text((74, h + 4), "prediction", fill=(0, 0, 0))
    draw.text((4, h + 19), caption, fill=(0, 0, 0))
    return canvas


def write_overlays(
    report: dict,
    pred: str | os.PathLike,
    truth: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    axis: int = DEFAULT_VOLUME_AXIS,
    overwrite: bool = False,
) -> list[Path]:
    """PNG overlays of the report's worst and best slices in ``out_dir`` (created if missing), named
    ``worst-<rank>-<id>.png`` and ``best-<rank>-<id>.png``; ``images`` (a file or folder matched by
    stem like the masks) gives the grey background."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EvalError(f"overlays '{out}': is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    preds, truths = _pred_and_truth(pred, truth, axis)
    imgs = None
    if images:
        stem = file_stem(truth) if os.path.isfile(images) and os.path.isfile(truth) else None
        imgs = _Slices.scan(images, "images", IMAGE_FILE_EXTENSIONS, axis, read_image, stem)
    written = []
    for kind in ("worst", "best"):
        for rank, row in enumerate(report[kind], 1):
            sid = row["id"]
            image = None
            if imgs is not None and sid in imgs.loaders:
                image = imgs.loaders[sid]()
            t, p = _as_mask(truths.loaders[sid]()), _as_mask(preds.loaders[sid]())
            caption = f"{kind} {rank}: {sid}  Dice {row['dice']:.4f}  IoU {row['iou']:.4f}"
            pic = overlay_image(image, t, p, caption)
            path = out / f"{kind}-{rank}-{_safe(sid)}.png"
            if path.exists() and not overwrite:
                raise EvalError(f"overlay '{path}': already exists (use --overwrite to replace it)")
            with atomic_path(path) as tmp:
                pic.save(tmp, format="PNG")
            written.append(path)
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100]
