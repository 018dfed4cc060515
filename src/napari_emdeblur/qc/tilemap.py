"""Per-tile values (focus scores, decisions) drawn over a section at every pyramid level (numpy only).

:class:`TileFootprints` says which tile owns each pixel of a section: a regular QC grid (the
tile of ``tile`` px it falls in; the last row/column of tiles is only as big as the image) or
the acquisition tiles of a mosaic (each file's box; where boxes overlap the later file wins, as
in the mosaic itself; pixels of no file, the mosaic's gaps, are owned by none).

:class:`TileRaster` turns one value per tile into lazy image levels with the *same shapes as the
section's levels*: level ``k`` pixel ``i`` shows the value of the tile owning the level-0 pixel
at its centre, ``(i + 1/2) d - 1/2`` with ``d = shape_0 / shape_k`` (how napari places a
multiscale level). So a heatmap or a flag layer made from it lines up with the image at every
level and zoom, a partial edge tile ends exactly where the image ends (no overhang), gaps stay
empty, and nothing is ever computed beyond what is on screen: slicing a level paints just that
region. Values are read at slicing time, so changing them in place and refreshing the layer
redraws the visible region only. ``outline > 0`` draws only a band of that many level pixels
along the edges of tiles with a value (flagged tiles outlined instead of filled), each band pixel
``ring_add`` above its tile's value (so one colormap can draw rings unlike fills); switching
``outline`` and refreshing the layer changes what is drawn without a second layer.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..io.pyramid import LevelArray, level_shapes, n_levels_for

__all__ = ["TileFootprints", "TileRaster", "TileRasterLevel", "raster_level_shapes"]


class TileFootprints:
    """Which tile owns each pixel of a 2-D or (z, y, x) section (see the module docstring).

    Use :meth:`from_grid` or :meth:`from_boxes`. Owner ids: for a grid, ``row * cols + col``
    within a plane; for boxes, the box's index.
    """

    def __init__(self, shape: Sequence[int], tile: int | None = None, boxes: np.ndarray | None = None):
        self.shape = tuple(int(s) for s in shape)
        self.nz = self.shape[0] if len(self.shape) == 3 else 1
        self.tile = int(tile) if tile is not None else None
        self.boxes = None if boxes is None else np.asarray(boxes, np.int64).reshape(-1, 5)

    @classmethod
    def from_grid(cls, shape: Sequence[int], tile: int) -> "TileFootprints":
        """A regular grid of ``tile`` px over ``shape`` (every plane alike)."""
        return cls(shape, tile=tile)

    @classmethod
    def from_boxes(cls, shape: Sequence[int], boxes: np.ndarray) -> "TileFootprints":
        """Boxes ``(z, y0, x0, height, width)`` in file order (later wins)."""
        return cls(shape, boxes=boxes)

    @property
    def is_grid(self) -> bool:
        return self.tile is not None

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the grid (grids only)."""
        assert self.tile is not None
        return -(-self.shape[-2] // self.tile), -(-self.shape[-1] // self.tile)

    def _grid_index(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid row / column (-1 outside the image) of level-0 positions (pixel-centre coordinates)."""
        assert self.tile is not None
        h, w = self.shape[-2:]
        py = np.floor(np.asarray(ys, np.float64) + 0.5).astype(np.int64)
        px = np.floor(np.asarray(xs, np.float64) + 0.5).astype(np.int64)
        r = np.where((py >= 0) & (py < h), py // self.tile, -1)
        c = np.where((px >= 0) & (px < w), px // self.tile, -1)
        return r, c

    def _box_runs(self, z: int, ys: np.ndarray, xs: np.ndarray) -> list[tuple[int, int, int, int, int]]:
        """``(box, row_a, row_b, col_a, col_b)`` of every box over the positions, in file order.

        Vectorised over the boxes (a handful of numpy calls however many there are): this runs on
        the GUI thread whenever napari slices a tile layer, often while a worker holds the GIL.
        """
        if self.boxes is None or len(ys) == 0 or len(xs) == 0:
            return []
        py = np.floor(np.asarray(ys, np.float64) + 0.5).astype(np.int64)
        px = np.floor(np.asarray(xs, np.float64) + 0.5).astype(np.int64)
        b = self.boxes
        y0, x0 = b[:, 1], b[:, 2]
        y1, x1 = y0 + b[:, 3], x0 + b[:, 4]
        ra, rb = np.searchsorted(py, y0), np.searchsorted(py, y1)
        ca, cb = np.searchsorted(px, x0), np.searchsorted(px, x1)
        keep = np.flatnonzero((b[:, 0] == z) & (ra < rb) & (ca < cb))
        return list(zip(keep.tolist(), ra[keep].tolist(), rb[keep].tolist(), ca[keep].tolist(), cb[keep].tolist()))

    def owners(self, z: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Owner id (int64, -1 = none) at level-0 pixel positions ``ys`` x ``xs`` (pixel-centre
        coordinates, increasing) of plane ``z``.
        """
        if self.tile is not None:
            r, c = self._grid_index(ys, xs)
            out = r[:, None] * self.grid_shape[1] + c[None, :]
            out[(r < 0)[:, None] | (c < 0)[None, :]] = -1
            return out
        out = np.full((len(ys), len(xs)), -1, np.int64)
        for i, ra, rb, ca, cb in self._box_runs(z, ys, xs):
            out[ra:rb, ca:cb] = i
        return out

    def paint(self, z: int, ys: np.ndarray, xs: np.ndarray, values: np.ndarray, fill: Any,
              dtype: Any) -> np.ndarray:
        """The value of the owning tile at the positions (``fill`` where none): like
        ``values[owners]`` without the owner array (boxes are filled one after the other).
        """
        dtype = np.dtype(dtype)
        if self.tile is not None:
            r, c = self._grid_index(ys, xs)
            v = np.asarray(values[z], dtype)
            out = v[np.maximum(r, 0)][:, np.maximum(c, 0)]
            out[r < 0] = fill
            out[:, c < 0] = fill
            return out
        out = np.full((len(ys), len(xs)), fill, dtype)
        vals = np.asarray(values)
        for i, ra, rb, ca, cb in self._box_runs(z, ys, xs):
            out[ra:rb, ca:cb] = vals[i]
        return out

    def owner_at(self, z: int, y: float, x: float) -> int | None:
        """The owner of the pixel at data coordinates ``(y, x)`` of plane ``z``, or None."""
        o = int(self.owners(z, np.array([y]), np.array([x]))[0, 0])
        return None if o < 0 else o

    def grid_owners(self, tile: int) -> np.ndarray:
        """``(z, rows, cols)`` owner of the centre of every cell of a ``tile`` px grid (-1 = none):
        which file a QC grid cell of the mosaic belongs to.
        """
        h, w = self.shape[-2:]
        ys = np.minimum(np.arange(0, h, tile) + (tile - 1) / 2, h - 1)
        xs = np.minimum(np.arange(0, w, tile) + (tile - 1) / 2, w - 1)
        return np.stack([self.owners(z, ys, xs) for z in range(self.nz)])


def raster_level_shapes(shape: Sequence[int], levels: Sequence[Sequence[int]] | None = None,
                        coarsest: int = 512) -> list[tuple[int, ...]]:
    """Level shapes for a raster over an image of ``shape``: the image's own level shapes when it
    is multiscale (``levels``), else level shapes down to a larger side of ``coarsest`` px (at
    least two levels, so that the raster is always drawn as a multiscale layer).
    """
    if levels is not None and len(levels) > 1:
        return [tuple(int(s) for s in lv) for lv in levels]
    n = max(2, n_levels_for(shape[-2:], coarsest))
    return level_shapes(shape, n)


class TileRaster:
    """One value per tile drawn as lazy levels (see the module docstring).

    Parameters
    ----------
    footprints : TileFootprints
        Which tile owns which pixel.
    values : ndarray
        Grid: ``(z, rows, cols)``; boxes: ``(n,)``. Kept by reference: change it in place and
        refresh the layer.
    shapes : list of tuple
        The levels' shapes (level 0 = the section's shape).
    fill : scalar
        Value where no tile is (gaps, outside the image) and, in outline mode, inside tiles.
    dtype : dtype
        Output dtype.
    """

    def __init__(self, footprints: TileFootprints, values: np.ndarray, shapes: Sequence[Sequence[int]],
                 fill: Any = 0, dtype: Any = None):
        self.footprints = footprints
        self.values = values
        self.fill = fill
        self.dtype = np.dtype(dtype or values.dtype)
        self.outline = 0
        self.ring_add = 0
        self.shapes = [tuple(int(s) for s in sh) for sh in shapes]
        h0, w0 = self.shapes[0][-2:]
        self.factors = [(h0 / s[-2], w0 / s[-1]) for s in self.shapes]
        self.levels = [TileRasterLevel(self, k) for k in range(len(self.shapes))]

    def region(self, k: int, z: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Level ``k``, plane ``z``, rows ``[y0, y1)`` x columns ``[x0, x1)``."""
        dy, dx = self.factors[k]
        m = int(self.outline)
        ys = (np.arange(y0 - m, y1 + m) + 0.5) * dy - 0.5
        xs = (np.arange(x0 - m, x1 + m) + 0.5) * dx - 0.5
        vals = self.footprints.paint(z, ys, xs, self.values, self.fill, self.dtype)
        if m > 0:
            own = self.footprints.owners(z, ys, xs)
            from scipy import ndimage

            edge = np.zeros(own.shape, bool)
            edge[1:] |= own[1:] != own[:-1]
            edge[:-1] |= own[:-1] != own[1:]
            edge[:, 1:] |= own[:, 1:] != own[:, :-1]
            edge[:, :-1] |= own[:, :-1] != own[:, 1:]
            if m > 1:
                edge = ndimage.binary_dilation(edge, iterations=m - 1)
            fill = np.asarray(self.fill, self.dtype)
            ring = edge & (own >= 0) & (vals != fill)
            vals = np.where(ring, vals + np.asarray(self.ring_add, self.dtype), fill)
            vals = vals[m : m + (y1 - y0), m : m + (x1 - x0)]
        return vals


class TileRasterLevel(LevelArray):
    """Level ``k`` of a :class:`TileRaster` as a read-only array-like (napari multiscale level)."""

    def __init__(self, raster: TileRaster, k: int):
        super().__init__(raster.shapes[k], raster.dtype, k)
        self.raster = raster

    def _read(self, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self.ndim == 2:
            return self.raster.region(self.k, 0, y0, y1, x0, x1)[None]
        out = np.empty((z1 - z0, y1 - y0, x1 - x0), self.dtype)
        for z in range(z0, z1):
            out[z - z0] = self.raster.region(self.k, z, y0, y1, x0, x1)
        return out
