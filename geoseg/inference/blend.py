"""Blended tiled inference for semantic models: seamless masks and outlines of any size.

Overlapping tiles are weighted by a window (``constant``, ``cosine`` or ``gaussian``: nnU-Net's and
MONAI's Gaussian with sigma = tile / 8) and their probabilities summed. The sum is kept per output
block: the rectangles cut out by every tile edge, so a block lies wholly inside or wholly outside
each tile. A block is finished as soon as every tile that covers it is done: its probabilities are
divided by the summed weights, turned into classes (``P(foreground) >= mask_threshold`` for one
foreground class, else the most probable class), written to the mask window by window and
polygonised. Tiles run in row-major order with a bounded number of batches in flight, so only the
overlap strips along the current row of tiles wait in memory: peak memory grows with the tile size
and the scene's width times the overlap, never with the scene's area.

Tile windows are separable (row weights times column weights) and the tiles form a grid, so the
sum of the weights at a pixel is the product of two 1-D sums: no weight image is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import ModelError
from geoseg.inference.tiling import Tile, TileGrid

BLENDS = ("constant", "cosine", "gaussian")


def blend_window(length: int, kind: str = "gaussian") -> np.ndarray:
    """1-D tile weights of ``length`` pixels, largest in the middle, positive everywhere.

    ``constant``: all 1 (a plain mean of the overlapping tiles). ``cosine``: a half sine,
    ``sin(pi * (i + 0.5) / length)``. ``gaussian``: ``exp(-d^2 / (2 sigma^2))`` with ``sigma =
    length / 8`` and ``d`` the distance to the tile's centre.

    >>> blend_window(4, "constant").tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> blend_window(4, "cosine").round(3).tolist()
    [0.383, 0.924, 0.924, 0.383]
    """
    i = np.arange(length, dtype=np.float64)
    if kind == "constant":
        return np.ones(length)
    if kind == "cosine":
        return np.sin(np.pi * (i + 0.5) / length)
    if kind == "gaussian":
        sigma = max(length / 8, 1e-6)
        return np.exp(-((i - (length - 1) / 2) ** 2) / (2 * sigma**2))
    raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {kind!r}")


@dataclass
class _Axis:
    """Tiles and blocks along one axis of the grid."""

    starts: list[int]
    stops: list[int]
    edges: np.ndarray  # block boundaries: every tile start and stop, and the scene's ends
    cover: np.ndarray  # how many tiles cover each block
    norm: np.ndarray  # sum of the tiles' 1-D weights at each pixel

    @classmethod
    def build(cls, spans: Sequence[tuple[int, int]], n: int, kind: str) -> _Axis:
        starts = [s for s, _ in spans]
        stops = [e for _, e in spans]
        edges = np.unique(np.array([0, n, *starts, *stops]))
        mids = (edges[:-1] + edges[1:]) / 2
        cover = np.array([sum(s <= m < e for s, e in spans) for m in mids], dtype=np.int64)
        norm = np.zeros(n)
        for s, e in spans:
            norm[s:e] += blend_window(e - s, kind)
        return cls(starts, stops, edges, cover, norm)

    def blocks(self, start: int, stop: int) -> range:
        """Indexes of the blocks inside [start, stop)."""
        return range(int(np.searchsorted(self.edges, start)), int(np.searchsorted(self.edges, stop)))


class Stitcher:
    """Accumulates weighted tile probabilities per block. :meth:`add` returns each block it
    finishes as ``(row_off, col_off, probs)`` with ``probs`` float32 ``(C, h, w)`` (and hands it
    to ``on_block(row_off, col_off, probs)`` when one is given). Picklable without ``on_block``:
    the state of a scene's stitching can move from one worker to the next."""

    def __init__(
        self, grid: TileGrid, num_classes: int, on_block: Callable | None = None, *, blend: str = "gaussian"
    ) -> None:
        if blend not in BLENDS:
            raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
        tiles = grid.tiles()
        row_spans = sorted({(t.bounds[0], t.bounds[2]) for t in tiles})
        col_spans = sorted({(t.bounds[1], t.bounds[3]) for t in tiles})
        self.rows = _Axis.build(row_spans, grid.height, blend)
        self.cols = _Axis.build(col_spans, grid.width, blend)
        self.blend, self.num_classes, self.on_block = blend, num_classes, on_block
        self.pending = np.multiply.outer(self.rows.cover, self.cols.cover)
        self.acc: dict[tuple[int, int], np.ndarray] = {}
        self.peak_blocks = 0  # most blocks waiting at once, and their bytes
        self.peak_bytes = 0

    def add(self, tile: Tile, probs: np.ndarray | None) -> list[tuple[int, int, np.ndarray]]:
        """Add one tile's probabilities ``(C, h, w)`` over its window; None for a tile that was
        skipped (all nodata): its blocks stop waiting for it. Returns the blocks this finished."""
        finished = []
        r0, c0, r1, c1 = tile.bounds
        if probs is not None:
            if probs.shape != (self.num_classes, r1 - r0, c1 - c0):
                raise ModelError(
                    f"model returned probabilities of shape {probs.shape} for a tile of "
                    f"{r1 - r0} x {c1 - c0} pixels and {self.num_classes} classes"
                )
            weights = np.outer(blend_window(r1 - r0, self.blend), blend_window(c1 - c0, self.blend))
            weighted = probs * weights.astype(np.float32)
        for a in self.rows.blocks(r0, r1):
            br0, br1 = int(self.rows.edges[a]), int(self.rows.edges[a + 1])
            for b in self.cols.blocks(c0, c1):
                bc0, bc1 = int(self.cols.edges[b]), int(self.cols.edges[b + 1])
                if probs is not None:
                    part = weighted[:, br0 - r0 : br1 - r0, bc0 - c0 : bc1 - c0]
                    if (a, b) in self.acc:
                        self.acc[(a, b)] += part
                    else:
                        self.acc[(a, b)] = part.copy()
                self.pending[a, b] -= 1
                if self.pending[a, b] == 0:
                    finished.append(self._finish(a, b))
        self.peak_blocks = max(self.peak_blocks, len(self.acc))
        self.peak_bytes = max(self.peak_bytes, sum(a.nbytes for a in self.acc.values()))
        return finished

    def _finish(self, a: int, b: int) -> tuple[int, int, np.ndarray]:
        r0, r1 = int(self.rows.edges[a]), int(self.rows.edges[a + 1])
        c0, c1 = int(self.cols.edges[b]), int(self.cols.edges[b + 1])
        acc = self.acc.pop((a, b), None)
        if acc is None:  # every tile over it was nodata
            probs = np.full((self.num_classes, r1 - r0, c1 - c0), np.nan, np.float32)
        else:
            norm = np.outer(self.rows.norm[r0:r1], self.cols.norm[c0:c1]).astype(np.float32)
            probs = acc / norm
        if self.on_block is not None:
            self.on_block(r0, c0, probs)
        return r0, c0, probs

    @property
    def done(self) -> bool:
        return not self.pending.any()


# -- turning blocks into classes and outlines -----------------------------------------------------
def class_names(seg) -> list[str]:
    """Names of the mask values: a one-channel model (a sigmoid) gets a background class 0."""
    classes = list(seg.classes)
    return ["background", *classes] if len(classes) == 1 else classes


def classify(probs: np.ndarray, classes: Sequence[str], mask_threshold: float = 0.5):
    """Class per pixel (uint8) and the probability of that class.

    With one foreground class (one channel, or two with the first named ``background``) a pixel is
    foreground where its probability is at least ``mask_threshold``; otherwise the most probable
    class wins. Pixels without a prediction (NaN: nodata) get class 0 and score NaN.
    """
    if probs.shape[0] == 1 or (probs.shape[0] == 2 and classes[0] == "background"):
        fg = probs[-1]
        labels = (fg >= mask_threshold).astype(np.uint8)
        score = np.where(labels == 1, fg, 1 - fg) if probs.shape[0] == 1 else np.where(labels, fg, probs[0])
        return labels, score
    valid = ~np.isnan(probs).any(axis=0)
    labels = (np.argmax(np.nan_to_num(probs, nan=-1.0), axis=0) * valid).astype(np.uint8)
    score = np.take_along_axis(probs, labels[None].astype(np.intp), axis=0)[0]
    return labels, np.where(valid, score, np.nan)
