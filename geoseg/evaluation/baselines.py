"""Classical baselines that trained models are measured against.

:func:`threshold_lungs` is the textbook lung segmentation of a CT slice: air-like pixels inside the
body, the largest connected regions kept, holes filled. It finds well-aerated lungs, but it also
takes the trachea, main bronchi and bowel gas (air, not lung), misses dense consolidations touching
the chest wall, and returns something on slices that have no lung at all.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def threshold_lungs(
    hu: np.ndarray,
    *,
    threshold: float = -400.0,
    body_threshold: float = -500.0,
    keep: int = 2,
    min_fraction: float = 0.0005,
) -> np.ndarray:
    """A lung mask of a CT slice in Hounsfield units ``(H, W)``: pixels below ``threshold`` inside
    the body (the largest region above ``body_threshold``, holes filled), without regions that
    touch the image border, the ``keep`` largest regions (each at least ``min_fraction`` of the
    slice), holes filled.

    >>> hu = np.full((64, 64), -1000.0); hu[8:56, 8:56] = 40; hu[16:48, 14:28] = -850; hu[16:48, 36:50] = -850
    >>> threshold_lungs(hu)[32, [4, 20, 32, 42]].tolist()  # outside, left lung, mediastinum, right lung
    [False, True, False, True]
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 2:
        raise ValueError(f"threshold_lungs expects a 2-D slice, got shape {hu.shape}")
    smooth = ndimage.gaussian_filter(np.nan_to_num(hu, nan=-1000.0), 1.0)
    labels, n = ndimage.label(smooth > body_threshold)
    if n == 0:
        return np.zeros(hu.shape, bool)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    body = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    air = (smooth < threshold) & body
    labels, n = ndimage.label(air)
    if n == 0:
        return np.zeros(hu.shape, bool)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    sizes[border[border > 0] - 1] = 0
    sizes[sizes < min_fraction * hu.size] = 0
    out = np.zeros(hu.shape, bool)
    for idx in np.argsort(-sizes)[:keep]:
        if sizes[idx] > 0:
            out |= ndimage.binary_fill_holes(labels == idx + 1)
    return out
