"""Regular tile grids over a 2-D image and their placement in napari world coordinates.

A grid of ``tile`` px covers an image of shape ``(H, W)`` with ``ceil(H / tile)`` rows and
``ceil(W / tile)`` columns; the last row/column may be partial. Tile ``(i, j)`` covers pixels
``[i*tile, min((i+1)*tile, H)) x [j*tile, min((j+1)*tile, W))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

#: the QC tile size (px) every entry point starts from (CLI options, docks, pipeline, service)
DEFAULT_TILE = 256


@dataclass(frozen=True)
class TileGrid:
    """A regular grid of square tiles over an image of ``shape = (H, W)``."""

    shape: tuple[int, int]
    tile: int = DEFAULT_TILE

    def __post_init__(self) -> None:
        if self.tile < 8:
            raise ValueError(f"tile size must be at least 8 px, got {self.tile}")
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"grid needs a 2-D image shape, got {self.shape}")

    @property
    def rows(self) -> int:
        return -(-self.shape[0] // self.tile)

    @property
    def cols(self) -> int:
        return -(-self.shape[1] // self.tile)

    @property
    def grid_shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def n_tiles(self) -> int:
        return self.rows * self.cols

    def bounds(self, i: int, j: int) -> tuple[int, int, int, int]:
        """``(y0, x0, height, width)`` of tile ``(i, j)`` in pixels."""
        if not (0 <= i < self.rows and 0 <= j < self.cols):
            raise IndexError(f"tile ({i}, {j}) outside grid {self.grid_shape}")
        y0, x0 = i * self.tile, j * self.tile
        return y0, x0, min(self.tile, self.shape[0] - y0), min(self.tile, self.shape[1] - x0)

    def slices(self, i: int, j: int) -> tuple[slice, slice]:
        y0, x0, h, w = self.bounds(i, j)
        return slice(y0, y0 + h), slice(x0, x0 + w)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in range(self.rows):
            for j in range(self.cols):
                yield i, j

    def tile_of_pixel(self, y: float, x: float) -> tuple[int, int] | None:
        """The tile holding pixel ``(y, x)`` (data coordinates), or None if outside the image."""
        yi, xi = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
        if not (0 <= yi < self.shape[0] and 0 <= xi < self.shape[1]):
            return None
        return yi // self.tile, xi // self.tile

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Blow a ``(rows, cols)`` array up to a full-resolution ``(H, W)`` array."""
        values = np.asarray(values)
        if values.shape[-2:] != self.grid_shape:
            raise ValueError(f"values of shape {values.shape} do not match grid {self.grid_shape}")
        full = np.repeat(np.repeat(values, self.tile, axis=-2), self.tile, axis=-1)
        return full[..., : self.shape[0], : self.shape[1]]


def heatmap_transform(
    tile: int,
    pixel_size: tuple[float, float] = (1.0, 1.0),
    image_translate: tuple[float, float] = (0.0, 0.0),
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(scale, translate)`` for a heatmap layer with one pixel per tile.

    napari puts the centre of data pixel ``k`` at world ``k * scale + translate``. The image's
    pixels ``i*tile .. (i+1)*tile - 1`` have their centres from ``i*tile*ps`` to
    ``((i+1)*tile - 1)*ps``; the heatmap pixel ``i`` must be centred between them, at
    ``(i*tile + (tile-1)/2) * ps``, and be ``tile*ps`` wide. Its extent is then exactly the
    tile's pixel extent ``[(i*tile - 0.5)*ps, ((i+1)*tile - 0.5)*ps)``.
    """
    scale = (tile * pixel_size[0], tile * pixel_size[1])
    translate = (
        image_translate[0] + (tile - 1) / 2.0 * pixel_size[0],
        image_translate[1] + (tile - 1) / 2.0 * pixel_size[1],
    )
    return scale, translate
