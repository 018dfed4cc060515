"""Which tiles the GRAN correction dock corrects, read from the viewer's layers.

``flagged (QC)``: the tiles the Focus QC dock flagged CORRECT for this image (the ``decisions``
grid in the metadata of its "<image> flagged" layer: for a mosaic scored per acquisition tile,
the grid cells whose centre lies in a file flagged CORRECT); ``all``: the whole image (blended windows, like ``emdeblur correct --tiles
all``); ``rectangle (Shapes)``: the QC tiles under the rectangles of a Shapes layer (a 2-D
rectangle over a stack selects those tiles in every section).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..deblur.selection import Selection
from ..qc.tiling import TileGrid
from .common import DECISIONS_KEY, layer_by_name

TILE_MODES = ("flagged (QC)", "all", "rectangle (Shapes)")

__all__ = ["TILE_MODES", "TileChoice", "choose_tiles"]


@dataclass
class TileChoice:
    """The selection, and the QC grid / metric it refers to (from the QC result when flagged)."""

    selection: Selection
    qc_tile: int
    metric: str | None = None


def choose_tiles(viewer, layer, data, mode: str, qc_tile: int, shapes_name: str | None = None) -> TileChoice:
    """The tiles of ``layer`` (whose data is ``data``) to correct in ``mode`` (one of :data:`TILE_MODES`).

    Raises ``ValueError`` with a message for the user when the mode's input is missing.
    """
    is_stack = data.ndim == 3
    nz = data.shape[0] if is_stack else 1
    if mode == TILE_MODES[0]:
        qc = next((lyr for lyr in viewer.layers
                   if DECISIONS_KEY in lyr.metadata and lyr.metadata[DECISIONS_KEY].get("source") == layer.name),
                  None)
        if qc is None:
            raise ValueError(f"no focus QC result for '{layer.name}': score it in the Focus QC widget first")
        qmeta = qc.metadata[DECISIONS_KEY]
        if tuple(qmeta.get("image_shape", data.shape)) != tuple(data.shape):
            raise ValueError(f"the focus QC result for '{layer.name}' was made on an image of shape "
                             f"{tuple(qmeta['image_shape'])}, not {tuple(data.shape)}: score it again")
        d = np.asarray(qmeta["decisions"])
        return TileChoice(Selection.flagged(d if d.ndim == 3 else d[None]), int(qmeta["tile"]), qmeta.get("metric"))
    if mode == TILE_MODES[1]:
        return TileChoice(Selection.whole_image(), qc_tile)
    grid = TileGrid(tuple(data.shape[-2:]), qc_tile)
    shapes = layer_by_name(viewer, shapes_name)
    if shapes is None or len(shapes.data) == 0:
        raise ValueError("draw a rectangle in a Shapes layer and choose it as the rectangle layer")
    rects = []
    for verts in shapes.data:
        verts = np.atleast_2d(np.asarray(verts, float))
        world = np.array([shapes.data_to_world(v) for v in verts])
        has_z = world.shape[1] == 3
        if is_stack and not has_z:  # a 2-D rectangle over a stack: every section
            world = np.column_stack([np.zeros(len(world)), world])
        pix = np.array([layer.world_to_data(v) for v in world])
        zs = {int(round(pix[0, 0]))} if is_stack and has_z else set(range(nz))
        (y0, x0), (y1, x1) = pix[:, -2:].min(0), pix[:, -2:].max(0)
        rects.append(([z for z in zs if 0 <= z < nz], y0, x0, y1, x1))
    return TileChoice(Selection.rectangles(grid, rects), qc_tile)
