"""Do-no-harm gate: a window without excess blur, or blurred beyond what the model was trained on,
comes out of the model as it went in.

A restoration network also denoises and sharpens what is already sharp; on a sharp tile that is a
change of good data, not a correction. Every model output passes through this gate
(``InferenceParams.keep_sharp``, on by default): per inference window, the excess blur of the
*input* is estimated with the QC's own estimator (:func:`napari_emdeblur.qc.blurmap.qc_tiles`,
whole-window weights; the number decisions use, in px), and the output is
``input + g * (model - input)`` with

* ``g = 0`` at or below :data:`KEEP_BELOW_PX` (sharp: the input is returned unchanged) and for
  windows without tissue signal (empty: nothing to deblur);
* ``g = 1`` from :data:`FULL_ABOVE_PX` (the model's output as it is) to :data:`BEYOND_FROM_PX`;
* linear in between, so neighbouring windows of a tiled image (blended over their overlap) never
  jump between "corrected" and "untouched";
* faded out again above :data:`BEYOND_FROM_PX` and ``g = 0`` at or above :data:`BEYOND_PX`: blur
  that far beyond what the models were trained on (Gaussian sigma <= 3.5 px, astigmatic major
  <= 4 px, disk radius <= 5 px; what the estimator reads at those extremes and on the benchmark's
  conditions is measured by ``benchmarks/restoration.py``, docs/restoration.md) is not corrected
  but left for re-imaging. The network's output there is an extrapolation: on the two more
  defocused images of the real SEM defocus series (DeepFocus) it invents a periodic texture and
  doubled edges. :mod:`.infer` counts those windows and says so in a ``Notice``.

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
#: excess blur (px) above which the model's output is faded out again (beyond the trained range)
BEYOND_FROM_PX = 5.0
#: excess blur (px) at or above which a window passes through unchanged (too blurred to correct)
BEYOND_PX = 6.0

__all__ = ["BEYOND_FROM_PX", "BEYOND_PX", "FULL_ABOVE_PX", "KEEP_BELOW_PX", "apply_gate", "gate_weights",
           "weights_from_blur", "window_blur"]


def window_blur(windows: np.ndarray, quant: float = 1.0 / 255.0) -> tuple[np.ndarray, np.ndarray]:
    """Excess blur (px) and "no tissue signal" of each window: what the gate decides on.

    Parameters
    ----------
    windows : ndarray, shape (n, h, w)
        Model inputs in [0, 1] (the unit the models work in).
    quant : float
        Quantisation step of the data in those units (1/255 for 8-bit, 1/4095 for 12-bit).

    Returns
    -------
    excess : ndarray, shape (n,), float64
        NaN where there is no estimate (windows under ``qc.content.MIN_SIDE`` px: all of them).
    empty : ndarray, shape (n,), bool
    """
    w = np.asarray(windows, np.float32)
    if w.ndim != 3:
        raise ValueError(f"expected windows (n, h, w), got shape {w.shape}")
    n, h, wd = w.shape
    if n == 0 or min(h, wd) < content.MIN_SIDE:
        return np.full(n, np.nan), np.zeros(n, bool)
    b = qc_tiles(w, window=None, value_range=(0.0, 1.0), quant=quant)
    return np.asarray(b.excess, np.float64), np.asarray(b.empty, bool)


def weights_from_blur(excess: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Per-window weight of the model output in [0, 1] (0 keeps the input) from :func:`window_blur`."""
    ex = np.asarray(excess, np.float64)
    g = np.clip((ex - KEEP_BELOW_PX) / (FULL_ABOVE_PX - KEEP_BELOW_PX), 0.0, 1.0)
    g = g * np.clip((BEYOND_PX - ex) / (BEYOND_PX - BEYOND_FROM_PX), 0.0, 1.0)
    g = np.where(np.asarray(empty, bool), 0.0, g)
    g = np.where(np.isnan(g), 1.0, g)  # no estimate for a non-empty window: trust the selection
    return g.astype(np.float32)


def gate_weights(windows: np.ndarray, quant: float = 1.0 / 255.0) -> np.ndarray:
    """Per-window weight of the model output, in [0, 1] (0 keeps the input, 1 takes the output);
    ``windows`` (n, h, w) in [0, 1], ``quant`` their quantisation step (see :func:`window_blur`).
    """
    return weights_from_blur(*window_blur(windows, quant))


def apply_gate(x: np.ndarray, y: np.ndarray, quant: float = 1.0 / 255.0, weights: np.ndarray | None = None
               ) -> np.ndarray:
    """``x + g * (y - x)`` per window; ``x``, ``y`` of shape (n, 1, h, w) or (n, h, w) in [0, 1];
    ``weights`` ``g`` when already computed (else :func:`gate_weights` of ``x``).
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    g = gate_weights(x.reshape(x.shape[0], x.shape[-2], x.shape[-1]), quant) if weights is None else weights
    g = np.asarray(g, np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
    return x + g * (y - x)
