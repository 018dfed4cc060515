"""The review view a proofreader reads: labelled grid panels in order, layer order after toggles,
colour bars, legend, read-only mark layers (real viewer, sample data, shipped weights)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_emdeblur.qc import decisions as dec  # noqa: E402
from napari_emdeblur.widgets.correct import CorrectionWidget  # noqa: E402
from napari_emdeblur.widgets.qc import QCWidget  # noqa: E402
from napari_emdeblur.widgets.view import LEGEND_KEY, RING_ADD, review_view  # noqa: E402


@pytest.fixture(params=["widgets", "plugin docks"])
def corrected_flow(make_napari_viewer, request):
    """Sample section scored, three soft tiles flagged and corrected with the ground truth; the docks
    made directly, or as napari makes them from the plugin menu (which hands them a proxy of the
    viewer whose layers come back as new proxy objects on every access)."""
    from napari_emdeblur._sample_data import make_sample_data

    viewer = make_napari_viewer()
    for data, kwargs, kind in make_sample_data():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    section, gt = viewer.layers[0], viewer.layers[1]
    if request.param == "widgets":
        qc, cw = QCWidget(viewer), CorrectionWidget(viewer)
        viewer.window.add_dock_widget(qc)
        viewer.window.add_dock_widget(cw)
    else:
        _, qc = viewer.window.add_plugin_dock_widget("napari-emdeblur", "Focus QC")
        _, cw = viewer.window.add_plugin_dock_widget("napari-emdeblur", "GRAN correction", tabify=True)
        assert isinstance(qc, QCWidget) and isinstance(cw, CorrectionWidget)
        assert qc._viewer is viewer and cw._viewer is viewer  # the docks share one review view
    qc.layer_combo.value = section.name
    qc.tile_spin.value = int(section.metadata.get("sample_tiles", {}).get("tile", 256))
    qc.run(sync=True)
    finite = np.sort(qc.result.scores[np.isfinite(qc.result.scores)])
    qc.set_thresholds(correct=float(finite[2]) + 1e-6, retake=float(finite[0]) - 1.0)
    cw.layer_combo.value = section.name
    cw.gt_combo.value = gt.name
    cw.device_combo.value = "cpu"
    cw.run(sync=True)
    assert len(cw.reports) == 3
    return viewer, qc, cw, section, gt


def _order(viewer) -> list[str]:
    return [x.name for x in viewer.layers]


def _overlay_ok(viewer, s: str) -> None:
    names = _order(viewer)
    corrected = names.index(f"{s} corrected")
    assert names.index(s) < corrected
    for above in (f"{s} flagged", f"{s} review", f"{s} PSNR gain", f"{s} focus"):
        assert names.index(above) > corrected, (above, names)
    assert names.index(f"{s} review") > names.index(f"{s} PSNR gain")  # marks over tints


def test_grid_panels_labelled_left_to_right_and_order_survives_round_trips(corrected_flow, qtbot):
    viewer, qc, cw, section, gt = corrected_flow
    s = section.name
    _overlay_ok(viewer, s)  # right after the run: marks above the opaque corrected image
    view = review_view(viewer)
    grid = viewer.canvas.grid
    panels = [s, f"{s} corrected", gt.name]
    cw.toggle_view()
    assert grid.enabled and grid.shape == (1, 3)
    pos = view.grid_positions(_order(viewer))
    assert [pos[n] for n in panels] == [(0, 0), (0, 1), (0, 2)]  # original | corrected | ground truth
    assert pos[f"{s} review"] == (0, 1) and pos[f"{s} PSNR gain"] == (0, 2)
    assert pos[f"{s} flagged"] == (0, 0)
    flags = viewer.layers[f"{s} flagged"]
    assert flags.data[0].raster.outline > 0  # outlined on the original's panel
    # and drawn at the coarsest level too (what a grid panel of a small section shows on a smaller
    # screen): napari keeps that level materialised until the layer's data is replaced, so the view
    # must show the rings of the current decisions there (_reader.redraw), not the level first sliced
    flags.locked_data_level = len(flags.level_shapes) - 1
    tile = qc.result.tile
    i, j = map(int, np.argwhere(qc.result.decisions[0] == dec.CORRECT)[0])
    on_ring = flags.data_to_world((i * tile + 1, j * tile + tile // 2))  # a ring pixel on the top edge
    # (a multiscale layer answers (level, value))
    qtbot.waitUntil(lambda: flags.get_value(on_ring, world=True)[1] == dec.CORRECT + RING_ADD, timeout=10_000)
    assert flags.locked_data_level == len(flags.level_shapes) - 1  # the user's lock survives the redraw
    flags.locked_data_level = None
    assert {n for n, p in pos.items() if p != (-1, -1)} == set(panels) | {
        f"{s} review", f"{s} PSNR gain", f"{s} flagged"}
    for layer in viewer.layers:  # each panel names its image, nothing else is labelled
        assert layer.name_overlay.visible == (layer.name in panels), layer.name
    grid_order = _order(viewer)

    cw.toggle_view()
    assert not grid.enabled
    assert not any(x.name_overlay.visible for x in viewer.layers)
    _overlay_ok(viewer, s)
    assert viewer.layers[gt.name].visible is False  # as it was before the grid
    assert viewer.layers[f"{s} corrected"].visible and viewer.layers[f"{s} review"].visible
    overlay_order = _order(viewer)

    for _ in range(2):  # round trips give the same grid and the same overlay
        cw.toggle_view()
        assert view.grid_positions(panels) == dict(zip(panels, [(0, 0), (0, 1), (0, 2)]))
        assert _order(viewer) == grid_order
        cw.toggle_view()
        assert _order(viewer) == overlay_order
        _overlay_ok(viewer, s)


def test_colour_bars_legend_and_read_only_marks(corrected_flow):
    viewer, qc, cw, section, gt = corrected_flow
    s = section.name
    for name in (f"{s} focus", f"{s} PSNR gain", f"{s} corrected focus"):
        assert viewer.layers[name].colorbar.visible, name
    legend = viewer.canvas.overlays[LEGEND_KEY]
    assert legend.visible
    assert "cyan = correct" in legend.text and "red = retake" in legend.text
    assert "green = accepted" in legend.text and "blue = check by eye" in legend.text
    marks = [viewer.layers[n] for n in (f"{s} flagged", f"{s} review")]
    assert not any(x.editable for x in marks)
    z, i, j = sorted(cw.reports)[0]
    cw.review(z, i, j, "retake")  # replaces the review layer's data: napari would re-enable painting
    qc.run(sync=True)  # re-scoring replaces the flags' data
    assert not any(x.editable for x in marks)
    tile = cw.grid.tile
    assert viewer.layers[f"{s} review"].data[0][int((i + 0.5) * tile), int((j + 0.5) * tile)] == 2
