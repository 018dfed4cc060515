"""napari-emdeblur: focus QC and GRAN deblurring for electron-microscopy sections.

Layers, each importing only the ones before it:

* :mod:`napari_emdeblur.io` and :mod:`napari_emdeblur.qc`: reading/writing sections, focus
  scores, the QC blur map (blur in px, content check), thresholds and decisions (numpy/scipy; no
  torch, Qt or napari);
* :mod:`napari_emdeblur.deblur`: the networks, weights, tiled inference, training and the one
  correction service (torch, imported only where a model runs);
* :mod:`napari_emdeblur.pipeline`, :mod:`napari_emdeblur.cli`, :mod:`napari_emdeblur.widgets` and
  the npe2 reader / writer / sample data: thin shells over the same services.

The names below are the public API. Importing this package imports neither torch, Qt nor napari;
the torch-layer names load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .io import EMReadError, Section, can_read, load_section, save_image, save_ome_zarr
from .qc.blurmap import BlurMap, qc_grid
from .qc.decisions import CORRECT, EMPTY, OK, RETAKE, classify
from .qc.focus import DEFAULT_METRIC, METRICS, score_tiles
from .qc.messages import Notice, Progress, SectionScores, TileResult, drain
from .qc.scoring import ScoreParams, iter_score_stack, score_stack
from .qc.thresholds import absolute_thresholds, auto_thresholds, px_thresholds, section_thresholds
from .qc.tiling import TileGrid

__version__ = "0.1.0"

# name -> module, imported on first access (these pull in torch or the pipeline)
_LAZY = {
    "CorrectionParams": "napari_emdeblur.deblur.service",
    "CorrectionReport": "napari_emdeblur.deblur.reports",
    "Selection": "napari_emdeblur.deblur.selection",
    "TileReport": "napari_emdeblur.deblur.reports",
    "correct": "napari_emdeblur.deblur.service",
    "iter_correct": "napari_emdeblur.deblur.service",
    "write_reports": "napari_emdeblur.deblur.reports",
    "InferenceParams": "napari_emdeblur.deblur.infer",
    "correct_image": "napari_emdeblur.deblur.infer",
    "load_model": "napari_emdeblur.deblur.weights",
    "get_model": "napari_emdeblur.deblur.cache",
    "TrainConfig": "napari_emdeblur.deblur.train.loop",
    "train": "napari_emdeblur.deblur.train.loop",
    "PipelineConfig": "napari_emdeblur.pipeline.config",
    "process_tile": "napari_emdeblur.pipeline.process",
    "watch": "napari_emdeblur.pipeline.watch",
    "batch": "napari_emdeblur.pipeline.batch",
}

__all__ = [
    "BlurMap",
    "CORRECT",
    "DEFAULT_METRIC",
    "EMPTY",
    "METRICS",
    "OK",
    "RETAKE",
    "EMReadError",
    "Notice",
    "Progress",
    "ScoreParams",
    "Section",
    "SectionScores",
    "TileGrid",
    "TileResult",
    "__version__",
    "absolute_thresholds",
    "auto_thresholds",
    "can_read",
    "classify",
    "drain",
    "iter_score_stack",
    "load_section",
    "px_thresholds",
    "qc_grid",
    "save_image",
    "save_ome_zarr",
    "score_stack",
    "score_tiles",
    "section_thresholds",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
