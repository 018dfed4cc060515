"""Do-no-harm gate: a window without excess blur comes out of the model as it went in.

A restoration network also denoises and sharpens what is already sharp; on a sharp tile that is a
change of good data, not a correction. Every model output passes through this gate
(``InferenceParams.keep_sharp``, on by default): per inference window, the excess blur of the
*input* is estimated with the QC's own estimator (:func:`napari_emdeblur.qc.blurmap.qc_tiles`,
whole-window weights; the number decisions use, in px), and the output is
``input + g * (model - input)`` with

* ``g = 0`` at or below :data:`KEEP_BELOW_PX` (sharp: the input is returned unchanged) and for
  windows without tissue signal (empty: nothing to deblur);
* ``g = 1`` at or above :data:`FULL_ABOVE_PX` (the model's output as it is);
* linear in between, so neighbouring windows of a tiled image (blended over their overlap) never
  jump between "corrected" and "untouched".

The ramp sits below the default "correct" decision (1 px, :mod:`napari_emdeblur.qc.thresholds`):
a tile flagged for correction always gets the full model output; only sharp regions inside a
whole-image or rectangle correction are protected. Windows too small for the estimator
(< ``qc.content.MIN_SIDE`` px) get ``g = 1``: the user chose them and there is no evidence either way.
The measured effect is in docs/restoration.md (the "do no harm" rows, gate on and off).
"""

from __future__ import annotations

import numpy as np

from ..qc import content
from ..qc.blurmap import qc_tiles

#: excess blur (px) at or below which a window passes through unchanged
KEEP_BELOW_PX = 0.25
#: excess blur (px) at or above which the model's output is used as it is
FULL_ABOVE_PX = 0.6

__all__ = ["FULL_ABOVE_PX", "KEEP_BELOW_PX", "gate_weights", "apply_gate"]


def gate_weights(windows: np.ndarray, quant: float = 1.0 / 255.0) -> np.ndarray:
    """Per-window weight of the model output, in [0, 1].

    Parameters
    ----------
    windows : ndarray, shape (n, h, w)
        Model inputs in [0, 1] (the unit the models work in).
    quant : float
        Quantisation step of the data in those units (1/255 for 8-bit, 1/4095 for 12-bit).

    Returns
    -------
    ndarray, shape (n,), float32
        0 keeps the input, 1 takes the model output.
    """
    w = np.asarray(windows, np.float32)
    if w.ndim != 3:
        raise ValueError(f"expected windows (n, h, w), got shape {w.shape}")
    n, h, wd = w.shape
    if n == 0:
        return np.zeros(0, np.float32)
    if min(h, wd) < content.MIN_SIDE:
        return np.ones(n, np.float32)
    b = qc_tiles(w, window=None, value_range=(0.0, 1.0), quant=quant)
    ex = np.asarray(b.excess, np.float64)
    g = np.clip((ex - KEEP_BELOW_PX) / (FULL_ABOVE_PX - KEEP_BELOW_PX), 0.0, 1.0)
    g = np.where(np.asarray(b.empty, bool), 0.0, g)
    g = np.where(np.isnan(g), 1.0, g)  # no estimate for a non-empty window: trust the selection
    return g.astype(np.float32)


def apply_gate(x: np.ndarray, y: np.ndarray, quant: float = 1.0 / 255.0) -> np.ndarray:
    """``x + g * (y - x)`` per window; ``x``, ``y`` of shape (n, 1, h, w) or (n, h, w) in [0, 1]."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    g = gate_weights(x.reshape(x.shape[0], x.shape[-2], x.shape[-1]), quant)
    g = g.reshape((-1,) + (1,) * (x.ndim - 1))
    return x + g * (y - x)
