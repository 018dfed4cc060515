"""End-to-end correction workflow with the real viewer, the sample data and the shipped weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_emdeblur import io as emio  # noqa: E402
from napari_emdeblur.qc import decisions as dec  # noqa: E402
from napari_emdeblur.qc.focus import score_tiles  # noqa: E402
from napari_emdeblur.qc.tiling import TileGrid  # noqa: E402
from napari_emdeblur.widgets.correct import CorrectionWidget  # noqa: E402
from napari_emdeblur.widgets.qc import QCWidget  # noqa: E402


@pytest.fixture
def flow(make_napari_viewer):
    from napari_emdeblur._sample_data import make_sample_data

    viewer = make_napari_viewer()
    for data, kwargs, kind in make_sample_data():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    section, gt = viewer.layers[0], viewer.layers[1]
    qc, cw = QCWidget(viewer), CorrectionWidget(viewer)
    viewer.window.add_dock_widget(qc)
    viewer.window.add_dock_widget(cw)
    qc.layer_combo.value = section.name
    return viewer, qc, cw, section, gt


def _flag_known_soft_tiles(qc, section):
    """Score, then move the threshold so that some tiles are flagged to correct."""
    qc.tile_spin.value = int(section.metadata.get("sample_tiles", {}).get("tile", 256))
    qc.run(sync=True)
    scores = qc.result.scores
    finite = np.sort(scores[np.isfinite(scores)])
    qc.set_thresholds(correct=float(finite[2]) + 1e-6, retake=float(finite[0]) - 1.0)
    assert qc.flagged_counts == (3, 0)


def test_end_to_end_correct_review_export(flow, tmp_path, qtbot):
    viewer, qc, cw, section, gt = flow
    original = np.array(section.data, copy=True)
    _flag_known_soft_tiles(qc, section)
    cw.layer_combo.value = section.name
    cw.gt_combo.value = gt.name
    cw.device_combo.value = "cpu"
    cw.run(sync=True)
    corrected = viewer.layers[f"{section.name} corrected"]
    assert corrected.data.shape == original.shape and corrected.data.dtype == original.dtype
    np.testing.assert_array_equal(section.data, original)  # the original layer is never modified
    grid = TileGrid(original.shape, qc.result.tile)
    flagged = {(i, j) for _, i, j in np.argwhere(qc.result.decisions == dec.CORRECT)}
    assert {(i, j) for (_, i, j) in cw.reports} == flagged
    metric = qc.result.metric
    for i, j in grid:
        sl = grid.slices(i, j)
        if (i, j) in flagged:
            before = score_tiles(original[sl], max(original[sl].shape), metric)[0, 0]
            after = score_tiles(corrected.data[sl], max(original[sl].shape), metric)[0, 0]
            assert after > before, (i, j, before, after)
        else:
            np.testing.assert_array_equal(corrected.data[sl], original[sl])
    meta = corrected.metadata["emdeblur_correction"]
    assert meta["precision"] == "fp32" and "cpu" in meta["device"]
    assert cw.device_label.value == "-> cpu"  # the device the run reported
    assert sorted(map(tuple, meta["corrected_tiles"])) == sorted((0, i, j) for i, j in flagged)
    assert meta["model_card_sha256"]
    # after correction the corrected layer is re-scored: before/after per tile
    after = viewer.layers[f"{section.name} corrected focus"]
    np.testing.assert_allclose(cw.after_scores[0], score_tiles(corrected.data, qc.result.tile, metric), rtol=1e-5)
    assert after.contrast_limits == viewer.layers[f"{section.name} focus"].contrast_limits
    level0 = after.data[0]  # drawn on the tiles' footprints, at the image's own size and place
    assert tuple(level0.shape) == tuple(section.data.shape) and tuple(after.scale) == tuple(section.scale)
    for (_, i, j) in cw.reports:
        assert cw.after_scores[0, i, j] > qc.result.scores[0, i, j]
        (y0, y1), (x0, x1) = ((s.start, s.stop) for s in grid.slices(i, j))
        assert float(level0[(y0 + y1) // 2, (x0 + x1) // 2]) == pytest.approx(float(cw.after_scores[0, i, j]))
    # fidelity check ran on every corrected tile (ratio ~1 means explained by the original)
    assert all(np.isfinite(r.fidelity_ratio) and r.fidelity_ratio > 0 for r in cw.reports.values())
    # contrast limits are linked between original and corrected
    section.contrast_limits = (10, 200)
    assert tuple(corrected.contrast_limits) == (10, 200)
    # ground truth: per-tile PSNR in the reports and a heatmap layer
    assert all(np.isfinite(r.psnr_after) for r in cw.reports.values())
    assert f"{section.name} PSNR gain" in [l.name for l in viewer.layers]

    # review: revert one tile -> back to the original bytes; mark one for retake
    (z, i, j) = sorted(cw.reports)[0]
    cw.review(z, i, j, "revert")
    np.testing.assert_array_equal(corrected.data[grid.slices(i, j)], original[grid.slices(i, j)])
    assert cw.reports[(z, i, j)].accepted is False
    (z2, i2, j2) = sorted(cw.reports)[1]
    cw.review(z2, i2, j2, "accept")
    assert cw.reports[(z2, i2, j2)].accepted is True

    # grid view and back
    cw.toggle_view()
    assert viewer.canvas.grid.enabled
    cw.toggle_view()
    assert not viewer.canvas.grid.enabled

    # export and read back equal, with the report
    out = tmp_path / "corrected.ome.tif"
    assert cw.export(out) == out
    back = emio.load_section(out)
    np.testing.assert_array_equal(np.asarray(back.data), corrected.data)
    assert back.pixel_size is not None
    np.testing.assert_allclose(back.pixel_size, tuple(section.scale[-2:]), rtol=1e-3)
    report = json.loads((tmp_path / "corrected_report.json").read_text())
    assert len(report["tiles"]) == len(cw.reports)
    assert any(t["accepted"] is False for t in report["tiles"])
    # exporting again to the same path is refused and leaves the file alone
    stamp = out.stat().st_mtime_ns
    assert cw.export(out) is None
    assert out.stat().st_mtime_ns == stamp
    # the Export button writes in a worker thread: returns at once, the button is busy until done
    out2 = tmp_path / "threaded.zarr"
    assert cw.export(out2, sync=False) is None
    assert not cw.export_btn.enabled and cw.export_btn.text == "Exporting..."
    assert cw.export(tmp_path / "second.tif") is None  # one export at a time
    qtbot.waitUntil(lambda: cw.export_btn.enabled, timeout=60000)
    assert cw.export_btn.text == "Export" and not (tmp_path / "second.tif").exists()
    np.testing.assert_array_equal(np.asarray(emio.load_section(out2).data), corrected.data)
    assert json.loads((tmp_path / "threaded_report.json").read_text())["tiles"]
    # what is exported is what was shown when Export was pressed: a revert during the export changes neither
    # the image nor the report being written
    shown = np.array(corrected.data, copy=True)
    out3 = tmp_path / "frozen.tif"
    assert cw.export(out3, sync=False) is None
    (zr, ir, jr) = sorted(cw.reports)[1]
    cw.review(zr, ir, jr, "revert")
    qtbot.waitUntil(lambda: cw.export_btn.enabled, timeout=60000)
    np.testing.assert_array_equal(np.asarray(emio.load_section(out3).data), shown)
    frozen = {(t["section"], t["row"], t["col"]): t for t in
              json.loads((tmp_path / "frozen_report.json").read_text())["tiles"]}
    assert frozen[(zr, ir, jr)]["accepted"] is True  # as it was when exported (accepted above)
    assert cw.reports[(zr, ir, jr)].accepted is False
    # a failure in the worker is reported (one line naming the target) and leaves nothing behind
    from napari.utils.notifications import notification_manager

    seen: list[str] = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    assert cw.export(blocked / "x.tif", sync=False) is None
    qtbot.waitUntil(lambda: cw.export_btn.enabled, timeout=60000)
    assert not (blocked / "x.tif").exists() and blocked.read_text().startswith("a file")
    assert seen and seen[-1].startswith("Export failed") and "x.tif" in seen[-1], seen


def test_cancel_leaves_layers_consistent(flow, qtbot):
    viewer, qc, cw, section, gt = flow
    original = np.array(section.data, copy=True)
    cw.layer_combo.value = section.name
    cw.tiles_combo.value = "all"
    cw.device_combo.value = "cpu"
    cw.batch_spin.value = 1
    cw.run()
    qtbot.waitUntil(lambda: len(cw.reports) >= 1, timeout=120_000)
    cw.cancel()
    qtbot.waitUntil(lambda: cw.idle, timeout=120_000)
    assert cw.job is not None and cw.job.finished.wait(60)  # the correction process ended too
    assert not cw.job.process.is_alive()
    n = len(cw.reports)
    total = TileGrid(original.shape, cw.grid.tile).n_tiles
    assert 1 <= n < total  # stopped early
    corrected = viewer.layers[f"{section.name} corrected"]
    # added hidden, each shown by a set-up step of its own: all shown once the dock is idle
    assert corrected.visible and viewer.layers[f"{section.name} review"].visible
    done = {(i, j) for (_, i, j) in cw.reports}
    for i, j in cw.grid:
        if (i, j) not in done:
            np.testing.assert_array_equal(corrected.data[cw.grid.slices(i, j)], original[cw.grid.slices(i, j)])
    assert len(corrected.metadata["emdeblur_correction"]["corrected_tiles"]) == n
    np.testing.assert_array_equal(section.data, original)
    assert cw.run_btn.enabled


def test_error_paths_notify(flow, tmp_path):
    viewer, qc, cw, section, gt = flow
    n_layers = len(viewer.layers)
    # flagged mode without a QC result
    cw.layer_combo.value = section.name
    cw.run(sync=True)
    assert len(viewer.layers) == n_layers
    # weights that do not load: a corrupt file
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    cw.tiles_combo.value = "all"
    cw.weights_edit.value = str(bad)
    cw.run(sync=True)
    assert not cw.reports
    assert f"{section.name} corrected" not in [l.name for l in viewer.layers]  # nothing partly made
    # ground truth of another shape
    viewer.add_image(np.zeros((64, 64), np.uint8), name="wrong gt")
    cw.weights_edit.value = ""
    cw.gt_combo.value = "wrong gt"
    before = len(viewer.layers)
    cw.run(sync=True)
    assert len(viewer.layers) == before
    # export with nothing corrected yet
    assert cw.export(tmp_path / "x.tif") is None
    assert not (tmp_path / "x.tif").exists()


def test_report_names():
    from napari_emdeblur.io.formats import stem_of as report_base_name

    assert report_base_name("out.tif") == "out"
    assert report_base_name("run_1.5nm.ome.tif") == "run_1.5nm"
    assert report_base_name("sec.v2.zarr") == "sec.v2"
    assert report_base_name("x.ome.tiff") == "x"


def test_rectangle_tiles_tif_export_and_review_roundtrip(flow, tmp_path):
    viewer, qc, cw, section, gt = flow
    original = np.array(section.data, copy=True)
    ps = float(section.scale[-1])
    # a rectangle (world coordinates) over pixels 300..700 x 20..200 -> tiles rows 1-2, col 0
    viewer.add_shapes([np.array([[300, 20], [700, 200]]) * ps], shape_type="rectangle", name="roi")
    cw.layer_combo.value = section.name
    cw.tiles_combo.value = "rectangle (Shapes)"
    cw.shapes_combo.value = "roi"
    cw.device_combo.value = "cpu"
    cw.run(sync=True)
    assert sorted(cw.reports) == [(0, 1, 0), (0, 2, 0)]
    corrected = viewer.layers[f"{section.name} corrected"]
    grid = cw.grid
    fixed = np.array(corrected.data[grid.slices(1, 0)], copy=True)
    # revert then accept: the correction comes back, the report agrees with the pixels
    cw.review(0, 1, 0, "revert")
    np.testing.assert_array_equal(corrected.data[grid.slices(1, 0)], original[grid.slices(1, 0)])
    assert [0, 1, 0] not in corrected.metadata["emdeblur_correction"]["corrected_tiles"]
    cw.review(0, 1, 0, "accept")
    np.testing.assert_array_equal(corrected.data[grid.slices(1, 0)], fixed)
    assert [0, 1, 0] in corrected.metadata["emdeblur_correction"]["corrected_tiles"]
    assert cw.reports[(0, 1, 0)].accepted is True
    # plain .tif export: report named <name>_report.*, pixel size kept
    out = tmp_path / "fixed.tif"
    assert cw.export(out) == out
    assert (tmp_path / "fixed_report.csv").exists() and (tmp_path / "fixed_report.json").exists()
    back = emio.load_section(out)
    np.testing.assert_array_equal(np.asarray(back.data), corrected.data)
    np.testing.assert_allclose(back.pixel_size, (ps, ps), rtol=1e-3)
    # an existing report blocks the export before the image is written
    out2 = tmp_path / "again.tif"
    (tmp_path / "again_report.csv").write_text("keep me")
    assert cw.export(out2) is None
    assert not out2.exists() and (tmp_path / "again_report.csv").read_text() == "keep me"


def test_corrected_layer_never_saved_over_the_input(flow, tmp_path):
    from napari_emdeblur._writer import write_single_image

    viewer, qc, cw, section, gt = flow
    src = tmp_path / "section.tif"
    emio.save_image(src, np.asarray(section.data), pixel_size=(4.6, 4.6))
    layer = viewer.open(str(src), plugin="napari-emdeblur")[0]
    before = src.read_bytes()
    cw.layer_combo.value = layer.name
    cw.tiles_combo.value = "all"
    cw.device_combo.value = "cpu"
    cw.qc_tile_spin.value = 512
    cw.run(sync=True)
    corrected = viewer.layers[f"{layer.name} corrected"]
    data, meta, _ = corrected.as_layer_data_tuple()
    with pytest.raises(ValueError):
        write_single_image(str(src), data, meta)  # File > Save onto the original: refused
    assert cw.export(src) is None
    assert src.read_bytes() == before


def test_threaded_errors_notify_once_and_leave_no_layer(flow, qtbot, tmp_path):
    viewer, qc, cw, section, gt = flow
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    cw.layer_combo.value = section.name
    cw.tiles_combo.value = "all"
    cw.weights_edit.value = str(bad)
    cw.run()
    assert cw.worker is not None
    # the worker may already be done here: wait on the widget's state, not on a signal
    qtbot.waitUntil(lambda: cw.idle, timeout=60_000)
    assert cw.status.value.startswith("failed")  # not overwritten by the finished handler
    assert f"{section.name} corrected" not in [l.name for l in viewer.layers]
    assert cw.run_btn.enabled


def test_toggle_view_restores_visibility(flow):
    viewer, qc, cw, section, gt = flow
    _flag_known_soft_tiles(qc, section)
    cw.layer_combo.value = section.name
    cw.device_combo.value = "cpu"
    cw.run(sync=True)
    before = {l.name: l.visible for l in viewer.layers}
    assert before[gt.name] is False  # the sample's ground truth starts hidden
    cw.toggle_view()
    cw.toggle_view()
    after = {l.name: l.visible for l in viewer.layers}
    assert after[gt.name] is False
    assert after[f"{section.name} corrected"] is True


@pytest.mark.slow
def test_opening_the_docks_does_not_import_torch(tmp_path):
    """The device label describes ``auto`` until a run resolves it: no torch import (seconds)
    when a proofreader opens the docks. Checked in a fresh interpreter (this one has torch)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from qtpy.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from napari.components import ViewerModel\n"
        "from napari_emdeblur.widgets.correct import CorrectionWidget\n"
        "from napari_emdeblur.widgets.qc import QCWidget\n"
        "v = ViewerModel()\n"
        "w, q = CorrectionWidget(v), QCWidget(v)\n"
        "print('torch' in sys.modules, '|', w.device_label.value)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    imported, label = r.stdout.strip().split(" | ")
    assert imported == "False" and "shown when a run starts" in label


def test_closed_docks_untie_their_viewer_callbacks(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    inserted = viewer.layers.events.inserted
    n_move, n_drag, n_ins = len(viewer.mouse_move_callbacks), len(viewer.mouse_drag_callbacks), len(inserted.callbacks)
    qc, cw = QCWidget(viewer), CorrectionWidget(viewer)
    assert len(viewer.mouse_move_callbacks) == n_move + 1 and len(viewer.mouse_drag_callbacks) == n_drag + 1
    assert len(inserted.callbacks) == n_ins + 2
    for w in (qc, cw):
        w.native.deleteLater()
    qtbot.waitUntil(lambda: len(inserted.callbacks) == n_ins, timeout=10_000)
    assert len(viewer.mouse_move_callbacks) == n_move and len(viewer.mouse_drag_callbacks) == n_drag
    viewer.add_image(np.zeros((32, 32), np.uint8))  # no callback into a deleted widget


def test_closing_the_dock_stops_the_correction_process(flow, qtbot):
    viewer, qc, cw, section, gt = flow
    cw.layer_combo.value = section.name
    cw.tiles_combo.value = "all"
    cw.device_combo.value = "cpu"
    cw.batch_spin.value = 1
    cw.run()
    qtbot.waitUntil(lambda: cw.job is not None and cw.job.process is not None, timeout=120_000)
    job, worker = cw.job, cw.worker
    viewer.window.remove_dock_widget(cw.native)  # the dock goes away mid-run
    cw.native.deleteLater()
    from qtpy.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # as the event loop would
    assert job.finished.wait(180)
    assert not job.process.is_alive()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=120_000)


def test_time_left_is_sane_after_a_few_tiles(flow):
    """The estimate after the first tiles, against the time the rest really took (both from the
    run's own messages; nothing is asserted about speed)."""
    viewer, qc, cw, section, gt = flow
    ps = float(section.scale[-1])
    viewer.add_shapes([np.array([[0, 0], [500, 700]]) * ps], shape_type="rectangle", name="roi")
    cw.layer_combo.value = section.name
    cw.tiles_combo.value = "rectangle (Shapes)"
    cw.shapes_combo.value = "roi"
    cw.device_combo.value = "cpu"
    cw.batch_spin.value = 1
    cw.run(sync=True)
    log = [(t, done, total, eta) for t, done, total, eta in cw.eta_log if done > 0]
    total = log[-1][2]
    assert total == len(cw.reports) >= 6
    t_end = log[-1][0]
    for t, done, _, eta in log:
        if 2 <= done <= total - 3:
            truth = t_end - t
            assert truth / 3 <= eta <= truth * 3, (done, eta, truth)


class _Recorded:
    """An array-like pyramid level that records every read: (level, on the GUI thread, pixels)."""

    def __init__(self, a, level, log):
        self.a, self.level, self.log = a, level, log
        self.shape, self.dtype, self.ndim, self.size = a.shape, a.dtype, a.ndim, a.size

    def __getitem__(self, key):
        import threading

        out = np.asarray(self.a[key])
        self.log.append((self.level, threading.current_thread() is threading.main_thread(), out.size))
        return out

    def __len__(self):
        return self.shape[0]

    def __reduce__(self):  # not picklable: the correction gets it through shared memory
        raise TypeError("not picklable")


def test_lazy_multiscale_layer_is_never_read_whole_on_the_ui_thread(make_napari_viewer, qtbot):
    """A pyramid whose every read is recorded with its thread: correcting two tiles reads, on the
    GUI thread, only what is on screen; the corrected layer is a store of patches, not a copy."""
    from napari_emdeblur._sample_data import make_sample_data
    from napari_emdeblur.widgets.corrected import CorrectedLevel

    base = np.asarray(make_sample_data()[0][0])
    big = np.tile(base, (2, 2))  # 2048 x 2048
    from scipy import ndimage

    soft = (slice(1024, 1536), slice(1024, 1280))  # the two tiles to correct, defocused (the do-no-harm
    big[soft] = ndimage.gaussian_filter(big[soft].astype(np.float32), 2.0).astype(np.uint8)  # gate keeps sharp ones)
    reads: list[tuple[int, bool, int]] = []
    levels = [big, big.reshape(1024, 2, 1024, 2).mean((1, 3)).astype(np.uint8),
              big.reshape(512, 4, 512, 4).mean((1, 3)).astype(np.uint8)]
    viewer = make_napari_viewer(show=True)  # drawn: napari picks the level and the region on screen
    layer = viewer.add_image([_Recorded(a, k, reads) for k, a in enumerate(levels)], multiscale=True,
                             name="lazy", contrast_limits=(0, 255))
    cw = CorrectionWidget(viewer)
    viewer.window.add_dock_widget(cw)
    viewer.add_shapes([np.array([[1030, 1030], [1500, 1260]])], shape_type="rectangle", name="roi")
    cw.layer_combo.value = layer.name
    cw.tiles_combo.value = "rectangle (Shapes)"
    cw.shapes_combo.value = "roi"
    cw.device_combo.value = "cpu"
    viewer.scene.camera.center = (1280, 1150)  # 1:1 over the tiles being corrected
    viewer.scene.camera.zoom = 1.0
    qtbot.waitUntil(lambda: layer.data_level == 0, timeout=10_000)
    reads.clear()
    cw.run()
    qtbot.waitUntil(lambda: cw.idle, timeout=300_000)
    assert sorted(cw.reports) == [(0, 4, 4), (0, 5, 4)]
    corrected = viewer.layers["lazy corrected"]
    assert corrected.multiscale and all(isinstance(lv, CorrectedLevel) for lv in corrected.data)
    assert corrected.data_level == 0 and cw._refresh.count >= 1  # shown, and refreshed, at 1:1
    ui = [n for level, main, n in reads if main and level == 0]
    assert ui, "the corrected layer on screen reads the original's visible region"
    assert max(ui) < big.size // 4 and sum(ui) < big.size // 2, (max(ui), sum(ui))  # never the whole level
    assert not any(main and n >= big.size for _, main, n in reads)
    assert cw._store.nbytes <= 2 * 256 * 256 * 2  # two tiles (all levels), not a copy of the section
    sl = (slice(1024, 1280), slice(1024, 1280))
    assert not np.array_equal(np.asarray(corrected.data[0][sl]), big[sl])  # corrected where asked
    np.testing.assert_array_equal(np.asarray(corrected.data[0][:1024, :1024]), big[:1024, :1024])


def test_long_device_names_do_not_widen_the_dock(make_napari_viewer):
    viewer = make_napari_viewer()
    cw = CorrectionWidget(viewer)
    viewer.window.add_dock_widget(cw)
    narrow = cw.native.minimumSizeHint().width()
    cw.device_label.value = "-> cuda:0 (" + "NVIDIA H200 with a very long marketing name " * 6 + ")"
    cw.status.value = "Correcting 133 tiles on " + "a very long device description " * 8
    assert cw.native.minimumSizeHint().width() <= max(narrow, 420)


def test_several_gpus_are_offered_one_by_one(make_napari_viewer):
    """The correction process reports how many GPUs it sees (its first notice; the service test
    checks it): with several, each is a menu entry (cuda:N) that reaches the run's parameters; with
    one or none the menu stays as it was."""
    cw = CorrectionWidget(make_napari_viewer())
    before = tuple(cw.device_combo.choices)
    cw._offer_gpus(1)
    assert tuple(cw.device_combo.choices) == before
    cw.device_combo.value = "cpu"
    cw._offer_gpus(3)
    assert {"cuda:0", "cuda:1", "cuda:2"} <= set(cw.device_combo.choices)
    assert cw.device_combo.value == "cpu"  # the choice is kept
    cw.device_combo.value = "cuda:1"
    assert cw.params().device == "cuda:1"
    cw._offer_gpus(3)  # again: no duplicates
    assert list(cw.device_combo.choices).count("cuda:1") == 1


def test_error_messages_lead_with_the_key_words(flow, tmp_path):
    from napari.utils.notifications import notification_manager

    viewer, qc, cw, section, gt = flow
    seen: list[str] = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    viewer.add_shapes([np.array([[0, 0], [200, 200]]) * float(section.scale[-1])], shape_type="rectangle",
                      name="roi")
    cw.layer_combo.value = section.name
    cw.tiles_combo.value = "rectangle (Shapes)"
    cw.shapes_combo.value = "roi"
    cw.device_combo.value = "cpu"
    cw.run(sync=True)
    deep = tmp_path / ("a_rather_long_folder_name_" * 4) / "another_level_of_folders"
    deep.mkdir(parents=True)
    out = deep / "corrected_section_export.ome.tif"
    out.write_bytes(b"keep")
    seen.clear()
    assert cw.export(out) is None
    assert seen and seen[-1].startswith("Already exists") and len(seen[-1].split(":")[0]) < 40
    cw.weights_edit.value = str(deep / "missing_weights_with_a_long_name.pt")
    seen.clear()
    cw.run(sync=True)
    assert seen and seen[-1].startswith("Weights file not found")


def test_do_no_harm_switch_reaches_the_service(flow):
    """The dock's do-no-harm switch: on (default), a sharp tile comes out byte for byte; off, the
    network's output replaces it (it also removes the real detector noise)."""
    viewer, qc, cw, section, gt = flow
    ps = float(section.scale[-1])
    viewer.add_shapes([np.array([[10, 778], [240, 1010]]) * ps], shape_type="rectangle", name="sharp roi")  # tile (0, 3)
    cw.layer_combo.value = section.name
    cw.tiles_combo.value = "rectangle (Shapes)"
    cw.shapes_combo.value = "sharp roi"
    cw.device_combo.value = "cpu"
    original = np.asarray(section.data)[:256, 768:1024]
    assert cw.gate_check.value and cw.params().keep_sharp
    out = {}
    for on in (True, False):
        cw.gate_check.value = on
        assert cw.params().keep_sharp is on
        cw.run(sync=True)
        assert list(cw.reports) == [(0, 0, 3)]
        corrected = viewer.layers[f"{section.name} corrected"]
        level = corrected.data[0] if corrected.multiscale else corrected.data
        out[on] = np.asarray(level[:256, 768:1024])
    np.testing.assert_array_equal(out[True], original)
    assert np.abs(out[False].astype(int) - original).mean() > 1.0
