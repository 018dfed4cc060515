"""Focus QC per acquisition tile: one decision per image file of a mosaic (numpy/scipy only).

A MultiSEM section is assembled from acquisition tiles, one image file per beam (about
1750 x 2000 px), that overlap their neighbours. The unit a microscope operator re-images is the
file, so for a mosaic QC decides per file:

* every file is read once, by itself (not cut out of the mosaic: overlaps with its neighbours
  and the mosaic's gaps play no part), and scored on a grid of ``sub_tile`` px from its own
  top-left corner (:func:`~.scoring.tile_scores`, the same step as a section's grid: for the
  ``blur`` metric the blur map with the content check): sub-tiles at its right and bottom edges
  are scored at their true size; blank or padded ones are NaN;
* the file's score (:func:`file_score`) is the lower quartile (:data:`FILE_QUANTILE`) of its
  scorable sub-tiles: a soft quarter of a tile pulls it down, one contentless corner does not.
  Its worst scorable sub-tile is kept (row, column, box, score) so the proofreader sees where;
* decisions: the one threshold policy (:mod:`.thresholds`) applied to the files' scores, per
  section (plane z): for the ``blur`` metric the absolute px defaults, for the others
  section-relative (median / MAD of that section's files); given thresholds (scores or px)
  override; then :func:`~.decisions.classify`. A file whose sub-tiles hold no tissue signal at
  all (:func:`file_empty`) is EMPTY: never ok, never corrected, counted apart. Any other file
  with no scorable sub-tile is OK and reported ``unscored``. Mosaic gaps are no file, so
  nothing is decided (or flagged) there.
* blur in px (``blur`` metric): a file's ``blur_px`` is the px of its score
  (:func:`~.thresholds.px_from_score`: the upper quartile of its sub-tiles' excess blur), its
  axes, angle and noise those of the sub-tile whose score is nearest the file's
  (:func:`representative`).

:func:`iter_score_files` is the generator the Focus QC dock runs in a worker and ``emdeblur
score`` drains: ``Progress`` and :class:`~.messages.FileScores` per file, then the
:class:`AcquisitionQC` with thresholds and decisions. :meth:`AcquisitionQC.rows` gives the CSV
rows: one per file (:data:`FILE_CSV_COLUMNS`) with its path, optionally followed by its sub-tile
rows, with the blur columns (:data:`~.decisions.BLUR_COLUMNS`).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..io.errors import EMReadError
from ..io.planes import read_plane
from . import decisions as dec
from .blurmap import BlurMap
from .messages import FileScores, Progress
from .scoring import ScoreParams, tile_scores
from .thresholds import PX_METRICS, px_from_score, section_thresholds
from .tilemap import TileFootprints

FILE_QUANTILE = 0.25
FILE_CSV_COLUMNS = (
    "file", "section", "level", "row", "col", "y0", "x0", "height", "width", "score", "decision",
    "n_subtiles", "worst_row", "worst_col", "worst_y0", "worst_x0", "worst_height", "worst_width", "worst_score",
) + dec.BLUR_COLUMNS

__all__ = ["FILE_CSV_COLUMNS", "FILE_QUANTILE", "AcquisitionQC", "file_blur", "file_blur_cells", "file_empty", "file_score",
           "iter_score_files", "representative", "score_file"]


def file_score(sub_scores: np.ndarray, quantile: float = FILE_QUANTILE) -> tuple[float, tuple[int, int] | None]:
    """One score for a file from its sub-tile scores, and the ``(row, col)`` of its worst one.

    Parameters
    ----------
    sub_scores : ndarray
        ``(rows, cols)`` sub-tile scores, NaN = unscorable.
    quantile : float
        Which quantile of the scorable sub-tiles is the file's score (default the lower quartile).

    Returns
    -------
    score : float
        NaN when no sub-tile is scorable.
    worst : (int, int) or None
        The lowest scorable sub-tile.
    """
    s = np.asarray(sub_scores, np.float64)
    ok = np.isfinite(s)
    if not ok.any():
        return math.nan, None
    worst = np.unravel_index(int(np.argmin(np.where(ok, s, np.inf))), s.shape)
    return float(np.quantile(s[ok], quantile)), (int(worst[0]), int(worst[1]))


def file_empty(sub_scores: np.ndarray, blur: Any = None) -> bool:
    """Whether a file (or any image scored on a sub-tile grid) holds no tissue signal.

    Parameters
    ----------
    sub_scores : ndarray
        Its sub-tile scores (NaN = unscorable).
    blur : BlurMap, optional
        Its sub-tiles' blur map (``blur`` metric); without one (other metrics have no content
        check) nothing is empty.

    Returns
    -------
    bool
        True when no sub-tile is scorable and at least one was found empty (flat, saturated,
        no signal): the file is decided EMPTY. Too-small sub-tiles alone leave it unscored.
    """
    if blur is None or np.isfinite(np.asarray(sub_scores, np.float64)).any():
        return False
    return bool(np.asarray(blur.empty).any())


def representative(sub_scores: np.ndarray, score: float) -> tuple[int, int] | None:
    """The ``(row, col)`` of the scorable sub-tile whose score is nearest the file's ``score``
    (whose blur axes, angle and noise stand for the file), or None.
    """
    s = np.asarray(sub_scores, np.float64)
    if not math.isfinite(score) or not np.isfinite(s).any():
        return None
    k = int(np.argmin(np.where(np.isfinite(s), np.abs(s - score), np.inf)))
    i, j = np.unravel_index(k, s.shape)
    return int(i), int(j)


def file_blur(fs: FileScores) -> BlurMap | None:
    """A file's blur values as a one-entry :class:`~.blurmap.BlurMap` (shape ``(1,)``), None without one.

    ``excess`` is the px of the file's score; the axes, angle, total blur and noise those of its
    :func:`representative` sub-tile; an empty file is ``empty`` with its commonest empty reason.
    """
    bm = fs.blur
    if bm is None:
        return None
    out = BlurMap.blank((1,))
    rep_ij = representative(fs.sub_scores, fs.score)
    if rep_ij is not None:
        out.set(0, BlurMap(**{k: np.asarray(v)[rep_ij] for k, v in vars(bm).items()}))
        out.excess[0] = px_from_score(fs.score)
        out.score[0] = fs.score
    elif fs.empty:
        codes = np.asarray(bm.reason)[np.asarray(bm.empty)]
        out.empty[0] = True
        out.reason[0] = int(np.bincount(codes).argmax())
    return out


def file_blur_cells(fs: FileScores) -> dict:
    """The :data:`~.decisions.BLUR_COLUMNS` of a file (:func:`file_blur`) as CSV strings ('' without a blur map)."""
    fb = file_blur(fs)
    return dec.blur_cells(None if fb is None else fb.reshape((1, 1)), 0, 0)


def _read_tile(path: str, shape: tuple[int, int] | None) -> np.ndarray:
    img = read_plane(Path(path))
    if img.ndim != 2:
        raise EMReadError(f"{path}: an acquisition tile must be a single 2-D image, got shape {img.shape}")
    if shape is not None and tuple(img.shape) != tuple(shape):
        raise EMReadError(f"{path}: tile of shape {img.shape} differs from its footprint {tuple(shape)}")
    return img


def score_file(index: int, tile: Any, img: np.ndarray, params: ScoreParams) -> FileScores:
    """:class:`~.messages.FileScores` of one acquisition tile (``tile``: an ``io.AcqTile``) from its pixels."""
    sub, bm = tile_scores(img, params)
    score, worst = file_score(sub)
    return FileScores(index=index, path=str(tile.path), z=int(tile.z), y0=int(tile.y0), x0=int(tile.x0),
                      height=int(img.shape[0]), width=int(img.shape[1]), sub_tile=int(params.tile),
                      sub_scores=sub, score=score, worst=worst, blur=bm, empty=file_empty(sub, bm))


@dataclass
class AcquisitionQC:
    """The per-file QC of a mosaic: every file's scores, the thresholds and one decision per file.

    ``thresholds`` maps a section (plane z) to its ``(correct, retake)`` pair; ``decisions`` holds
    one :mod:`~.decisions` code per file (in ``files`` order, the section's tile order).
    """

    files: list[FileScores]
    metric: str
    sub_tile: int
    shape: tuple[int, ...] = ()  # the mosaic's shape (level 0), for the footprints
    thresholds: dict[int, tuple[float, float]] = field(default_factory=dict)
    decisions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))

    @property
    def scores(self) -> np.ndarray:
        """float32 score of every file (NaN = unscored)."""
        return np.array([f.score for f in self.files], np.float32)

    @property
    def planes(self) -> np.ndarray:
        """The section (plane z) of every file."""
        return np.array([f.z for f in self.files], np.int64)

    @property
    def empty(self) -> np.ndarray:
        """Per file (bool): no tissue signal in any sub-tile (decided EMPTY)."""
        return np.array([bool(f.empty) for f in self.files], bool)

    @property
    def blur_px(self) -> np.ndarray:
        """Excess blur in px of every file (float32) (``blur`` metric; NaN = unscored, empty or another metric)."""
        if self.metric not in PX_METRICS:
            return np.full(len(self.files), np.nan, np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(px_from_score(self.scores), np.float32)

    def n_empty(self) -> int:
        """Files decided EMPTY (counted apart from the flagged ones)."""
        return dec.count_empty(self.decisions)

    def decide(self, correct: float | None = None, retake: float | None = None, per_section: bool = True,
               ) -> "AcquisitionQC":
        """Set thresholds and decisions (in place; returns self).

        Parameters
        ----------
        correct, retake : float, optional
            Given score thresholds; None = automatic (:func:`~.thresholds.section_thresholds`: for
        the ``blur`` metric the absolute px defaults, else section-relative).
        per_section : bool
            Automatic thresholds from each section's files (True) or from all files at once.
        """
        s = self.scores
        z = self.planes
        e = self.empty
        self.thresholds = {}
        groups = sorted(set(z.tolist())) if per_section else [None]
        out = np.zeros(len(s), np.int8)
        for g in groups:
            m = np.ones(len(s), bool) if g is None else (z == g)
            c, r = section_thresholds(s[m], correct, retake, metric=self.metric)
            for zz in (sorted(set(z[m].tolist())) if g is None else [g]):
                self.thresholds[int(zz)] = (c, r)
            if np.isfinite(c) and np.isfinite(r):
                out[m] = dec.classify(s[m], c, r, empty=e[m])
            else:
                out[m] = np.where(e[m], dec.EMPTY, dec.OK)
        self.decisions = out
        return self

    def set_thresholds(self, correct: float, retake: float) -> np.ndarray:
        """One threshold pair for every section (the dock's sliders); returns the decisions."""
        c, r = float(correct), float(retake)
        self.thresholds = {int(zz): (c, r) for zz in set(self.planes.tolist())}
        self.decisions = dec.classify(self.scores, c, r, empty=self.empty)
        return self.decisions

    def counts(self) -> tuple[int, int, int]:
        """``(files scored, files to correct, files to retake)``."""
        ok = np.isfinite(self.scores)
        d = self.decisions if len(self.decisions) == len(self.files) else np.zeros(len(self.files), np.int8)
        return int(ok.sum()), int(((d == dec.CORRECT) & ok).sum()), int(((d == dec.RETAKE) & ok).sum())

    def footprints(self) -> TileFootprints:
        """Where every file shows in the mosaic (the later file wins where files overlap)."""
        boxes = np.array([(f.z, f.y0, f.x0, f.height, f.width) for f in self.files], np.int64).reshape(-1, 5)
        return TileFootprints.from_boxes(self.shape, boxes)

    def decision_name(self, i: int) -> str:
        """``ok`` / ``correct`` / ``retake`` / ``empty`` of file ``i``, or ``unscored``."""
        f = self.files[i]
        if f.empty:
            return dec.DECISION_NAMES[dec.EMPTY]
        if not math.isfinite(f.score) or len(self.decisions) != len(self.files):
            return dec.UNSCORED
        return dec.DECISION_NAMES[int(self.decisions[i])]

    def describe(self, i: int) -> str:
        """A one-line description of file ``i`` (the hover text): name, score, decision, worst sub-tile."""
        f = self.files[i]
        zs = f"z={f.z} " if len(set(self.planes.tolist())) > 1 else ""
        if f.empty:
            return f"{zs}{Path(f.path).name}: empty ({file_blur_cells(f)['empty_reason']}: no tissue signal)"
        if not math.isfinite(f.score):
            return f"{zs}{Path(f.path).name}: no scorable sub-tile"
        if f.blur is not None:
            c = file_blur_cells(f)
            text = (f"{zs}{Path(f.path).name}: blur {c['blur_px']} px ({c['blur_major_px']} / {c['blur_minor_px']} px "
                    f"at {c['blur_angle_deg']} deg) -> {self.decision_name(i)}")
        else:
            text = f"{zs}{Path(f.path).name}: focus {f.score:.3g} -> {self.decision_name(i)}"
        if f.worst is not None:
            i0, j0 = f.worst
            v = float(f.sub_scores[i0, j0])
            worst = f"{float(px_from_score(v)):.2f} px" if f.blur is not None else f"{v:.3g}"
            text += f" (worst sub-tile ({i0}, {j0}): {worst})"
        return text

    def rows(self, subtiles: bool = False) -> list[dict]:
        """CSV rows (:data:`FILE_CSV_COLUMNS`): one per file (``level`` = ``file``) with its path,
        footprint, score, decision, worst sub-tile and blur columns (:func:`file_blur_cells`);
        with ``subtiles`` each file's sub-tile rows (``level`` = ``subtile``; ``row``/``col`` in
        the file's grid, boxes in mosaic pixels; their own blur columns) follow it.
        """
        out = []
        for i, f in enumerate(self.files):
            ok = math.isfinite(f.score)
            st = f.sub_tile
            row: dict[str, Any] = {
                "file": f.path, "section": f.z, "level": "file", "row": "", "col": "", "y0": f.y0, "x0": f.x0,
                "height": f.height, "width": f.width, "score": f"{f.score:.6g}" if ok else "",
                "decision": self.decision_name(i), "n_subtiles": int(np.isfinite(f.sub_scores).sum()),
                **file_blur_cells(f),
            }
            if f.worst is not None:
                a, b = f.worst
                row.update(worst_row=a, worst_col=b, worst_y0=f.y0 + a * st, worst_x0=f.x0 + b * st,
                           worst_height=min(st, f.height - a * st), worst_width=min(st, f.width - b * st),
                           worst_score=f"{float(f.sub_scores[a, b]):.6g}")
            out.append(row)
            if subtiles:
                c, r = self.thresholds.get(f.z, (math.nan, math.nan))
                sub_empty = None if f.blur is None else np.asarray(f.blur.empty)
                sub_dec = (dec.classify(f.sub_scores, c, r, empty=sub_empty)
                           if math.isfinite(c) and math.isfinite(r) else None)
                for (a, b), v in np.ndenumerate(f.sub_scores):
                    fin = bool(np.isfinite(v))
                    if sub_empty is not None and sub_empty[a, b]:
                        name = dec.DECISION_NAMES[dec.EMPTY]
                    elif fin and sub_dec is not None:
                        name = dec.DECISION_NAMES[int(sub_dec[a, b])]
                    else:
                        name = "" if fin else dec.UNSCORED
                    out.append({"file": f.path, "section": f.z, "level": "subtile", "row": a, "col": b,
                                "y0": f.y0 + a * st, "x0": f.x0 + b * st, "height": min(st, f.height - a * st),
                                "width": min(st, f.width - b * st), "score": f"{float(v):.6g}" if fin else "",
                                "decision": name, **dec.blur_cells(f.blur, a, b)})
        return out


def iter_score_files(tiles: Sequence[Any], params: ScoreParams | None = None, shape: Sequence[int] = (),
                     ) -> Iterator[Progress | FileScores | AcquisitionQC]:
    """Score every acquisition tile file of a mosaic (see the module docstring).

    Parameters
    ----------
    tiles : sequence of io.AcqTile
        The section's tiles (``Section.tiles``; anything with ``path``, ``z``, ``y0``, ``x0``,
        ``height``, ``width``), in their order in the coordinates file.
    params : ScoreParams
        ``tile`` is the sub-tile size; thresholds (scores or px) None = automatic per section.
    shape : sequence of int
        The mosaic's shape (for :meth:`AcquisitionQC.footprints`).

    Yields
    ------
    Progress, FileScores
        Per file, in order (each file is read once; the next file is read while this one is scored).
    AcquisitionQC
        Last: all files with thresholds and decisions.
    """
    params = params or ScoreParams()
    params.validate()
    n = len(tiles)
    if n == 0:
        raise ValueError("the section lists no acquisition tiles")
    t0 = time.perf_counter()
    files: list[FileScores] = []

    def read(i: int) -> np.ndarray:
        t = tiles[i]
        return _read_tile(str(t.path), (int(t.height), int(t.width)))

    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(read, 0)
        for i, t in enumerate(tiles):
            img = nxt.result()
            if i + 1 < n:
                nxt = pool.submit(read, i + 1)
            fs = score_file(i, t, img, params)
            del img
            files.append(fs)
            el = time.perf_counter() - t0
            yield fs
            yield Progress(i + 1, n, "score", Path(fs.path).name, el / (i + 1) * (n - i - 1))
    result = AcquisitionQC(files, params.metric, int(params.tile), tuple(int(s) for s in shape))
    result.decide(*params.score_thresholds())
    yield result
