"""The QC dock with the blur metric on real EM: the blur map in px with a colour bar in px, the
switch to the focus score, thresholds in px, empty tiles shown and counted apart, the astigmatism
lines, hover text and the CSV's blur columns (real napari viewer)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_emdeblur.deblur.train import degrade
from napari_emdeblur.io import load_section
from napari_emdeblur.qc import decisions as dec
from napari_emdeblur.qc.thresholds import DEFAULT_BLUR_PX
from napari_emdeblur.widgets.qc import QCWidget


def _mosaic(shared_data) -> tuple[np.ndarray, dict]:
    """2 x 3 tiles of 256 px of held-out SBEM: sharp, 1.8 px, 4.5 px, blank resin (empty), astigmatic
    (major 3 px, minor 0.9 px at 30 deg) and sharp."""
    img = np.asarray(load_section(shared_data / "sbem_rodent_cdeep3m" / "086.png").data)
    rng = np.random.default_rng(3)
    out = img[:512, :768].copy()
    psfs = {(0, 1): degrade.gaussian_psf(1.8), (0, 2): degrade.gaussian_psf(4.5),
            (1, 1): degrade.elliptical_gaussian_psf(3.0, 0.9, 30.0)}
    for (i, j), k in psfs.items():
        sl = (slice(i * 256, (i + 1) * 256), slice(j * 256, (j + 1) * 256))
        t = degrade.blur(img[sl].astype(np.float32) / 255, k)
        out[sl] = np.clip(np.round(t * 255), 0, 255).astype(np.uint8)
    out[256:512, :256] = np.clip(np.round(120 + 6 * rng.standard_normal((256, 256))), 0, 255).astype(np.uint8)
    want = {(0, 0): "ok", (0, 1): "correct", (0, 2): "retake", (1, 0): "empty", (1, 1): "correct", (1, 2): "ok"}
    return out, want


@pytest.fixture
def scored(make_napari_viewer, shared_data):
    viewer = make_napari_viewer()
    w = QCWidget(viewer)
    viewer.window.add_dock_widget(w)
    img, want = _mosaic(shared_data)
    viewer.add_image(img, name="sec", scale=(5.0, 5.0))
    w.layer_combo.value = "sec"
    w.tile_spin.value = 256
    assert w.metric_combo.value == "blur"  # the default
    w.run(sync=True)
    return viewer, w, want


def _centre(i: int, j: int) -> tuple[int, int]:
    """Image pixel at the centre of tile (i, j)."""
    return i * 256 + 128, j * 256 + 128


def test_blur_map_in_px_with_colour_bar(scored):
    viewer, w, _ = scored
    blur = viewer.layers["sec blur (px)"]
    heat = viewer.layers["sec focus"]
    ex = w.result.blur.excess[0]
    # drawn over the image itself (lazy multiscale, the image's scale): every pixel shows its tile's px
    assert blur.multiscale and tuple(blur.level_shapes[0]) == viewer.layers["sec"].data.shape
    got = np.array([[blur.data[0][_centre(i, j)] for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(got, ex, rtol=1e-6)  # NaN (empty tile) shows nothing
    assert blur.colorbar.visible and blur.metadata["emdeblur_heatmap"]["unit"] == "px"
    lo, hi = blur.contrast_limits
    assert lo == 0.0 and hi >= DEFAULT_BLUR_PX[1]  # the colour scale is in px
    assert tuple(blur.scale) == tuple(heat.scale) == (5.0, 5.0)
    assert blur.visible and not heat.visible and w.show_combo.value == "blur (px)"
    w.show("focus score")
    assert heat.visible and not blur.visible
    w.show_combo.value = "blur (px)"
    assert blur.visible and not heat.visible
    # the blur grows with the added blur
    assert ex[0, 0] < 1.0 < ex[0, 1] < 3.0 < ex[0, 2]


def test_px_thresholds_empty_tiles_and_astigmatism(scored, tmp_path):
    viewer, w, want = scored
    assert w.thresholds_px == pytest.approx(DEFAULT_BLUR_PX)
    assert w.correct_slider.label == "correct above (px)" and w.correct_spin.value == pytest.approx(1.0)
    d = w.result.decisions[0]
    got = {(i, j): dec.DECISION_NAMES[int(d[i, j])] for i in range(2) for j in range(3)}
    assert got == want
    labels = viewer.layers["sec flagged"]
    assert int(labels.data[0][_centre(1, 0)]) == dec.EMPTY  # shown distinctly (grey)
    assert w.empty_count == 1 and "empty 1" in w.count_label.value
    assert w.flagged_counts == (2, 1)  # the empty tile is counted apart
    # thresholds set in px by the spin box: 2 px lets the 1.8 px tile pass; retake follows up
    w.correct_spin.value = 2.0
    assert w.thresholds_px[0] == pytest.approx(2.0)
    assert dec.DECISION_NAMES[int(w.result.decisions[0, 0, 1])] == "ok"
    assert w.result.decisions[0, 1, 0] == dec.EMPTY  # whatever the thresholds
    w.set_thresholds_px(5.0)
    assert w.thresholds_px[1] >= 5.0 and w.flagged_counts == (0, 0)
    w.set_thresholds_px(*DEFAULT_BLUR_PX)
    # the astigmatic tile gets a line along its major axis (30 deg from +x towards +y)
    vec = viewer.layers["sec astigmatism"]
    rows = {tuple(np.floor((v[0] + v[1] / 2) / 256).astype(int)): v[1] for v in vec.data}  # centred on the tile
    assert (1, 1) in rows
    dy, dx = rows[(1, 1)]
    assert abs(np.degrees(np.arctan2(dy, dx)) % 180 - 30.0) < 15.0
    assert (0, 1) not in rows and (1, 0) not in rows  # isotropic blur, empty tile: no line
    # hover and CSV
    assert "empty (no_signal)" in w.tile_info_at(_centre(1, 0))
    assert " px " in w.tile_info_at(_centre(0, 1)) and "correct" in w.tile_info_at(_centre(0, 1))
    path = w.export_csv(tmp_path / "qc.csv")
    with open(path, newline="") as f:
        rows_csv = {(int(r["row"]), int(r["col"])): r for r in csv.DictReader(f)}
    assert rows_csv[(1, 0)]["decision"] == "empty" and rows_csv[(1, 0)]["empty_reason"] == "no_signal"
    assert float(rows_csv[(0, 2)]["blur_px"]) > 3.0 and rows_csv[(0, 2)]["decision"] == "retake"


def test_other_metric_hides_the_blur_map(scored):
    viewer, w, _ = scored
    w.metric_combo.value = "autocorr"
    w.run(sync=True)
    assert "sec blur (px)" not in viewer.layers and "sec astigmatism" not in viewer.layers
    assert viewer.layers["sec focus"].visible
    assert not w.show_combo.enabled and w.result.blur is None
    assert w.correct_slider.label == "correct below"
    with pytest.raises(ValueError, match="blur metric"):
        w.set_thresholds_px(1.0)


def test_blur_metric_refuses_tiles_under_64_px(scored):
    viewer, w, _ = scored
    before = w.result
    n_layers = len(viewer.layers)
    w.tile_spin.value = 32
    w.run(sync=True)  # refused with a notification: nothing scored, nothing added
    assert w.result is before and len(viewer.layers) == n_layers
