"""Which tiles a correction run works on: the whole image, flagged QC tiles, or rectangles (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..qc import decisions as dec
from ..qc.tiling import TileGrid

__all__ = ["Selection", "tiles_from_decisions", "tiles_in_rectangle"]


def tiles_from_decisions(decisions: np.ndarray, which: str = "flagged") -> list[tuple[int, int, int]]:
    """``(z, row, col)`` of the tiles to correct: ``flagged`` = decision CORRECT, ``all`` = every tile."""
    d = np.asarray(decisions)
    if d.ndim == 2:
        d = d[None]
    if which == "all":
        sel = np.ones(d.shape, bool)
    elif which == "flagged":
        sel = d == dec.CORRECT
    else:
        raise ValueError(f"unknown tile selection {which!r}")
    return [(int(z), int(i), int(j)) for z, i, j in np.argwhere(sel)]


def tiles_in_rectangle(grid: TileGrid, y0: float, x0: float, y1: float, x1: float) -> list[tuple[int, int]]:
    """Grid tiles overlapping the pixel rectangle ``[y0, y1] x [x0, x1]`` (data coordinates)."""
    ya, yb = sorted((y0, y1))
    xa, xb = sorted((x0, x1))
    i0 = max(0, int(np.floor((ya + 0.5) / grid.tile)))
    i1 = min(grid.rows - 1, int(np.floor((yb - 0.5) / grid.tile)))
    j0 = max(0, int(np.floor((xa + 0.5) / grid.tile)))
    j1 = min(grid.cols - 1, int(np.floor((xb - 0.5) / grid.tile)))
    return [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]


@dataclass(frozen=True)
class Selection:
    """The tiles of a correction run.

    ``whole=True``: every pixel of every section, corrected with blended overlapping windows (no
    seams) and reported per QC tile. Otherwise ``tiles`` lists ``(z, row, col)`` QC tiles, each
    corrected with real context around it; every other pixel stays as it was.
    """

    whole: bool = False
    tiles: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def whole_image(cls) -> "Selection":
        """Every pixel."""
        return cls(whole=True)

    @classmethod
    def of_tiles(cls, tiles: Iterable[Sequence[int]]) -> "Selection":
        """The given ``(z, row, col)`` QC tiles (sorted, duplicates dropped)."""
        return cls(tiles=tuple(sorted({(int(z), int(i), int(j)) for z, i, j in tiles})))

    @classmethod
    def flagged(cls, decisions: np.ndarray) -> "Selection":
        """The tiles whose decision is CORRECT in a ``(rows, cols)`` or ``(z, rows, cols)`` map."""
        return cls.of_tiles(tiles_from_decisions(decisions, "flagged"))

    @classmethod
    def rectangles(cls, grid: TileGrid, rects: Iterable[tuple[Iterable[int], float, float, float, float]]) -> "Selection":
        """The tiles overlapping pixel rectangles ``(sections, y0, x0, y1, x1)``."""
        out: list[tuple[int, int, int]] = []
        for zs, y0, x0, y1, x1 in rects:
            out.extend((z, i, j) for z in zs for i, j in tiles_in_rectangle(grid, y0, x0, y1, x1))
        return cls.of_tiles(out)

    def __len__(self) -> int:
        return len(self.tiles)

    def by_section(self, shape: Sequence[int], qc_tile: int) -> dict[int, list[tuple[int, int]]]:
        """``{z: [(row, col), ...]}`` for an image of ``shape`` (2-D or ``(z, y, x)``)."""
        grid = TileGrid(tuple(int(s) for s in shape[-2:]), qc_tile)  # type: ignore[arg-type]
        nz = int(shape[0]) if len(shape) == 3 else 1
        if self.whole:
            return {z: list(grid) for z in range(nz)}
        out: dict[int, list[tuple[int, int]]] = {}
        for z, i, j in self.tiles:
            if not (0 <= z < nz and 0 <= i < grid.rows and 0 <= j < grid.cols):
                raise ValueError(f"tile ({z}, {i}, {j}) is outside the image of shape {tuple(shape)}")
            out.setdefault(z, []).append((i, j))
        return out
