"""Fidelity check of a corrected tile: is it explained by the original under the estimated blur?

A corrected tile ``c`` of an original tile ``o`` whose blur is estimated as a Gaussian of ``sigma``
px should satisfy ``blur(c, sigma) ~= o`` up to noise. The residual ``r = o - blur(c, sigma)`` is
compared with the noise level of ``o`` (robust MAD of its finest-scale detail);
``ratio = rms(r) / noise``. A ratio far above 1 (``FIDELITY_RATIO_LIMIT``) means the correction
is not explained by the original under the estimated blur: structure may have been invented, and
the tile is marked "check by eye". numpy/scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FIDELITY_RATIO_LIMIT = 3.0

__all__ = ["FIDELITY_RATIO_LIMIT", "fidelity_ratio", "noise_level"]


def noise_level(tile: np.ndarray) -> float:
    """Robust noise sigma of a tile (MAD of the diagonal finest-scale detail, Donoho style)."""
    t = np.asarray(tile, np.float64)
    if min(t.shape) < 4:
        return float(t.std())
    d = (t[1:, 1:] - t[:-1, 1:] - t[1:, :-1] + t[:-1, :-1]) / 2.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def fidelity_ratio(original: np.ndarray, corrected: np.ndarray, sigma: float) -> float:
    """``rms(original - blur(corrected, sigma)) / noise(original)``; about 1 when consistent.

    Parameters
    ----------
    original, corrected : ndarray
        The tile before and after correction (same shape).
    sigma : float
        Estimated Gaussian blur of the original in px (NaN or <= 0.05: no re-blur).
    """
    o = np.asarray(original, np.float64)
    c = np.asarray(corrected, np.float64)
    reblurred = ndimage.gaussian_filter(c, sigma, mode="reflect") if sigma > 0.05 else c
    m = 4 if min(o.shape) > 16 else 0  # ignore the filter's boundary rows
    r = (o - reblurred)[m : o.shape[0] - m or None, m : o.shape[1] - m or None]
    noise = max(noise_level(o), 1e-6 * (np.ptp(o) or 1.0))
    return float(np.sqrt(np.mean(r**2)) / noise)
