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
tiles: the FFT, the noise model and the binning are the shared spectral front end
(:func:`.spectral.tile_spectra`, which the QC blur map reads too), then one batched 5x5 solve
(:func:`fit_spectra`).

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
from .spectral import F_MIN, F_NOISE, NA, NR, Spectra, tile_spectra
from .tiling import DEFAULT_TILE, TileGrid

__all__ = [
    "NR", "NA", "F_MIN", "F_NOISE", "SNR_MIN", "SIGNIFICANCE", "MIN_BINS", "ALPHA_PRIOR", "ALPHA_WEIGHT",
    "ISO_WEIGHT", "MIN_SIDE", "QUANT_8BIT", "PSFEstimate", "cov_axes", "estimate_psf_grid", "estimate_psf_tiles",
    "fit_spectra", "noise_model", "power_spectra", "quant_step",
]

# NR radial bins between F_MIN and F_NOISE cycles/px, NA angular sectors over 180 degrees: the
# binning of the shared spectral front end (:mod:`.spectral`)
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
def _setup(h: int, w: int) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """``(Hann window float32, sum of its squares, rows |fy| > F_NOISE, columns fx > F_NOISE)``."""
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    wnorm = float((win.astype(np.float64) ** 2).sum())
    return win, wnorm, np.abs(np.fft.fftfreq(h)) > F_NOISE, np.fft.rfftfreq(w) > F_NOISE


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
    rows_hi, cols_hi = _setup(h, w)[2:]
    floor = np.float32(quant * quant / 12.0)
    Nx = np.maximum(np.median(P[:, rows_hi, :], axis=1), floor)  # noise vs fx
    Ny = np.maximum(np.median(P[:, :, cols_hi], axis=2), floor)  # noise vs fy
    Nc = np.maximum(np.median(P[:, rows_hi][:, :, cols_hi].reshape(n, -1), axis=1), floor)
    return Nx, Ny, Nc


def _nan_estimate(n: int) -> PSFEstimate:
    nan = np.full(n, np.nan, np.float32)
    return PSFEstimate(nan, nan, nan, nan, nan, nan, np.full((n, 2, 2), np.nan, np.float32), np.zeros(n, np.int32))


def cov_axes(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(major, minor, angle)`` of ``(n, 2, 2)`` covariances in (x, y) order, in closed form:
    the square roots of the eigenvalues (negative ones clip to 0) and the major axis in degrees
    from +x towards +y, in [0, 180).
    """
    sxx, sxy, syy = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    tr2 = 0.5 * (sxx + syy)
    d = np.sqrt((0.5 * (sxx - syy)) ** 2 + sxy**2)
    major = np.sqrt(np.clip(tr2 + d, 0.0, None))
    minor = np.sqrt(np.clip(tr2 - d, 0.0, None))
    angle = np.degrees(0.5 * np.arctan2(2.0 * sxy, sxx - syy)) % 180.0
    return major, minor, angle


def fit_spectra(
    s: Spectra, axis_centred: bool = False, significance: float = SIGNIFICANCE, min_bins: int = MIN_BINS
) -> PSFEstimate:
    """The PSF / spectrum fit of the module docstring on the binned spectra of :mod:`.spectral`.

    Parameters
    ----------
    s : Spectra
        From :func:`.spectral.tile_spectra` (one FFT per tile, shared with the blur map).
    axis_centred : bool
        Fit on the sectors centred on the axes instead of this module's (the same model; exactly
        equivariant under flips and transposes of the tile: the excess-blur features use it).
    significance : float
        A bin counts when its signal exceeds ``(SNR_MIN + significance * z) * noise``, ``z`` the
        relative standard error of the bin's pure-noise power.
    min_bins : int
        Fewer valid bins give NaN.

    Returns
    -------
    PSFEstimate
        With the defaults: :func:`estimate_psf_tiles`.
    """
    g = s.setup
    if axis_centred:
        pb, nb, x, xx, good, z1 = s.pa, s.na, g.x_axis, g.xx_axis, g.good_axis, g.z1_axis
    else:
        pb, nb, x, xx, good, z1 = s.pb, s.nb, g.x_psf, g.xx_psf, g.good_psf, g.z1_psf
    n = pb.shape[0]
    sig = pb - nb
    valid = good[None] & (sig > (SNR_MIN + significance * z1[None]) * nb)  # above the noise, not by chance
    sp_ = np.where(valid, sig, 1.0)
    wgt = np.where(valid, sp_ / (sp_ + nb), 0.0)
    y = np.log(sp_)
    a = np.einsum("nb,bk->nk", wgt, xx).reshape(n, 5, 5)  # einsum: no BLAS threads
    rhs = np.einsum("nb,bi->ni", wgt * y, x)
    a[:, 1, 1] += ALPHA_WEIGHT
    rhs[:, 1] += ALPHA_WEIGHT * ALPHA_PRIOR
    lam = ISO_WEIGHT  # penalise (Sxx - Syy)^2 + 2 Sxy^2
    a[:, 2, 2] += lam
    a[:, 4, 4] += lam
    a[:, 2, 4] -= lam
    a[:, 4, 2] -= lam
    a[:, 3, 3] += 2 * lam
    a += 1e-6 * np.eye(5)  # keeps tiles with no bin above the noise solvable (they give NaN)
    coef = np.linalg.solve(a, rhs[..., None])[..., 0]
    sxx, sxy, syy = coef[:, 2], coef[:, 3], coef[:, 4]
    cov = np.stack([np.stack([sxx, sxy], -1), np.stack([sxy, syy], -1)], -2)
    major, minor, angle = cov_axes(cov)
    noise_var = s.nx.mean(axis=1) * s.ny.mean(axis=1) / s.nc
    nbins = valid.sum(axis=1).astype(np.int32)
    ok = nbins >= min_bins

    def nanf(v: np.ndarray) -> np.ndarray:
        return np.where(ok, v, np.nan).astype(np.float32)

    return PSFEstimate(
        sigma_major=nanf(major),
        sigma_minor=nanf(minor),
        angle=nanf(angle),
        noise=np.sqrt(noise_var).astype(np.float32),
        log_c=nanf(coef[:, 0]),
        alpha=nanf(coef[:, 1]),
        cov=np.where(ok[:, None, None], np.clip(cov, -1e4, 1e4), np.nan).astype(np.float32),
        n_bins=nbins,
    )


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
    return fit_spectra(tile_spectra(tiles, quant=quant, workers=-1))


def quant_step(dtype: np.dtype, lo: float, hi: float) -> float:
    """Quantisation step of ``dtype`` data mapped from ``[lo, hi]`` onto [0, 1] (8 bits for floats)."""
    if np.dtype(dtype).kind in "iub" and hi > lo:
        return 1.0 / float(hi - lo)
    return QUANT_8BIT


def estimate_psf_grid(
    image: np.ndarray, tile: int = DEFAULT_TILE, value_range_mode: str | tuple[float, float] = "auto"
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
