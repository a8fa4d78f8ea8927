"""TileGrid and Tile: overlapping windows that cover a scene with no gaps and no reads outside it.

Each tile knows the window it reads, the core it owns (cores partition the scene exactly, split at
the middle of each overlap) and the affine transform of its window. Tiles along the scene's right
and bottom edges are shifted inwards rather than read past the edge; only a scene smaller than
the tile size gives windows smaller than the tile, which the pipeline pads with NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.windows import Window


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    ``window`` is what is read; ``core`` is the part of the scene this tile owns; ``cut`` says, for
    the (top, left, bottom, right) edges of the window, whether the edge cuts the scene (True) or
    lies on the scene's own edge (False).
    """

    index: int
    row: int
    col: int
    window: Window
    core: Window
    transform: Affine
    cut: tuple[bool, bool, bool, bool]

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """Window as (row_start, col_start, row_stop, col_stop) in scene pixels."""
        w = self.window
        return (int(w.row_off), int(w.col_off), int(w.row_off + w.height), int(w.col_off + w.width))

    @property
    def core_bounds(self) -> tuple[int, int, int, int]:
        c = self.core
        return (int(c.row_off), int(c.col_off), int(c.row_off + c.height), int(c.col_off + c.width))


def _axis(n: int, size: int, overlap: int, align: int) -> tuple[list[int], list[int], list[int]]:
    """Starts, lengths and core boundaries of tiles along one axis of length ``n``."""
    if n <= size:
        return [0], [n], [0, n]
    step = size - overlap
    starts = list(range(0, n - size, step))
    last = ((n - size) // align) * align
    if last + size < n:  # alignment pulled the last tile short of the edge
        last = n - size
    if not starts or last > starts[-1]:
        starts.append(last)
    lengths = [min(size, n - s) for s in starts]
    bounds = [0]
    for i in range(len(starts) - 1):
        end_i = starts[i] + lengths[i]
        nxt = starts[i + 1]
        bounds.append((nxt + end_i) // 2 if nxt < end_i else nxt)
    bounds.append(n)
    return starts, lengths, bounds


class TileGrid:
    """Overlapping tiles over a ``height`` x ``width`` scene.

    Parameters
    ----------
    height, width
        Scene size in pixels.
    size
        Tile size (square) in pixels.
    overlap
        Pixels shared by neighbouring tiles (0 <= overlap < size).
    transform
        The scene's affine transform; each tile gets the transform of its window.
    align
        Tile starts are multiples of ``align`` (a network's total stride) wherever the scene allows.

    Examples
    --------
    >>> grid = TileGrid(1000, 700, size=512, overlap=64)
    >>> len(grid), grid.shape
    (6, (3, 2))
    >>> [t.bounds for t in grid][:2]
    [(0, 0, 512, 512), (0, 188, 512, 700)]
    """

    def __init__(
        self,
        height: int,
        width: int,
        *,
        size: int = 512,
        overlap: int = 64,
        transform: Affine | None = None,
        align: int = 1,
    ) -> None:
        if size < 1:
            raise ValueError(f"tile size must be positive, got {size}")
        if not 0 <= overlap < size:
            raise ValueError(f"overlap must be in [0, tile size), got {overlap} for size {size}")
        if align < 1 or (size - overlap) % align:
            raise ValueError(f"tile step {size - overlap} is not a multiple of the stride {align}")
        self.height, self.width = int(height), int(width)
        self.size, self.overlap, self.align = int(size), int(overlap), int(align)
        self.transform = transform or Affine.identity()
        self._rows = _axis(self.height, self.size, self.overlap, self.align)
        self._cols = _axis(self.width, self.size, self.overlap, self.align)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._rows[0]), len(self._cols[0]))

    @property
    def tile_shape(self) -> tuple[int, int]:
        """Shape every tile is padded to for the model: the tile size, or less for a small scene,
        rounded up to the alignment."""
        return (
            min(self.size, math.ceil(self.height / self.align) * self.align),
            min(self.size, math.ceil(self.width / self.align) * self.align),
        )

    def __len__(self) -> int:
        return self.shape[0] * self.shape[1]

    def __iter__(self):
        rstarts, rlens, rb = self._rows
        cstarts, clens, cb = self._cols
        # each tile's transform is ``self.transform @ Affine.translation(c0, r0)``, written out
        # term by term as affine computes it (the same floats): the matrix product costs more
        # than the rest of the tile
        sa, sb, sc, sd, se, sf = tuple(self.transform)[:6]
        index = 0
        for i, (r0, rh) in enumerate(zip(rstarts, rlens, strict=True)):
            for j, (c0, cw) in enumerate(zip(cstarts, clens, strict=True)):
                window = Window(c0, r0, cw, rh)
                core = Window(cb[j], rb[i], cb[j + 1] - cb[j], rb[i + 1] - rb[i])
                cut = (r0 > 0, c0 > 0, r0 + rh < self.height, c0 + cw < self.width)
                transform = Affine(
                    sa * 1.0 + sb * 0.0, sa * 0.0 + sb * 1.0, sa * c0 + sb * r0 + sc,
                    sd * 1.0 + se * 0.0, sd * 0.0 + se * 1.0, sd * c0 + se * r0 + sf,
                )  # fmt: skip
                yield Tile(index, i, j, window, core, transform, cut)
                index += 1

    def tiles(self) -> list[Tile]:
        return list(self)
