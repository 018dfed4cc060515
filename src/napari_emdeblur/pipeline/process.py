"""Processing of one acquisition tile: score, decide, correct, write (no Qt, no journal).

An *acquisition tile* is one image file written by the microscope (a MultiSEM beam image, an
sSEM frame, ...). :func:`analyse_tile` reads it, scores it on the QC grid of ``cfg.tile`` px
(``score_tiles``; the per-subtile scores are kept), and decides with fixed absolute thresholds:

* tile score = median of its subtile scores (NaN subtiles, e.g. blank resin or padding, are
  ignored), i.e. the same numbers the napari heatmap shows for a section;
* ``score < retake_threshold`` -> ``retake`` (too soft to rescue: re-image it);
* ``retake_threshold <= score < correct_threshold`` -> ``correct`` (deblurred with GRAN when
  ``cfg.correct``; the corrected tile is written as TIFF);
* otherwise ``ok``. A tile with no scorable subtile is ``ok`` with a NaN score (nothing to judge).

Why fixed thresholds. In a stream there is no distribution to take percentiles from, so the
numbers must be set beforehand (``--correct-threshold``/``--retake-threshold``, defaults in
:data:`DEFAULT_THRESHOLDS`, measured on real sSEM data, see ``docs/pipeline.md``) or calibrated
once from the first N tiles (``calibrate=N``, ``decisions.auto_thresholds`` on their subtile
scores). Either way they are stored in the output folder's journal and never change for it, so
a tile's decision does not depend on when it was processed.

Everything written is a deterministic function of the input bytes and of the settings, so that
re-processing a tile after a crash produces the same bytes.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.decisions import DECISION_NAMES

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".bmp")

# (correct_threshold, retake_threshold) per focus metric, higher = sharper. Measured on the real
# 1024x1024 sSEM frames of the drosophila VNC set (4.6 nm px), median of 256-px subtiles:
# in-focus frames 0.16-0.26; Gaussian blur sigma 1 px ~0.09, 1.5 px ~0.06, 2 px ~0.043,
# 2.5 px ~0.031, 3 px ~0.024 (plus read noise). So "correct" = visibly soft (sigma >~ 0.8 px),
# "retake" = sigma >~ 2.5 px, beyond what deblurring restores faithfully. The scale depends on
# pixel size and detector: other data need their own numbers (or --calibrate N).
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "autocorr": (0.12, 0.03),
}


@dataclass
class PipelineConfig:
    """Settings of ``watch`` / ``batch``. Those that change outputs are journalled per OUTDIR."""

    tile: int = 256  # QC grid (subtile) size in px
    metric: str | None = None  # focus metric (None = focus.DEFAULT_METRIC)
    correct_threshold: float | None = None  # None = DEFAULT_THRESHOLDS[metric]
    retake_threshold: float | None = None
    calibrate: int = 0  # >0: set both thresholds from the first N tiles instead
    weights: str | None = None  # None = shipped GRAN weights
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    correct: bool = True  # False = score and decide only
    precision: str = "fp32"
    infer_tile: int = 0  # GRAN inference tile (0 = automatic)
    infer_overlap: int | None = None  # None = inference default
    infer_batch: int = 0
    value_range: str = "auto"  # auto | dtype | "lo,hi": how values map onto the model's [0, 1]
    threads: int = 0  # threads for scoring and for torch in this process (0 = library defaults)
    stable_seconds: float = 2.0  # a file is complete when unchanged this long (or marked)
    max_failures: int = 3  # permanent failures of one file before giving up
    hash_inputs: bool = True  # store the sha256 of each input read
    report_interval: float = 5.0  # at most one report regeneration per this many seconds

    def __post_init__(self) -> None:
        if int(self.tile) < 8:
            raise ValueError(f"tile must be at least 8 px, got {self.tile}")
        if self.stable_seconds < 0:
            raise ValueError("stable_seconds must be >= 0")
        if self.calibrate < 0:
            raise ValueError("calibrate must be >= 0")
        if self.threads < 0:
            raise ValueError("threads must be >= 0")
        from ..core.values import parse_range_mode

        parse_range_mode(self.value_range)  # ValueError with the accepted forms

    @property
    def metric_name(self) -> str:
        if self.metric:
            return self.metric
        from ..core.focus import DEFAULT_METRIC

        return DEFAULT_METRIC

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TileRecord:
    """What processing one acquisition tile gave (one report row; JSON-able via ``to_result``)."""

    file: str  # input path relative to its input root (as reported)
    section: str
    name: str  # path inside the section
    decision: str = "ok"  # ok | correct | retake ('' when failed)
    score: float = math.nan
    subtile_scores: list = field(default_factory=list)  # rows x cols, None = NaN
    n_subtiles: int = 0
    n_flagged: int = 0  # subtiles below the correct threshold
    n_retake: int = 0  # subtiles below the retake threshold
    corrected: str | None = None  # output path relative to OUTDIR
    score_after: float | None = None
    shape: tuple = ()
    dtype: str = ""
    pixel_size: list | None = None
    metric: str = ""
    tile: int = 0
    correct_threshold: float = math.nan
    retake_threshold: float = math.nan
    sha256: str | None = None
    error: str | None = None
    error_kind: str | None = None  # permanent | transient
    seconds: float = 0.0  # processing time (not part of the deterministic reports)
    pixels: int = 0
    staged: str | None = None  # staged output file (pipeline internal)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_result(self) -> dict:
        d = asdict(self)
        d.pop("staged", None)
        d["shape"] = list(self.shape)
        for k in ("score", "score_after", "correct_threshold", "retake_threshold"):
            v = d.get(k)
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


class ModelLoadError(RuntimeError):
    """The correcting model (or its device) cannot be loaded: stops the run instead of failing
    every tile that needs correcting."""


# --------------------------------------------------------------------------- thresholds
def resolve_thresholds(cfg: PipelineConfig) -> tuple[float, float]:
    """``(correct_threshold, retake_threshold)`` from the config or the metric's defaults."""
    metric = cfg.metric_name
    ct, rt = cfg.correct_threshold, cfg.retake_threshold
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


def calibrate_thresholds(paths: list[str], cfg: PipelineConfig) -> tuple[float, float]:
    """Thresholds from the subtile scores of ``paths`` (``decisions.auto_thresholds``)."""
    from ..core import decisions
    from ..core.focus import score_tiles

    scores = []
    for p in paths:
        img = _read_image(p)
        scores.append(np.asarray(score_tiles(img, tile=cfg.tile, metric=cfg.metric_name), np.float32).ravel())
    if not scores:
        raise ValueError("no tiles to calibrate the thresholds from")
    allscores = np.concatenate(scores)
    if not np.isfinite(allscores).any():
        raise ValueError("calibration tiles have no scorable subtile")
    th = decisions.auto_thresholds(allscores)
    ct, rt = _threshold_pair(th)
    return float(ct), float(rt)


def _threshold_pair(th: Any) -> tuple[float, float]:
    if isinstance(th, dict):
        return th["correct_threshold"], th["retake_threshold"]
    if hasattr(th, "correct_threshold"):
        return th.correct_threshold, th.retake_threshold
    ct, rt = th
    return ct, rt


# --------------------------------------------------------------------------- model
_MODEL_CACHE: dict[tuple, tuple[Any, dict]] = {}


def resolve_device(device: str) -> str:
    if device and device != "auto":
        return device
    try:
        from ..model.infer import resolve_device as _rd

        return str(_rd("auto"))
    except (ImportError, AttributeError, TypeError):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def get_model(cfg: PipelineConfig, device: str | None = None) -> tuple[Any, dict]:
    """``(model, card)`` for ``cfg.weights`` on ``device``, cached per process."""
    dev = resolve_device(device or cfg.device)
    key = (str(cfg.weights), dev)
    if key not in _MODEL_CACHE:
        from ..model.weights import load_model

        _MODEL_CACHE[key] = load_model(cfg.weights, device=dev)
    return _MODEL_CACHE[key]


def _weights_path(cfg: PipelineConfig) -> Path:
    if cfg.weights:
        return Path(cfg.weights)
    from ..model.shipped import shipped_weights_path  # no torch import in this process

    return shipped_weights_path()


def model_identity(cfg: PipelineConfig) -> dict | None:
    """What identifies the correcting model in the journal (the card's weights sha256), None if
    not correcting. Reads only the JSON card, so a ``batch`` client never needs torch."""
    if not cfg.correct:
        return None
    import json

    path = _weights_path(cfg)
    if not path.is_file():
        raise ValueError(
            f"weights file {path} not found: give --weights PATH, or --no-correct to score only"
        )
    try:
        card = json.loads(path.with_suffix(".json").read_text())
        return {"weights_sha256": card["weights_sha256"], "model_type": card.get("model_type")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"model card of {path} is missing or invalid: {e}") from None


def inference_params(cfg: PipelineConfig, device: str):
    from ..model.infer import InferenceParams

    names = {f.name for f in fields(InferenceParams)}
    kw: dict[str, Any] = {"device": device, "precision": cfg.precision, "value_range": cfg.value_range}
    if cfg.infer_tile:
        kw["tile"] = int(cfg.infer_tile)
    if cfg.infer_overlap is not None:
        kw["overlap"] = int(cfg.infer_overlap)
    if cfg.infer_batch:
        kw["batch"] = int(cfg.infer_batch)
    return InferenceParams(**{k: v for k, v in kw.items() if k in names})


def output_settings(cfg: PipelineConfig, thresholds: tuple[float, float]) -> dict:
    """The settings that determine the outputs (journalled; an OUTDIR keeps them for life)."""
    return {
        "tile": int(cfg.tile),
        "metric": cfg.metric_name,
        "correct_threshold": float(thresholds[0]),
        "retake_threshold": float(thresholds[1]),
        "correct": bool(cfg.correct),
        "model": model_identity(cfg),
        "precision": cfg.precision,
        "infer_tile": int(cfg.infer_tile),
        "infer_overlap": cfg.infer_overlap,
        "value_range": str(cfg.value_range),
    }


# --------------------------------------------------------------------------- reading / writing
def _read_image(path: str | os.PathLike) -> np.ndarray:
    sec = _load_section(path)
    return _as_2d(sec.data, path)


def _load_section(path):
    from ..core.io import load_section

    return load_section(path)


def _load_hashed(path, want_hash: bool):
    """``(section, sha256 or None)``: with a hash, the file is read once and the digest is of
    exactly the bytes that are decoded (no window for a writer between hashing and reading)."""
    if not want_hash:
        return _load_section(path), None
    from ..core.io import load_section

    with open(path, "rb") as f:
        raw = f.read()
    return load_section(path, content=raw), hashlib.sha256(raw).hexdigest()


def _as_2d(data, path) -> np.ndarray:
    img = np.asarray(data)
    img = np.squeeze(img) if img.ndim > 2 else img
    if img.ndim != 2:
        raise ValueError(f"{Path(path).name}: expected a 2-D tile, got an image of shape {img.shape}")
    return img


def write_tile(path: str | os.PathLike, data: np.ndarray, pixel_size=None, metadata: dict | None = None) -> None:
    """Write ``data`` to ``path`` atomically (``core.io.save_image``), replacing any old file."""
    from ..core.io import save_image

    save_image(str(path), data, pixel_size=pixel_size, metadata=metadata, overwrite=True)


def _free_bytes(path) -> int | None:
    try:
        import shutil

        return shutil.disk_usage(path).free
    except OSError:
        return None


def corrected_rel(section: str, name: str) -> str:
    """Output path (relative to OUTDIR) of the corrected version of tile ``name`` of ``section``."""
    stem = name.rsplit(".", 1)[0] if "." in Path(name).name else name
    return f"{section}/corrected/{stem}.tif"


# --------------------------------------------------------------------------- errors
def classify_error(exc: BaseException) -> tuple[str, str]:
    """``(kind, message)`` of an exception raised while processing a tile.

    ``permanent``: the file itself is bad (unreadable, truncated, wrong shape, vanished) and is
    retried only when it changes. ``transient``: the environment is (permissions, full disk, I/O,
    out of memory) and the tile is retried later.
    """
    try:
        from ..core.io import EMReadError
    except ImportError:  # pragma: no cover - io not installed
        EMReadError = ()  # type: ignore[assignment]
    name = type(exc).__name__
    msg = f"{name}: {exc}"
    if EMReadError and isinstance(exc, EMReadError):
        return "permanent", msg
    if isinstance(exc, FileNotFoundError):
        return "permanent", f"file disappeared: {exc}"
    if isinstance(exc, PermissionError):
        return "transient", msg
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "transient", f"disk full: {exc}"
        return "transient", msg
    if isinstance(exc, MemoryError):
        return "transient", "out of memory"
    if type(exc).__name__ in ("OutOfMemoryError",) or "out of memory" in str(exc).lower():
        return "transient", msg
    return "permanent", msg


# --------------------------------------------------------------------------- the work
def _nan_to_none(a: np.ndarray) -> list:
    return [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in a]


def analyse_tile(
    path: str | os.PathLike,
    cfg: PipelineConfig,
    model: Any = None,
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
    ``OUTDIR/out_rel``. ``model`` is a model, or a callable returning one (loaded on first need),
    or None to load ``cfg.weights`` through the per-process cache. ``correct=False`` stops after
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
                    _correct(img, ps, cfg, model, rec, out_rel, stage_dir, device)
            else:
                _correct(img, ps, cfg, model, rec, out_rel, stage_dir, device)
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
    model: Any = None,
    *,
    out_rel: str,
    stage_dir: str | os.PathLike,
    device: str | None = None,
) -> TileRecord:
    """Second half of :func:`analyse_tile` for a record scored with ``correct=False``: read the
    tile again (checking its sha256 when known) and correct it. Never raises for a bad tile."""
    t0 = time.perf_counter()
    try:
        sec, digest = _load_hashed(path, bool(cfg.hash_inputs and rec.sha256))
        if digest is not None and digest != rec.sha256:
            raise OSError(errno.EAGAIN, f"{Path(path).name} changed while being processed")
        img = _as_2d(sec.data, path)
        _correct(img, getattr(sec, "pixel_size", None), cfg, model, rec, out_rel, stage_dir, device)
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
    from ..core import decisions
    from ..core.focus import score_tiles

    sec, digest = _load_hashed(path, cfg.hash_inputs)
    if digest is not None:
        rec.sha256 = digest
    img = _as_2d(sec.data, path)
    rec.shape = tuple(int(s) for s in img.shape)
    rec.dtype = str(img.dtype)
    rec.pixels = int(img.size)
    ps = getattr(sec, "pixel_size", None)
    rec.pixel_size = None if ps is None else [float(v) for v in np.atleast_1d(ps)]

    ct, rt = rec.correct_threshold, rec.retake_threshold
    scores = np.asarray(score_tiles(img, tile=cfg.tile, metric=rec.metric, workers=cfg.threads or None), np.float32)
    finite = np.isfinite(scores)
    rec.subtile_scores = _nan_to_none(scores)
    rec.n_subtiles = int(scores.size)
    sub = np.asarray(decisions.classify(scores, ct, rt))
    rec.n_flagged = int(np.count_nonzero((sub != decisions.OK) & finite))
    rec.n_retake = int(np.count_nonzero((sub == decisions.RETAKE) & finite))
    score = float(np.median(scores[finite])) if finite.any() else math.nan
    rec.score = round(score, 6) if math.isfinite(score) else math.nan
    if math.isfinite(score):
        code = int(np.asarray(decisions.classify(np.array([[score]], np.float32), ct, rt)).ravel()[0])
    else:
        code = decisions.OK
    rec.decision = DECISION_NAMES[code]
    return img, ps


def _correct(img, ps, cfg: PipelineConfig, model, rec: TileRecord, out_rel, stage_dir, device) -> None:
    from ..core.focus import score_tiles
    from ..model.infer import correct_image

    if out_rel is None or stage_dir is None:
        raise ValueError("correcting a tile needs out_rel and stage_dir")
    try:
        dev = resolve_device(device or cfg.device)
        if callable(model) and not hasattr(model, "forward"):
            model = model()
        if model is None:
            model, _ = get_model(cfg, dev)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"cannot load the model ({cfg.weights or 'shipped weights'}, {cfg.device}): {e}") from e
    if cfg.threads:
        import torch

        if torch.get_num_threads() != cfg.threads:
            torch.set_num_threads(int(cfg.threads))
    out = np.asarray(correct_image(img, model, inference_params(cfg, dev)))
    after = np.asarray(score_tiles(out, tile=cfg.tile, metric=rec.metric, workers=cfg.threads or None), np.float32)
    fa = np.isfinite(after)
    rec.score_after = round(float(np.median(after[fa])), 6) if fa.any() else None
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    staged = stage_dir / Path(out_rel).name
    meta = {
        "source": rec.file,
        "section": rec.section,
        "score_before": rec.score,
        "score_after": rec.score_after,
        "metric": rec.metric,
        "software": "napari-emdeblur pipeline",
    }
    try:
        write_tile(staged, out, pixel_size=ps, metadata=meta)
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
    model: Any = None,
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
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".emdeblur-stage-", dir=final.parent) as stage:
        rec = analyse_tile(
            p, cfg, model, thresholds=thresholds, file=p.name, section=section, name=p.name,
            out_rel=out_rel, stage_dir=stage,
        )
        if rec.staged:
            os.replace(rec.staged, final)
            rec.staged = None
    return rec


ModelProvider = Callable[[], Any]
