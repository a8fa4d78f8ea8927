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

import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from geoseg.errors import ModelError
from geoseg.features import to_features
from geoseg.merge import dissolve_semantic
from geoseg.pipeline import (
    PredictOptions,
    SceneResult,
    _configure_torch_threads,
    check_bands,
    make_grid,
    read_tiles,
    resolve_min_area,
    split_small,
)
from geoseg.scene import NoCRSWarning, SceneRef
from geoseg.segmenter import ModelSpec, get_segmenter, to_numpy
from geoseg.tiling import Tile, TileGrid
from geoseg.vectorize import SemanticPiece, label_pieces

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
    """Accumulates weighted tile probabilities per block and hands each finished block, as
    ``on_block(row_off, col_off, probs)`` with ``probs`` float32 ``(C, h, w)``, to its consumer."""

    def __init__(
        self, grid: TileGrid, num_classes: int, on_block: Callable, *, blend: str = "gaussian"
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

    def add(self, tile: Tile, probs: np.ndarray | None) -> None:
        """Add one tile's probabilities ``(C, h, w)`` over its window; None for a tile that was
        skipped (all nodata): its blocks stop waiting for it."""
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
                    self._finish(a, b)
        self.peak_blocks = max(self.peak_blocks, len(self.acc))
        self.peak_bytes = max(self.peak_bytes, sum(a.nbytes for a in self.acc.values()))

    def _finish(self, a: int, b: int) -> None:
        r0, r1 = int(self.rows.edges[a]), int(self.rows.edges[a + 1])
        c0, c1 = int(self.cols.edges[b]), int(self.cols.edges[b + 1])
        acc = self.acc.pop((a, b), None)
        if acc is None:  # every tile over it was nodata
            probs = np.full((self.num_classes, r1 - r0, c1 - c0), np.nan, np.float32)
        else:
            norm = np.outer(self.rows.norm[r0:r1], self.cols.norm[c0:c1]).astype(np.float32)
            probs = acc / norm
        self.on_block(r0, c0, probs)

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


# -- running tiles --------------------------------------------------------------------------------
@dataclass
class TileBatch:
    """What one task returns: per tile, its probabilities over its window (None: all nodata)."""

    tiles: list[Tile]
    probs: list[np.ndarray | None] = field(default_factory=list)
    model_seconds: float = 0.0


def run_tiles(scene_ref: SceneRef, model: ModelSpec, tiles: Sequence[Tile], tile_shape) -> TileBatch:
    """One task: read ``tiles``, pad them to ``tile_shape`` with NaN, run the model, crop."""
    seg = get_segmenter(model)
    arrays, todo, batch = read_tiles(scene_ref, tiles, tile_shape)
    out = TileBatch(list(tiles), [None] * len(tiles))
    if not todo:
        return out
    t0 = time.perf_counter()
    preds = seg.predict(batch)
    out.model_seconds = time.perf_counter() - t0
    for slot, i in enumerate(todo):
        _, h, w = arrays[i].shape
        probs = np.array(to_numpy(preds[slot])[:, :h, :w], dtype=np.float32)
        probs[:, np.isnan(arrays[i]).all(axis=0)] = np.nan  # no prediction where there is no data
        out.probs[i] = probs
    return out


def _stream(fn, jobs: list[tuple], workers: int, scheduler) -> Iterator:
    """Results of ``fn(*job)`` as they finish, with at most two jobs per worker in flight, so that
    finished tiles are consumed (and freed) while later ones run."""
    if scheduler is None and workers <= 1:
        for job in jobs:
            yield fn(*job)
        return
    if scheduler is not None:  # a dask.distributed Client
        from dask.distributed import as_completed

        limit = 2 * max(1, len(scheduler.scheduler_info().get("workers", {})) or workers)
        queue = iter(jobs)
        running = as_completed([scheduler.submit(fn, *job, pure=False) for job in _take(queue, limit)])
        for future in running:
            result = future.result()
            for job in _take(queue, 1):
                running.add(scheduler.submit(fn, *job, pure=False))
            yield result
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        queue = iter(jobs)
        running: set[Future] = {pool.submit(fn, *job) for job in _take(queue, 2 * workers)}
        try:
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running |= {pool.submit(fn, *job) for job in _take(queue, 1)}
                    yield future.result()
        finally:
            for future in running:
                future.cancel()


def _take(it: Iterator, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


# -- a whole scene --------------------------------------------------------------------------------
def predict_blended(
    scene: str | SceneRef,
    model: ModelSpec | str,
    opts: PredictOptions = PredictOptions(),
    *,
    blend: str = "gaussian",
    mask: Callable[[int, int, np.ndarray], None] | None = None,
    erase: Callable[[list], None] | None = None,
    probabilities: Callable[[int, int, np.ndarray], None] | None = None,
    outlines: bool = True,
    progress=None,
    scheduler=None,
) -> SceneResult:
    """Segment a scene with a semantic model, blending overlapping tiles (see the module docstring).

    Parameters
    ----------
    scene
        A path or a :class:`~geoseg.scene.SceneRef` (a :class:`~geoseg.slices.SliceRef` for one
        slice of a stack or volume).
    model
        A semantic model: :class:`ModelSpec` or a spec string.
    opts
        Tile size, overlap, batch size, workers, ``mask_threshold`` and ``min_area`` (pixels).
    blend
        ``constant``, ``cosine`` or ``gaussian`` tile weights.
    mask
        Called as ``mask(row_off, col_off, classes)`` with a uint8 block of class indexes (0 is
        background for a one-foreground-class model) for every finished block.
    erase
        With a minimum area (``opts.min_area``, or the checkpoint's ``min_area``): called once at
        the end as ``erase([(polygon, class), ...])`` with the regions, in scene pixel space, that
        are smaller and so must be set back to background in the mask. Regions are only whole
        once every block is done, so this is a second, small pass.
    probabilities
        Called as ``probabilities(row_off, col_off, probs)`` with the blended float32
        ``(C, h, w)`` probabilities of every finished block.
    outlines
        Polygonise the classes (dissolved across blocks) into the result's features.
    progress, scheduler
        As for :func:`geoseg.pipeline.predict_scene`.
    """
    started = time.perf_counter()
    ref = scene if isinstance(scene, SceneRef) else SceneRef(str(scene))
    model = model if isinstance(model, ModelSpec) else ModelSpec(model)
    ref.open().close()  # a bad scene fails before a model is loaded
    seg = get_segmenter(model)
    if seg.task != "semantic":
        raise ModelError(f"model '{model.name}': blended stitching needs a semantic model, not {seg.task}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoCRSWarning)  # reported once, when the caller opened it
        ref = _trained_bands(ref, seg)
        with ref.open() as sc:
            check_bands(sc, seg, model)
            grid = make_grid(sc, seg, opts)
            meta = {"crs": sc.crs, "transform": sc.transform, "name": sc.name, "path": sc.path}
            ref = sc.ref
    classes = class_names(seg)
    pieces: list[SemanticPiece] = []
    min_area = resolve_min_area(opts, seg)
    regions = outlines or (erase is not None and min_area > 0)

    def on_block(r0: int, c0: int, probs: np.ndarray) -> None:
        if probabilities is not None:
            probabilities(r0, c0, probs)
        labels, score = classify(probs, classes, opts.mask_threshold)
        if mask is not None:
            mask(r0, c0, labels)
        if regions:
            pieces.extend(label_pieces(labels, score, r0, c0, classes, ~np.isnan(score)))

    tiles = grid.tiles()
    batches = [tiles[i : i + opts.batch_size] for i in range(0, len(tiles), opts.batch_size)]
    # the contract: one probability channel per class
    stitcher = Stitcher(grid, len(seg.classes), on_block, blend=blend)
    stats = {"tiles_run": 0, "tiles_skipped": 0, "model_seconds": 0.0}
    previous = _configure_torch_threads(opts.workers) if scheduler is None else None
    try:
        jobs = [(ref, model, b, grid.tile_shape) for b in batches]
        for done, result in enumerate(_stream(run_tiles, jobs, opts.workers, scheduler), 1):
            for tile, probs in zip(result.tiles, result.probs, strict=True):
                stats["tiles_run" if probs is not None else "tiles_skipped"] += 1
                stitcher.add(tile, probs)
            stats["model_seconds"] += result.model_seconds
            if progress:
                progress(done, len(batches))
    finally:
        if previous is not None:
            sys.modules["torch"].set_num_threads(previous)
    objects = dissolve_semantic(pieces) if regions else []
    small: list = []
    if min_area > 0:
        objects, small = split_small(objects, min_area)
        if erase is not None and small:
            erase(small)
    if not outlines:
        objects = []
    feats = to_features(objects, SimpleNamespace(task="semantic", classes=classes), model, meta)
    stats.update(
        scene=meta["path"], width=grid.width, height=grid.height, tile_size=grid.size,
        overlap=grid.overlap, stride=grid.align, blend=blend, tiles=len(tiles), objects=len(feats),
        min_area=min_area, small_regions_removed=len(small),
        blocks_peak=stitcher.peak_blocks, seconds=time.perf_counter() - started,
    )  # fmt: skip
    return SceneResult(feats, stats)


def _trained_bands(ref: SceneRef, seg) -> SceneRef:
    """A checkpoint knows its bands: read them unless told otherwise (as predict_scene does)."""
    trained = (getattr(seg, "metadata", None) or {}).get("bands")
    if ref.bands is None and trained and len(trained) == seg.in_channels:
        with ref.open() as sc:
            if sc.count != seg.in_channels and max(trained) <= sc.count:
                return dataclasses.replace(ref, bands=tuple(trained))
    return ref


def blended_probabilities(
    scene: str | SceneRef, model: ModelSpec | str, opts: PredictOptions = PredictOptions(), **kwargs
) -> np.ndarray:
    """The whole blended ``(C, H, W)`` probability image of a (small) scene, for checks and tests."""
    ref = scene if isinstance(scene, SceneRef) else SceneRef(str(scene))
    model = model if isinstance(model, ModelSpec) else ModelSpec(model)
    channels = len(get_segmenter(model).classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoCRSWarning)
        with ref.open() as sc:
            out = np.full((channels, sc.height, sc.width), np.nan, np.float32)

    def keep(r0: int, c0: int, probs: np.ndarray) -> None:
        out[:, r0 : r0 + probs.shape[1], c0 : c0 + probs.shape[2]] = probs

    predict_blended(ref, model, opts, probabilities=keep, outlines=False, **kwargs)
    return out


def whole_tile_size(height: int, width: int, stride: int = 1) -> int:
    """A tile size that covers a ``height`` x ``width`` image in one tile (rounded up to ``stride``)."""
    return int(math.ceil(max(height, width) / stride) * stride)
