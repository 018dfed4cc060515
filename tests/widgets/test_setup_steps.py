"""Layer set-up one step per event-loop turn (``ReviewView.later``), the code colormaps of the mark
layers, and the worker-side imports (real viewer, real Qt event loop)."""

from __future__ import annotations

import sys
import threading

import numpy as np
from magicgui.widgets import Container

from napari_emdeblur.widgets.common import code_colormap, code_limits, image_layers, with_imports
from napari_emdeblur.widgets.review import REVIEW_COLORS
from napari_emdeblur.widgets.view import review_view


def test_steps_run_in_order_one_per_loop_turn(make_napari_viewer, qtbot):
    from qtpy.QtCore import QTimer

    viewer = make_napari_viewer()
    view = review_view(viewer)
    log: list[str] = []

    def step(name: str):
        def run() -> None:
            log.append(name)
            QTimer.singleShot(0, lambda: log.append(f"turn after {name}"))  # runs only if the loop turns
        return run

    for name in ("a", "b", "c"):
        view.later(step(name))
    assert log == [] and not view.idle  # nothing on the caller's turn
    qtbot.waitUntil(lambda: view.idle and len(log) == 6, timeout=10_000)
    assert log == ["a", "turn after a", "b", "turn after b", "c", "turn after c"]
    view.later(lambda: log.append("sync"), sync=True)  # synchronous runs: at once
    assert log[-1] == "sync" and view.idle


def test_steps_of_a_deleted_dock_are_dropped(make_napari_viewer, qtbot):
    from qtpy.QtCore import QCoreApplication, QEvent

    viewer = make_napari_viewer()
    view = review_view(viewer)
    kept, gone = Container(), Container()
    viewer.window.add_dock_widget(kept, name="kept")
    viewer.window.add_dock_widget(gone, name="gone")
    log: list[str] = []
    view.later(lambda: log.append("gone 1"), owner=gone.native)
    view.later(lambda: log.append("kept"), owner=kept.native)
    view.later(lambda: log.append("gone 2"), owner=gone.native)
    viewer.window.remove_dock_widget(gone.native)
    gone.native.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    qtbot.waitUntil(lambda: view.idle, timeout=10_000)
    assert log == ["kept"]
    view.later(lambda: log.append("late"), owner=gone.native)  # queued after the deletion
    assert view.idle and log == ["kept"]


def test_code_colormap_gives_each_code_its_colour():
    cmap = code_colormap(REVIEW_COLORS, "test review")
    lo, hi = code_limits(len(REVIEW_COLORS))
    codes = np.arange(len(REVIEW_COLORS), dtype=float)
    rgba = cmap.map((codes - lo) / (hi - lo))
    np.testing.assert_allclose(rgba, np.asarray(REVIEW_COLORS, float), atol=1e-6)
    assert rgba[0, 3] == 0  # code 0 (no mark) transparent


def test_mark_and_heatmap_layers_are_never_offered_as_images(make_napari_viewer):
    from napari_emdeblur.widgets.common import DISPLAY_KEYS

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8), np.uint8), name="em")
    for key in DISPLAY_KEYS:
        viewer.add_image(np.zeros((8, 8), np.uint8), name=key, metadata={key: {}})
    assert [layer.name for layer in image_layers(viewer)] == ["em"]


def test_with_imports_imports_in_the_running_thread_and_keeps_the_generator():
    def gen():
        got = yield 1
        yield got
        return "done"

    seen: dict = {}

    def run() -> None:
        before = "colorsys" in sys.modules
        g = with_imports(gen(), "colorsys", "no_such_module_for_emdeblur")
        seen["first"] = next(g)
        seen["imported_then"] = "colorsys" in sys.modules or before
        seen["echo"] = g.send("x")
        try:
            next(g)
        except StopIteration as end:
            seen["value"] = end.value

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert seen == {"first": 1, "imported_then": True, "echo": "x", "value": "done"}


def test_qc_layers_appear_one_first_paint_per_step(make_napari_viewer, qtbot):
    """A QC run in the worker adds its layers hidden and shows them (and the legend's text) in set-up
    steps of their own: no step both adds a layer and shows one, or shows two."""
    from napari_emdeblur.widgets import view as view_mod
    from napari_emdeblur.widgets.qc import QCWidget

    rng = np.random.default_rng(0)
    viewer = make_napari_viewer()
    viewer.add_image((rng.random((512, 512)) * 255).astype(np.uint8), name="em")
    qc = QCWidget(viewer)
    viewer.window.add_dock_widget(qc, name="Focus QC")
    view = review_view(viewer)
    step = {"n": 0}
    events: list[tuple[int, str, str]] = []  # (step, what, layer)
    run_step = view._run_step

    def counted() -> None:  # our own queue's step runner, counted
        step["n"] += 1
        run_step()

    view._run_step = counted
    legend_texts: list[str] = []

    def on_insert(event) -> None:
        layer = event.value
        events.append((step["n"], "added" + (" shown" if layer.visible else ""), layer.name))
        layer.events.visible.connect(
            lambda e, l=layer: events.append((step["n"], "shown", l.name)) if l.visible else None)

    viewer.layers.events.inserted.connect(on_insert)
    qc.layer_combo.value = "em"
    qc.tile_spin.value = 128
    legend = view.legend
    view.legend = lambda part, text: (legend_texts.append(text), legend(part, text))[1]
    view_mod._DRAWN_CHARS.clear()  # as in a fresh process: no glyph drawn yet
    qc.run()
    qtbot.waitUntil(lambda: qc.idle and view.idle and qc.result is not None, timeout=60_000)
    added = [e for e in events if e[1].startswith("added")]
    shown = [e for e in events if e[1] == "shown"]
    assert len(added) >= 3 and all(e[1] == "added" for e in added), events  # every QC layer added hidden
    assert shown, "nothing was shown"
    steps = [e[0] for e in added + shown]
    assert len(steps) == len(set(steps)), events  # one add or one first paint per step
    # the legend grew in steps, each drawing at most GLYPHS_PER_STEP new characters, to the full text
    assert len(legend_texts) >= 3 and legend_texts[-1].startswith("flagged tiles: cyan = correct")
    seen: set[str] = set()
    for text in legend_texts:
        assert len(set(text) - seen - set(" \n")) <= view_mod.GLYPHS_PER_STEP, text  # inside a word too
        seen |= set(text)
    assert viewer.canvas.overlays[view_mod.LEGEND_KEY].text.startswith(legend_texts[-1])


def test_dock_closed_mid_set_up_leaves_its_layers_as_the_zoom_wants(make_napari_viewer, qtbot):
    """The QC dock closed while its layers are being set up: its own steps are dropped, but the layers
    it had already added (hidden) are shown as the zoom policy wants, not left hidden."""
    from qtpy.QtCore import QTimer

    from napari_emdeblur.widgets.qc import QCWidget

    rng = np.random.default_rng(1)
    viewer = make_napari_viewer()
    viewer.add_image((rng.random((512, 512)) * 255).astype(np.uint8), name="em")
    qc = QCWidget(viewer)
    dock = viewer.window.add_dock_widget(qc, name="Focus QC")
    view = review_view(viewer)
    viewer.camera.zoom = 0.1  # 10 image px per screen px: zoomed out, the tint wanted on

    closed: list[bool] = []

    def close_dock() -> None:
        viewer.window.remove_dock_widget(dock)
        qc.native.deleteLater()
        closed.append(True)

    def on_insert(event) -> None:
        if event.value.name == "em flagged":  # the heatmap and the flags added; the blur map still queued
            QTimer.singleShot(0, close_dock)

    viewer.layers.events.inserted.connect(on_insert)
    qc.layer_combo.value = "em"
    qc.tile_spin.value = 128
    qc.run()
    qtbot.waitUntil(lambda: bool(closed) and view.idle, timeout=60_000)
    assert "em blur (px)" not in viewer.layers  # the dock's own later steps were dropped
    assert view.zoomed_out is True
    for name in ("em focus", "em flagged"):
        assert viewer.layers[name].visible, name  # shown by the last step, not left hidden
