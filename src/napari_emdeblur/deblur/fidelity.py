"""Fidelity check of a corrected tile: is the original explained by the correction, blurred?

A correction ``c`` of an original tile ``o`` claims to have removed some blur. The PSF estimate of
:mod:`napari_emdeblur.qc.psf` (the one the semi-blind model and the QC blur map use) gives the
total Gaussian-equivalent blur of both tiles as covariances ``S_o`` and ``S_c``; their difference
``S_d = S_o - S_c`` (made positive semi-definite) is the blur removed. If the correction is
faithful, ``o ~= blur(c, S_d)`` up to noise: the residual ``r = o - blur(c, S_d)`` is compared with
the noise of ``o`` in the band where structure lives and noise does not dominate (``BAND``
cycles/px): ``ratio = sqrt(residual power / noise power)`` there, with the noise power from the
original's own separable noise model (``qc.psf.noise_model``: white, or correlated along either scan
axis). A faithful correction leaves noise only (ratio ~1); a ratio far above 1
(``FIDELITY_RATIO_LIMIT``) means the original cannot be explained by the correction: structure may
have been invented or lost, and the tile is marked "check by eye". Comparing a band rather than
the whole spectrum makes an invented membrane stand out of the noise instead of averaging away.
Using the difference, not the original's total blur, keeps the acquisition's own resolution (a
FIB-SEM section reads ~1.5 px when sharp) out of the check. numpy/scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..qc.psf import MIN_SIDE, estimate_psf_tiles, noise_model, power_spectra

FIDELITY_RATIO_LIMIT = 3.0
BAND = (0.02, 0.25)  # cycles/px compared

__all__ = ["FIDELITY_RATIO_LIMIT", "Fidelity", "check_fidelity", "noise_level"]


def noise_level(tile: np.ndarray) -> float:
    """Robust noise sigma of a tile (MAD of the diagonal finest-scale detail, Donoho style)."""
    t = np.asarray(tile, np.float64)
    if min(t.shape) < 4:
        return float(t.std())
    d = (t[1:, 1:] - t[:-1, 1:] - t[1:, :-1] + t[:-1, :-1]) / 2.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


@dataclass(frozen=True)
class Fidelity:
    """The check's result: ``ratio`` (NaN when the tile has no PSF estimate) and the original's
    estimated blur (major/minor px, angle in degrees from +x) and noise (in [0, 1] units).
    """

    ratio: float
    blur_major: float
    blur_minor: float
    blur_angle: float
    noise: float


def _gaussian_blur(img: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``img`` blurred by the Gaussian of covariance ``cov`` ((x, y) order, px^2): its transfer function
    ``exp(-2 pi^2 f^T cov f)`` applied by FFT to the image padded by reflection (3.5 sigma), so the
    borders see mirrored context, as a reflecting convolution would; unlike a spatial kernel, the
    cost does not grow with the blur removed.
    """
    ev = np.linalg.eigvalsh(cov)
    r = max(1, int(math.ceil(3.5 * math.sqrt(max(float(ev[-1]), 1e-6)))))
    h, w = img.shape
    r = min(r, h - 1, w - 1)
    p = np.pad(img, r, mode="symmetric")
    fy = np.fft.fftfreq(p.shape[0])[:, None]
    fx = np.fft.rfftfreq(p.shape[1])[None, :]
    quad = cov[0, 0] * fx * fx + 2 * cov[0, 1] * fx * fy + cov[1, 1] * fy * fy
    out = np.fft.irfft2(np.fft.rfft2(p) * np.exp(-2 * math.pi**2 * np.maximum(quad, 0.0)), s=p.shape)
    return out[r : r + h, r : r + w]


def check_fidelity(original: np.ndarray, corrected: np.ndarray, lo: float = 0.0, hi: float = 1.0,
                   quant: float = 1.0 / 255.0) -> Fidelity:
    """Fidelity of ``corrected`` to ``original`` (see the module docstring).

    Parameters
    ----------
    original, corrected : ndarray
        The tile before and after correction (same 2-D shape, any real dtype).
    lo, hi : float
        The value range mapped onto [0, 1] (``io.values.value_range``).
    quant : float
        Quantisation step in [0, 1] units (``qc.psf.quant_step``).
    """
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    o = (np.asarray(original, np.float64) - lo) * scale
    c = (np.asarray(corrected, np.float64) - lo) * scale
    nan = Fidelity(math.nan, math.nan, math.nan, math.nan, math.nan)
    if o.shape != c.shape or o.ndim != 2 or min(o.shape) < MIN_SIDE:
        return nan
    est = estimate_psf_tiles(np.stack([o, c]).astype(np.float32), quant=quant)
    if not np.isfinite(est.sigma_major[0]):
        return nan
    major, minor, angle, noise = (float(v[0]) for v in (est.sigma_major, est.sigma_minor, est.angle, est.noise))
    cov_c = np.nan_to_num(est.cov[1].astype(np.float64))  # a flat correction: nothing removed
    ev, vec = np.linalg.eigh(est.cov[0].astype(np.float64) - cov_c)
    cov_d = (vec * np.clip(ev, 0.0, None)) @ vec.T
    reblurred = _gaussian_blur(c, cov_d) if ev.max() > 1e-3 else c
    h, w = o.shape
    P = power_spectra(np.stack([o, o - reblurred]).astype(np.float32))
    Nx, Ny, Nc = noise_model(P[:1], w, quant)
    fy = np.abs(np.fft.fftfreq(h))[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    band = (np.hypot(fx, fy) >= BAND[0]) & (np.hypot(fx, fy) <= BAND[1])
    noise_pow = (Ny[0][:, None] * Nx[0][None, :] / Nc[0])[band].sum()
    ratio = float(np.sqrt(P[1][band].sum() / max(float(noise_pow), 1e-30)))
    return Fidelity(ratio, major, minor, angle, noise)
