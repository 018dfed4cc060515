"""QC widget with the real napari viewer: scoring, heatmap alignment, thresholds, export."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_emdeblur.deblur.train.degrade import Degradation
from napari_emdeblur.qc import decisions as dec
from napari_emdeblur.qc.focus import score_tiles
from napari_emdeblur.qc.tiling import TileGrid
from napari_emdeblur.widgets.qc import QCWidget
from napari_emdeblur.widgets.view import RING_ADD


def _textured(shape=(512, 768), seed=0, blur_tiles=(), tile=128):
    """Random EM-like texture; tiles in ``blur_tiles`` are blurred strongly."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    img = ndimage.gaussian_filter(rng.random(shape), 1.0)
    img = (img - img.min()) / np.ptp(img)
    soft = Degradation("gaussian", sigma=3.0).apply(img)
    for i, j in blur_tiles:
        sl = (slice(i * tile, (i + 1) * tile), slice(j * tile, (j + 1) * tile))
        img[sl] = soft[sl]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def qc(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = QCWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def _value_at(layer, px):
    """The value a (multiscale) QC layer shows at image pixel ``px`` (level 0)."""
    return layer.data[0][tuple(int(v) for v in px)]


def test_score_creates_aligned_heatmap_with_pixel_size(qc):
    viewer, w = qc
    img = _textured(shape=(500, 700), blur_tiles=[(1, 2)], tile=128)  # partial last row and column
    layer = viewer.add_image(img, name="sec", scale=(4.0, 4.0), translate=(10.0, -20.0))
    w.layer_combo.value = "sec"
    w.tile_spin.value = 128
    w.run(sync=True)
    heat = viewer.layers["sec focus"]
    grid = TileGrid(img.shape, 128)
    expected = score_tiles(img, 128, w.result.metric)
    np.testing.assert_allclose(w.result.scores[0], expected, rtol=1e-5)
    # drawn over the image itself: same shape (a partial edge tile ends where the image ends),
    # same world placement, every pixel shows the score of the tile it belongs to
    assert heat.multiscale and tuple(heat.level_shapes[0]) == img.shape
    np.testing.assert_array_equal(heat.scale, layer.scale)
    np.testing.assert_array_equal(heat.translate, layer.translate)
    for i, j in grid:
        y0, x0, h, ww = grid.bounds(i, j)
        for px in ((y0, x0), (y0 + h - 1, x0 + ww - 1)):
            np.testing.assert_allclose(_value_at(heat, px), expected[i, j], rtol=1e-5)  # NaN: too small
            assert np.allclose(heat.world_to_data(layer.data_to_world(px)), px)
    assert grid.bounds(3, 5)[2:] == (116, 60) and heat.extent.data[1].tolist() == [499, 699]
    assert heat.interpolation2d == "nearest"
    # the blurred tile is the least sharp one
    assert np.unravel_index(np.nanargmin(w.result.scores[0]), grid.grid_shape) == (1, 2)


def test_threshold_moves_flagged_count(qc):
    viewer, w = qc
    img = _textured(blur_tiles=[(0, 0), (2, 3)], tile=128)
    viewer.add_image(img, name="sec")
    w.layer_combo.value = "sec"
    w.metric_combo.value = "autocorr"  # score sliders (px sliders of the blur metric: test_qc_blurmap_widget.py)
    w.tile_spin.value = 128
    w.run(sync=True)
    scores = w.result.scores
    lo, hi = np.nanmin(scores), np.nanmax(scores)
    w.set_thresholds(correct=lo - 1, retake=lo - 1)
    assert w.flagged_counts == (0, 0)
    # move the slider itself, as a proofreader would
    w.correct_slider.value = float(np.sort(scores.ravel())[2]) + 1e-6
    n_correct, _ = w.flagged_counts
    assert n_correct == 3
    flags = viewer.layers["sec flagged"]
    grid_decisions = flags.metadata["emdeblur_decisions"]["decisions"]
    assert int((grid_decisions == dec.CORRECT).sum()) == 3
    flagged = [tuple(v) for v in np.argwhere(grid_decisions[0] == dec.CORRECT)]
    i, j = flagged[0]
    ring = flags.data[0].raster.outline > 0  # outlined up close, filled zoomed out (the review view's zoom policy)
    assert _value_at(flags, (i * 128, j * 128 + 5)) == dec.CORRECT + (RING_ADD if ring else 0)  # where the tile is
    assert "correct 3" in w.count_label.value
    w.correct_spin.value = float(hi) + 1
    assert sum(w.flagged_counts) == scores.size
    # retake can never be above correct
    w.set_thresholds(retake=float(hi) + 5)
    assert w.result.correct_threshold >= w.result.retake_threshold
    assert w.flagged_counts[1] == scores.size


def test_live_update_is_fast_for_10000_tiles(qc):
    viewer, w = qc
    img = _textured(shape=(100 * 16, 100 * 16), seed=3)
    viewer.add_image(img, name="big")
    w.layer_combo.value = "big"
    w.metric_combo.value = "autocorr"  # the blur metric needs tiles of at least 64 px
    w.tile_spin.value = 16
    w.run(sync=True)
    assert w.result.scores.size == 10_000
    times = []
    for q in np.linspace(0.05, 0.5, 8):
        w.set_thresholds(correct=float(np.nanquantile(w.result.scores, q)))
        times.append(w.last_update_ms)
    # the update is timed for the benchmark (benchmarks/qc_threshold.py), not judged here
    assert all(t > 0 for t in times)


def test_stack_gets_per_section_heatmaps(qc):
    viewer, w = qc
    stack = np.stack([_textured(seed=s, blur_tiles=[(s, s)], tile=128) for s in range(3)])
    viewer.add_image(stack, name="stack", scale=(50.0, 4.0, 4.0))
    w.layer_combo.value = "stack"
    w.tile_spin.value = 128
    w.run(sync=True)
    heat = viewer.layers["stack focus"]
    assert tuple(heat.level_shapes[0]) == stack.shape
    assert heat.scale[0] == 50.0
    for z in range(3):
        assert np.unravel_index(np.argmin(w.result.scores[z]), (4, 6)) == (z, z)
        assert _value_at(heat, (z, z * 128 + 64, z * 128 + 64)) == pytest.approx(float(w.result.scores[z, z, z]))
    # hover text for a tile (image pixel coordinates)
    assert w.tile_info_at((1, 130, 140)).startswith("z=1 (1, 1):")


def test_worker_thread_scoring_and_cancel(qc, qtbot):
    viewer, w = qc
    stack = np.stack([_textured(seed=s) for s in range(6)])
    viewer.add_image(stack, name="stack")
    w.layer_combo.value = "stack"
    w.tile_spin.value = 64
    w.run()
    assert w.worker is not None and not w.score_btn.enabled
    qtbot.waitUntil(lambda: w.idle, timeout=60_000)  # set back on finished
    assert np.isfinite(w.result.scores).all()
    assert w.score_btn.enabled
    # cancel: quit right away; the run ends, the UI is usable, scored sections are kept
    w.run()
    w.cancel()
    qtbot.waitUntil(lambda: w.idle, timeout=60_000)
    assert w.score_btn.enabled


def test_export_csv_matches_scores(qc, tmp_path):
    viewer, w = qc
    img = _textured(blur_tiles=[(1, 1)], tile=128)
    viewer.add_image(img, name="sec")
    w.layer_combo.value = "sec"
    w.tile_spin.value = 128
    w.run(sync=True)
    out = w.export_csv(tmp_path / "report.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == w.result.scores.size
    r = next(r for r in rows if r["row"] == "1" and r["col"] == "1")
    assert float(r["score"]) == pytest.approx(float(w.result.scores[0, 1, 1]), rel=1e-5)
    assert {"file", "section", "row", "col", "y0", "x0", "height", "width", "score", "decision"} <= set(rows[0])
    # never overwrites an existing report
    before = out.read_bytes()
    assert w.export_csv(out) is None
    assert out.read_bytes() == before


def test_bad_layers_notify_and_do_nothing(qc):
    viewer, w = qc
    viewer.add_image(np.zeros((8, 8), np.uint8), name="tiny")
    w.layer_combo.value = "tiny"
    w.run(sync=True)
    assert w.result is None and "tiny focus" not in [l.name for l in viewer.layers]
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    w.layer_combo.value = "rgb"
    w.run(sync=True)
    assert w.result is None
