"""The do-no-harm gate: sharp input comes out unchanged, blurred input gets the model's output."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_emdeblur._sample_data import sample_paths
from napari_emdeblur.deblur.gate import FULL_ABOVE_PX, KEEP_BELOW_PX, apply_gate, gate_weights
from napari_emdeblur.deblur.infer import InferenceParams, correct_image
from napari_emdeblur.deblur.weights import load_model
from napari_emdeblur.io import load_section


@pytest.fixture(scope="module")
def sharp() -> np.ndarray:
    """A sharp real EM crop (the bundled sample's ground truth), uint8."""
    return np.asarray(load_section(sample_paths()["ground_truth"]).data)[:384, :384]


@pytest.fixture(scope="module")
def model():
    return load_model(device="cpu")[0]


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(np.rint(ndimage.gaussian_filter(img.astype(np.float32), sigma)), 0, 255).astype(np.uint8)


def test_ramp_constants_sit_below_the_correct_decision():
    from napari_emdeblur.qc.thresholds import DEFAULT_BLUR_PX

    assert 0 < KEEP_BELOW_PX < FULL_ABOVE_PX < DEFAULT_BLUR_PX[0]


def test_weights_sharp_blurred_empty_small(sharp):
    u = sharp.astype(np.float32) / 255
    blurred = _blur(sharp, 2.0).astype(np.float32) / 255
    flat = np.full_like(u, 0.5)
    g = gate_weights(np.stack([u, blurred, flat]))
    assert g[0] == 0.0  # sharp: the input is kept
    assert g[1] == 1.0  # 2 px of blur: the model's output
    assert g[2] == 0.0  # no tissue signal: nothing to deblur
    assert np.all(gate_weights(np.zeros((2, 32, 32), np.float32)) == 1.0)  # too small to judge
    x = np.stack([u, blurred])[:, None]
    y = x + 0.1
    out = apply_gate(x, y)
    assert np.array_equal(out[0], x[0]) and np.allclose(out[1], y[1])


def test_sharp_image_passes_through_the_shipped_model_unchanged(sharp, model):
    params = InferenceParams(tile=256, overlap=32, batch=2, device="cpu")
    out = correct_image(sharp, model, params)
    assert np.array_equal(out, sharp)
    raw = correct_image(sharp, model, InferenceParams(tile=256, overlap=32, batch=2, device="cpu", keep_sharp=False))
    assert not np.array_equal(raw, sharp)  # without the gate the network does change it


def test_blurred_image_gets_the_full_correction(sharp, model):
    blurred = _blur(sharp, 2.0)
    on = correct_image(blurred, model, InferenceParams(tile=256, overlap=32, batch=2, device="cpu"))
    off = correct_image(blurred, model, InferenceParams(tile=256, overlap=32, batch=2, device="cpu", keep_sharp=False))
    assert np.array_equal(on, off)
    err = lambda a: float(np.mean((a.astype(np.float64) - sharp) ** 2))  # noqa: E731
    assert err(on) < err(blurred)


def test_blur_beyond_the_trained_range_is_left_for_reimaging(sharp, model):
    """8 px of Gaussian blur (the models were trained up to 3.5 px; the estimator reads ~8): the
    network would extrapolate, so the gate passes the windows through unchanged and a warning says so;
    5.5 px is faded in between, and with the gate off the network's output is used."""
    from napari_emdeblur.deblur.gate import BEYOND_FROM_PX, BEYOND_PX, weights_from_blur, window_blur
    from napari_emdeblur.deblur.infer import iter_correct_image
    from napari_emdeblur.qc.messages import Notice, drain

    ex = np.array([0.1, 0.4, 2.0, BEYOND_FROM_PX, 5.5, BEYOND_PX, 9.0, np.nan, 3.0])
    empty = np.array([False] * 8 + [True])
    g = weights_from_blur(ex, empty)
    np.testing.assert_allclose(g, [0, 3 / 7, 1, 1, 0.5, 0, 0, 1, 0], atol=1e-6)

    very = _blur(sharp, 8.0)
    excess, _ = window_blur(very[None].astype(np.float32) / 255)
    assert excess[0] > BEYOND_PX
    params = InferenceParams(tile=256, overlap=32, batch=2, device="cpu")
    msgs: list = []
    out = drain(iter_correct_image(very, model, params), msgs.append)
    assert np.array_equal(out, very)
    notes = [m for m in msgs if isinstance(m, Notice) and "beyond what the model was trained on" in m.message]
    assert len(notes) == 1 and notes[0].level == "warning" and "re-image" in notes[0].message
    raw = correct_image(very, model, InferenceParams(tile=256, overlap=32, batch=2, device="cpu", keep_sharp=False))
    assert not np.array_equal(raw, very)
    # the same per QC tile (one window each, and one box large enough to be tiled): counted in tiles
    from napari_emdeblur.deblur.infer import iter_correct_tiles
    from napari_emdeblur.qc.messages import TileResult

    boxes = [(0, 0, 128, 128), (128, 0, 128, 128), (0, 128, 256, 256)]
    msgs = list(iter_correct_tiles(very, model, boxes, InferenceParams(tile=256, overlap=32, batch=2, device="cpu")))
    for r in (m for m in msgs if isinstance(m, TileResult)):
        assert np.array_equal(r.data, very[r.y0 : r.y0 + r.data.shape[0], r.x0 : r.x0 + r.data.shape[1]])
    notes = [m.message for m in msgs if isinstance(m, Notice) and "beyond" in m.message]
    assert notes and notes[0].startswith("3 of 3 tile(s)")
    # a blur inside the range gets no such warning
    mild = [m for m in iter_correct_image(_blur(sharp, 2.0), model, params) if isinstance(m, Notice)]
    assert not any("beyond" in m.message for m in mild)
