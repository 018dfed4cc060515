"""Per-tile focus metrics for EM sections (pure numpy/scipy, higher = sharper).

Every metric is computed for *all* tiles of an image at once: the image is viewed as a 4-D
array ``(tile_rows, tile_h, tile_cols, tile_w)`` (a free reshape for the full tiles; the partial
bottom row, right column and corner are three more such views) and each metric is a handful of
whole-array operations reduced over axes 1 and 3. There is no Python loop per tile; the image is
processed in bands of one tile row, spread over a small thread pool (numpy releases the GIL).
All differences and lags stay *inside* a tile, so a tile's score depends only on its own pixels
and equals ``score_tile`` on that tile cut out.

Every metric is a ratio of second-order statistics of the tile, or of differences of it, so it
does not change when the tile's intensities are scaled or shifted (contrast / brightness), apart
from the quantisation of integer images.

Metrics (``METRICS`` maps name -> description):

``blur`` (the default)
    ``1 / (1 + excess blur in px)``: the excess blur of :mod:`.blurmap` (the Gaussian-equivalent
    blur added on top of what the modality looks like in focus, from a small learned layer on the
    spectrum that :mod:`.psf` fits; :mod:`.excess`), so 1 = in focus, 0.5 = 1 px of excess blur,
    0.25 = 3 px. It is the one metric whose thresholds are set in px (:mod:`.thresholds`) and
    transfer between datasets, and the one that holds across modalities (ssTEM, SBEM, FIB-SEM),
    noise white or correlated along either scan axis, and contrast (``docs/focus_metrics.md``).
    Tiles without tissue signal (flat, saturated, blank resin or pure noise: the content check of
    :mod:`.content`) score NaN; the scoring flow marks them ``empty``. Unlike the others it is
    computed per tile on the centred ``blurmap.DEFAULT_WINDOW`` px of each tile (tiles under 64
    px: NaN).
``autocorr``
    Noise-robust normalised autocorrelation along the slow-scan axis (y). On the tile with its
    own mean removed, ``R_k = sum x[y, x] * x[y + k, x]`` (both sums over the same rows
    ``y = 0 .. h-3``); score ``= (R1 - R2) / R1``, about 0.15 - 0.3 on sharp EM. White noise
    and noise correlated along the fast-scan axis (x, the SEM detector's bandwidth) add to
    ``R0`` only, not to ``R1`` / ``R2``, so they cancel; blur makes the autocorrelation flatter
    and the score tends to 0. After Vollath's F4 and the SEM autofocus literature. Noise that is
    correlated along y (slow-scan line jitter, drift) is *not* cancelled. The score is flat for
    blur below ~0.5 px on sharp-edged content.
``wafermapper``
    The WaferMapper image-quality check (Hayworth et al. 2014, Front. Neural Circuits 8:68),
    written from its published description: on a sparse grid (every 4 px) take the points of
    strongest contrast (top 5 % of the gradient magnitude at the 4-px scale, which also gives
    the edge direction); at them, split the pixel-scale central difference into its component
    across the edge (the *edge gradient*) and along it (the pixel-scale *noise* term, where the
    signal is flat); score ``= (mean edge gradient / mean noise - 1) * 100``. Pure noise scores
    about 0 (the two scales use disjoint pixels); for integer images the noise term has a floor
    of 0.25 grey levels so noise-free synthetic data stays finite.
``varlap``
    Variance of the 4-neighbour Laplacian divided by the tile's variance.
``fft_ratio``
    Hann-windowed power spectrum of the tile: energy in the high band (0.25 - 0.5 cycles/px)
    over energy in the low band (0.02 - 0.125 cycles/px).

Tiles that cannot be scored get NaN: constant tiles (all pixels equal, e.g. all-zero padding),
tiles where more than half of a sparse 4-px sample grid is exactly 0 (padding of a montage),
and partial edge tiles thinner than ``MIN_TILE_SIDE`` px.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable

import numpy as np

from . import blurmap
from .tiling import DEFAULT_TILE, TileGrid

__all__ = [
    "METRICS",
    "DEFAULT_METRIC",
    "MIN_IMAGE_SIDE",
    "MIN_TILE_SIDE",
    "score_tiles",
    "score_tile",
    "anisotropy_tiles",
    "check_image",
]

MIN_IMAGE_SIDE = 16  # smaller images raise ValueError
MIN_TILE_SIDE = 8  # partial edge tiles thinner than this score NaN

METRICS: dict[str, str] = {
    "blur": "1 / (1 + excess blur in px over the modality's in-focus look): learned layer on the PSF "
    "estimator's spectrum; thresholds in px; empty tiles (no tissue signal) score NaN",
    "autocorr": "normalised slow-scan (y) autocorrelation (R1-R2)/R1 of the mean-removed tile; "
    "robust to white and fast-scan-correlated noise",
    "wafermapper": "WaferMapper/Hayworth 2014 check: (edge gradient at strongest-contrast "
    "sparse-grid points / pixel-scale noise - 1) x 100",
    "varlap": "variance of the Laplacian / tile variance",
    "fft_ratio": "power-spectrum energy high band (0.25-0.5 cyc/px) / low band (0.02-0.125)",
}

DEFAULT_METRIC = "blur"

# --------------------------------------------------------------------------- input checks
def check_image(image) -> np.ndarray:
    """Validate a 2-D image and return it as an ndarray (no copy when already one).

    Raises ``ValueError`` for non-2-D input, images smaller than ``MIN_IMAGE_SIDE`` px on a
    side, non-numeric dtypes and float images holding NaN or inf.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"focus scoring needs a 2-D image, got an array of shape {img.shape}")
    if min(img.shape) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"image of shape {img.shape} is too small to score: "
            f"need at least {MIN_IMAGE_SIDE} px on each side"
        )
    if img.dtype == bool or not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise ValueError(f"focus scoring needs an integer or float image, got dtype {img.dtype}")
    if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
        raise ValueError("image contains NaN or inf values; replace them before scoring")
    return img


def _f32(b: np.ndarray) -> np.ndarray:
    return b if b.dtype == np.float32 else b.astype(np.float32)


def _tile_means(b: np.ndarray) -> np.ndarray:
    """(R, C) float32 mean of each tile of ``b`` (R, h, C, w), summed exactly for integers."""
    n = b.shape[1] * b.shape[3]
    if b.dtype.kind in "ui" and b.dtype.itemsize == 1 and n < (1 << 23):  # no uint32 overflow
        acc = np.uint32 if b.dtype.kind == "u" else np.int32
    elif b.dtype.kind in "ui":
        acc = np.int64 if b.dtype.kind == "i" or b.dtype.itemsize < 8 else np.uint64
    else:
        acc = np.float64
    return (b.sum(axis=(1, 3), dtype=acc) / n).astype(np.float32)


def _centred(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``b`` (R, h, C, w) as float32 with each tile's own mean removed; also the means."""
    m = _tile_means(b)
    return np.subtract(b, m[:, None, :, None], dtype=np.float32), m


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-tile sum of ``a * b`` over axes 1 and 3 (float32 einsum, which releases the GIL and
    vectorises; its partial sums keep the relative error near 1e-6 for a 256 px tile).
    """
    return np.einsum("ijkl,ijkl->ik", a, b).astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    ok = den > 0
    np.divide(num, den, out=out, where=ok)
    return out


# --------------------------------------------------------------------------- metrics on 4-D blocks
# Each takes b of shape (R, h, C, w) in the image's dtype and returns (R, C) float64 scores.
def _m_autocorr(b: np.ndarray) -> np.ndarray:
    x, _ = _centred(b)
    # both sums over the same pairs y = 0 .. h-3; the numerator R1 - R2 is summed directly as
    # x[y] * (x[y+1] - x[y+2]) so that it keeps its precision when R2 is close to R1 (blur)
    d = x[:, 1:-1] - x[:, 2:]
    num = _corr(x[:, :-2], d)
    r1 = _corr(x[:, :-2], x[:, 1:-1])
    # R1 of a contentless tile is ~0 (noise only) or negative: unscorable there
    return _ratio(num, r1)


_WM_STRIDE = 4
_WM_TOP = 0.05


def _m_wafermapper(b: np.ndarray) -> np.ndarray:
    R, h, C, w = b.shape
    x = _f32(b)
    yc = np.arange(2, h - 2, _WM_STRIDE)
    xc = np.arange(2, w - 2, _WM_STRIDE)
    rows = {d: x[:, yc + d] for d in (-2, -1, 0, 1, 2)}  # (R, ny, C, w) each

    def at(dy: int, dx: int) -> np.ndarray:
        return rows[dy][:, :, :, xc + dx]

    # contrast at the 4-px scale finds the edges and their direction; the 1-px-scale central
    # difference (disjoint pixels, so independent noise) is split into the part across the
    # edge (the edge gradient) and the part along it (the pixel-scale noise term)
    cx = at(0, 2) - at(0, -2)
    cy = at(2, 0) - at(-2, 0)
    dx = at(0, 1) - at(0, -1)
    dy = at(1, 0) - at(-1, 0)
    mag = np.sqrt(cx * cx + cy * cy)
    with np.errstate(invalid="ignore", divide="ignore"):
        nx, ny = cx / mag, cy / mag
    nx = np.nan_to_num(nx, nan=1.0)
    ny = np.nan_to_num(ny, nan=0.0)
    across = np.abs(dx * nx + dy * ny)
    along = np.abs(dy * nx - dx * ny)
    P = mag.shape[1] * mag.shape[3]
    flat = lambda a: a.transpose(0, 2, 1, 3).reshape(R, C, P)  # noqa: E731
    mag, across, along = flat(mag), flat(across), flat(along)
    k = max(1, int(round(_WM_TOP * P)))
    idx = np.argpartition(mag, P - k, axis=-1)[..., P - k :]
    grad = np.take_along_axis(across, idx, axis=-1).mean(axis=-1, dtype=np.float64)
    noise = np.take_along_axis(along, idx, axis=-1).mean(axis=-1, dtype=np.float64)
    if np.issubdtype(b.dtype, np.integer):
        noise = np.maximum(noise, 0.25)  # quantisation floor for noise-free integer data
    else:
        noise = np.maximum(noise, 1e-6 * grad)
    out = (_ratio(grad, noise) - 1.0) * 100.0
    out[~(np.take_along_axis(mag, idx, axis=-1).min(axis=-1) > 0)] = np.nan
    return out


def _m_varlap(b: np.ndarray) -> np.ndarray:
    x = _f32(b)
    c = x[:, 1:-1, :, 1:-1]
    lap = 4.0 * c - x[:, :-2, :, 1:-1] - x[:, 2:, :, 1:-1] - x[:, 1:-1, :, :-2] - x[:, 1:-1, :, 2:]
    n = lap.shape[1] * lap.shape[3]
    lm = lap.mean(axis=(1, 3), dtype=np.float64)
    lv = _corr(lap, lap) / n - lm * lm
    xc, _ = _centred(b)
    v = _corr(xc, xc) / (b.shape[1] * b.shape[3])
    return _ratio(lv, v)


@lru_cache(maxsize=16)
def _fft_setup(h: int, w: int):
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    fr = np.sqrt(fy * fy + fx * fx)
    hi = ((fr >= 0.25) & (fr <= 0.5)).astype(np.float32)
    lo = ((fr >= 0.02) & (fr <= 0.125)).astype(np.float32)
    return win, hi, lo


def _m_fft_ratio(b: np.ndarray) -> np.ndarray:
    from scipy import fft as sfft

    R, h, C, w = b.shape
    win, hi, lo = _fft_setup(h, w)
    x, _ = _centred(b)
    x = x.transpose(0, 2, 1, 3) * win  # (R, C, h, w)
    P = sfft.rfft2(x, axes=(-2, -1))
    P = (P.real * P.real + P.imag * P.imag).astype(np.float32)
    eh = np.einsum("ijkl,kl->ij", P, hi, dtype=np.float64)
    el = np.einsum("ijkl,kl->ij", P, lo, dtype=np.float64)
    return _ratio(eh, el)


_METRIC_FUNCS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "autocorr": _m_autocorr,
    "wafermapper": _m_wafermapper,
    "varlap": _m_varlap,
    "fft_ratio": _m_fft_ratio,
}


def _anisotropy_block(b: np.ndarray) -> np.ndarray:
    """(R, C, 2): gradient-energy ratio and blur angle per tile from the structure tensor."""
    x = _f32(b)
    gx = x[:, 1:-1, :, 2:] - x[:, 1:-1, :, :-2]
    gy = x[:, 2:, :, 1:-1] - x[:, :-2, :, 1:-1]
    jxx = _corr(gx, gx)
    jyy = _corr(gy, gy)
    jxy = _corr(gx, gy)
    tr = jxx + jyy
    d = np.sqrt((jxx - jyy) ** 2 + 4.0 * jxy * jxy)
    l1, l2 = 0.5 * (tr + d), 0.5 * (tr - d)
    ratio = np.sqrt(_ratio(l1, l2))
    # dominant gradient direction (from +x toward +y); the blur runs perpendicular to it
    theta_g = 0.5 * np.degrees(np.arctan2(2.0 * jxy, jxx - jyy))
    angle = np.mod(theta_g + 90.0, 180.0)
    angle[~np.isfinite(ratio)] = np.nan
    return np.stack([ratio, angle], axis=-1)


# --------------------------------------------------------------------------- tiling machinery
def _padding_mask(b: np.ndarray) -> np.ndarray:
    """(R, C) True where more than half of a sparse 4-px sample of a tile is exactly 0.

    (Constant tiles need no test: every metric's denominator is 0 there, which gives NaN.)
    """
    sub = b[:, ::4, :, ::4]
    n = sub.shape[1] * sub.shape[3]
    return np.count_nonzero(sub == 0, axis=(1, 3)) * 2 > n


def _band_blocks(band: np.ndarray, tile: int):
    """Split one band (h <= tile rows) into (col_slice, 4-D block) views: full tiles + last."""
    h, W = band.shape
    C = W // tile
    out = []
    if C:
        out.append((slice(0, C), band[:, : C * tile].reshape(1, h, C, tile)))
    wr = W - C * tile
    if wr:
        out.append((slice(C, C + 1), band[:, C * tile :].reshape(1, h, 1, wr)))
    return out


def _score_band(band: np.ndarray, tile: int, func, n_out: int) -> np.ndarray:
    cols = -(-band.shape[1] // tile)
    res = np.full((cols, n_out), np.nan)
    for cs, blk in _band_blocks(band, tile):
        if blk.shape[1] < MIN_TILE_SIDE or blk.shape[3] < MIN_TILE_SIDE:
            continue
        v = np.asarray(func(blk), np.float64).reshape(blk.shape[2], n_out)
        v[_padding_mask(blk)[0]] = np.nan
        res[cs] = v
    return res


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _map_bands(img: np.ndarray, tile: int, func, n_out: int, workers: int | None) -> np.ndarray:
    grid = TileGrid(img.shape, tile)
    bands = [img[i * tile : (i + 1) * tile] for i in range(grid.rows)]
    workers = _default_workers() if workers is None else max(1, int(workers))
    if workers == 1 or len(bands) == 1:
        parts = [_score_band(b, tile, func, n_out) for b in bands]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(bands))) as ex:
            parts = list(ex.map(lambda b: _score_band(b, tile, func, n_out), bands))
    return np.stack(parts, axis=0)  # (rows, cols, n_out)


def _m_blur(img: np.ndarray, tile: int, workers: int | None) -> np.ndarray:
    return blurmap.qc_grid(img, tile, workers=workers).score


# metrics computed on the whole image at once (they need more than a tile's own pixels: the value
# range of the image for the content check)
_IMAGE_METRIC_FUNCS: dict[str, Callable[[np.ndarray, int, int | None], np.ndarray]] = {"blur": _m_blur}


def _check_metric(metric: str) -> Callable:
    try:
        return _METRIC_FUNCS.get(metric) or _IMAGE_METRIC_FUNCS[metric]
    except KeyError:
        raise ValueError(f"unknown focus metric {metric!r}; choose one of {', '.join(METRICS)}") from None


# --------------------------------------------------------------------------- public API
def score_tiles(image, tile: int = DEFAULT_TILE, metric: str = DEFAULT_METRIC, workers: int | None = None) -> np.ndarray:
    """Focus score of every tile of a 2-D image on ``TileGrid(image.shape, tile)``.

    Returns a ``(rows, cols)`` float32 array, higher = sharper; NaN for tiles that cannot be
    scored (see the module docstring). ``workers`` threads process bands of tile rows
    (default: up to 4, the CPU count). Raises ``ValueError`` for bad input or an unknown metric.
    """
    func = _check_metric(metric)
    img = check_image(image)
    if int(tile) < MIN_TILE_SIDE:
        raise ValueError(f"tile size must be at least {MIN_TILE_SIDE} px, got {tile}")
    if metric in _IMAGE_METRIC_FUNCS:
        return np.asarray(func(img, int(tile), workers), np.float32)
    out = _map_bands(img, int(tile), func, 1, workers)[..., 0]
    return out.astype(np.float32)


def score_tile(image, metric: str = DEFAULT_METRIC) -> float:
    """Focus score of a whole 2-D image taken as a single tile (NaN if unscorable)."""
    img = check_image(image)
    return float(score_tiles(img, tile=max(img.shape), metric=metric, workers=1)[0, 0])


def anisotropy_tiles(image, tile: int = DEFAULT_TILE, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile blur anisotropy from the gradient structure tensor (the signature of astigmatism).

    Returns ``(ratio, angle_deg)``, two ``(rows, cols)`` float32 arrays. ``ratio`` =
    sqrt(largest / smallest eigenvalue) of the tile's summed gradient outer products: 1 for
    isotropic texture and blur, growing as blur along one direction removes gradient energy
    there. ``angle_deg`` in [0, 180) is the direction of the blur (the direction with the least
    gradient energy, i.e. the major axis of an astigmatic PSF), measured from +x (columns)
    toward +y (rows), the convention of ``degrade.elliptical_gaussian_psf``. Real EM texture is
    itself anisotropic (membranes), so compare a tile's ratio with its neighbours' or across
    focus steps rather than with 1. NaN for unscorable tiles.
    """
    img = check_image(image)
    if int(tile) < MIN_TILE_SIDE:
        raise ValueError(f"tile size must be at least {MIN_TILE_SIDE} px, got {tile}")
    out = _map_bands(img, int(tile), _anisotropy_block, 2, workers)
    return out[..., 0].astype(np.float32), out[..., 1].astype(np.float32)
