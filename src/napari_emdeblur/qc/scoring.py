"""Focus scoring of a section or a (z, y, x) stack, one section at a time, as a generator.

``iter_score_stack(data, params)`` accepts a 2-D ``(y, x)`` or 3-D ``(z, y, x)`` numpy or dask
array (anything with ``shape``, ``ndim`` and slicing; dask-like objects are read through
``.compute()``). It reads one section at a time; a lazy section larger than ``BAND_PIXELS``
is read and scored in row-bands of whole tiles, so memory stays bounded by about one band
(plus its float32 work arrays) whatever the mosaic size. Tiles are independent, so banded and
whole-section scores are identical.

It yields, in order, for every z: ``Progress(done=z, total=nz, stage="score")`` (and one per
band for banded sections) then ``SectionScores(z, scores, tile, metric, extras)``; finally
``Progress(nz, nz)``. ``extras`` holds ``correct_threshold``, ``retake_threshold`` (the given
ones, or, when None, the section's ``auto_thresholds`` -- the absolute px defaults for the
``blur`` metric, ``thresholds.section_thresholds``; NaN when the section has no finite score)
and ``decisions`` (int8, ``decisions.classify``), plus ``anisotropy_ratio`` /
``anisotropy_angle`` when ``params.anisotropy`` is set. For the ``blur`` metric (the default)
``extras["blurmap"]`` is the section's :class:`~.blurmap.BlurMap` (excess and total blur in px,
noise, content check): its ``empty`` tiles are decided EMPTY (``extras["n_empty"]`` of them) and
``scores`` is its ``score``. Thresholds may be given in px of excess blur
(``ScoreParams.correct_px`` / ``retake_px``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..io.values import parse_range_mode
from . import decisions as dec
from .blurmap import DEFAULT_WINDOW, WINDOWS, BlurMap, qc_grid
from .content import MIN_SIDE
from .focus import DEFAULT_METRIC, METRICS, MIN_IMAGE_SIDE, anisotropy_tiles, score_tiles
from .messages import Progress, SectionScores
from .thresholds import PX_METRICS, check_px, check_thresholds, px_thresholds, section_thresholds
from .tiling import DEFAULT_TILE, TileGrid

BAND_PIXELS = 8192 * 8192  # lazy sections above this are scored in row-bands of whole tiles

__all__ = ["ScoreParams", "iter_score_stack", "score_stack", "tile_scores", "BAND_PIXELS"]


@dataclass
class ScoreParams:
    """Parameters of a scoring run.

    None thresholds are automatic, per section (for the ``blur`` metric: the absolute px
    defaults). ``correct_px`` / ``retake_px``: thresholds in px of excess blur (``blur`` metric
    only; each replaces the score threshold of its level). ``window``: the blur map's analysis
    window (``blurmap.qc_grid``; None = whole tiles). ``value_range``: how values map onto
    [0, 1] for the blur map (``io.values.value_range`` modes).
    """

    tile: int = DEFAULT_TILE
    metric: str = DEFAULT_METRIC
    correct_threshold: float | None = None
    retake_threshold: float | None = None
    anisotropy: bool = False
    workers: int | None = None
    correct_px: float | None = None
    retake_px: float | None = None
    window: int | None = DEFAULT_WINDOW
    value_range: str | tuple[float, float] = "auto"

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown focus metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if int(self.tile) < 8:
            raise ValueError(f"tile size must be at least 8 px, got {self.tile}")
        px = {"correct": self.correct_px, "retake": self.retake_px}
        if any(v is not None for v in px.values()):
            if self.metric not in PX_METRICS:
                raise ValueError(
                    f"thresholds in px need a blur metric ({', '.join(sorted(PX_METRICS))}), not {self.metric!r}"
                )
            for level, v in px.items():
                if v is not None:
                    check_px(v, f"{level} threshold (px)")
                    if getattr(self, f"{level}_threshold") is not None:
                        raise ValueError(f"give the {level} threshold either as a score or in px, not both")
        for level in ("correct", "retake"):
            v = getattr(self, f"{level}_threshold")
            if v is not None and not np.isfinite(float(v)):
                raise ValueError(f"{level} threshold must be a finite number, got {v!r}")
        c, r = self.score_thresholds()
        if c is not None and r is not None:
            check_thresholds(c, r)
        if self.has_blurmap and int(self.tile) < MIN_SIDE:
            raise ValueError(f"the {self.metric} metric needs tiles of at least {MIN_SIDE} px, got {self.tile}")
        if self.window is not None and int(self.window) < MIN_SIDE:
            raise ValueError(f"QC window must be at least {MIN_SIDE} px (or None for whole tiles), got {self.window}")
        if self.has_blurmap and self.window not in WINDOWS:  # other sizes read blur the weights were not made for
            sizes = ", ".join(str(w) for w in WINDOWS if w is not None)
            raise ValueError(f"QC window must be {sizes} px or None (whole tiles): the sizes the blur map was "
                             f"trained on, got {self.window}")
        parse_range_mode(self.value_range)

    def score_thresholds(self) -> tuple[float | None, float | None]:
        """``(correct, retake)`` as score thresholds (px converted; None = automatic)."""
        c, r = self.correct_threshold, self.retake_threshold
        if self.correct_px is None and self.retake_px is None:
            return c, r
        pc, pr = px_thresholds(self.correct_px, self.retake_px)
        return (pc if self.correct_px is not None else c), (pr if self.retake_px is not None else r)

    @property
    def has_blurmap(self) -> bool:
        """Whether scoring computes the blur map (the ``blur`` metric)."""
        return self.metric in PX_METRICS



def _is_lazy(a) -> bool:
    return not isinstance(a, np.ndarray) and hasattr(a, "compute")


def _read(a) -> np.ndarray:
    return np.asarray(a.compute() if _is_lazy(a) else a)


def _bands(height: int, tile: int, band_rows: int) -> list[tuple[int, int]]:
    """Row ranges of whole tile rows; a last band thinner than MIN_IMAGE_SIDE joins the previous."""
    step = band_rows * tile
    edges = list(range(0, height, step)) + [height]
    if len(edges) > 2 and edges[-1] - edges[-2] < MIN_IMAGE_SIDE:
        del edges[-2]
    return list(zip(edges[:-1], edges[1:]))


def iter_score_stack(data, params: ScoreParams | None = None) -> Iterator[Progress | SectionScores]:
    """Score every section of ``data``; see the module docstring for what is yielded."""
    params = params or ScoreParams()
    params.validate()
    ndim = len(data.shape)
    if ndim not in (2, 3):
        raise ValueError(f"expected a 2-D (y, x) or 3-D (z, y, x) array, got shape {tuple(data.shape)}")
    H, W = (int(s) for s in data.shape[-2:])
    if min(H, W) < MIN_IMAGE_SIDE:
        raise ValueError(f"sections of {H} x {W} px are too small to score (minimum {MIN_IMAGE_SIDE} px)")
    tile = int(params.tile)
    grid = TileGrid((H, W), tile)
    nz = int(data.shape[0]) if ndim == 3 else 1
    lazy = _is_lazy(data)
    band_rows = max(1, BAND_PIXELS // (tile * tile * grid.cols))
    t0 = time.perf_counter()

    def eta(done: int) -> float | None:
        if done <= 0:
            return None
        return (time.perf_counter() - t0) / done * (nz - done)

    for z in range(nz):
        section = data[z] if ndim == 3 else data
        yield Progress(z, nz, "score", f"section {z + 1}/{nz}", eta(z))
        extras: dict = {}
        blur: BlurMap | None = None
        if lazy and H * W > BAND_PIXELS:
            bands = _bands(H, tile, band_rows)
            parts, ratio, angle, maps = [], [], [], []
            for k, (y0, y1) in enumerate(bands):
                if k:
                    yield Progress(z, nz, "score", f"section {z + 1}/{nz}: band {k + 1}/{len(bands)}", eta(z))
                img = _read(section[y0:y1])
                sc, bm = tile_scores(img, params)
                parts.append(sc)
                if bm is not None:
                    maps.append(bm)
                if params.anisotropy:
                    r, a = anisotropy_tiles(img, tile, params.workers)
                    ratio.append(r)
                    angle.append(a)
                del img
            scores = np.concatenate(parts, axis=0)
            blur = BlurMap.concat(maps) if maps else None
            if params.anisotropy:
                extras["anisotropy_ratio"] = np.concatenate(ratio, axis=0)
                extras["anisotropy_angle"] = np.concatenate(angle, axis=0)
        else:
            img = _read(section)
            scores, blur = tile_scores(img, params)
            if params.anisotropy:
                extras["anisotropy_ratio"], extras["anisotropy_angle"] = anisotropy_tiles(img, tile, params.workers)
            del img
        c, r = section_thresholds(scores, *params.score_thresholds(), metric=params.metric)
        extras["correct_threshold"], extras["retake_threshold"] = c, r
        empty = None
        if blur is not None:
            extras["blurmap"] = blur
            empty = blur.empty
            extras["n_empty"] = int(np.count_nonzero(empty))
        if np.isfinite(c) and np.isfinite(r):
            extras["decisions"] = dec.classify(scores, c, r, empty=empty)
        else:
            extras["decisions"] = np.where(empty, dec.EMPTY, dec.OK).astype(np.int8) if empty is not None \
                else np.zeros(scores.shape, np.int8)
        yield SectionScores(z=z, scores=scores, tile=tile, metric=params.metric, extras=extras)
    yield Progress(nz, nz, "score", "done", 0.0)


def tile_scores(img: np.ndarray, params: ScoreParams) -> tuple[np.ndarray, BlurMap | None]:
    """Scores of one 2-D image on the ``params.tile`` px grid, and its blur map.

    The one scoring step of a section, a band of one, an acquisition tile file
    (:mod:`.acquisition`) and the pipeline's tiles.

    Parameters
    ----------
    img : ndarray
        A 2-D image.
    params : ScoreParams
        Metric, tile, workers; for the ``blur`` metric also window and value range.

    Returns
    -------
    scores : ndarray
        ``(rows, cols)`` float32, NaN = unscored (for the ``blur`` metric also empty tiles).
    blur : BlurMap or None
        The blur map (``blur`` metric: excess blur in px, content check), else None.
    """
    if params.has_blurmap:
        bm = qc_grid(img, int(params.tile), window=params.window, workers=params.workers,
                     value_range=parse_range_mode(params.value_range))
        return bm.score, bm
    return np.asarray(score_tiles(img, int(params.tile), params.metric, params.workers), np.float32), None


def score_stack(data, params: ScoreParams | None = None) -> np.ndarray:
    """Drain ``iter_score_stack``: ``(z, rows, cols)`` float32 scores (z = 1 for a 2-D input)."""
    out = [msg.scores for msg in iter_score_stack(data, params) if isinstance(msg, SectionScores)]
    return np.stack(out, axis=0)
