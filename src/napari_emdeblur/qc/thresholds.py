"""The one threshold policy: which focus score makes a tile CORRECT or RETAKE (numpy only).

Scores are "higher = sharper"; a threshold pair is ``(correct, retake)`` with
``retake <= correct`` (:func:`check_thresholds`).

**Thresholds in px of blur.** The default metric, ``blur`` (:data:`PX_METRICS`), scores a tile
``1 / (1 + excess blur in px)`` (:mod:`.blurmap`), so a threshold in px maps onto a score
threshold exactly and the other way round (:func:`score_from_px`, :func:`px_from_score`): "correct
above 1 px" is "correct below a score of 0.5". Because the excess blur is measured against each
modality's in-focus look, px thresholds transfer between datasets without calibration, so for
these metrics missing thresholds default to the *absolute* :data:`DEFAULT_BLUR_PX` everywhere
(:func:`section_thresholds` with ``metric``; :func:`px_thresholds` checks px given by a user).
The defaults, 1 px to correct and 3 px to retake, come from ``benchmarks/focus_metrics.py``: at
1 px one threshold for every modality calls 1-2 % of the sharp tiles (<= 0.5 px added) soft and
lets 4 % of the soft ones (>= 1 px) through, almost all of them within a few tenths of a px of
1 px; 3 px is about where the correction stops restoring faithfully. Three ways to set the pair:

* **absolute** (:func:`absolute_thresholds`): fixed numbers, given or the metric's defaults in
  :data:`DEFAULT_THRESHOLDS`. A stream (the pipeline) has no distribution to judge from, so
  this is its default.
* **section-relative** (:func:`section_thresholds`, :func:`auto_thresholds`): relative to the
  section's own score distribution, for the usual case that most of a section is in focus.
  With ``m`` the median and ``s`` the MAD (scaled to a Gaussian sigma) of the finite scores:
  ``correct = m - max(3 s, d_c)``, ``retake = m - max(6 s, d_r)``. When at least 75 % of the
  scores are positive (``autocorr``, ``varlap``, ``fft_ratio`` and usually ``wafermapper``)
  this is done on log scores, scores <= 0 counting as -inf (lowest), so the thresholds are ratios
  to the median, with minimum distances ``d_c = 0.2`` (a tile below 82 % of the median) and
  ``d_r = 1.2`` (below 30 % of it); on the linear scale (mostly signed scores)
  ``d_c = 0.2 |m|``, ``d_r = 0.7 |m|``. The floors keep a very uniform section from flagging
  noise and reserve RETAKE for blur well beyond what deblurring handles: for the default
  ``autocorr`` metric on 256-px tiles of real EM, 1 px of Gaussian blur halves the score
  (CORRECT) and 2 px divides it by about 4.5 (RETAKE). A section that is soft *everywhere* is
  not flagged by relative thresholds: use absolute ones for that. The CLI and the napari widget
  use this by default; a given threshold overrides its automatic value.
* **calibrated** (:func:`calibrated_thresholds`): :func:`auto_thresholds` once, on the pooled
  subtile scores of the first N tiles of a run (``emdeblur watch --calibrate N``), then fixed.
"""

from __future__ import annotations

import math

import numpy as np

AUTO_K_CORRECT = 3.0
AUTO_K_RETAKE = 6.0
_LOG_MIN_POSITIVE = 0.75  # log scale when at least this fraction of the scores is > 0
_MIN_DIST_LOG = (0.2, 1.2)  # (correct, retake) minimum distances below the median, log scale
_MIN_DIST_REL = (0.2, 0.7)  # the same as fractions of |median|, linear scale

# (correct_threshold, retake_threshold) per focus metric, higher = sharper. Measured on the real
# 1024x1024 sSEM frames of the drosophila VNC set (4.6 nm px), median of 256-px subtiles:
# in-focus frames 0.16-0.26; Gaussian blur sigma 1 px ~0.09, 1.5 px ~0.06, 2 px ~0.043,
# 2.5 px ~0.031, 3 px ~0.024 (plus read noise). So "correct" = visibly soft (sigma >~ 0.8 px),
# "retake" = sigma >~ 2.5 px, beyond what deblurring restores faithfully. The scale depends on
# pixel size and detector: other data need their own numbers (or --calibrate N).
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "autocorr": (0.12, 0.03),
}
#: metrics scored ``1 / (1 + blur in px)``: thresholds may be given in px, and default to the absolute ones
PX_METRICS: frozenset[str] = frozenset({"blur"})
#: (correct above, retake above) in px of excess blur
DEFAULT_BLUR_PX: tuple[float, float] = (1.0, 3.0)


def score_from_px(px):
    """The focus score ``1 / (1 + px)`` of an excess blur in px (scalar or array; higher = sharper)."""
    if np.ndim(px):
        return 1.0 / (1.0 + np.asarray(px, np.float64))
    return 1.0 / (1.0 + float(px))


def px_from_score(score):
    """The excess blur in px of a ``blur`` score (inverse of :func:`score_from_px`; NaN stays NaN)."""
    if np.ndim(score):
        with np.errstate(divide="ignore"):
            return 1.0 / np.asarray(score, np.float64) - 1.0
    s = float(score)
    return math.inf if s == 0 else 1.0 / s - 1.0


DEFAULT_THRESHOLDS["blur"] = (score_from_px(DEFAULT_BLUR_PX[0]), score_from_px(DEFAULT_BLUR_PX[1]))


def check_px(value, name: str = "threshold") -> float:
    """A blur threshold in px as a float: finite and >= 0 (``ValueError`` naming ``name`` otherwise)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of px, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number of px >= 0, got {value!r}")
    return v


def px_thresholds(correct_px: float | None = None, retake_px: float | None = None) -> tuple[float, float]:
    """Score thresholds ``(correct, retake)`` of the ``blur`` metric from px of excess blur.

    Parameters
    ----------
    correct_px, retake_px : float or None
        Correct tiles with more excess blur than ``correct_px``, retake those above ``retake_px``
        (None: :data:`DEFAULT_BLUR_PX`; with only one given, the default other one is moved so
        that retake_px >= correct_px).

    Returns
    -------
    tuple of float
        Score thresholds (``score_from_px``), retake <= correct.

    Raises
    ------
    ValueError
        For NaN, infinite or negative px, or retake_px < correct_px when both are given.
    """
    c = None if correct_px is None else check_px(correct_px, "correct threshold (px)")
    r = None if retake_px is None else check_px(retake_px, "retake threshold (px)")
    if c is not None and r is not None and r < c:
        raise ValueError(
            f"retake threshold ({r:g} px) must not be below the correct threshold ({c:g} px): "
            "retake is for the blurrier tiles"
        )
    if c is None:
        c = DEFAULT_BLUR_PX[0] if r is None else min(DEFAULT_BLUR_PX[0], r)
    if r is None:
        r = max(DEFAULT_BLUR_PX[1], c)
    return score_from_px(c), score_from_px(r)

__all__ = [
    "AUTO_K_CORRECT",
    "AUTO_K_RETAKE",
    "DEFAULT_BLUR_PX",
    "DEFAULT_THRESHOLDS",
    "PX_METRICS",
    "absolute_thresholds",
    "auto_thresholds",
    "calibrated_thresholds",
    "check_px",
    "check_thresholds",
    "px_from_score",
    "px_thresholds",
    "score_from_px",
    "section_thresholds",
]


def check_thresholds(correct_threshold: float, retake_threshold: float) -> tuple[float, float]:
    """Validate a threshold pair; returns them as floats."""
    c, r = float(correct_threshold), float(retake_threshold)
    if np.isnan(c) or np.isnan(r):
        raise ValueError("thresholds must be numbers, got NaN")
    if r > c:
        raise ValueError(
            f"retake threshold ({r:.6g}) must not exceed the correct threshold ({c:.6g}): "
            "scores are higher = sharper, so retake is the stricter (lower) cut"
        )
    return c, r


def auto_thresholds(scores, k_correct: float = AUTO_K_CORRECT, k_retake: float = AUTO_K_RETAKE) -> tuple[float, float]:
    """``(correct, retake)`` thresholds relative to the median / MAD of the finite scores.

    Raises ValueError when there is no finite score.
    """
    if not 0 <= k_correct <= k_retake:
        raise ValueError("need 0 <= k_correct <= k_retake")
    s = np.asarray(scores, np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no finite scores to set thresholds from")
    log = bool(np.mean(s > 0) >= _LOG_MIN_POSITIVE)
    if log:  # scores <= 0 (e.g. autocorr of a contentless noisy tile) rank lowest: -inf
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(s > 0, np.log(np.where(s > 0, s, 1.0)), -np.inf)
    else:
        v = s
    med = float(np.median(v))
    mad = 1.4826 * float(np.median(np.abs(v - med)))
    if log:
        dc = max(k_correct * mad, _MIN_DIST_LOG[0])
        dr = max(k_retake * mad, _MIN_DIST_LOG[1], dc)
        return float(np.exp(med - dc)), float(np.exp(med - dr))
    floor = max(abs(med), 1e-12)
    dc = max(k_correct * mad, _MIN_DIST_REL[0] * floor)
    dr = max(k_retake * mad, _MIN_DIST_REL[1] * floor, dc)
    return med - dc, med - dr


def section_thresholds(
    scores, correct: float | None = None, retake: float | None = None, metric: str | None = None
) -> tuple[float, float]:
    """The ``(correct, retake)`` pair for one section: given values, automatic for missing ones.

    Parameters
    ----------
    scores : array_like
        The section's tile scores (NaN = unscored).
    correct, retake : float or None
        Given thresholds; None = :func:`auto_thresholds` of the section.
    metric : str, optional
        For a metric of :data:`PX_METRICS` missing thresholds are the absolute
        :data:`DEFAULT_BLUR_PX` instead (px thresholds need no per-section calibration).

    Returns
    -------
    tuple of float
        With only one given, the automatic other one is clipped so that retake <= correct;
        NaN when automatic thresholds are needed and no score is finite.
    """
    c, r = correct, retake
    if c is not None and r is not None:
        return float(c), float(r)
    if metric in PX_METRICS:
        dc, dr = DEFAULT_THRESHOLDS[str(metric)]
        if c is not None:
            return float(c), float(min(dr, float(c)))
        if r is not None:
            return float(max(dc, float(r))), float(r)
        return float(dc), float(dr)
    finite = np.asarray(scores)[np.isfinite(scores)]
    ac, ar = auto_thresholds(finite) if finite.size else (np.nan, np.nan)
    if c is not None:
        return float(c), float(min(ar, c) if np.isfinite(ar) else c)
    if r is not None:
        return float(max(ac, r) if np.isfinite(ac) else r), float(r)
    return float(ac), float(ar)


def absolute_thresholds(metric: str, correct: float | None = None, retake: float | None = None) -> tuple[float, float]:
    """Fixed ``(correct, retake)`` thresholds: the given ones, else the metric's defaults.

    Raises ``ValueError`` when a default is needed for a metric without one, for non-finite
    numbers, or for retake > correct.
    """
    ct, rt = correct, retake
    if ct is None or rt is None:
        if metric not in DEFAULT_THRESHOLDS:
            raise ValueError(
                f"no default thresholds for metric {metric!r}: give --correct-threshold and "
                f"--retake-threshold, or --calibrate N"
            )
        dct, drt = DEFAULT_THRESHOLDS[metric]
        ct = dct if ct is None else ct
        rt = drt if rt is None else rt
    ct, rt = float(ct), float(rt)
    if not (math.isfinite(ct) and math.isfinite(rt)):
        raise ValueError("thresholds must be finite numbers")
    if rt > ct:
        raise ValueError(
            f"retake threshold {rt} is above the correct threshold {ct} (higher scores are sharper)"
        )
    return ct, rt


def calibrated_thresholds(score_arrays) -> tuple[float, float]:
    """:func:`auto_thresholds` of the pooled scores of several tiles (the first N of a run).

    Raises ``ValueError`` when there are no tiles or no finite score among them.
    """
    arrays = [np.asarray(s, np.float32).ravel() for s in score_arrays]
    if not arrays:
        raise ValueError("no tiles to calibrate the thresholds from")
    pooled = np.concatenate(arrays)
    if not np.isfinite(pooled).any():
        raise ValueError("calibration tiles have no scorable subtile")
    ct, rt = auto_thresholds(pooled)
    return float(ct), float(rt)
