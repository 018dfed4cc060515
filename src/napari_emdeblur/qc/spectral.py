"""The shared spectral front end of the blur estimates: one windowed FFT per tile, summarised once.

:func:`tile_spectra` does the per-tile work that the PSF / noise fit (:mod:`.psf`, the estimator
the correction uses), the learned excess-blur layer (:mod:`.excess`) and the content check
(:mod:`.content`) all read, so the blur map costs one FFT per tile:

* mean removal, Hann window, real FFT (float32), power in variance units (white noise of
  variance ``s^2`` reads ``s^2`` at every frequency);
* the separable noise model ``N(fy, fx) = Nx(fx) Ny(fy) / Nc``: medians of the rows with
  ``|fy| > F_NOISE`` (``Nx``), of the columns with ``fx > F_NOISE`` (``Ny``) and of the corner
  where both hold (``Nc``). It is flat for white noise and follows the noise's colour when it is
  correlated along either scan axis, so the fast-scan axis never has to be known;
* polar bins, ``NR`` radial (``F_MIN`` to ``F_NOISE`` cycles/px) x ``2 NA`` fine sectors of
  11.25 deg, merged into :mod:`.psf`'s ``NA`` sectors (edges at multiples of 22.5 deg) and into
  sectors *centred* on the axes (flips and transposes of a tile permute those exactly);
* the low-frequency radial bins below ``F_MIN``, the power and a smoothed noise model over the
  content band ``CONTENT_BAND``, and the variance (Parseval).

Everything but the FFT and the medians is one sparse product per tile stack (no dense ``P @ B``)
and gathers; small matrix products use ``einsum``, which does not start BLAS threads (on a busy
machine a multi-threaded BLAS call on such small matrices costs more than it computes).

``window`` takes the spectrum of the centred ``window`` x ``window`` px of each tile instead of
the whole tile (1/4 of the FFT work at ``window = tile / 2``). Frequencies are in cycles/px, so
the bins mean the same at every window size; only their scatter grows as the window shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp
from scipy import ndimage

__all__ = ["NR", "NA", "F_MIN", "F_NOISE", "CONTENT_BAND", "SpectralSetup", "Spectra", "setup", "tile_spectra",
           "centre_window"]

NR = 20  # radial bins between F_MIN and F_NOISE cycles/px
NA = 8  # angular sectors over 180 degrees
NAF = 2 * NA  # fine sectors (11.25 deg)
F_MIN = 0.03
F_NOISE = 0.40
#: radial bin edges below ``F_MIN`` (cycles/px, DC excluded): what a strongly blurred tile still has
LOW_EDGES = (0.0, 0.0085, 0.015, 0.0225, F_MIN)
#: cycles/px: the content check's signal band
CONTENT_BAND = (0.015, 0.10)
_SMOOTH = 5  # taps of the running mean over the noise profiles of the content check


@dataclass(frozen=True)
class SpectralSetup:
    """The geometry of one tile size ``(h, w)``: window, bins, fit design matrices (cached)."""

    h: int
    w: int
    win_n: np.ndarray  # (h, w) float32 Hann window / sqrt(sum window^2): power in variance units
    rows_hi: np.ndarray  # (h,) bool |fy| > F_NOISE
    cols_hi: np.ndarray  # (w//2+1,) bool fx > F_NOISE
    ball_t: sp.csr_matrix  # (h*wr, NR*NAF + 4 + 2): fine-bin sums | low bins | content band | Parseval
    bin_y: np.ndarray  # (nnz,) row (fy) index of each binned frequency
    bin_x: np.ndarray  # (nnz,) column (fx) index
    wn: sp.csr_matrix  # (NR*NAF, nnz) sums the binned frequencies' noise with their rfft weights
    merge_psf: tuple[np.ndarray, np.ndarray, np.ndarray]  # fine sums -> psf sector means (ia, ib, 1/count)
    merge_axis: tuple[np.ndarray, np.ndarray, np.ndarray]  # fine sums -> axis-centred sector means
    band: np.ndarray  # (len(band_rows), len(band_cols)) rfft-weighted indicator of CONTENT_BAND there
    band_rows: np.ndarray  # rows (fy) and columns (fx) the band touches
    band_cols: np.ndarray
    x_psf: np.ndarray  # (NR*NA, 5) design matrix of the fit on the psf sectors
    xx_psf: np.ndarray  # (NR*NA, 25) outer products of its rows
    good_psf: np.ndarray  # (NR*NA,) bins that hold frequencies
    z1_psf: np.ndarray  # (NR*NA,) relative standard error of a bin's pure-noise power
    x_axis: np.ndarray  # the same four on the axis-centred sectors
    xx_axis: np.ndarray
    good_axis: np.ndarray
    z1_axis: np.ndarray


@lru_cache(maxsize=16)
def setup(h: int, w: int) -> SpectralSetup:
    """The cached :class:`SpectralSetup` of ``h`` x ``w`` px tiles."""
    win = np.outer(np.hanning(h), np.hanning(w))
    wnorm = float((win.astype(np.float32).astype(np.float64) ** 2).sum())
    fy1, fx1 = np.fft.fftfreq(h), np.fft.rfftfreq(w)
    wr = fx1.size
    fy, fx = np.meshgrid(fy1, fx1, indexing="ij")
    fr = np.hypot(fx, fy)
    ang = np.mod(np.arctan2(fy, fx), np.pi)
    mult = np.full(fr.shape, 2.0)  # rfft columns other than 0 and Nyquist stand for two
    mult[:, 0] = 1.0
    if w % 2 == 0:
        mult[:, -1] = 1.0
    ri = np.digitize(fr, np.linspace(F_MIN, F_NOISE, NR + 1)) - 1
    af = np.minimum((ang / np.pi * NAF).astype(int), NAF - 1)
    fidx = np.where((ri >= 0) & (ri < NR), ri * NAF + af, -1).ravel()
    sel = np.nonzero(fidx >= 0)[0]
    wts = mult.ravel()[sel]
    nbf, nb = NR * NAF, NR * NA
    bsum = sp.csr_matrix((wts, (fidx[sel], sel)), shape=(nbf, fr.size))
    cnt_f = np.bincount(fidx[sel], weights=wts, minlength=nbf)
    wn = sp.csr_matrix((wts, (fidx[sel], np.arange(sel.size))), shape=(nbf, sel.size))

    # fine sector pairs (2a, 2a+1) are qc.psf's sectors; pairs (2a-1, 2a) are centred on the axes
    r0 = np.repeat(np.arange(NR), NA) * NAF
    k = np.tile(np.arange(NA), NR)
    ia_p, ib_p = r0 + 2 * k, r0 + 2 * k + 1
    ia_a, ib_a = r0 + (2 * k - 1) % NAF, r0 + 2 * k
    cnt_p = cnt_f[ia_p] + cnt_f[ib_p]
    cnt_a = cnt_f[ia_a] + cnt_f[ib_a]

    def design(ia: np.ndarray, ib: np.ndarray, cnt: np.ndarray) -> np.ndarray:
        def mean(v: np.ndarray) -> np.ndarray:
            s = bsum @ v.ravel()
            return (s[ia] + s[ib]) / np.maximum(cnt, 1e-12)

        fb = np.maximum(mean(fr), 1e-6)
        return np.stack([np.ones(nb), -np.log(fb), -4 * np.pi**2 * mean(fx**2), -8 * np.pi**2 * mean(fx * fy),
                         -4 * np.pi**2 * mean(fy**2)], axis=1)

    x_p, x_a = design(ia_p, ib_p, cnt_p), design(ia_a, ib_a, cnt_a)
    # a bin's power of pure noise scatters by ~N / sqrt(independent samples); the Hann window
    # correlates neighbouring frequencies, about 4 samples per independent one
    z1_p = np.where(cnt_p > 0, 1.0 / np.sqrt(np.maximum(cnt_p / 4.0, 1.0)), 1e6 / 4.0)
    z1_a = np.where(cnt_a > 0, 1.0 / np.sqrt(np.maximum(cnt_a / 4.0, 1.0)), 1e6 / 4.0)
    li = np.digitize(fr, LOW_EDGES) - 1
    lsel = np.nonzero(((li >= 0) & (li < len(LOW_EDGES) - 1) & (fr > 0)).ravel())[0]
    lw = mult.ravel()[lsel]
    lbin = li.ravel()[lsel]
    lcnt = np.bincount(lbin, weights=lw, minlength=len(LOW_EDGES) - 1)
    blow = sp.csr_matrix((lw / np.maximum(lcnt[lbin], 1e-12), (lbin, lsel)), shape=(len(LOW_EDGES) - 1, fr.size))
    band = ((fr >= CONTENT_BAND[0]) & (fr < CONTENT_BAND[1])) * mult
    band_rows, band_cols = np.nonzero(band.any(axis=1))[0], np.nonzero(band.any(axis=0))[0]
    parseval = (mult.ravel() / (h * w))[None]
    ball = sp.vstack([bsum, blow, sp.csr_matrix(band.ravel()[None]), sp.csr_matrix(parseval)]).astype(np.float32)
    return SpectralSetup(
        h=h, w=w, win_n=(win / np.sqrt(wnorm)).astype(np.float32), rows_hi=np.abs(fy1) > F_NOISE, cols_hi=fx1 > F_NOISE,
        ball_t=ball.T.tocsr(), bin_y=sel // wr, bin_x=sel % wr, wn=wn.astype(np.float32).tocsr(),
        merge_psf=(ia_p, ib_p, 1.0 / np.maximum(cnt_p, 1e-12)), merge_axis=(ia_a, ib_a, 1.0 / np.maximum(cnt_a, 1e-12)),
        band=band[np.ix_(band_rows, band_cols)], band_rows=band_rows, band_cols=band_cols, x_psf=x_p, xx_psf=np.einsum("bi,bj->bij", x_p, x_p).reshape(nb, 25), good_psf=cnt_p > 0,
        z1_psf=z1_p, x_axis=x_a, xx_axis=np.einsum("bi,bj->bij", x_a, x_a).reshape(nb, 25), good_axis=cnt_a > 0,
        z1_axis=z1_a,
    )


@dataclass
class Spectra:
    """Spectral summaries of ``n`` equal tiles (float64 unless noted; powers in variance units).

    ``pb``, ``nb``: (n, NR*NA) binned power and binned separable noise model on :mod:`.psf`'s
    sectors; ``pa``, ``na``: the same on the axis-centred sectors; ``plow``: (n, 4) mean power
    in the radial bins below ``F_MIN``; ``nx`` (n, w//2+1), ``ny`` (n, h), ``nc`` (n,): the noise
    model; ``var``: the windowed variance; ``band_p``, ``band_n``: power and smoothed noise model
    summed over ``CONTENT_BAND``; ``setup``: the geometry.
    """

    pb: np.ndarray
    nb: np.ndarray
    pa: np.ndarray
    na: np.ndarray
    plow: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    nc: np.ndarray
    var: np.ndarray
    band_p: np.ndarray
    band_n: np.ndarray
    setup: SpectralSetup

    def __len__(self) -> int:
        return int(self.pb.shape[0])


def _ranges(mask: np.ndarray) -> list[slice]:
    """The True runs of a 1-D mask as slices (the high-frequency rows / columns are 1-2 runs)."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return [slice(int(a), int(b)) for a, b in zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0])]


def _median_last(a: np.ndarray) -> np.ndarray:
    """Median over the last axis (``np.median``'s value, via one partition)."""
    k = a.shape[-1]
    if k % 2:
        return np.partition(a, k // 2, axis=-1)[..., k // 2]
    q = np.partition(a, [k // 2 - 1, k // 2], axis=-1)
    return 0.5 * (q[..., k // 2 - 1] + q[..., k // 2])


def _merge(v: np.ndarray, m: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Fine-bin sums (n, NR*NAF) -> sector means (n, NR*NA): two gathers."""
    ia, ib, inv = m
    return (v[:, ia] + v[:, ib]) * inv


def centre_window(tiles: np.ndarray, window: int | None) -> np.ndarray:
    """The centred ``window`` x ``window`` px of each tile of ``(n, h, w)`` (a view); the tiles
    themselves when ``window`` is None or not smaller than them.
    """
    n, h, w = tiles.shape
    if window is None or window >= min(h, w):
        return tiles
    y0, x0 = (h - window) // 2, (w - window) // 2
    return tiles[:, y0 : y0 + window, x0 : x0 + window]


def tile_spectra(tiles: np.ndarray, quant: float = 1.0 / 255.0, scale: float = 1.0, workers: int = 1,
                 window: int | None = None) -> Spectra:
    """Spectral summaries of a stack ``(n, h, w)`` of equal tiles (any real dtype).

    Parameters
    ----------
    tiles : ndarray, shape (n, h, w)
        The tiles; ``scale`` maps their values onto the units of ``quant`` (e.g. 1/255 for uint8
        and ``quant`` in [0, 1] units).
    quant : float
        Quantisation step after scaling: the noise model's floor is ``quant**2 / 12``.
    scale : float
        Multiplies the values (after removing each tile's mean).
    workers : int
        ``scipy.fft`` threads.
    window : int, optional
        Analyse the centred ``window`` x ``window`` px of each tile only.

    Returns
    -------
    Spectra
    """
    tiles = centre_window(np.asarray(tiles), window)
    n, h, w = tiles.shape
    s = setup(h, w)
    if tiles.dtype.kind in "ui":
        m = tiles.sum(axis=(1, 2), dtype=np.int64) / float(h * w)  # exact for integers
    else:
        m = tiles.mean(axis=(1, 2), dtype=np.float64)
    t = tiles.astype(np.float32)
    t -= m.astype(np.float32)[:, None, None]
    t *= s.win_n * np.float32(scale)  # scale, window and variance normalisation in one pass
    p = np.abs(sfft.rfft2(t, workers=workers))
    p *= p
    floor = quant * quant / 12.0
    rs, cs = _ranges(s.rows_hi), _ranges(s.cols_hi)
    rows = np.concatenate([p[:, r, :] for r in rs], axis=1)  # (n, k, wr)
    cols = np.concatenate([p[:, :, c] for c in cs], axis=2)  # (n, h, kc)
    corner = np.concatenate([rows[:, :, c] for c in cs], axis=2).reshape(n, -1)
    f32 = np.float32(floor)
    nx = np.maximum(_median_last(np.ascontiguousarray(rows.transpose(0, 2, 1))), f32)
    ny = np.maximum(_median_last(cols), f32)
    nc = np.maximum(_median_last(corner), f32)
    q = (p.reshape(n, -1) @ s.ball_t).astype(np.float64)  # fine-bin sums | low bins | band | variance
    nbf = NR * NAF
    pf, plow, band_p, var = q[:, :nbf], q[:, nbf:-2], q[:, -2], q[:, -1]
    # content check: the same separable model from smoothed *means* of the same samples
    # (unbiased for noise and smoother than medians), summed over the band
    mx = np.maximum(ndimage.uniform_filter1d(rows.mean(axis=1, dtype=np.float64), _SMOOTH, axis=1, mode="nearest"), floor)
    my = np.maximum(ndimage.uniform_filter1d(cols.mean(axis=2, dtype=np.float64), _SMOOTH, axis=1, mode="wrap"), floor)
    mc = np.maximum(corner.mean(axis=1, dtype=np.float64), floor)
    band_n = np.einsum("nh,hw,nw->n", my[:, s.band_rows], s.band, mx[:, s.band_cols]) / mc
    prod = ny[:, s.bin_y] * nx[:, s.bin_x]  # the separable noise at the binned frequencies
    nf = (s.wn @ prod.T).T.astype(np.float64) / nc[:, None].astype(np.float64)
    return Spectra(
        pb=_merge(pf, s.merge_psf), nb=_merge(nf, s.merge_psf), pa=_merge(pf, s.merge_axis),
        na=_merge(nf, s.merge_axis), plow=plow, nx=nx.astype(np.float64), ny=ny.astype(np.float64),
        nc=nc.astype(np.float64), var=var, band_p=band_p, band_n=band_n, setup=s,
    )
