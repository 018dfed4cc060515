"""Per-tile decisions from focus scores: OK, CORRECT (deblur it) or RETAKE (re-image it).

``classify(scores, correct_threshold, retake_threshold)``: a tile scoring below
``retake_threshold`` -> RETAKE; else below ``correct_threshold`` -> CORRECT; else OK. Scores are
"higher = sharper", so ``retake_threshold <= correct_threshold`` is required (ValueError
otherwise). **NaN scores (unscorable tiles: constant, padding) -> OK**: a tile with nothing to
measure is never sent to deblurring or re-imaging; the CSV report marks it ``unscored``.

Thresholds come from :mod:`.thresholds` (the one threshold policy).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..io.atomic import atomic_write_text
from .thresholds import check_thresholds
from .tiling import TileGrid

OK, CORRECT, RETAKE = 0, 1, 2
DECISION_NAMES: tuple[str, str, str] = ("ok", "correct", "retake")
UNSCORED = "unscored"
CSV_COLUMNS = ("file", "section", "row", "col", "y0", "x0", "height", "width", "score", "decision")


__all__ = [
    "OK",
    "CORRECT",
    "RETAKE",
    "DECISION_NAMES",
    "UNSCORED",
    "CSV_COLUMNS",
    "classify",
    "count_flagged",
    "tile_rows",
    "write_tile_csv",
]



def classify(scores, correct_threshold: float, retake_threshold: float) -> np.ndarray:
    """int8 decisions of the same shape as ``scores`` (OK / CORRECT / RETAKE; NaN -> OK)."""
    c, r = check_thresholds(correct_threshold, retake_threshold)
    s = np.asarray(scores)
    out = np.zeros(s.shape, np.int8)
    with np.errstate(invalid="ignore"):
        out[s < c] = CORRECT
        out[s < r] = RETAKE
    return out



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
