"""Per-tile decisions from focus scores: OK, CORRECT (deblur it) or RETAKE (re-image it).

``classify(scores, correct_threshold, retake_threshold)``: a tile scoring below
``retake_threshold`` -> RETAKE; else below ``correct_threshold`` -> CORRECT; else OK. Scores are
"higher = sharper", so ``retake_threshold <= correct_threshold`` is required (ValueError
otherwise). **NaN scores (unscorable tiles: constant, padding) -> OK**: a tile with nothing to
measure is never sent to deblurring or re-imaging; the CSV report marks it ``unscored``.

``auto_thresholds(scores)`` sets both relative to the section's own score distribution, for the
usual case that most of a section is in focus. With ``m`` the median and ``s`` the MAD (scaled to
a Gaussian sigma) of the finite scores: ``correct = m - max(3 s, d_c)``, ``retake = m - max(6 s,
d_r)``. When at least 75 % of the scores are positive (``autocorr``, ``varlap``, ``fft_ratio``
and usually ``wafermapper``) this is done on log scores, scores <= 0 counting as -inf (lowest),
so the thresholds are ratios to the median, with minimum distances ``d_c = 0.2`` (a tile
below 82 % of the median) and ``d_r = 1.2`` (below 30 % of it); on the linear scale (mostly
signed scores) ``d_c = 0.2 |m|``, ``d_r = 0.7 |m|``. The floors keep a very
uniform section from flagging noise and reserve RETAKE for blur well beyond what deblurring
handles: for the default ``autocorr`` metric on 256-px tiles of real EM, 1 px of Gaussian blur
halves the score (CORRECT) and 2 px divides it by about 4.5 (RETAKE). A section that is soft
*everywhere* is not flagged by relative thresholds: use absolute ones for that.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .atomic import atomic_write_text
from .tiling import TileGrid

OK, CORRECT, RETAKE = 0, 1, 2
DECISION_NAMES: tuple[str, str, str] = ("ok", "correct", "retake")
UNSCORED = "unscored"
CSV_COLUMNS = ("file", "section", "row", "col", "y0", "x0", "height", "width", "score", "decision")

AUTO_K_CORRECT = 3.0
AUTO_K_RETAKE = 6.0
_LOG_MIN_POSITIVE = 0.75  # log scale when at least this fraction of the scores is > 0
_MIN_DIST_LOG = (0.2, 1.2)  # (correct, retake) minimum distances below the median, log scale
_MIN_DIST_REL = (0.2, 0.7)  # the same as fractions of |median|, linear scale

__all__ = [
    "OK",
    "CORRECT",
    "RETAKE",
    "DECISION_NAMES",
    "UNSCORED",
    "CSV_COLUMNS",
    "check_thresholds",
    "classify",
    "auto_thresholds",
    "count_flagged",
    "tile_rows",
    "write_tile_csv",
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


def classify(scores, correct_threshold: float, retake_threshold: float) -> np.ndarray:
    """int8 decisions of the same shape as ``scores`` (OK / CORRECT / RETAKE; NaN -> OK)."""
    c, r = check_thresholds(correct_threshold, retake_threshold)
    s = np.asarray(scores)
    out = np.zeros(s.shape, np.int8)
    with np.errstate(invalid="ignore"):
        out[s < c] = CORRECT
        out[s < r] = RETAKE
    return out


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


def count_flagged(scores, correct_threshold: float, retake_threshold: float) -> tuple[int, int]:
    """``(n_correct, n_retake)``: tiles a threshold pair flags (NaN never counts). Cheap enough to
    run on every slider move: about 0.1 ms for 10,000 tiles."""
    c, r = check_thresholds(correct_threshold, retake_threshold)
    s = np.asarray(scores)
    with np.errstate(invalid="ignore"):
        n_below_c = int(np.count_nonzero(s < c))
        n_retake = int(np.count_nonzero(s < r))
    return n_below_c - n_retake, n_retake


def tile_rows(file: str, z: int, grid: TileGrid, scores, decisions) -> list[dict]:
    """One report row per tile of ``grid`` (row-major), the columns of ``CSV_COLUMNS``."""
    scores = np.asarray(scores)
    decisions = np.asarray(decisions)
    if scores.shape != grid.grid_shape or decisions.shape != grid.grid_shape:
        raise ValueError(
            f"scores {scores.shape} / decisions {decisions.shape} do not match grid {grid.grid_shape}"
        )
    rows = []
    for i, j in grid:
        y0, x0, h, w = grid.bounds(i, j)
        s = float(scores[i, j])
        ok = np.isfinite(s)
        rows.append(
            {
                "file": str(file),
                "section": int(z),
                "row": i,
                "col": j,
                "y0": y0,
                "x0": x0,
                "height": h,
                "width": w,
                "score": f"{s:.6g}" if ok else "",
                "decision": DECISION_NAMES[int(decisions[i, j])] if ok else UNSCORED,
            }
        )
    return rows


def write_tile_csv(path, rows: Iterable[dict] | Sequence[dict], overwrite: bool = False) -> Path:
    """Write report rows to ``path`` atomically (``core.atomic.atomic_write``).

    Refuses (``FileExistsError``) to replace an existing file unless ``overwrite=True``; the
    folder must exist (``FileNotFoundError`` otherwise).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (use overwrite to replace it)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist")
    buf = io.StringIO(newline="")
    wr = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    wr.writeheader()
    for row in rows:
        wr.writerow(row)
    try:
        atomic_write_text(path, buf.getvalue(), overwrite=overwrite)
    except FileExistsError:  # appeared meanwhile
        raise FileExistsError(f"{path} already exists (use overwrite to replace it)") from None
    return path
