"""What the Focus QC dock shows: a preselected image, read-only flags, a colour bar, a legend, and
the heatmap tint by zoom with the flagged tiles outlined up close (real viewer, no model)."""

from __future__ import annotations

import numpy as np

from napari_emdeblur.qc import decisions as dec
from napari_emdeblur.widgets.qc import QCWidget
from napari_emdeblur.widgets.view import LEGEND_KEY, RING_ADD, ZOOMED_OUT, review_view


def _outlined(flags) -> bool:
    """The flags layer draws its tiles as rings (up close), not filled."""
    return flags.data[0].raster.outline > 0


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
    w.metric_combo.value = "autocorr"  # a score heatmap (the blur metric's px layer: the next test)
    w.tile_spin.value = 128
    w.run(sync=True)
    heat, flags = viewer.layers["sec focus"], viewer.layers["sec flagged"]
    assert heat.colorbar.visible
    assert not flags.editable
    legend = viewer.canvas.overlays[LEGEND_KEY]
    assert legend.visible and "cyan = correct" in legend.text and "red = retake" in legend.text
    w.run(sync=True)  # re-scoring replaces the QC layers: the new ones are read-only too
    heat, flags = viewer.layers["sec focus"], viewer.layers["sec flagged"]
    assert heat.colorbar.visible and not flags.editable
    assert [n for n in (x.name for x in viewer.layers) if n.startswith("sec")] == [
        "sec", "sec focus", "sec flagged"]  # marks above the image, no duplicates
    w.set_thresholds(correct=float(np.sort(w.result.scores.ravel())[2]) + 1e-6,
                     retake=float(np.nanmin(w.result.scores)) - 1)
    assert w.flagged_counts == (3, 0)
    view = review_view(viewer)
    cam = viewer.scene.camera

    cam.zoom = 1.0 / 4.0  # one screen pixel per image pixel (4 world units per pixel)
    assert view.zoomed_out is False
    assert not heat.visible and flags.visible and _outlined(flags)
    # the same layer now rings each flagged tile on its true footprint (opaque ring codes), at the
    # image's own levels
    assert flags.multiscale and flags.level_shapes[0].tolist() == list(layer.data.shape)
    np.testing.assert_array_equal(flags.scale, layer.scale)
    np.testing.assert_array_equal(flags.translate, layer.translate)
    ring = np.asarray(flags.data[0])
    d = w.result.decisions[0]
    ring_code = dec.CORRECT + RING_ADD
    assert int((ring == ring_code).sum()) > 0 and not (ring == dec.CORRECT).any()
    for i, j in np.ndindex(d.shape):
        tile = ring[i * 128 : (i + 1) * 128, j * 128 : (j + 1) * 128]
        want = ring_code if d[i, j] == dec.CORRECT else 0
        assert tile[0, 0] == tile[-1, -1] == tile[0, 64] == want, (i, j)  # edges
        assert tile[64, 64] == 0  # the inside stays clear: the EM is readable
    flagged = [tuple(x) for x in np.argwhere(d == dec.CORRECT)]

    cam.zoom = 1.0 / (4.0 * ZOOMED_OUT * 2)  # zoomed out: the tint and the filled flags come back
    assert view.zoomed_out is True
    assert heat.visible and flags.visible and not _outlined(flags)
    fill = np.asarray(flags.data[0])  # filled again: the tile's inside too, in the translucent codes
    for i, j in flagged:
        assert fill[i * 128 + 64, j * 128 + 64] == dec.CORRECT
    flags.visible = False  # a proofreader's own toggle holds, also across the zoom limit
    cam.zoom = cam.zoom * 0.9
    assert not flags.visible
    w.set_thresholds(correct=float(np.sort(w.result.scores.ravel())[0]) + 1e-6)  # one tile left
    cam.zoom = 1.0
    assert not heat.visible and not flags.visible and _outlined(flags)  # outlined, for when it is shown
    flags.visible = True
    ring = np.asarray(flags.data[0])  # follows the thresholds (drawn from the decisions when sliced)
    left = [tuple(x) for x in np.argwhere(w.result.decisions[0] == dec.CORRECT)]
    assert len(left) == 1 and left[0] in flagged
    for i, j in flagged:
        assert ring[i * 128, j * 128] == (ring_code if (i, j) in left else 0)


def test_overview_tints_and_1_to_1_outlines(make_napari_viewer):
    viewer = make_napari_viewer()
    w = QCWidget(viewer)
    viewer.add_image(_texture(), name="sec")
    viewer.scene.camera.zoom = 1.0 / (ZOOMED_OUT * 3)  # a whole-section overview
    w.layer_combo.value = "sec"
    w.tile_spin.value = 128
    w.run(sync=True)
    heat, flags = (viewer.layers[f"sec {n}"] for n in ("focus", "flagged"))
    assert "sec flagged outline" not in viewer.layers  # one flags layer, filled or outlined by the zoom
    blur = viewer.layers["sec blur (px)"]  # the default blur metric: the px map is the tint shown
    assert blur.visible and blur.colorbar.visible and not heat.visible and flags.visible and not _outlined(flags)
    viewer.scene.camera.zoom = 1.0  # 1:1: tint off by default, flagged tiles outlined
    assert flags.visible and _outlined(flags) and not blur.visible and not heat.visible
    assert not flags.editable
    w.show("focus score")  # the dock's choice holds: shown again when zoomed out
    assert not heat.visible and not blur.visible
    viewer.scene.camera.zoom = 1.0 / (ZOOMED_OUT * 3)
    assert heat.visible and not blur.visible and flags.visible and not _outlined(flags)
