"""Processing of one acquisition tile: score, decide, correct, write (no Qt, no journal).

An *acquisition tile* is one image file written by the microscope (a MultiSEM beam image, an
sSEM frame, ...). :func:`analyse_tile` reads it, scores it on the QC grid of ``cfg.tile`` px
(``qc.scoring.tile_scores``; the per-subtile scores are kept), and decides with fixed absolute thresholds
(see :mod:`.config`):

* tile score = the file score of the viewer's per-file QC and ``emdeblur score``: the lower quartile
  of its subtile scores (``qc.acquisition.file_score``, :data:`~..qc.acquisition.FILE_QUANTILE`; NaN
  subtiles, e.g. blank resin or padding, are ignored), so a file gets the same decision everywhere;
* ``score < retake_threshold`` -> ``retake`` (too soft to rescue: re-image it);
* ``retake_threshold <= score < correct_threshold`` -> ``correct``: the whole tile is deblurred by
  the correction service (``deblur.service.iter_correct``, the same as the widget and
  ``emdeblur correct``, fidelity check included) and written as TIFF with the per-subtile
  correction report in its metadata;
* otherwise ``ok``. A tile whose subtiles hold no tissue signal (``blur`` metric: the content
  check, ``qc.acquisition.file_empty``) is ``empty``: never ok, never corrected. Any other tile
  with no scorable subtile is ``ok`` with a NaN score (nothing to judge).

Subtiles are scored by ``qc.scoring.tile_scores`` (for the ``blur`` metric the blur map;
``blur_px`` is the px of the tile score), the same step as the viewer's per-file QC.

Everything written is a deterministic function of the input bytes and of the settings, so that
re-processing a tile after a crash produces the same bytes.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..io.read import load_section
from ..io.write import save_image
from ..qc import decisions
from ..qc.acquisition import file_empty, file_score
from ..qc.scoring import tile_scores
from ..qc.thresholds import calibrated_thresholds, px_from_score
from .config import PipelineConfig, TileRecord, corrected_rel, correction_params, resolve_thresholds
from .errors import ModelLoadError, classify_error

__all__ = ["analyse_tile", "calibrate_thresholds", "correct_recorded", "needs_correction", "process_tile"]


# --------------------------------------------------------------------------- thresholds


def calibrate_thresholds(paths: list[str], cfg: PipelineConfig) -> tuple[float, float]:
    """Thresholds from the pooled subtile scores of ``paths`` (the "calibrated" policy)."""
    params = cfg.score_params()
    return calibrated_thresholds(tile_scores(_read_image(p), params)[0] for p in paths)
















# --------------------------------------------------------------------------- reading / writing
def _read_image(path: str | os.PathLike) -> np.ndarray:
    return _as_2d(load_section(path).data, path)


def _load_hashed(path, want_hash: bool):
    """``(section, sha256 or None)``: with a hash, the file is read once and the digest is of
    exactly the bytes that are decoded (no window for a writer between hashing and reading).
    """
    if not want_hash:
        return load_section(path), None
    with open(path, "rb") as f:
        raw = f.read()
    return load_section(path, content=raw), hashlib.sha256(raw).hexdigest()


def _as_2d(data, path) -> np.ndarray:
    img = np.asarray(data)
    img = np.squeeze(img) if img.ndim > 2 else img
    if img.ndim != 2:
        raise ValueError(f"{Path(path).name}: expected a 2-D tile, got an image of shape {img.shape}")
    return img


def _free_bytes(path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


# --------------------------------------------------------------------------- the work
def _nan_to_none(a: np.ndarray) -> list:
    return [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in a]


def analyse_tile(
    path: str | os.PathLike,
    cfg: PipelineConfig,
    *,
    thresholds: tuple[float, float],
    file: str | None = None,
    section: str = "",
    name: str | None = None,
    out_rel: str | None = None,
    stage_dir: str | os.PathLike | None = None,
    device: str | None = None,
    correct: bool | None = None,
    correct_lock: Any = None,
) -> TileRecord:
    """Score / decide / correct one tile; never raises for a bad tile (the record holds the error).

    The corrected tile (if any) is written into ``stage_dir`` (atomically, named as
    ``out_rel``'s file name) and its path returned in ``record.staged``; the caller moves it to
    ``OUTDIR/out_rel``. The model comes from the per-process cache (``deblur.cache``).
    ``correct=False`` stops after
    the decision (``batch`` then runs :func:`correct_recorded` as a separate, GPU task);
    default ``cfg.correct``. ``correct_lock``: a lock held around the correction (threads
    sharing one GPU take turns).
    """
    t0 = time.perf_counter()
    path = str(path)
    name = name or Path(path).name
    rec = TileRecord(
        file=file or Path(path).name,
        section=section,
        name=name,
        metric=cfg.metric_name,
        tile=int(cfg.tile),
        correct_threshold=float(thresholds[0]),
        retake_threshold=float(thresholds[1]),
    )
    do_correct = cfg.correct if correct is None else (correct and cfg.correct)
    try:
        img, ps = _score(path, cfg, rec)
        if do_correct and needs_correction(rec, cfg):
            if correct_lock is not None:
                with correct_lock:
                    _correct(img, ps, cfg, rec, out_rel, stage_dir, device)
            else:
                _correct(img, ps, cfg, rec, out_rel, stage_dir, device)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad tile must not stop the pipeline
        _record_error(rec, e)
    rec.seconds = time.perf_counter() - t0
    return rec


def needs_correction(rec: TileRecord, cfg: PipelineConfig) -> bool:
    return rec.error is None and cfg.correct and rec.decision == "correct"


def correct_recorded(
    path: str | os.PathLike,
    rec: TileRecord,
    cfg: PipelineConfig,
    *,
    out_rel: str,
    stage_dir: str | os.PathLike,
    device: str | None = None,
) -> TileRecord:
    """Second half of :func:`analyse_tile` for a record scored with ``correct=False``: read the
    tile again (checking its sha256 when known) and correct it. Never raises for a bad tile.
    """
    t0 = time.perf_counter()
    try:
        sec, digest = _load_hashed(path, bool(cfg.hash_inputs and rec.sha256))
        if digest is not None and digest != rec.sha256:
            raise OSError(errno.EAGAIN, f"{Path(path).name} changed while being processed")
        img = _as_2d(sec.data, path)
        _correct(img, getattr(sec, "pixel_size", None), cfg, rec, out_rel, stage_dir, device)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001
        _record_error(rec, e)
    rec.seconds += time.perf_counter() - t0
    return rec


def _record_error(rec: TileRecord, e: BaseException) -> None:
    rec.error_kind, rec.error = classify_error(e)
    rec.decision = ""
    rec.corrected = None
    rec.score_after = None
    if rec.staged:
        try:
            os.unlink(rec.staged)
        except OSError:
            pass
        rec.staged = None


def _score(path, cfg: PipelineConfig, rec: TileRecord):
    sec, digest = _load_hashed(path, cfg.hash_inputs)
    if digest is not None:
        rec.sha256 = digest
    img = _as_2d(sec.data, path)
    rec.warnings = [str(w).replace(str(path), rec.file) for w in sec.metadata.get("warnings", [])]
    rec.shape = tuple(int(s) for s in img.shape)
    rec.dtype = str(img.dtype)
    rec.pixels = int(img.size)
    ps = getattr(sec, "pixel_size", None)
    rec.pixel_size = None if ps is None else [float(v) for v in np.atleast_1d(ps)]

    ct, rt = rec.correct_threshold, rec.retake_threshold
    params = cfg.score_params()
    params.metric, params.workers = rec.metric, (cfg.threads or None)
    scores, bm = tile_scores(img, params)  # the blur metric: excess blur in px and the content check
    empty = None if bm is None else bm.empty
    finite = np.isfinite(scores)
    rec.subtile_scores = _nan_to_none(scores)
    rec.n_subtiles = int(scores.size)
    sub = np.asarray(decisions.classify(scores, ct, rt, empty=empty))
    rec.n_flagged = int(np.count_nonzero((sub != decisions.OK) & finite))
    rec.n_retake = int(np.count_nonzero((sub == decisions.RETAKE) & finite))
    score, _ = file_score(scores)  # one file policy: qc.acquisition.FILE_QUANTILE
    rec.score = round(score, 6) if math.isfinite(score) else math.nan
    if bm is not None:
        rec.n_empty = int(np.count_nonzero(bm.empty))
        rec.blur_px = round(float(px_from_score(score)), 4) if math.isfinite(score) else math.nan
    # no subtile with tissue signal: the acquisition tile is EMPTY (never corrected), as in qc.acquisition
    is_empty = file_empty(scores, bm)
    code = int(decisions.classify(np.array([score], np.float32), ct, rt, empty=np.array([is_empty]))[0])
    rec.decision = decisions.DECISION_NAMES[code]
    if not finite.any() and not is_empty:  # "ok" here means unjudged: say so (e.g. a tile under the metric's size)
        h, w = rec.shape
        rec.warnings.append(f"{rec.file}: no part of this {h} x {w} px tile could be scored with the {rec.metric} "
                            "metric (too small?): it is reported ok but was not judged; check it by eye")
    return img, ps


def _correct(img, ps, cfg: PipelineConfig, rec: TileRecord, out_rel, stage_dir, device) -> None:
    """Correct the whole tile with the correction service and stage it with its report."""
    from ..deblur.cache import get_model
    from ..deblur.selection import Selection
    from ..deblur.service import correct

    if out_rel is None or stage_dir is None:
        raise ValueError("correcting a tile needs out_rel and stage_dir")
    params = correction_params(cfg, device)
    try:
        model = get_model(params.weights, params.device)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"cannot load the model ({cfg.weights or 'shipped weights'}, {cfg.device}): {e}") from e
    if cfg.threads:
        import torch

        if torch.get_num_threads() != cfg.threads:
            torch.set_num_threads(int(cfg.threads))
    out, report = correct(img, Selection.whole_image(), params, model=model)
    after = [r.score_after for r in report.tiles if math.isfinite(r.score_after)]
    rec.score_after = round(float(np.median(after)), 6) if after else None
    rec.check_by_eye = sum(r.check_by_eye for r in report.tiles)
    rec.warnings.extend(f"{rec.file}: {w}" for w in report.meta.get("warnings", []))  # e.g. beyond the model's range
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    staged = stage_dir / Path(out_rel).name
    keep = ("weights_sha256", "model_type", "tile", "overlap", "qc_tile", "metric", "value_range", "fidelity_limit")
    meta = {
        "source": rec.file,
        "section": rec.section,
        "score_before": rec.score,
        "score_after": rec.score_after,
        "metric": rec.metric,
        "software": "napari-emdeblur pipeline",
        "correction": {k: report.meta.get(k) for k in keep},
        "tiles": report.rows(),
    }
    try:
        save_image(staged, out, pixel_size=ps, metadata=meta, overwrite=True)
    except OSError as e:
        free = _free_bytes(stage_dir)
        if e.errno in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < out.nbytes + (1 << 20)):
            raise OSError(errno.ENOSPC, f"no space left writing {Path(out_rel).name} ({e})") from e
        raise
    rec.staged = str(staged)
    rec.corrected = out_rel


def process_tile(
    path: str | os.PathLike,
    cfg: PipelineConfig,
    *,
    outdir: str | os.PathLike | None = None,
    section: str | None = None,
    thresholds: tuple[float, float] | None = None,
) -> TileRecord:
    """Process one tile on its own (no journal): score, decide and, when it needs correcting,
    write the corrected tile atomically to ``OUTDIR/<section>/corrected/<stem>.tif``.

    ``section`` defaults to the name of the tile's folder, ``outdir`` to the tile's folder's
    parent ``/emdeblur-out``. Errors are returned in the record, not raised.
    """
    p = Path(path)
    section = section or p.parent.name or "section"
    outdir = Path(outdir) if outdir is not None else p.parent.parent / "emdeblur-out"
    thresholds = thresholds or resolve_thresholds(cfg)
    out_rel = corrected_rel(section, p.name)
    final = outdir / out_rel
    outdir.mkdir(parents=True, exist_ok=True)
    # staged in a hidden folder of OUTDIR (the same file system): the corrected/ folder is made only
    # for a tile that is corrected, so an OUTDIR of tiles that needed nothing holds nothing a run writes
    with tempfile.TemporaryDirectory(prefix=".emdeblur-stage-", dir=outdir) as stage:
        rec = analyse_tile(
            p, cfg, thresholds=thresholds, file=p.name, section=section, name=p.name,
            out_rel=out_rel, stage_dir=stage,
        )
        if rec.staged:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(rec.staged, final)
            rec.staged = None
    return rec

