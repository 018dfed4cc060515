"""Content check: tiles without usable tissue signal get their own decision, ``empty`` (numpy only).

Three tests, in this order; the first that fires names the reason (:data:`REASONS`):

``flat``
    the tile's grey values span at most one quantisation step (constant, padding);
``saturated``
    at least ``SAT_FRAC`` of the pixels sit at the ends of the value range (a clipped detector,
    over-exposed or black tiles);
``no_signal``
    the power between ``CONTENT_BAND`` = 0.015 and 0.1 cycles/px exceeds the tile's own noise by
    less than :func:`snr_min` times the noise: blank resin, pure detector noise, a slow gradient.
    The noise is the separable model of :mod:`.spectral` (white, or correlated along either scan
    axis) built from running means of the high-frequency rows and columns.

The SNR test reads the spectra the blur map computes anyway (no extra pass); the two pixel tests
read an 8x-subsampled grid of the whole tile (1/64 of its pixels), also on the fast path that
analyses only a centred window. In the benchmark (``benchmarks/focus_metrics.py``) real EM, sharp
or blurred by up to 6 px with its noises and gains, gives a band SNR of at least 3.2 (256 px
window) / 2.9 (128 px), the strongly defocused DeepFocus tiles at least 7.7; blank resin, shading
and pure noise at most 0.43 / 1.17: the thresholds 0.9 / 1.8 sit about at the geometric middle.
The band starts at 0.015 cycles/px so that a tile blurred by 5-10 px still shows its signal.

A fourth code, ``too_small``, marks partial edge tiles under :data:`MIN_SIDE` px: they are not
analysed and not counted as empty.
"""

from __future__ import annotations

import numpy as np

from .spectral import CONTENT_BAND, Spectra

__all__ = ["REASONS", "TISSUE", "FLAT", "SATURATED", "NO_SIGNAL", "TOO_SMALL", "MIN_SIDE", "SAT_FRAC", "SNR_MIN_256",
           "band_snr", "check", "pixel_stats", "snr_min", "CONTENT_BAND"]

#: reason codes: 0 = the tile has tissue signal; 1-3 = empty; 4 = too small to analyse (not empty)
REASONS: tuple[str, ...] = ("", "flat", "saturated", "no_signal", "too_small")
TISSUE, FLAT, SATURATED, NO_SIGNAL, TOO_SMALL = range(5)
MIN_SIDE = 64  # smaller (partial edge) tiles are not analysed: reason too_small
SNR_MIN_256 = 0.9  # the no_signal threshold for a 256 px analysis window; it scales as 256 / side
SAT_FRAC = 0.5
_STEP = 8  # pixel tests on every 8th row and column


def band_snr(s: Spectra) -> np.ndarray:
    """``sum(P - N) / sum(N)`` over the content band, per tile (-1 where the noise sum is 0)."""
    out = np.full(len(s.band_p), 0.0)
    np.divide(s.band_p, s.band_n, out=out, where=s.band_n > 0)
    return out - 1.0


def pixel_stats(tiles: np.ndarray, lo: float, hi: float, axes: tuple[int, int] = (1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """``(peak-to-peak, fraction at the range ends)`` per tile on an 8x-subsampled grid.

    Parameters
    ----------
    tiles : ndarray
        ``(n, h, w)`` with ``axes=(1, 2)``, or a 4-D tile view ``(R, h, C, w)`` with
        ``axes=(1, 3)`` (the outputs are then ``(R, C)``).
    lo, hi : float
        The ends of the value range (where a clipped detector sits).
    axes : (int, int)
        The pixel axes.

    Returns
    -------
    tuple of ndarray
    """
    sl = [slice(None)] * tiles.ndim
    for a in axes:
        sl[a] = slice(None, None, _STEP)
    sub = tiles[tuple(sl)]
    n = sub.shape[axes[0]] * sub.shape[axes[1]]
    mn = sub.min(axis=axes).astype(np.float64)
    mx = sub.max(axis=axes).astype(np.float64)
    at_end = np.count_nonzero(sub <= lo, axis=axes) + np.count_nonzero(sub >= hi, axis=axes)
    return mx - mn, at_end / n


def snr_min(side: float) -> float:
    """The ``no_signal`` threshold for an analysis window of ``side`` px: the band SNR of pure
    noise scatters as 1 / sqrt(frequencies in the band), i.e. as 1 / side.
    """
    return SNR_MIN_256 * 256.0 / float(side)


def check(ptp: np.ndarray, frac_end: np.ndarray, s: Spectra, quant: float,
          snr_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reason code per tile (index into :data:`REASONS`; 0 = tissue) and the band SNR.

    Parameters
    ----------
    ptp, frac_end : ndarray
        From :func:`pixel_stats`.
    s : Spectra
        The tiles' spectra (of the analysed window).
    quant : float
        Quantisation step in the tiles' units (1 for integer data).
    snr_threshold : float, optional
        Default :func:`snr_min` of the analysed window.

    Returns
    -------
    tuple of ndarray
        ``(reason uint8, snr float64)``.
    """
    snr = band_snr(s)
    thr = snr_min(np.sqrt(s.setup.h * s.setup.w)) if snr_threshold is None else float(snr_threshold)
    reason = np.zeros(len(snr), np.uint8)
    reason[snr < thr] = NO_SIGNAL
    reason[np.asarray(frac_end).ravel() >= SAT_FRAC] = SATURATED
    reason[np.asarray(ptp).ravel() <= quant] = FLAT
    return reason, snr
