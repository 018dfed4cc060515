"""Per-tile PSF and noise estimate from the 2-D power spectrum: blur in pixels, with astigmatism.

Model. A Gaussian PSF of covariance ``Sigma`` (px^2) multiplies the power spectrum by
``exp(-4 pi^2 f^T Sigma f)``. EM has a roughly power-law spectrum ``C |f|^-alpha``, and the noise
adds a floor ``N(f)``, so above the floor

    log(P(f) - N(f)) = log C - alpha log|f| - 4 pi^2 (Sxx fx^2 + 2 Sxy fx fy + Syy fy^2)

is *linear* in ``(log C, alpha, Sxx, Sxy, Syy)``. Per tile: Hann-windowed real FFT, power in
variance units, a *separable* noise model ``N(fy, fx) = Nx(fx) Ny(fy) / Nc`` measured where the
signal is weakest (``|fy|`` resp. ``fx`` above ``F_NOISE``; ``Nc`` in the corner where both are),
which is flat for white noise and follows the noise's colour when it is correlated along either
scan axis, so the fast-scan direction need not be known; then polar bins (``NR`` radial x ``NA``
angular) and one weighted least-squares solve per tile, with weak priors (``alpha`` towards 2,
``Sigma`` towards isotropy) for tiles with few bins above the noise. Every step is batched over
tiles: one FFT call, three medians, two matrix products and one batched 5x5 solve.

The result is the *total* Gaussian-equivalent blur of the tile (the acquisition's own resolution
included) as a major/minor standard deviation and an angle, plus the noise standard deviation
and the fitted signal spectrum ``(log C, alpha)`` that a Wiener filter needs. Tiles with fewer
than ``MIN_BINS`` bins significantly above twice the noise (flat, pure noise) give NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft

from ..io.values import value_range
from .tiling import TileGrid

NR = 20  # radial bins between F_MIN and F_NOISE cycles/px
NA = 8  # angular sectors over 180 degrees
F_MIN = 0.03
F_NOISE = 0.40
SNR_MIN = 2.0
SIGNIFICANCE = 4.0  # a bin must also exceed the noise by this many of its standard errors
MIN_BINS = 8
ALPHA_PRIOR = 2.0
ALPHA_WEIGHT = 10.0
ISO_WEIGHT = 0.03
MIN_SIDE = 96
#: noise floor of data quantised to 8 bits, in [0, 1] units (uniform quantisation: q^2 / 12)
QUANT_8BIT = 1.0 / 255.0


@dataclass(frozen=True)
class PSFEstimate:
    """Per-tile estimates (arrays of shape ``(n,)``; ``cov`` is ``(n, 2, 2)`` in (x, y) order).

    ``sigma_major``/``sigma_minor``: Gaussian-equivalent blur (px) along the major/minor axis;
    ``angle``: the major axis in degrees from +x towards +y (image rows), in [0, 180);
    ``noise``: noise standard deviation in the tile's units; ``log_c``, ``alpha``: the fitted
    signal power spectrum ``exp(log_c) |f|^-alpha`` (variance per frequency bin);
    ``n_bins``: polar bins above the noise (the fit's support).
    """

    sigma_major: np.ndarray
    sigma_minor: np.ndarray
    angle: np.ndarray
    noise: np.ndarray
    log_c: np.ndarray
    alpha: np.ndarray
    cov: np.ndarray
    n_bins: np.ndarray

    def __len__(self) -> int:
        return int(self.sigma_major.shape[0])

    @property
    def ratio(self) -> np.ndarray:
        """Minor / major (1 = isotropic); NaN where the estimate is NaN."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.sigma_major > 0, self.sigma_minor / self.sigma_major, 1.0)


@lru_cache(maxsize=16)
def _setup(h: int, w: int):
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    wnorm = float((win.astype(np.float64) ** 2).sum())
    fy1, fx1 = np.fft.fftfreq(h), np.fft.rfftfreq(w)
    fy, fx = np.meshgrid(fy1, fx1, indexing="ij")
    fr = np.hypot(fx, fy)
    ang = np.mod(np.arctan2(fy, fx), np.pi)
    mult = np.full(fr.shape, 2.0)  # rfft columns other than 0 and Nyquist stand for two
    mult[:, 0] = 1.0
    if w % 2 == 0:
        mult[:, -1] = 1.0
    redges = np.linspace(F_MIN, F_NOISE, NR + 1)
    ri = np.digitize(fr, redges) - 1
    ai = np.minimum((ang / np.pi * NA).astype(int), NA - 1)
    idx = np.where((ri >= 0) & (ri < NR), ri * NA + ai, -1).ravel()
    nb = NR * NA
    B = np.zeros((fr.size, nb), np.float64)
    sel = np.nonzero(idx >= 0)[0]
    B[sel, idx[sel]] = mult.ravel()[sel]
    cnt = B.sum(axis=0)
    B /= np.maximum(cnt, 1e-12)

    def bmean(v: np.ndarray) -> np.ndarray:
        return v.ravel() @ B

    f_b = np.maximum(bmean(fr), 1e-6)
    X = np.stack(
        [
            np.ones(nb),
            -np.log(f_b),
            -4 * np.pi**2 * bmean(fx**2),
            -8 * np.pi**2 * bmean(fx * fy),
            -4 * np.pi**2 * bmean(fy**2),
        ],
        axis=1,
    )
    rows_hi = np.abs(fy1) > F_NOISE
    cols_hi = fx1 > F_NOISE
    # a bin's power of pure noise scatters by ~N / sqrt(independent samples); the Hann window
    # correlates neighbouring frequencies, about 4 samples per independent one
    z = np.where(cnt > 0, SIGNIFICANCE / np.sqrt(np.maximum(cnt / 4.0, 1.0)), 1e6)
    return win, wnorm, B.astype(np.float32), X, z, rows_hi, cols_hi


def power_spectra(tiles: np.ndarray) -> np.ndarray:
    """Hann-windowed power spectra ``(n, h, w // 2 + 1)`` (real FFT) of mean-removed tiles, in
    variance units (white noise of variance ``s^2`` reads ``s^2`` at every frequency).
    """
    n, h, w = tiles.shape
    win, wnorm = _setup(h, w)[:2]
    t = tiles.astype(np.float32, copy=True)
    t -= t.mean(axis=(1, 2), keepdims=True)
    t *= win
    P = np.abs(sfft.rfft2(t, workers=-1))  # float32 magnitude
    P *= P
    P *= np.float32(1.0 / wnorm)
    return P


def noise_model(P: np.ndarray, w: int, quant: float = QUANT_8BIT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The separable noise model ``N(fy, fx) = Nx(fx) Ny(fy) / Nc`` of power spectra ``P`` of tiles
    ``w`` px wide (:func:`power_spectra`), measured where the signal is weakest.

    Returns ``(Nx (n, w//2+1), Ny (n, h), Nc (n,))``, each at least the quantisation floor.
    """
    n, h, _ = P.shape
    rows_hi, cols_hi = _setup(h, w)[5:7]
    floor = np.float32(quant * quant / 12.0)
    Nx = np.maximum(np.median(P[:, rows_hi, :], axis=1), floor)  # noise vs fx
    Ny = np.maximum(np.median(P[:, :, cols_hi], axis=2), floor)  # noise vs fy
    Nc = np.maximum(np.median(P[:, rows_hi][:, :, cols_hi].reshape(n, -1), axis=1), floor)
    return Nx, Ny, Nc


def _nan_estimate(n: int) -> PSFEstimate:
    nan = np.full(n, np.nan, np.float32)
    return PSFEstimate(nan, nan, nan, nan, nan, nan, np.full((n, 2, 2), np.nan, np.float32), np.zeros(n, np.int32))


def estimate_psf_tiles(tiles: np.ndarray, quant: float = QUANT_8BIT) -> PSFEstimate:
    """PSF and noise of every tile of a stack ``(n, h, w)`` of equal-sized tiles.

    Parameters
    ----------
    tiles : ndarray, shape (n, h, w)
        Tiles in [0, 1] units (any real dtype; scale and offset do not change the blur).
    quant : float
        Quantisation step of the data in the same units; sets a noise floor of ``quant**2 / 12``
        so that noise-free synthetic data do not fit leakage (default: 8 bits).

    Returns
    -------
    PSFEstimate
        NaN for tiles smaller than ``MIN_SIDE`` px or without enough signal above the noise.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 3:
        raise ValueError(f"expected a stack of tiles (n, h, w), got shape {tiles.shape}")
    n, h, w = tiles.shape
    if n == 0 or min(h, w) < MIN_SIDE:
        return _nan_estimate(n)
    _, _, B, X, z, _, _ = _setup(h, w)
    P = power_spectra(tiles)
    Nx, Ny, Nc = noise_model(P, w, quant)
    Pf = P.reshape(n, -1)
    Pb = Pf @ B
    # binned separable noise: sum_k Nx[fx_k] Ny[fy_k] B[k, b] / Nc
    Nb = (Ny[:, :, None] * Nx[:, None, :]).reshape(n, -1) @ B
    Nb /= Nc[:, None]
    S = Pb - Nb
    valid = S > (SNR_MIN + z[None]) * Nb  # above the noise, and not by chance
    Sp = np.where(valid, S, 1.0).astype(np.float64)
    wgt = np.where(valid, Sp / (Sp + Nb), 0.0)
    y = np.log(Sp)
    A = np.einsum("nb,bi,bj->nij", wgt, X, X)
    rhs = np.einsum("nb,bi,nb->ni", wgt, X, y)
    A[:, 1, 1] += ALPHA_WEIGHT
    rhs[:, 1] += ALPHA_WEIGHT * ALPHA_PRIOR
    lam = ISO_WEIGHT  # penalise (Sxx - Syy)^2 + 2 Sxy^2
    A[:, 2, 2] += lam
    A[:, 4, 4] += lam
    A[:, 2, 4] -= lam
    A[:, 4, 2] -= lam
    A[:, 3, 3] += 2 * lam
    A += 1e-6 * np.eye(5)  # keeps tiles with no bin above the noise solvable (they give NaN)
    coef = np.linalg.solve(A, rhs[..., None])[..., 0]
    sxx, sxy, syy = coef[:, 2], coef[:, 3], coef[:, 4]
    cov = np.stack([np.stack([sxx, sxy], -1), np.stack([sxy, syy], -1)], -2)
    ev, evec = np.linalg.eigh(cov)
    ev = np.clip(ev, 0.0, None)
    major = np.sqrt(ev[:, 1])
    minor = np.sqrt(ev[:, 0])
    v = evec[:, :, 1]
    angle = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 180.0
    noise_var = (Nx.mean(axis=1) * Ny.mean(axis=1) / Nc).astype(np.float64)
    nb = valid.sum(axis=1).astype(np.int32)
    ok = nb >= MIN_BINS
    nanf = lambda a: np.where(ok, a, np.nan).astype(np.float32)  # noqa: E731
    cov = np.where(ok[:, None, None], np.clip(cov, -1e4, 1e4), np.nan).astype(np.float32)
    return PSFEstimate(
        sigma_major=nanf(major),
        sigma_minor=nanf(minor),
        angle=nanf(angle),
        noise=np.sqrt(noise_var).astype(np.float32),
        log_c=nanf(coef[:, 0]),
        alpha=nanf(coef[:, 1]),
        cov=cov,
        n_bins=nb,
    )


def quant_step(dtype: np.dtype, lo: float, hi: float) -> float:
    """Quantisation step of ``dtype`` data mapped from ``[lo, hi]`` onto [0, 1] (8 bits for floats)."""
    if np.dtype(dtype).kind in "iub" and hi > lo:
        return 1.0 / float(hi - lo)
    return QUANT_8BIT


def estimate_psf_grid(
    image: np.ndarray, tile: int = 256, value_range_mode: str | tuple[float, float] = "auto"
) -> PSFEstimate:
    """PSF and noise of every tile of the ``tile`` px grid over a 2-D image.

    Parameters
    ----------
    image : ndarray
        A 2-D section, any real dtype (mapped onto [0, 1] by ``io.values.value_range``).
    tile : int
        Grid tile size in px (``qc.tiling.TileGrid``); edge tiles keep their true size.
    value_range_mode : str or (lo, hi)
        How values map onto [0, 1]: the noise comes out in those units.

    Returns
    -------
    PSFEstimate
        Arrays of the grid's shape ``(rows, cols)`` (``cov``: ``(rows, cols, 2, 2)``); NaN for
        tiles under ``MIN_SIDE`` px or without signal.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    grid = TileGrid(img.shape, tile)
    lo, hi = value_range(img, value_range_mode)
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    quant = quant_step(img.dtype, lo, hi)
    n = grid.n_tiles
    out = _nan_estimate(n)
    fields = {f: np.array(getattr(out, f)) for f in PSFEstimate.__dataclass_fields__}
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (i, j) in enumerate(grid):
        _, _, h, w = grid.bounds(i, j)
        groups.setdefault((h, w), []).append(k)
    coords = list(grid)
    for (h, w), ks in groups.items():
        if min(h, w) < MIN_SIDE:
            continue
        for c in range(0, len(ks), 64):  # bounded memory
            chunk = ks[c : c + 64]
            stack = np.stack([img[grid.slices(*coords[k])] for k in chunk]).astype(np.float32)
            stack -= np.float32(lo)
            stack *= np.float32(scale)
            est = estimate_psf_tiles(stack, quant=quant)
            for f in fields:
                fields[f][chunk] = getattr(est, f)
    rows, cols = grid.grid_shape
    return PSFEstimate(**{f: v.reshape((rows, cols) + v.shape[1:]) for f, v in fields.items()})
