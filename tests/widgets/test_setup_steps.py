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
