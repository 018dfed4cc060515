"""Redrawing lazy multiscale layers changed in place (``_reader.redraw``): napari keeps a 2-D
multiscale layer's coarsest level materialised until the layer's data is replaced, so a plain
refresh would leave that level stale on screen (real viewer)."""

from __future__ import annotations

import numpy as np

from napari_emdeblur._reader import mark_changed, redraw
from napari_emdeblur.qc.tilemap import TileFootprints, TileRaster


def _layer(viewer):
    fp = TileFootprints.from_grid((1024, 1024), 256)
    values = np.zeros((1, 4, 4), np.uint8)
    raster = TileRaster(fp, values, [(1024, 1024), (512, 512), (256, 256)], fill=0, dtype=np.uint8)
    layer = viewer.add_image(raster.levels, multiscale=True, name="lazy", contrast_limits=(0, 255), cache=False)
    return layer, values


def _shown(layer, level, yx):
    """The value napari shows (its sliced data) at level-0 pixel ``yx`` with ``level`` on screen."""
    layer.locked_data_level = level
    return layer.get_value(layer.data_to_world(yx), world=True)[1]


def test_redraw_replaces_the_cached_coarsest_level_on_screen(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer, values = _layer(viewer)
    coarsest = len(layer.level_shapes) - 1
    assert _shown(layer, coarsest, (300, 300)) == 0  # sliced (and cached) before any value
    values[0, 1, 1] = 200
    layer.refresh()
    assert _shown(layer, coarsest, (300, 300)) == 0  # napari's plain refresh keeps the old level
    redraw(layer)  # the coarsest level is on screen: replaced now
    assert _shown(layer, coarsest, (300, 300)) == 200
    assert layer.locked_data_level == coarsest  # a level the user locked is kept


def test_a_change_off_screen_is_caught_when_the_coarsest_level_comes_on_screen(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer, values = _layer(viewer)
    coarsest = len(layer.level_shapes) - 1
    assert _shown(layer, 0, (300, 300)) == 0 and _shown(layer, coarsest, (300, 300)) == 0
    layer.locked_data_level = 0
    values[0, 1, 1] = 120
    redraw(layer)  # level 0 on screen: a plain refresh, the layer remembered as changed
    assert _shown(layer, 0, (300, 300)) == 120
    values[0, 2, 2] = 90
    mark_changed(layer)  # changed without a redraw (hidden, out of view)
    layer.locked_data_level = coarsest  # zooming out: the old coarsest level comes on screen ...
    qtbot.waitUntil(lambda: layer.get_value(layer.data_to_world((600, 600)), world=True)[1] == 90,
                    timeout=5_000)  # ... and is replaced right after
    assert layer.get_value(layer.data_to_world((300, 300)), world=True)[1] == 120
