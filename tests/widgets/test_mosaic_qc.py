"""A MultiSEM section in the real viewer: a multiscale layer that fills in, QC per acquisition tile
on the tiles' real footprints, aligned with the image at every level; hover, export, selection."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from napari_emdeblur._reader import pyramid_of, watch_pyramids
from napari_emdeblur.qc import decisions as dec
from napari_emdeblur.widgets.qc import QCWidget
from napari_emdeblur.widgets.selection import TILE_MODES, choose_tiles


def _world_corner(layer, k, i, j):
    """World position of the top-left corner of level-``k`` pixel (i, j), from public layer state."""
    d = np.asarray(layer.downsample_factors[k])[-2:]
    return np.asarray(layer.translate)[-2:] + np.asarray(layer.scale)[-2:] * (np.array([i, j]) * d - 0.5)


@pytest.fixture
def mosaic(make_napari_viewer, qtbot, msem_section, monkeypatch):
    monkeypatch.setenv("EMDEBLUR_MULTISCALE_SIDE", "1024")  # the test section is 3.8k x 4.5k px
    folder, man = msem_section
    viewer = make_napari_viewer()
    layer, = viewer.open(str(folder), plugin="napari-emdeblur")
    return viewer, layer, man


def test_mosaic_layer_is_multiscale_and_fills_in(mosaic, qtbot):
    viewer, layer, man = mosaic
    assert layer.multiscale and len(layer.level_shapes) == 4
    f = layer.downsample_factors
    assert np.allclose(f[:, -2:], [[1, 1], [2, 2], [4, 4], [8, 8]])  # exact power-of-two levels
    pyr = pyramid_of(layer)
    assert pyr is not None and layer.interpolation2d == "linear"
    qtbot.waitUntil(pyr.idle, timeout=120_000)
    # the overview levels come from the MultiSEM thumbnails; full-resolution tiles are read (once
    # each at most) only for the finer level on screen
    assert pyr.stats["thumb_reads"] == man["n_tiles"] and pyr.stats["full_reads"] <= man["n_tiles"]
    if layer.data_level >= pyr.first_overview:
        assert pyr.stats["full_reads"] == 0
    coarse = np.asarray(layer.data[3])
    assert (coarse > 0).mean() > 0.5 and coarse.std() > 5  # area-averaged EM, not a placeholder
    # the layer was refreshed on the GUI thread as tiles came in
    qtbot.waitUntil(lambda: watch_pyramids(viewer).refreshes > 0, timeout=10_000)
    # and the coarsest level on screen shows the built overview, not what it held when napari first
    # sliced it (napari keeps that level materialised until the data is replaced: _reader.redraw)
    k = len(layer.level_shapes) - 1
    layer.locked_data_level = k  # as a whole-section view at that level
    coarse = np.asarray(layer.data[k])
    y, x = np.unravel_index(np.argmax(coarse), coarse.shape)
    world = layer.data_to_world(np.array([y, x]) * f[k, -2:] + f[k, -2:] / 2 - 0.5)
    qtbot.waitUntil(lambda: layer.get_value(world, world=True)[1] == coarse[y, x], timeout=10_000)
    layer.locked_data_level = None


def test_qc_per_acquisition_tile_on_real_footprints(mosaic, qtbot, tmp_path):
    viewer, layer, man = mosaic
    w = QCWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer_combo.value = layer.name
    w.tile_spin.value = 256
    w.run()
    qtbot.waitUntil(lambda: w.idle, timeout=120_000)
    r = w.result
    assert r.by_file and r.acquisition is not None and len(r.scores) == man["n_tiles"]
    tiles = r.tiles
    names = [Path(t.path).name for t in tiles]
    blurred = [Path(b["file"]).name for b in man["blurred"]]
    flagged = [names[i] for i in np.flatnonzero(r.decisions != dec.OK)]
    assert flagged == blurred  # one decision per file; gap and edge tiles never flagged
    heat, flags = viewer.layers[f"{layer.name} focus"], viewer.layers[f"{layer.name} flagged"]
    i = names.index(blurred[0])
    t = tiles[i]
    yc, xc = t.y0 + t.height // 2, t.x0 + t.width // 2
    # same levels, factors and placement as the image: aligned at every level
    for lyr in (heat, flags):
        np.testing.assert_array_equal(lyr.level_shapes, layer.level_shapes)
        np.testing.assert_allclose(lyr.downsample_factors, layer.downsample_factors)
        for k in (0, 1):
            d = layer.downsample_factors[k][-1]
            a, b = int(t.y0 // d), int(t.x0 // d)
            np.testing.assert_allclose(_world_corner(lyr, k, a, b), _world_corner(layer, k, a, b))
    for k in (0, 1):
        d = int(layer.downsample_factors[k][-1])
        assert flags.data[k][yc // d, xc // d] == r.decisions[i] != dec.OK
        assert heat.data[k][yc // d, xc // d] == pytest.approx(r.scores[i])
    # the flag ends where the file ends (later neighbours overlap it; beyond them: other files)
    right = t.x0 + t.width + 5
    assert flags.data[0][yc, right] == dec.OK or r.footprints.owner_at(0, yc, right) == i
    # hover names the file and its blur in px (the default blur metric)
    info = w.tile_info_at((yc, xc))
    assert blurred[0] in info and " px " in info and ("correct" in info or "retake" in info)
    # the blur map in px on the same footprints, with its colour bar in px
    blur = viewer.layers[f"{layer.name} blur (px)"]
    assert blur.multiscale and blur.colorbar.visible and blur.metadata["emdeblur_heatmap"]["unit"] == "px"
    assert blur.data[0][yc, xc] == pytest.approx(r.blur.excess[i]) and r.blur.excess[i] > 1.0
    # export: one row per file with its path
    out = w.export_csv(tmp_path / "qc.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == man["n_tiles"] and rows[i]["file"] == t.path and rows[i]["decision"] != "ok"
    # the correction dock's flagged selection: grid cells inside that file
    choice = choose_tiles(viewer, layer, layer.data[0], TILE_MODES[0], 256)
    cells = choice.selection.tiles
    assert cells and choice.qc_tile == 256
    for _, a, b in cells:
        cy, cx = a * 256 + 128, b * 256 + 128
        assert t.y0 <= cy < t.y0 + t.height and t.x0 <= cx < t.x0 + t.width


def test_flagged_files_of_a_mosaic_corrected_in_a_child_process(mosaic, qtbot):
    """The correction dock corrects the flagged file's cells in a spawned process (torch and the model
    never in the viewer's process) into a store over the pyramid, aligned with it at every level."""
    pytest.importorskip("torch")
    from napari_emdeblur.deblur.remote import ProcessCorrection
    from napari_emdeblur.widgets.correct import CorrectionWidget

    viewer, layer, man = mosaic
    qc = QCWidget(viewer)
    viewer.window.add_dock_widget(qc)
    qc.layer_combo.value = layer.name
    qc.tile_spin.value = 256
    qc.run()
    qtbot.waitUntil(lambda: qc.idle, timeout=120_000)
    expected = sorted(choose_tiles(viewer, layer, layer.data[0], TILE_MODES[0], 256).selection.tiles)
    assert expected
    cw = CorrectionWidget(viewer)
    viewer.window.add_dock_widget(cw)
    assert cw.layer_combo.value == layer.name  # preselected: the image, not a QC layer
    cw.tiles_combo.value = TILE_MODES[0]
    cw.device_combo.value = "cpu"
    cw.run()
    assert isinstance(cw.job, ProcessCorrection)
    qtbot.waitUntil(lambda: cw.idle, timeout=300_000)
    s = layer.name
    corrected = viewer.layers[f"{s} corrected"]
    skipped = [tuple(t) for t in corrected.metadata["emdeblur_correction"]["skipped_empty"]]  # no tissue signal
    assert cw.reports and sorted([*cw.reports, *skipped]) == expected
    expected = sorted(cw.reports)
    assert corrected.multiscale
    np.testing.assert_array_equal(corrected.level_shapes, layer.level_shapes)
    np.testing.assert_allclose(corrected.downsample_factors, layer.downsample_factors)
    np.testing.assert_allclose(corrected.scale, layer.scale)
    np.testing.assert_allclose(corrected.translate, layer.translate)
    _, a, b = expected[0]
    y0, x0 = a * 256, b * 256
    c0 = np.asarray(corrected.data[0][y0 : y0 + 256, x0 : x0 + 256], np.float64)
    assert not np.array_equal(c0, np.asarray(layer.data[0][y0 : y0 + 256, x0 : x0 + 256]))  # corrected
    c1 = np.asarray(corrected.data[1][y0 // 2 : y0 // 2 + 128, x0 // 2 : x0 // 2 + 128], np.float64)
    assert np.abs(c1 - c0.reshape(128, 2, 128, 2).mean(axis=(1, 3))).max() <= 0.5  # level 1 = its area mean
    names = [x.name for x in viewer.layers]  # QC marks above the opaque corrected image
    assert names.index(s) < names.index(f"{s} corrected") < names.index(f"{s} flagged")
