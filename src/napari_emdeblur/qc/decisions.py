"""Per-tile decisions from focus scores: OK, CORRECT (deblur it), RETAKE (re-image it) or EMPTY.

``classify(scores, correct_threshold, retake_threshold, empty=None)``: a tile of the ``empty``
mask (no tissue signal: flat, saturated, blank resin or pure noise; the content check of
:mod:`.content`, ``BlurMap.empty``) -> EMPTY, whatever its score; else a tile scoring below
``retake_threshold`` -> RETAKE; else below ``correct_threshold`` -> CORRECT; else OK. Scores are
"higher = sharper", so ``retake_threshold <= correct_threshold`` is required (ValueError
otherwise). An EMPTY tile is never "ok", never corrected (``deblur.selection`` takes CORRECT
tiles only, and the correction service skips empty tiles) and is counted on its own
(:func:`count_empty`). **Other NaN scores (tiles too small to score, or metrics without a
content check: constant, padding) -> OK**: a tile with nothing to measure is never sent to
deblurring or re-imaging; the CSV report marks it ``unscored``.

Thresholds come from :mod:`.thresholds` (the one threshold policy).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..io.atomic import atomic_write_text
from .content import REASONS
from .thresholds import check_thresholds
from .tiling import TileGrid

OK, CORRECT, RETAKE, EMPTY = 0, 1, 2, 3
DECISION_NAMES: tuple[str, str, str, str] = ("ok", "correct", "retake", "empty")
UNSCORED = "unscored"
#: the blur-map columns (empty for metrics without a blur map): excess blur in px (what decisions
#: use) with its axes and angle, qc.psf's total blur, the noise ([0, 1] units of the value range)
#: and why a tile is empty (flat / saturated / no_signal; too_small for unscored edge tiles)
BLUR_COLUMNS = ("blur_px", "blur_major_px", "blur_minor_px", "blur_angle_deg", "total_blur_major_px",
                "total_blur_minor_px", "total_blur_angle_deg", "noise", "empty_reason")
CSV_COLUMNS = ("file", "section", "row", "col", "y0", "x0", "height", "width", "score", "decision") + BLUR_COLUMNS


__all__ = [
    "OK",
    "CORRECT",
    "RETAKE",
    "EMPTY",
    "DECISION_NAMES",
    "BLUR_COLUMNS",
    "blur_cells",
    "UNSCORED",
    "CSV_COLUMNS",
    "classify",
    "count_empty",
    "count_flagged",
    "tile_rows",
    "write_tile_csv",
]



def classify(scores, correct_threshold: float, retake_threshold: float, empty=None) -> np.ndarray:
    """int8 decisions of the same shape as ``scores``.

    Parameters
    ----------
    scores : array_like
        Focus scores, higher = sharper (NaN = unscored -> OK).
    correct_threshold, retake_threshold : float
        Tiles below them are CORRECT / RETAKE.
    empty : array_like of bool, optional
        Tiles without tissue signal (same shape): EMPTY, whatever their score.

    Returns
    -------
    ndarray of int8
        OK / CORRECT / RETAKE / EMPTY.
    """
    c, r = check_thresholds(correct_threshold, retake_threshold)
    s = np.asarray(scores)
    out = np.zeros(s.shape, np.int8)
    with np.errstate(invalid="ignore"):
        out[s < c] = CORRECT
        out[s < r] = RETAKE
    if empty is not None:
        e = np.asarray(empty, bool)
        if e.shape != s.shape:
            raise ValueError(f"empty mask {e.shape} does not match the scores {s.shape}")
        out[e] = EMPTY
    return out


def count_empty(decisions) -> int:
    """Tiles decided EMPTY (counted apart from the flagged ones)."""
    return int(np.count_nonzero(np.asarray(decisions) == EMPTY))



def count_flagged(scores, correct_threshold: float, retake_threshold: float) -> tuple[int, int]:
    """``(n_correct, n_retake)``: tiles a threshold pair flags (NaN never counts). Cheap enough to
    run on every slider move: about 0.1 ms for 10,000 tiles.
    """
    c, r = check_thresholds(correct_threshold, retake_threshold)
    s = np.asarray(scores)
    with np.errstate(invalid="ignore"):
        n_below_c = int(np.count_nonzero(s < c))
        n_retake = int(np.count_nonzero(s < r))
    return n_below_c - n_retake, n_retake


def blur_cells(blur, i: int, j: int) -> dict:
    """The :data:`BLUR_COLUMNS` of tile ``(i, j)`` of a ``blurmap.BlurMap`` as CSV strings.

    Parameters
    ----------
    blur : BlurMap or None
        A grid-shaped blur map; None gives all ''.
    i, j : int
        The tile.

    Returns
    -------
    dict
        Column name -> formatted value ('' for NaN).
    """
    if blur is None:
        return dict.fromkeys(BLUR_COLUMNS, "")

    def num(name: str, fmt: str = ".4g") -> str:
        v = float(getattr(blur, name)[i, j])
        return format(v, fmt) if np.isfinite(v) else ""

    return {
        "blur_px": num("excess"), "blur_major_px": num("excess_major"), "blur_minor_px": num("excess_minor"),
        "blur_angle_deg": num("excess_angle", ".1f"), "total_blur_major_px": num("total_major"),
        "total_blur_minor_px": num("total_minor"), "total_blur_angle_deg": num("total_angle", ".1f"),
        "noise": num("noise"), "empty_reason": REASONS[int(blur.reason[i, j])],
    }


def tile_rows(file: str, z: int, grid: TileGrid, scores, decisions, blur=None) -> list[dict]:
    """One report row per tile of ``grid`` (row-major), the columns of ``CSV_COLUMNS``.

    ``blur``: the section's ``blurmap.BlurMap`` (grid-shaped) for the blur columns; without it they
    are empty.
    """
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
        d = int(decisions[i, j])
        ok = np.isfinite(s) or d == EMPTY
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
                "score": f"{s:.6g}" if np.isfinite(s) else "",
                "decision": DECISION_NAMES[d] if ok else UNSCORED,
                **blur_cells(blur, i, j),
            }
        )
    return rows


def write_tile_csv(path, rows: Iterable[dict] | Sequence[dict], overwrite: bool = False,
                   columns: Sequence[str] = CSV_COLUMNS) -> Path:
    """Write report rows to ``path`` atomically (``io.atomic.atomic_write``), with the header
    ``columns`` (default :data:`CSV_COLUMNS`; per-file QC of a mosaic:
    ``qc.acquisition.FILE_CSV_COLUMNS``).

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
    wr = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    wr.writeheader()
    for row in rows:
        wr.writerow(row)
    try:
        atomic_write_text(path, buf.getvalue(), overwrite=overwrite)
    except FileExistsError:  # appeared meanwhile
        raise FileExistsError(f"{path} already exists (use overwrite to replace it)") from None
    return path
