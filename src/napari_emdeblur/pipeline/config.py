"""Settings of the acquisition pipeline, what it records per tile, and how outputs are named.

Decisions use fixed absolute thresholds (the "absolute" and "calibrated" policies of
:mod:`napari_emdeblur.qc.thresholds`): in a stream there is no distribution to take
percentiles from, so the numbers are set beforehand (``--correct-threshold`` /
``--retake-threshold``, defaults per metric in ``qc.thresholds.DEFAULT_THRESHOLDS``, measured on
real sSEM data, see ``docs/pipeline.md``) or calibrated once from the first N tiles
(``calibrate=N``). Either way they are stored in the output folder's journal and never change for
it, so a tile's decision does not depend on when it was processed. With the default metric,
``blur``, thresholds are px of excess blur (``correct_px`` / ``retake_px``, defaults 1 and 3 px from
``qc.thresholds.DEFAULT_BLUR_PX``), which need no per-dataset calibration; subtiles without tissue
signal are ``empty``, and an acquisition tile whose every analysed subtile is empty is decided
``empty`` (never corrected; the correction service also leaves empty subtiles of a corrected tile
untouched).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..deblur.cards import read_card
from ..deblur.service import DEFAULT_OVERLAP, CorrectionParams
from ..deblur.shipped import shipped_weights_path
from ..io.values import parse_range_mode
from ..qc.blurmap import DEFAULT_WINDOW
from ..qc.focus import DEFAULT_METRIC
from ..qc.scoring import ScoreParams
from ..qc.thresholds import absolute_thresholds
from ..qc.tiling import DEFAULT_TILE
from .journal import CORRECTED_DIR

__all__ = [
    "PipelineConfig",
    "TileRecord",
    "correction_params",
    "corrected_rel",
    "model_identity",
    "output_settings",
    "resolve_thresholds",
]


@dataclass
class PipelineConfig:
    """Settings of ``watch`` / ``batch``. Those that change outputs are journalled per OUTDIR."""

    tile: int = DEFAULT_TILE  # QC grid (subtile) size in px
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
    correct_px: float | None = None  # blur metric: thresholds in px of excess blur (None = the defaults)
    retake_px: float | None = None
    window: int | None = DEFAULT_WINDOW  # blur metric: analysis window of the blur map (None = whole subtiles)

    def __post_init__(self) -> None:
        if int(self.tile) < 8:
            raise ValueError(f"tile must be at least 8 px, got {self.tile}")
        if self.stable_seconds < 0:
            raise ValueError("stable_seconds must be >= 0")
        if self.calibrate < 0:
            raise ValueError("calibrate must be >= 0")
        if self.threads < 0:
            raise ValueError("threads must be >= 0")
        parse_range_mode(self.value_range)  # ValueError with the accepted forms
        self.score_params().validate()  # metric, px thresholds (finite, >= 0, retake >= correct), window

    def score_params(self) -> ScoreParams:
        """The scoring parameters of a subtile grid (the QC flow's dataclass)."""
        return ScoreParams(tile=int(self.tile), metric=self.metric_name, correct_threshold=self.correct_threshold,
                           retake_threshold=self.retake_threshold, correct_px=self.correct_px,
                           retake_px=self.retake_px, window=self.window, value_range=self.value_range)

    @property
    def metric_name(self) -> str:
        """The focus metric (the package default when none is set)."""
        return self.metric or DEFAULT_METRIC

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (for Dask tasks)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        """Settings from :meth:`to_dict` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TileRecord:
    """What processing one acquisition tile gave (one report row; JSON-able via ``to_result``)."""

    file: str  # input path relative to its input root (as reported)
    section: str
    name: str  # path inside the section
    decision: str = "ok"  # ok | correct | retake | empty ('' when failed)
    score: float = math.nan
    subtile_scores: list = field(default_factory=list)  # rows x cols, None = NaN
    n_subtiles: int = 0
    n_flagged: int = 0  # subtiles below the correct threshold
    n_retake: int = 0  # subtiles below the retake threshold
    n_empty: int = 0  # subtiles without tissue signal (blur metric)
    blur_px: float = math.nan  # excess blur of the tile score in px (median over its subtiles; blur metric)
    corrected: str | None = None  # output path relative to OUTDIR
    score_after: float | None = None
    check_by_eye: int = 0  # corrected subtiles whose fidelity check failed (see deblur.fidelity)
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
    warnings: list = field(default_factory=list)  # what the reader converted or found suspicious
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
        for k in ("score", "score_after", "correct_threshold", "retake_threshold", "blur_px"):
            v = d.get(k)
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


def resolve_thresholds(cfg: PipelineConfig) -> tuple[float, float]:
    """``(correct_threshold, retake_threshold)`` (scores) from the config (px converted) or the
    metric's defaults.
    """
    c, r = cfg.score_params().score_thresholds()
    return absolute_thresholds(cfg.metric_name, c, r)


def correction_params(cfg: PipelineConfig, device: str | None = None) -> CorrectionParams:
    """The correction service's parameters for a tile: the whole tile, on the QC grid ``cfg.tile``."""
    return CorrectionParams(
        weights=cfg.weights, device=device or cfg.device, precision=cfg.precision, tile=int(cfg.infer_tile),
        overlap=DEFAULT_OVERLAP if cfg.infer_overlap is None else int(cfg.infer_overlap), batch=int(cfg.infer_batch),
        qc_tile=int(cfg.tile), metric=cfg.metric_name, value_range=cfg.value_range,
    )


def _weights_path(cfg: PipelineConfig) -> Path:
    return Path(cfg.weights) if cfg.weights else shipped_weights_path()


def model_identity(cfg: PipelineConfig) -> dict | None:
    """What identifies the correcting model in the journal (the card's weights sha256), None if
    not correcting. Reads only the JSON card (checked: :func:`napari_emdeblur.deblur.cards.read_card`),
    so this needs no torch; :class:`~napari_emdeblur.deblur.cards.WeightsError` names the file.
    """
    if not cfg.correct:
        return None
    card = read_card(_weights_path(cfg))
    return {"weights_sha256": card["weights_sha256"], "model_type": card.get("model_type")}


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
        **({"window": cfg.window} if cfg.score_params().has_blurmap else {}),
    }


def corrected_rel(section: str, name: str) -> str:
    """Output path (relative to OUTDIR) of the corrected version of tile ``name`` of ``section``."""
    stem = name.rsplit(".", 1)[0] if "." in Path(name).name else name
    return f"{section}/{CORRECTED_DIR}/{stem}.tif"
