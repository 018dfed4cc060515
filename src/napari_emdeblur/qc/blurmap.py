"""The QC blur map: per tile, excess blur in px (with astigmatism), total blur, noise, content check.

:func:`qc_grid` analyses every tile of a 2-D image on the ``tile`` px grid
(:class:`~.tiling.TileGrid`); :func:`qc_tiles` a stack of equal tiles. Per tile, one windowed FFT
(:func:`.spectral.tile_spectra`) feeds three things:

* the **excess blur** (:mod:`.excess`): the Gaussian-equivalent blur *added* on top of what this
  kind of EM looks like in focus, as major / minor axis (px) and angle, and
  ``excess = sqrt((major^2 + minor^2) / 2)``. This is what decisions use ("correct above 1 px,
  retake above 3 px", :mod:`.thresholds`); the focus score of the ``blur`` metric
  (:mod:`.focus`) is ``1 / (1 + excess)``;
* the **total blur** and the noise, from :mod:`.psf`'s estimator (the one the correction uses) on
  the same spectrum: diagnostic, it includes the acquisition's own resolution;
* the **content check** (:mod:`.content`): flat, saturated and signal-free tiles are ``empty``.

Every blur output and the score of an empty or too-small tile is NaN, so it can never pass as
"ok" nor be sent to correction.

``window``: the spectrum of the centred ``window`` x ``window`` px of each tile only (the fast
path of the live QC map, :data:`DEFAULT_WINDOW`: 0.39 of the pixels at 160 px, 1/4 at 128 px for
256 px tiles, each with weights trained at that size); None analyses whole tiles (the most
accurate blur estimate, about 2.5x the time). The pixel tests of the
content check always read the whole tile. Tiles smaller than the window are analysed whole.

Threads: ``workers`` threads over bands of tile rows (numpy and ``scipy.fft`` release the GIL);
no BLAS call in the hot path (see :mod:`.spectral`), so no thread settings are needed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np

from ..io.values import value_range as _value_range
from . import content
from .excess import ExcessWeights, feature_fit, features, load_weights, predict, weights_for
from .psf import MIN_SIDE as PSF_MIN_SIDE
from .psf import fit_spectra
from .spectral import centre_window, tile_spectra
from .thresholds import score_from_px
from .tiling import DEFAULT_TILE, TileGrid

__all__ = ["DEFAULT_WINDOW", "WINDOWS", "BlurMap", "qc_grid", "qc_tiles"]

#: the analysis window of the live QC map (px; None = whole tiles): the centred 160 px of a 256 px
#: tile, about 400 Mpx/s on 2 cores (128 px: about 560, whole tiles: about 160; docs/focus_metrics.md)
DEFAULT_WINDOW: int | None = 160
#: the window sizes with shipped weights (None = whole tile)
WINDOWS: tuple[int | None, ...] = (128, 160, None)
_BAND_ROWS = 4


@dataclass
class BlurMap:
    """Per-tile QC arrays, all of the same shape (the grid's ``(rows, cols)`` or ``(n,)``).

    Blur is a Gaussian-equivalent standard deviation in px; angles are the major axis in degrees
    from +x towards +y (image rows down), in [0, 180).

    ``score``: ``1 / (1 + excess)`` (higher = sharper); ``excess``, ``excess_major``,
    ``excess_minor``, ``excess_angle``: the blur added over the in-focus look (what decisions
    use); ``total_major``, ``total_minor``, ``total_angle``: :mod:`.psf`'s total blur on the
    analysed window; ``noise``: noise standard deviation in [0, 1] units of the value range;
    ``snr``: the content check's band signal-to-noise ratio; ``empty`` (bool) and ``reason``
    (uint8 index into :data:`.content.REASONS`). NaN marks no estimate (empty, too small).
    """

    score: np.ndarray
    excess: np.ndarray
    excess_major: np.ndarray
    excess_minor: np.ndarray
    excess_angle: np.ndarray
    total_major: np.ndarray
    total_minor: np.ndarray
    total_angle: np.ndarray
    noise: np.ndarray
    snr: np.ndarray
    empty: np.ndarray
    reason: np.ndarray

    @classmethod
    def blank(cls, shape: tuple[int, ...]) -> "BlurMap":
        """All NaN, not empty, reason ``too_small`` (nothing analysed)."""
        kw = {f.name: np.full(shape, np.nan, np.float32) for f in fields(cls)}
        kw["empty"] = np.zeros(shape, bool)
        kw["reason"] = np.full(shape, content.TOO_SMALL, np.uint8)
        return cls(**kw)

    @classmethod
    def concat(cls, parts: list["BlurMap"], axis: int = 0) -> "BlurMap":
        """Maps of bands of tile rows joined into one (``axis=0``)."""
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts], axis=axis) for f in fields(cls)})

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.score.shape)

    @property
    def anisotropy(self) -> np.ndarray:
        """Excess minor / major (1 = isotropic; NaN where no estimate or no excess blur)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.excess_major > 0, self.excess_minor / self.excess_major, np.nan).astype(np.float32)

    def reason_names(self) -> np.ndarray:
        """The reasons as strings ('' = tissue, 'flat', 'saturated', 'no_signal', 'too_small')."""
        return np.asarray(content.REASONS, dtype=object)[self.reason]

    def set(self, index, other: "BlurMap") -> None:
        """Write ``other``'s arrays into ``index`` of this map's arrays."""
        for f in fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)

    def reshape(self, shape: tuple[int, ...]) -> "BlurMap":
        return BlurMap(**{f.name: getattr(self, f.name).reshape(shape) for f in fields(self)})


def _check_window(window: int | None) -> int | None:
    if window is None:
        return None
    w = int(window)
    if w < content.MIN_SIDE:
        raise ValueError(f"QC window must be at least {content.MIN_SIDE} px (or None for whole tiles), got {window}")
    return w


def _default_range(dtype: np.dtype) -> tuple[float, float, float]:
    """``(lo, hi, quantisation step)`` of a dtype: integer ranges, floats as [0, 1]."""
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        return float(info.min), float(info.max), 1.0
    return 0.0, 1.0, 1.0 / 255.0


def _analyse(wtiles: np.ndarray, ptp: np.ndarray, frac_end: np.ndarray, lo: float, hi: float, quant: float,
             weights: ExcessWeights | None) -> BlurMap:
    """The QC of tiles already cut to their analysis window, given their pixel statistics."""
    side = min(wtiles.shape[1:])
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    s = tile_spectra(wtiles, quant=quant * scale, scale=scale, workers=1)
    total = fit_spectra(s)  # qc.psf's estimate (the correction's): NaN under its MIN_SIDE, as there
    w = weights if weights is not None else load_weights(weights_for(side))
    ex = predict(features(s, feature_fit(s)), w)
    reason, snr = content.check(ptp, frac_end, s, quant)
    empty = reason > 0

    def nanif(v: np.ndarray, also: np.ndarray | None = None) -> np.ndarray:
        bad = empty if also is None else (empty | also)
        return np.where(bad, np.nan, v).astype(np.float32)

    small = np.full(len(empty), side < PSF_MIN_SIDE)
    return BlurMap(
        score=nanif(score_from_px(ex.e)), excess=nanif(ex.e), excess_major=nanif(ex.major),
        excess_minor=nanif(ex.minor), excess_angle=nanif(ex.angle),
        total_major=nanif(total.sigma_major, small), total_minor=nanif(total.sigma_minor, small),
        total_angle=nanif(total.angle, small), noise=total.noise.astype(np.float32), snr=snr.astype(np.float32),
        empty=empty, reason=reason,
    )


def _weights(weights: ExcessWeights | str | None) -> ExcessWeights | None:
    return weights if weights is None or isinstance(weights, ExcessWeights) else load_weights(weights)


def qc_tiles(tiles, window: int | None = None, value_range: tuple[float, float] | None = None,
             quant: float | None = None, weights: ExcessWeights | str | None = None) -> BlurMap:
    """Focus QC of a stack of equal tiles.

    Parameters
    ----------
    tiles : array_like, shape (n, h, w)
        Integer or float tiles. Gain and offset change no output (``noise`` is in units of the
        value range).
    window : int, optional
        Analyse the centred ``window`` x ``window`` px of each tile (None: the whole tile).
    value_range : (lo, hi), optional
        The range of the data (default: the dtype's integer range; the stack's min / max for
        floats): the [0, 1] scaling of the estimators and the ends the saturation test looks for.
    quant : float, optional
        Quantisation step in the tiles' units (default 1 for integers, 1/255 of the range for floats).
    weights : ExcessWeights or str, optional
        Excess-blur weights (default: the shipped ones trained nearest to the analysed size).

    Returns
    -------
    BlurMap
        Arrays of shape ``(n,)``; tiles under ``content.MIN_SIDE`` px give NaN, reason ``too_small``.
    """
    window = _check_window(window)
    t = np.asarray(tiles)
    if t.ndim != 3:
        raise ValueError(f"expected a stack of tiles (n, h, w), got shape {t.shape}")
    n, h, w = t.shape
    if n == 0 or min(h, w) < content.MIN_SIDE:
        return BlurMap.blank((n,))
    lo, hi, q0 = _default_range(t.dtype)
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
    elif t.dtype.kind == "f":
        lo, hi = float(t.min()), float(t.max())
        hi = hi if hi > lo else lo + 1.0  # constant tiles (flat: empty)
    if t.dtype.kind == "f":
        q0 = max(hi - lo, 1e-30) / 255.0
    q = q0 if quant is None else float(quant)
    ptp, frac_end = content.pixel_stats(t, lo, hi)
    return _analyse(centre_window(t, window), ptp, frac_end, lo, hi, q, _weights(weights))


def _blocks(img: np.ndarray, tile: int) -> list[tuple[int, int, np.ndarray]]:
    """``(first row, first col, 4-D view (R, th, C, tw))`` of the full tiles and the partial edges."""
    h, w = img.shape
    nr, nc = h // tile, w // tile
    hr, wr = h - nr * tile, w - nc * tile
    out = []
    for r0, rows, th in ((0, nr, tile), (nr, 1 if hr else 0, hr)):
        for c0, cols, tw in ((0, nc, tile), (nc, 1 if wr else 0, wr)):
            if rows and cols:
                sub = img[r0 * tile : r0 * tile + rows * th, c0 * tile : c0 * tile + cols * tw]
                out.append((r0, c0, sub.reshape(rows, th, cols, tw)))
    return out


def _check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"the QC blur map needs a 2-D image, got an array of shape {img.shape}")
    if img.size == 0:
        raise ValueError("the QC blur map got an empty image")
    if img.dtype == bool or img.dtype.kind not in "uif":
        raise ValueError(f"the QC blur map needs an integer or float image, got dtype {img.dtype}")
    if img.dtype.kind == "f" and not np.isfinite(img).all():
        raise ValueError("image contains NaN or inf values; replace them before scoring")
    return img


def qc_grid(image, tile: int = DEFAULT_TILE, window: int | None = DEFAULT_WINDOW, workers: int | None = None,
            value_range: str | tuple[float, float] = "auto", weights: ExcessWeights | str | None = None) -> BlurMap:
    """Focus QC of every tile of a 2-D image on ``TileGrid(image.shape, tile)``.

    Parameters
    ----------
    image : array_like
        A 2-D section, integer or float.
    tile : int
        Grid tile size in px; partial edge tiles are analysed at their own size (those under
        ``content.MIN_SIDE`` px come out NaN with reason ``too_small``).
    window : int or None
        Analysis window (default :data:`DEFAULT_WINDOW`, the fast path); None = whole tiles.
    workers : int, optional
        Threads over bands of tile rows (default: up to 4, the CPU count).
    value_range : str or (lo, hi)
        How integer values map onto [0, 1] (``io.values.value_range``: ``auto``, ``dtype`` or
        ``(lo, hi)``); its ends are where the saturation test looks for clipped pixels. Float
        images use their own min / max unless ``(lo, hi)`` is given (so gain and offset cancel
        exactly), with a quantisation step of 1/255 of that range.
    weights : ExcessWeights or str, optional
        Excess-blur weights (default: the shipped ones for the analysed size).

    Returns
    -------
    BlurMap
        Arrays of the grid's shape ``(rows, cols)``.
    """
    img = _check_image(image)
    window = _check_window(window)
    tile = int(tile)
    grid = TileGrid(img.shape, tile)  # type: ignore[arg-type]
    if img.dtype.kind == "f" and isinstance(value_range, str):
        lo, hi = float(img.min()), float(img.max())  # gain and offset of float data cancel exactly
        hi = hi if hi > lo else lo + 1.0  # a constant image (flat: every tile empty)
    else:
        lo, hi = _value_range(img, value_range)
    q = 1.0 if img.dtype.kind in "ui" else (hi - lo) / 255.0
    w = _weights(weights)
    out = BlurMap.blank(grid.grid_shape)
    jobs = []
    for r0, c0, v in _blocks(img, tile):
        nr, th, nc, tw = v.shape
        if min(th, tw) < content.MIN_SIDE:
            continue
        for r in range(0, nr, _BAND_ROWS):
            jobs.append((r0 + r, c0, v[r : r + _BAND_ROWS]))

    def run(job: tuple[int, int, np.ndarray]) -> tuple[int, int, int, int, BlurMap]:
        r0, c0, v = job
        nr, th, nc, tw = v.shape
        ptp, frac_end = content.pixel_stats(v, lo, hi, axes=(1, 3))
        if window is not None and window < min(th, tw):
            y0, x0 = (th - window) // 2, (tw - window) // 2
            v = v[:, y0 : y0 + window, :, x0 : x0 + window]
        wt = v.transpose(0, 2, 1, 3).reshape(nr * nc, v.shape[1], v.shape[3])  # copies the windows only
        return r0, c0, nr, nc, _analyse(wt, ptp.ravel(), frac_end.ravel(), lo, hi, q, w)

    n_workers = max(1, min(4, os.cpu_count() or 1)) if workers is None else max(1, int(workers))
    if n_workers == 1 or len(jobs) <= 1:
        results = [run(j) for j in jobs]
    else:
        with ThreadPoolExecutor(min(n_workers, len(jobs))) as ex:
            results = list(ex.map(run, jobs))
    for r0, c0, nr, nc, res in results:
        out.set((slice(r0, r0 + nr), slice(c0, c0 + nc)), res.reshape((nr, nc)))
    return out
