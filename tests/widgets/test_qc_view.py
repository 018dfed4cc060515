"""What the Focus QC dock shows: a preselected image, read-only flags, a colour bar, a legend, and
the heatmap tint by zoom with the flagged tiles outlined up close (real viewer, no model)."""

from __future__ import annotations

import numpy as np

from napari_emdeblur.qc import decisions as dec
from napari_emdeblur.widgets.qc import QCWidget
from napari_emdeblur.widgets.view import LEGEND_KEY, ZOOMED_OUT, outline_raster, review_view


def _texture(shape=(512, 768), seed=0, soft=((1, 2),), tile=128):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random(shape), 1.0)
    blurred = ndimage.gaussian_filter(img, 3.0)
    for i, j in soft:
        sl = (slice(i * tile, (i + 1) * tile), slice(j * tile, (j + 1) * tile))
        img[sl] = blurred[sl]
    img = (img - img.min()) / np.ptp(img)
    return (img * 255).astype(np.uint8)


def test_qc_dock_preselects_the_active_or_first_visible_image(make_napari_viewer):
    from napari_emdeblur._sample_data import make_sample_data

    viewer = make_napari_viewer()
    early = QCWidget(viewer)  # opened before any image: picks the first one added
    assert early.layer_combo.value is None
    for data, kwargs, kind in make_sample_data():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    section, gt = viewer.layers[0], viewer.layers[1]
    assert early.layer_combo.value == section.name
    assert viewer.layers.selection.active is gt and not gt.visible  # the sample's hidden truth is active
    w = QCWidget(viewer)
    assert w.layer_combo.value == section.name  # a visible image, not the hidden active one
    gt.visible = True
    assert QCWidget(viewer).layer_combo.value == gt.name  # the active layer when it is shown


def test_flags_read_only_colour_bar_legend_and_tint_by_zoom(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = QCWidget(viewer)
    viewer.window.add_dock_widget(w)
    layer = viewer.add_image(_texture(), name="sec", scale=(4.0, 4.0), translate=(10.0, -20.0))
    w.layer_combo.value = "sec"
    w.tile_spin.value = 128
    w.run(sync=True)
    heat, flags = viewer.layers["sec focus"], viewer.layers["sec flagged"]
    outline = viewer.layers["sec flagged outline"]
    assert heat.colorbar.visible
    assert not flags.editable and not outline.editable
    legend = viewer.canvas.overlays[LEGEND_KEY]
    assert legend.visible and "cyan = correct" in legend.text and "red = retake" in legend.text
    w.set_thresholds(correct=float(np.nanmax(w.result.scores)) + 1, retake=float(np.nanmin(w.result.scores)) + 1e-6)
    w.run(sync=True)  # re-scoring assigns the flags' data, which makes napari re-enable painting
    assert not flags.editable and not outline.editable
    n_retake = int((w.result.decisions == dec.RETAKE).sum())
    w.set_thresholds(correct=float(np.sort(w.result.scores.ravel())[2]) + 1e-6,
                     retake=float(np.nanmin(w.result.scores)) - 1)
    assert w.flagged_counts == (3, 0) and n_retake >= 0
    view = review_view(viewer)
    cam = viewer.scene.camera

    cam.zoom = 1.0 / 4.0  # one screen pixel per image pixel (4 world units per pixel)
    assert view.zoomed_out is False
    assert not heat.visible and not flags.visible and outline.visible
    # the outline follows the thresholds and rings each flagged tile on its true footprint
    d = np.asarray(flags.data)
    f = outline.metadata["emdeblur_outline"]["factor"]
    qtbot.waitUntil(lambda: np.array_equal(outline.data, outline_raster(d, f)), timeout=5_000)
    assert int((outline.data == dec.CORRECT).sum()) == 3 * (4 * f - 4)
    for i, j in np.argwhere(d == dec.CORRECT):
        for py, px in ((i * 128, j * 128), (i * 128 + 127, j * 128 + 127)):  # the tile's corner pixels
            world = layer.data_to_world((py, px))
            oy, ox = np.round(outline.world_to_data(world)).astype(int)
            assert outline.data[oy, ox] == dec.CORRECT, (i, j, py, px)
        centre = layer.data_to_world((i * 128 + 64, j * 128 + 64))
        assert outline.data[tuple(np.round(outline.world_to_data(centre)).astype(int))] == 0

    cam.zoom = 1.0 / (4.0 * ZOOMED_OUT * 2)  # zoomed out: the tint and the filled flags come back
    assert view.zoomed_out is True
    assert heat.visible and flags.visible and not outline.visible
    flags.visible = False  # a proofreader's own toggle holds until the next crossing
    cam.zoom = cam.zoom * 0.9
    assert not flags.visible
    w.set_thresholds(correct=float(np.sort(w.result.scores.ravel())[0]) + 1e-6)  # one tile left, outline hidden
    cam.zoom = 1.0
    assert not heat.visible and outline.visible
    np.testing.assert_array_equal(outline.data, outline_raster(np.asarray(flags.data), f))  # redrawn when shown
    assert int((outline.data > 0).sum()) == 4 * f - 4


def test_outline_layer_is_made_on_the_first_zoom_in(make_napari_viewer):
    viewer = make_napari_viewer()
    w = QCWidget(viewer)
    viewer.add_image(_texture(), name="sec")
    viewer.scene.camera.zoom = 1.0 / (ZOOMED_OUT * 3)  # a whole-section overview
    w.layer_combo.value = "sec"
    w.tile_spin.value = 128
    w.run(sync=True)
    assert "sec flagged outline" not in viewer.layers  # nothing to outline at this zoom: not made
    assert viewer.layers["sec focus"].visible and viewer.layers["sec flagged"].visible
    viewer.scene.camera.zoom = 1.0
    outline = viewer.layers["sec flagged outline"]
    assert outline.visible and not outline.editable and not viewer.layers["sec focus"].visible
    np.testing.assert_array_equal(outline.data, outline_raster(np.asarray(viewer.layers["sec flagged"].data),
                                                               outline.metadata["emdeblur_outline"]["factor"]))
