"""Less-travelled sequences a proofreader runs into: scoring and correcting on different grids, a new
QC while the grid view is shown, two images scored back to back, a cancel before anything was scored,
layers of the user's that share the plugin's names, the corrected layer renamed or removed mid-run
(real viewer, shipped weights)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import synthetic_section  # noqa: E402

from napari_emdeblur.widgets.correct import CorrectionWidget  # noqa: E402
from napari_emdeblur.widgets.qc import QCWidget  # noqa: E402
from napari_emdeblur.widgets.view import review_view  # noqa: E402


def _image(shape=(256, 256), seed=0) -> np.ndarray:
    return synthetic_section(shape, seed=seed, soft=[(0, 0)], retake=[(1, 1)], tile=128)


@pytest.fixture
def docks(make_napari_viewer):
    viewer = make_napari_viewer()
    qc, cw = QCWidget(viewer), CorrectionWidget(viewer)
    viewer.window.add_dock_widget(qc)
    viewer.window.add_dock_widget(cw)
    cw.device_combo.value = "cpu"
    return viewer, qc, cw


@pytest.fixture
def notes():
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def rec(n):
        seen.append((str(n.severity), str(n.message)))

    notification_manager.notification_ready.connect(rec)
    yield seen
    notification_manager.notification_ready.disconnect(rec)


def _score(qc, name: str, tile: int, flag_all: bool = True) -> None:
    qc.layer_combo.value = name
    qc.tile_spin.value = tile
    qc.run(sync=True)
    if flag_all:
        qc.set_thresholds_px(0.1, 50)  # every tile "correct"


def _scored_and_corrected(viewer, qc, cw) -> None:
    """A 256 px image "sec", scored on 128 px tiles with every tile flagged, and corrected."""
    viewer.add_image(_image(), name="sec")
    _score(qc, "sec", 128)
    cw.layer_combo.value = "sec"
    cw.run(sync=True)


def _names(viewer) -> list[str]:
    return [x.name for x in viewer.layers]


def test_corrected_focus_on_another_grid_than_the_qc(docks):
    """QC at 128 px, a rectangle corrected at a 64 px QC tile: the corrected-focus map is made on the
    correction's grid (it broadcast the QC's 2 x 2 scores into 4 x 4 and raised at the end of the run);
    re-scoring at another tile size later does not break Revert / Accept either."""
    viewer, qc, cw = docks
    viewer.add_image(_image(), name="sec")
    _score(qc, "sec", 128)
    viewer.add_shapes([np.array([[0, 0], [100, 100]])], shape_type="rectangle", name="rect")
    cw.layer_combo.value = "sec"
    cw.tiles_combo.value = "rectangle (Shapes)"
    cw.shapes_combo.value = "rect"
    cw.qc_tile_spin.value = 64
    cw.run(sync=True)
    focus = viewer.layers["sec corrected focus"]
    assert cw.after_scores.shape == (1, 4, 4) and tuple(focus.data[0].shape) == (256, 256)
    assert np.isfinite(cw.after_scores).sum() >= len(cw.reports) > 0
    _score(qc, "sec", 256)  # another grid again
    key = sorted(cw.reports)[0]
    cw.review(*key, "revert")
    cw.review(*key, "accept")
    assert cw.reports[key].accepted is True


def test_a_second_run_on_another_grid_places_the_review_layers_anew(docks):
    """The marks, corrected-focus and PSNR-gain layers of a second run at another QC tile are drawn on that
    grid (they kept the first run's scale and covered twice the image), and partial edge tiles end at the
    image's edge (a 200 x 300 image: they overhung it by up to a tile)."""
    viewer, qc, cw = docks
    img = _image((200, 300))
    viewer.add_image(img, name="sec", scale=(2.0, 2.0), translate=(10.0, 20.0))
    viewer.add_image(img, name="gt", scale=(2.0, 2.0), translate=(10.0, 20.0))
    cw.layer_combo.value = "sec"
    cw.gt_combo.value = "gt"
    sec = viewer.layers["sec"]
    for tile in (128, 64):
        _score(qc, "sec", tile)
        cw.run(sync=True)
        for name in ("sec review", "sec corrected focus", "sec PSNR gain"):
            layer = viewer.layers[name]
            assert tuple(layer.data[0].shape) == (200, 300), name
            np.testing.assert_allclose(layer.extent.world, sec.extent.world, err_msg=name)
        key = max(cw.reports)  # the last corrected tile (of the bottom row: a partial one)
        cw.review(*key, "retake")
        marks = np.asarray(viewer.layers["sec review"].data[0])
        y1, x1 = min((key[1] + 1) * tile, 200), min((key[2] + 1) * tile, 300)
        assert (marks[key[1] * tile : y1, key[2] * tile : x1] == 2).all(), tile  # the tile, to the image's edge
        assert (marks == 2).sum() == (y1 - key[1] * tile) * (x1 - key[2] * tile)  # and nothing else


def test_rescoring_while_the_grid_is_shown_keeps_the_panels(docks):
    """A new QC of the image shown in the grid view regroups the panels (the new flags on the
    original's panel, the corrected image beside it: it slid over the original), and the astigmatism
    lines wait for the overlay view."""
    viewer, qc, cw = docks
    _scored_and_corrected(viewer, qc, cw)
    cw.toggle_view()
    view = review_view(viewer)
    names = ["sec", "sec corrected", "sec flagged", "sec review"]
    before = view.grid_positions(names)
    assert before["sec"] != before["sec corrected"]
    _score(qc, "sec", 128, flag_all=False)
    assert view.grid_positions(names) == before
    assert viewer.canvas.grid.enabled
    astig = viewer.layers["sec astigmatism"]
    assert not astig.visible
    cw.toggle_view()
    assert astig.visible and not viewer.canvas.grid.enabled


def test_scoring_b_right_after_a_keeps_all_of_a(docks, qtbot):
    """A's layers are all set up even when B's run starts before A's set-up steps ran (they were
    dropped: A kept only a hidden heatmap, and correcting A said it had no QC result)."""
    viewer, qc, cw = docks
    viewer.add_image(_image(seed=1), name="A")
    viewer.add_image(_image(seed=2), name="B", translate=(0, 300))
    qc.tile_spin.value = 128
    qc.layer_combo.value = "A"
    qc.run()
    qtbot.waitUntil(lambda: qc.worker is None, timeout=60_000)
    qc.layer_combo.value = "B"
    qc.run()
    qtbot.waitUntil(lambda: qc.idle, timeout=60_000)
    for s in ("A", "B"):
        for suffix in ("focus", "flagged", "blur (px)"):
            assert f"{s} {suffix}" in viewer.layers, (s, suffix, _names(viewer))
        assert viewer.layers[f"{s} flagged"].visible
    cw.layer_combo.value = "A"
    cw.run(sync=True)  # A's QC result is there to correct from
    assert cw.status.value.endswith("to check by eye")


def test_qc_tints_sit_under_the_flags_and_marks(docks):
    """The blur (px) tint (the default one) is stacked with the tints, under the flags and the review
    marks; the astigmatism lines with the marks."""
    viewer, qc, cw = docks
    viewer.add_image(_image(), name="sec")
    _score(qc, "sec", 128)
    order = _names(viewer)
    assert order.index("sec blur (px)") < order.index("sec flagged") < order.index("sec astigmatism")
    cw.layer_combo.value = "sec"
    cw.run(sync=True)
    order = _names(viewer)
    assert order.index("sec blur (px)") < order.index("sec flagged") < order.index("sec review")
    assert order.index("sec corrected") < order.index("sec blur (px)")


def test_a_cancel_before_anything_was_scored_says_so(docks, qtbot, notes):
    viewer, qc, _ = docks
    viewer.add_image(np.stack([_image((512, 512), seed=s) for s in range(4)]), name="sec")
    qc.layer_combo.value = "sec"
    qc.tile_spin.value = 128
    qc.run()
    qc.cancel()
    qtbot.waitUntil(lambda: qc.idle, timeout=60_000)
    said = [m for _, m in notes]
    assert any(m.startswith("Scoring stopped:") and m.endswith("of 4 sections scored") for m in said), said
    assert not any("No tile could be scored" in m for m in said), said


def test_layers_of_the_user_named_like_ours_are_left_alone(docks, notes):
    """A user's layer under a name the plugin uses is neither removed nor overwritten: the run is
    refused with one line saying which layer is in the way (QC removed a user's Points layer called
    '<image> focus', and a correction wrote into a user's image called '<image> corrected')."""
    viewer, qc, cw = docks
    viewer.add_image(_image(), name="sec")
    points = viewer.add_points(np.array([[10.0, 10.0]]), name="sec focus")
    qc.layer_combo.value = "sec"
    qc.run(sync=True)
    assert any(p is points for p in viewer.layers) and "sec flagged" not in viewer.layers
    assert "'sec focus' is in the way" in notes[-1][1] and notes[-1][0] == "error"
    viewer.layers.remove(points)
    mine = viewer.add_image(np.zeros((256, 256), np.uint8), name="sec corrected")
    cw.layer_combo.value = "sec"
    cw.tiles_combo.value = "all"
    cw.run(sync=True)
    assert "'sec corrected' is in the way" in notes[-1][1]
    assert not cw.reports and not mine.data.any()
    mine.name = "an earlier export"
    cw.run(sync=True)
    assert cw.corrected_layer is not mine and cw.reports and not mine.data.any()


def _threaded_run(qc, cw, qtbot) -> int:
    _score(qc, "sec", 64)
    cw.use_process = False  # a thread: starts fast (the process path is tested elsewhere)
    cw.layer_combo.value = "sec"
    cw.batch_spin.value = 1
    n = int((qc.result.decisions > 0).sum())
    cw.run()
    qtbot.waitUntil(lambda: len(cw.reports) >= 1, timeout=120_000)
    return n


def test_the_corrected_layer_renamed_mid_run_keeps_filling(docks, qtbot):
    viewer, qc, cw = docks
    viewer.add_image(_image(), name="sec")
    n = _threaded_run(qc, cw, qtbot)
    layer = viewer.layers["sec corrected"]
    layer.name = "my corrected"
    qtbot.waitUntil(lambda: cw.idle, timeout=120_000)
    assert len(cw.reports) == n > 1  # every tile kept (tiles after the rename were dropped)
    assert cw.corrected_layer is layer
    assert len(layer.metadata["emdeblur_correction"]["corrected_tiles"]) == n


def test_the_corrected_layer_removed_mid_run_stops_it_saying_so(docks, qtbot, notes):
    viewer, qc, cw = docks
    viewer.add_image(_image(), name="sec")
    n = _threaded_run(qc, cw, qtbot)
    viewer.layers.remove("sec corrected")
    qtbot.waitUntil(lambda: cw.idle, timeout=120_000)
    said = [m for _, m in notes if "was removed" in m]
    assert len(said) == 1 and said[0].startswith("The corrected layer of 'sec' was removed: correction stopped")
    assert len(cw.reports) < n
    cw.review(*sorted(cw.reports)[0], "accept")  # the review says why it cannot (not "was not corrected")
    assert notes[-1][1] == "the corrected layer of 'sec' is gone: correct again to review its tiles"


def test_flags_the_user_hid_stay_hidden(docks):
    """The zoom policy fills or outlines the QC flags but leaves their visibility to the user: hidden
    flags came back after a grid / overlay round trip and across the zoom limit."""
    viewer, qc, cw = docks
    _scored_and_corrected(viewer, qc, cw)
    flags = viewer.layers["sec flagged"]
    assert flags.visible
    flags.visible = False
    cw.toggle_view()
    cw.toggle_view()
    assert not flags.visible and not viewer.canvas.grid.enabled
    view = review_view(viewer)
    for zoom in (0.05, 20.0, 0.05):  # across the limit both ways
        viewer.camera.zoom = zoom
        view.apply_zoom()
    assert not flags.visible
    flags.visible = True
    view.apply_zoom(force=True)
    assert flags.visible


def test_layers_line_up_with_a_rotated_image(docks):
    """The QC and review layers take the image's whole transform (rotation and shear too, not only
    scale and offset): a pixel of the image and of each layer are at the same place in the world."""
    viewer, qc, cw = docks
    sec = viewer.add_image(_image(), name="sec", scale=(2.0, 2.0), translate=(5.0, 7.0), rotate=30, shear=[0.1])
    _score(qc, "sec", 128)
    cw.layer_combo.value = "sec"
    cw.run(sync=True)
    names = ["sec focus", "sec flagged", "sec blur (px)", "sec astigmatism", "sec corrected", "sec review",
             "sec corrected focus"]
    for name in names:
        layer = viewer.layers[name]
        for px in ((200.0, 30.0), (0.0, 0.0), (255.0, 255.0)):
            np.testing.assert_allclose(layer.data_to_world(px), sec.data_to_world(px), atol=1e-6, err_msg=name)


def test_an_image_removed_while_it_is_scored_gets_no_orphan_layers(docks, qtbot, notes):
    viewer, qc, _ = docks
    sec = viewer.add_image(np.stack([_image((512, 512), seed=s) for s in range(3)]), name="sec")
    qc.layer_combo.value = "sec"
    qc.tile_spin.value = 128
    qc.run()
    viewer.layers.remove(sec)
    qtbot.waitUntil(lambda: qc.idle, timeout=60_000)
    assert not [x.name for x in viewer.layers if x.name.startswith("sec ")]
    assert any("'sec' was removed while it was scored" in m for _, m in notes)


def test_only_the_names_a_run_makes_are_in_its_way(docks, notes):
    """A user's layer called '<image> astigmatism' is in no way of a focus-score QC (only the blur metric
    makes that layer), nor '<image> PSNR gain' of a correction without ground truth."""
    viewer, qc, cw = docks
    viewer.add_image(_image(), name="sec")
    viewer.add_points(np.array([[5.0, 5.0]]), name="sec astigmatism")
    viewer.add_points(np.array([[5.0, 5.0]]), name="sec PSNR gain")
    qc.metric_combo.value = "autocorr"
    _score(qc, "sec", 128, flag_all=False)
    assert "sec flagged" in viewer.layers
    cw.layer_combo.value = "sec"
    cw.tiles_combo.value = "all"
    cw.run(sync=True)
    assert cw.reports and not any(sev == "error" for sev, _ in notes)


def test_napari_grid_button_goes_back_to_the_overlay_like_the_dock(docks):
    """Leaving the grid with napari's own button restores what the dock's toggle restores (the overlay
    order, and layers that waited for the overlay); the next QC does not regroup stale panels."""
    viewer, qc, cw = docks
    _scored_and_corrected(viewer, qc, cw)
    cw.toggle_view()
    _score(qc, "sec", 128, flag_all=False)  # its astigmatism lines wait for the overlay
    astig = viewer.layers["sec astigmatism"]
    assert not astig.visible
    viewer.canvas.grid.enabled = False  # napari's grid button
    assert astig.visible and viewer.layers["sec corrected"].visible
    order = [x.name for x in viewer.layers]
    assert order.index("sec corrected") < order.index("sec flagged") < order.index("sec review")
    viewer.canvas.grid.enabled = True  # napari's own grid, not the dock's
    _score(qc, "sec", 128, flag_all=False)
    assert review_view(viewer)._grid_args is None


def test_placing_a_layer_again_changes_nothing_that_is_the_same(make_napari_viewer):
    from napari_emdeblur.widgets.common import place_like, placement

    viewer = make_napari_viewer()
    a = viewer.add_image(np.zeros((64, 64), np.uint8), scale=(2, 2), rotate=10)
    b = viewer.add_image(np.zeros((8, 8), np.uint8))
    place_like(b, placement(a))
    np.testing.assert_allclose(b.data_to_world((3, 4)), a.data_to_world((3, 4)))
    fired = []
    for name in ("scale", "translate", "rotate", "shear", "affine"):
        getattr(b.events, name).connect(lambda e, n=name: fired.append(n))
    place_like(b, placement(a))  # each change re-slices the layer: none here
    assert fired == []


def test_renaming_a_scored_image_renames_its_qc_layers(docks, notes):
    """The QC result follows its image's new name (the correction dock said the renamed image had no QC
    result); with a layer of the user's under one of the new names, nothing is renamed and that is said."""
    viewer, qc, cw = docks
    sec = viewer.add_image(_image(), name="sec")
    _score(qc, "sec", 128)
    sec.name = "section 12"
    names = [x.name for x in viewer.layers]
    assert "section 12 flagged" in names and "section 12 focus" in names and not any(n.startswith("sec ") for n in names)
    assert viewer.layers["section 12 flagged"].metadata["emdeblur_decisions"]["source"] == "section 12"
    cw.layer_combo.value = "section 12"
    cw.run(sync=True)
    assert cw.reports  # flagged tiles found under the new name
    viewer.add_points(np.array([[1.0, 1.0]]), name="s12 focus")
    sec.name = "s12"
    assert "section 12 flagged" in viewer.layers and "but a layer named 's12 focus' is in the way" in notes[-1][1]
