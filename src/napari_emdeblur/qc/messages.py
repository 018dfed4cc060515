"""Typed messages that the core's long-running generators yield.

Widgets wrap the generators with napari's ``create_worker`` and connect ``yielded`` to a
handler that dispatches on these types; the CLI and pipeline consume them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.section import AcqTile


@dataclass
class Progress:
    """``done`` of ``total`` units of ``stage`` are finished."""

    done: int
    total: int
    stage: str = ""
    message: str = ""
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


@dataclass
class SectionScores:
    """Focus scores of every tile of one section (z index) on a regular grid."""

    z: int
    scores: np.ndarray  # (rows, cols) float32, higher = sharper
    tile: int
    metric: str
    extras: dict = field(default_factory=dict)  # e.g. anisotropy maps


@dataclass(kw_only=True)
class FileScores(AcqTile):
    """Focus of one acquisition tile (one image file of a mosaic): its sub-tile scores and the
    file's one score (:func:`napari_emdeblur.qc.acquisition.file_score`).

    ``index`` is the file's position in the section's tile list; ``(z, y0, x0, height, width)``
    its footprint in the mosaic; ``sub_scores`` the ``(rows, cols)`` scores of its ``sub_tile``
    px grid (partial sub-tiles at the right/bottom at their true size; NaN = unscorable);
    ``worst`` the ``(row, col)`` of its lowest scorable sub-tile (None when none is scorable).
    For the ``blur`` metric ``blur`` is the sub-tiles' ``qc.blurmap.BlurMap`` (excess blur in px,
    content check) and ``empty`` says that no sub-tile holds tissue signal
    (:func:`napari_emdeblur.qc.acquisition.file_empty`): the file is decided EMPTY.
    """

    index: int
    sub_tile: int
    sub_scores: np.ndarray
    score: float
    worst: tuple[int, int] | None = None
    blur: Any = None  # qc.blurmap.BlurMap of the sub-tiles (blur metric)
    empty: bool = False

@dataclass
class TileResult:
    """One corrected tile: where it goes and its pixels (same dtype as the input)."""

    z: int
    row: int
    col: int
    y0: int
    x0: int
    data: np.ndarray
    info: dict = field(default_factory=dict)


@dataclass
class Notice:
    """Something the user should be told (e.g. an automatic retry after GPU OOM)."""

    message: str
    level: str = "info"  # info | warning
    info: dict | None = None  # machine-readable details (e.g. {"device": "cuda (NVIDIA H100)"})


def drain(gen, on_yield=None):
    """Run a core generator to the end in this thread: pass every yielded message to
    ``on_yield`` (if given) and return the generator's return value. This is the synchronous
    path of the napari workers (tests, scripts) and what the CLI uses.
    """
    while True:
        try:
            msg = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_yield is not None:
            on_yield(msg)
