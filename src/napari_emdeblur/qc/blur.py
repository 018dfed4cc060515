"""Per-tile blur estimate: Gaussian-equivalent sigma (px) from the power-spectrum roll-off.

A Gaussian blur of std ``s`` multiplies the power spectrum by ``exp(-4 pi^2 f^2 s^2)``. EM
sections have roughly power-law spectra ``P0(f) ~ C f^-alpha``, so above the (white) noise
floor the radially averaged spectrum of a tile follows

    log(P(f) - N) = log C - alpha log f - 4 pi^2 s^2 f^2

which is *linear* in the unknowns ``(log C, alpha, s^2)``. For every tile: Hann-windowed FFT,
radial average in ``NBINS`` bins, noise floor ``N`` = median power above 0.42 cycles/px, then a
weighted least-squares fit over the bins from 0.03 cycles/px up to where the signal falls to
2x the noise floor (weights grow with the bin's SNR), with a weak prior pulling ``alpha``
towards ``ALPHA_PRIOR`` (without it ``alpha`` and ``s`` trade off when few bins are above the
noise, i.e. for strong blur). The raw ``s`` is mapped through a fixed linear calibration
(``CALIBRATION``, fitted on synthetic Gaussian blur of ISBI-2012 *training* sections) to the
Gaussian sigma; its error on held-out sections is reported in ``docs/model_card.md``.

The estimate is the *total* blur, so a sharp acquisition reads a small non-zero value (its
own resolution limit); values below about 0.7 px are not meaningful. Flat tiles (no bins
above the noise floor) and tiles smaller than 32 px give NaN.

Vectorised: all tiles of the same shape go through one batched FFT, one matrix product for
the radial average and one batched 3x3 solve; there is no per-pixel Python loop.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .tiling import TileGrid

NBINS = 48
F_MIN = 0.03
F_NOISE = 0.42
SNR_MIN = 2.0
ALPHA_PRIOR = 2.0
PRIOR_WEIGHT = 1.0
CALIBRATION = (1.103, -0.183)  # sigma = a * raw + b (fit: ISBI-2012 train, Gaussian 1-3.5 px)
MIN_SIDE = 32


@lru_cache(maxsize=8)
def _spectral_setup(h: int, w: int, nbins: int = NBINS):
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    fr = np.sqrt(fy**2 + fx**2).ravel()
    # real FFT: columns other than 0 and Nyquist stand for two frequencies
    mult = np.full((h, fx.shape[1]), 2.0)
    mult[:, 0] = 1.0
    if w % 2 == 0:
        mult[:, -1] = 1.0
    edges = np.linspace(0.0, 0.5, nbins + 1)
    idx = np.digitize(fr, edges) - 1
    B = np.zeros((fr.size, nbins), np.float32)
    ok = (idx >= 0) & (idx < nbins)
    B[np.nonzero(ok)[0], idx[ok]] = mult.ravel()[ok]
    B /= np.maximum(B.sum(axis=0, keepdims=True), 1e-9)
    freq = 0.5 * (edges[:-1] + edges[1:])
    return win, B, freq


def tile_spectra(tiles: np.ndarray, nbins: int = NBINS) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectra of a stack of equal-sized tiles ``(n, h, w)``."""
    n, h, w = tiles.shape
    win, B, freq = _spectral_setup(h, w, nbins)
    t = tiles.astype(np.float32)
    t = t - t.mean(axis=(1, 2), keepdims=True)
    F = np.fft.rfft2(t * win)
    P = (F.real**2 + F.imag**2).astype(np.float32).reshape(n, -1) @ B
    return freq, P


def fit_sigma(freq: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Raw Gaussian sigma per spectrum (rows of ``P``) by the weighted log-linear fit."""
    noise = np.median(P[:, freq > F_NOISE], axis=1, keepdims=True)
    S = P - noise
    valid = (freq[None, :] > F_MIN) & (freq[None, :] < F_NOISE) & (S > SNR_MIN * noise)
    Sp = np.where(valid, S, 1.0)
    w = np.where(valid, Sp / (Sp + noise), 0.0)  # SNR weight in [0, 1)
    X = np.stack([np.ones_like(freq), -np.log(freq), -4 * np.pi**2 * freq**2], axis=1)  # (nb, 3)
    y = np.log(Sp)
    A = np.einsum("nb,bi,bj->nij", w, X, X)
    rhs = np.einsum("nb,bi,nb->ni", w, X, y)
    A[:, 1, 1] += PRIOR_WEIGHT
    rhs[:, 1] += PRIOR_WEIGHT * ALPHA_PRIOR
    A[:, 0, 0] += 1e-6
    A[:, 2, 2] += 1e-6
    good = valid.sum(axis=1) >= 3
    out = np.full(P.shape[0], np.nan, np.float32)
    if good.any():
        coef = np.linalg.solve(A[good], rhs[good][..., None])[..., 0]
        out[good] = np.sqrt(np.clip(coef[:, 2], 0.0, None))
    return out


def estimate_blur_tiles(
    image: np.ndarray, tile: int = 256, calibration: tuple[float, float] | None = CALIBRATION
) -> np.ndarray:
    """Gaussian-equivalent blur sigma (px) of every tile of a 2-D image.

    Returns a float32 array of shape ``TileGrid(image.shape, tile).grid_shape``; NaN where the
    tile is flat or thinner than 32 px. Intensity scale and offset do not matter.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    grid = TileGrid(img.shape, tile)
    out = np.full(grid.grid_shape, np.nan, np.float32)
    # group tiles by shape: full tiles via a free reshape, then the partial row/col/corner
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, j in grid:
        _, _, h, w = grid.bounds(i, j)
        groups.setdefault((h, w), []).append((i, j))
    for (h, w), ij in groups.items():
        if min(h, w) < MIN_SIDE:
            continue
        for k in range(0, len(ij), 64):  # bounded memory
            chunk = ij[k : k + 64]
            stack = np.stack([img[grid.slices(i, j)] for i, j in chunk]).astype(np.float32)
            freq, P = tile_spectra(stack)
            s = fit_sigma(freq, P)
            for (i, j), v in zip(chunk, s):
                out[i, j] = v
    if calibration is not None:
        a, b = calibration
        out = np.where(np.isfinite(out), a * out + b, np.nan).astype(np.float32)
    return out


def estimate_blur(image: np.ndarray, tile: int = 256) -> float:
    """One sigma for the whole image: median over its tiles."""
    t = estimate_blur_tiles(image, tile)
    return float(np.nanmedian(t)) if np.isfinite(t).any() else float("nan")
