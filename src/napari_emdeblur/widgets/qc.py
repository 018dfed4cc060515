"""Focus QC dock widget: score an EM section per tile, show the heatmap, tune thresholds by eye.

The widget is a thin shell around :func:`napari_emdeblur.qc.scoring.iter_score_stack`. Scoring
runs in a napari worker thread through the docks' shared :class:`~.runner.WorkerRunner`;
``run(sync=True)`` drains the same generator in the calling thread (used by tests and scripts). Results live in two layers the other widgets
read through public layer metadata:

* ``"<image> focus"``: a low-resolution Image layer, one pixel per tile, with ``scale`` and
  ``translate`` set so tile ``(i, j)`` covers exactly its pixels of the image;
* ``"<image> flagged"``: a Labels layer on the same grid, 1 = correct (deblur), 2 = retake.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.viewer import Viewer

from ..qc import decisions as dec
from ..qc.focus import DEFAULT_METRIC, METRICS
from ..qc.messages import Progress, SectionScores
from ..qc.scoring import ScoreParams, iter_score_stack
from ..qc.thresholds import auto_thresholds
from ..qc.tiling import TileGrid, heatmap_transform
from .common import (
    DECISIONS_KEY,
    FLAG_COLORS,
    HEATMAP_KEY,
    compact,
    grayscale_data,
    image_layers,
    layer_by_name,
    notify,
    preselect,
    tie_to_viewer,
)
from .runner import WorkerRunner
from .view import review_view

DECISION_COLORS = {
    None: (0.0, 0.0, 0.0, 0.0),
    0: (0.0, 0.0, 0.0, 0.0),
    dec.CORRECT: (*FLAG_COLORS[dec.CORRECT], 0.5),
    dec.RETAKE: (*FLAG_COLORS[dec.RETAKE], 0.65),
}


@dataclass
class QCResult:
    """Scores of one image layer (all sections) and the thresholds applied to them."""

    layer_name: str
    image_shape: tuple[int, ...]
    file: str  # the layer's source file (or its name) for the CSV report
    tile: int
    metric: str
    scores: np.ndarray  # (Z, rows, cols), NaN = not scored (yet)
    correct_threshold: float = np.nan
    retake_threshold: float = np.nan
    decisions: np.ndarray = field(default=None)  # (Z, rows, cols) int8

    @property
    def grid(self) -> TileGrid:
        return TileGrid(tuple(self.image_shape[-2:]), self.tile)

    @property
    def is_stack(self) -> bool:
        return len(self.image_shape) == 3


class QCWidget(Container):
    """Dock widget: layer, metric and tile size; Score / Cancel; thresholds; histogram; export."""

    def __init__(self, napari_viewer: Viewer):
        viewer = napari_viewer
        super().__init__(labels=True)
        self._viewer = viewer
        self.result: QCResult | None = None
        self.last_update_ms: float = 0.0
        self._updating = False

        self.layer_combo = ComboBox(label="image", choices=self._layer_choices, nullable=True)
        self.metric_combo = ComboBox(label="metric", choices=list(METRICS), value=DEFAULT_METRIC)
        self.metric_combo.tooltip = "\n".join(f"{k}: {v}" for k, v in METRICS.items())
        self.tile_spin = SpinBox(label="tile (px)", value=256, min=16, max=16384, step=16)
        self.score_btn = PushButton(text="Score focus")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.correct_slider = FloatSlider(label="correct below", min=0, max=1, value=0, readout=False)
        self.correct_spin = FloatSpinBox(label="", min=-1e9, max=1e9, step=0.01, value=0)
        self.retake_slider = FloatSlider(label="retake below", min=0, max=1, value=0, readout=False)
        self.retake_spin = FloatSpinBox(label="", min=-1e9, max=1e9, step=0.01, value=0)
        self.auto_btn = PushButton(text="Suggest thresholds")
        self.count_label = Label(label="flagged", value="score a layer first")
        self.hover_label = compact(Label(label="tile", value=""))
        self.csv_path = FileEdit(label="report", mode="w", filter="*.csv", value="")
        self.export_btn = PushButton(text="Export CSV")
        for w in (self.correct_slider, self.correct_spin, self.retake_slider, self.retake_spin,
                  self.auto_btn, self.export_btn):
            w.enabled = False
        self.extend([
            self.layer_combo, self.metric_combo, self.tile_spin, self.score_btn, self.cancel_btn,
            self.progress, self.correct_slider, self.correct_spin, self.retake_slider, self.retake_spin,
            self.auto_btn, self.count_label, self.hover_label, self.csv_path, self.export_btn,
        ])
        self._init_histogram()

        self.score_btn.changed.connect(lambda: self.run())
        self.cancel_btn.changed.connect(self.cancel)
        self.auto_btn.changed.connect(self.suggest_thresholds)
        self.export_btn.changed.connect(lambda: self.export_csv())
        self.correct_slider.changed.connect(lambda v: self.set_thresholds(correct=v))
        self.correct_spin.changed.connect(lambda v: self.set_thresholds(correct=v))
        self.retake_slider.changed.connect(lambda v: self.set_thresholds(retake=v))
        self.retake_spin.changed.connect(lambda v: self.set_thresholds(retake=v))
        tie_to_viewer(self, viewer, layers_changed=self._refresh_layers, mouse_move=self._on_mouse_move)
        self._runner = WorkerRunner(self, self._on_yield, self._on_error, self._on_finished, self._set_busy)
        self._refresh_layers()

    # ------------------------------------------------------------------ layers
    def _layer_choices(self, *_: Any) -> list[str]:
        return [layer.name for layer in image_layers(self._viewer)]

    def _refresh_layers(self, *_: Any) -> None:
        current = self.layer_combo.value
        self.layer_combo.reset_choices()
        if current is not None and current in self.layer_combo.choices:
            self.layer_combo.value = current
        preselect(self.layer_combo, self._viewer)

    @property
    def heatmap_layer(self):
        return layer_by_name(self._viewer, f"{self.result.layer_name} focus") if self.result else None

    @property
    def decisions_layer(self):
        return layer_by_name(self._viewer, f"{self.result.layer_name} flagged") if self.result else None

    # ------------------------------------------------------------------ scoring
    def run(self, sync: bool = False) -> None:
        """Score the chosen layer. ``sync=True`` runs in this thread (tests, scripts)."""
        if self._runner.running:
            notify("Focus scoring is already running", "warning")
            return
        layer = layer_by_name(self._viewer, self.layer_combo.value)
        if layer is None:
            notify("Choose an image layer to score first", "warning")
            return
        try:
            data = grayscale_data(layer)
            params = ScoreParams(tile=int(self.tile_spin.value), metric=str(self.metric_combo.value))
            TileGrid(tuple(data.shape[-2:]), params.tile)
            if min(data.shape[-2:]) < 16:
                raise ValueError(f"layer '{layer.name}' is {data.shape[-2:]} px, too small to score")
        except ValueError as e:
            notify(str(e), "error")
            return
        self._start(layer, data, params)
        self._runner.start(iter_score_stack(data, params), sync=sync)

    def cancel(self) -> None:
        """Stop a running scoring after the current section."""
        self._runner.quit()

    @property
    def worker(self):
        """The running napari worker, or None."""
        return self._runner.worker

    def _set_busy(self, busy: bool) -> None:
        self.score_btn.enabled = not busy
        self.cancel_btn.enabled = busy

    def _start(self, layer, data, params: ScoreParams) -> None:
        grid = TileGrid(tuple(data.shape[-2:]), params.tile)
        nz = data.shape[0] if data.ndim == 3 else 1
        file = getattr(layer.source, "path", None) or layer.metadata.get("emdeblur_source") or layer.name
        self.result = QCResult(
            layer_name=layer.name, image_shape=tuple(data.shape), file=str(file), tile=params.tile,
            metric=params.metric,
            scores=np.full((nz, *grid.grid_shape), np.nan, np.float32),
        )
        self.result.decisions = np.zeros(self.result.scores.shape, np.int8)
        self._t0 = time.perf_counter()
        self.progress.max = nz
        self.progress.value = 0
        self._place_layers(layer)

    def _place_layers(self, layer) -> None:
        r = self.result
        ps = tuple(float(s) for s in layer.scale[-2:])
        tr = tuple(float(t) for t in layer.translate[-2:])
        scale, translate = heatmap_transform(r.tile, ps, tr)
        if r.is_stack:
            scale = (float(layer.scale[0]), *scale)
            translate = (float(layer.translate[0]), *translate)
        display = self._display_scores()
        meta = {"source": r.layer_name, "tile": r.tile, "metric": r.metric, "image_shape": r.image_shape}
        heat = self.heatmap_layer
        if heat is None:
            heat = self._viewer.add_image(
                display, name=f"{r.layer_name} focus", colormap="magma", opacity=0.35,
                interpolation2d="nearest", blending="translucent", scale=scale, translate=translate,
                contrast_limits=(0.0, 1.0), metadata={HEATMAP_KEY: meta},
            )
        else:
            heat.data = display
            heat.scale, heat.translate = scale, translate
            heat.metadata[HEATMAP_KEY] = meta
        labels = self.decisions_layer
        dmeta = dict(meta)
        if labels is None:
            from napari.utils.colormaps import DirectLabelColormap

            labels = self._viewer.add_labels(
                self._display_decisions(), name=f"{r.layer_name} flagged", scale=scale, translate=translate,
                opacity=1.0, metadata={DECISIONS_KEY: dmeta},
            )
            labels.colormap = DirectLabelColormap(color_dict=DECISION_COLORS)
            labels.editable = False
        else:
            labels.data = self._display_decisions()
            labels.scale, labels.translate = scale, translate
            labels.metadata[DECISIONS_KEY] = dmeta
        review_view(self._viewer).qc_layers(heat, labels)  # colour bar, read-only, outlines, legend, tint

    def _display_scores(self) -> np.ndarray:
        s = self.result.scores
        finite = s[np.isfinite(s)]
        fill = float(finite.min()) if finite.size else 0.0
        out = np.where(np.isfinite(s), s, fill).astype(np.float32)
        return out if self.result.is_stack else out[0]

    def _display_decisions(self) -> np.ndarray:
        d = self.result.decisions
        return d if self.result.is_stack else d[0]

    def _on_yield(self, msg: Any) -> None:
        if isinstance(msg, SectionScores):
            self.result.scores[msg.z] = msg.scores
            heat = self.heatmap_layer
            if heat is not None:
                heat.data = self._display_scores()
                finite = self.result.scores[np.isfinite(self.result.scores)]
                if finite.size and msg.z == 0:
                    lo, hi = float(finite.min()), float(finite.max())
                    heat.contrast_limits = (lo, hi if hi > lo else lo + 1e-6)
            self.progress.value = msg.z + 1
        elif isinstance(msg, Progress):
            self.progress.max = max(1, msg.total)
            self.progress.value = msg.done

    def _on_error(self, exc: BaseException) -> None:
        notify(f"Focus scoring failed: {exc}", "error")

    def _on_finished(self) -> None:
        r = self.result
        if r is None:
            return
        finite = r.scores[np.isfinite(r.scores)]
        if finite.size == 0:
            notify("No tile could be scored (empty or constant image?)", "warning")
            return
        lo, hi = float(finite.min()), float(finite.max())
        if hi <= lo:
            hi = lo + 1e-6
        heat = self.heatmap_layer
        if heat is not None:  # fixed contrast limits over the whole stack
            heat.contrast_limits = (lo, hi)
            heat.metadata[HEATMAP_KEY]["contrast_limits"] = (lo, hi)
        pad = 0.02 * (hi - lo)
        self._updating = True
        try:
            for w in (self.correct_slider, self.retake_slider):
                w.min, w.max = lo - pad, hi + pad
                w.step = (hi - lo) / 500
            for w in (self.correct_spin, self.retake_spin):
                w.step = max((hi - lo) / 500, 1e-6)
        finally:
            self._updating = False
        for w in (self.correct_slider, self.correct_spin, self.retake_slider, self.retake_spin,
                  self.auto_btn, self.export_btn):
            w.enabled = True
        done = int(np.isfinite(r.scores).all(axis=(1, 2)).sum())
        elapsed = time.perf_counter() - self._t0
        if done < r.scores.shape[0]:
            notify(f"Scoring stopped: {done} of {r.scores.shape[0]} sections scored", "warning")
        self._draw_histogram()
        self.suggest_thresholds()
        self.hover_label.value = f"{r.scores[np.isfinite(r.scores)].size} tiles scored in {elapsed:.1f} s"

    # ------------------------------------------------------------------ thresholds
    def suggest_thresholds(self) -> None:
        if self.result is None:
            return
        finite = self.result.scores[np.isfinite(self.result.scores)]
        if finite.size == 0:
            return
        correct, retake = auto_thresholds(finite)
        self.set_thresholds(correct=correct, retake=retake)

    def set_thresholds(self, correct: float | None = None, retake: float | None = None) -> None:
        """Apply thresholds (keeping retake <= correct), recolour the flagged tiles, recount."""
        if self._updating or self.result is None:
            return
        t0 = time.perf_counter()
        r = self.result
        c = float(correct) if correct is not None else float(r.correct_threshold)
        t = float(retake) if retake is not None else float(r.retake_threshold)
        if np.isnan(t):
            t = c
        if np.isnan(c):
            c = t
        if correct is not None and t > c:
            t = c
        elif retake is not None and t > c:
            c = t
        r.correct_threshold, r.retake_threshold = c, t
        # in place: the labels layer holds a view of r.decisions, so a refresh is all it needs
        # (assigning layer.data would re-run napari's dims/transform updates: ~10x slower)
        np.copyto(r.decisions, dec.classify(r.scores, c, t))
        labels = self.decisions_layer
        if labels is not None:
            labels.refresh()
            labels.metadata[DECISIONS_KEY].update(correct_threshold=c, retake_threshold=t)
            review_view(self._viewer).flags_changed(labels)  # the outline follows (coalesced)
        self._updating = True
        try:
            for w, v in ((self.correct_slider, c), (self.correct_spin, c), (self.retake_slider, t),
                         (self.retake_spin, t)):
                if isinstance(w, FloatSlider):
                    v = min(max(v, w.min), w.max)
                if w.value != v:
                    w.value = v
        finally:
            self._updating = False
        self.count_label.value = self._count_text()
        self._move_histogram_lines()
        self.last_update_ms = (time.perf_counter() - t0) * 1000

    def _count_text(self) -> str:
        r = self.result
        valid = np.isfinite(r.scores)
        n = int(valid.sum())
        nc = int(((r.decisions == dec.CORRECT) & valid).sum())
        nr = int(((r.decisions == dec.RETAKE) & valid).sum())
        pct = (lambda k: 100.0 * k / n) if n else (lambda k: 0.0)
        return f"correct {nc} ({pct(nc):.1f}%) | retake {nr} ({pct(nr):.1f}%) of {n}"

    @property
    def flagged_counts(self) -> tuple[int, int]:
        """(tiles to correct, tiles to retake) under the current thresholds."""
        r = self.result
        if r is None:
            return (0, 0)
        valid = np.isfinite(r.scores)
        return (int(((r.decisions == dec.CORRECT) & valid).sum()),
                int(((r.decisions == dec.RETAKE) & valid).sum()))

    # ------------------------------------------------------------------ histogram
    def _init_histogram(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self._fig = Figure(figsize=(3, 1.6), dpi=90, tight_layout=True)
        self._ax = self._fig.add_subplot(111)
        self._canvas = FigureCanvasQTAgg(self._fig)
        self._canvas.setMinimumHeight(140)
        self._lines: list = []
        self.native.layout().addWidget(self._canvas)

    def _draw_histogram(self) -> None:
        ax = self._ax
        ax.clear()
        finite = self.result.scores[np.isfinite(self.result.scores)]
        ax.hist(finite, bins=min(60, max(10, finite.size // 5)), color="0.45")
        ax.set_xlabel(f"{self.result.metric} score (higher = sharper)", fontsize=7)
        ax.tick_params(labelsize=6)
        self._lines = [ax.axvline(np.nan, color="#00e5ff", lw=1.5), ax.axvline(np.nan, color="#ff2020", lw=1.5)]
        self._move_histogram_lines()

    def _move_histogram_lines(self) -> None:
        if not self._lines or self.result is None:
            return
        for line, v in zip(self._lines, (self.result.correct_threshold, self.result.retake_threshold)):
            line.set_xdata([v, v])
        self._canvas.draw_idle()

    # ------------------------------------------------------------------ hover & export
    def _on_mouse_move(self, viewer, event) -> None:
        heat = self.heatmap_layer
        if heat is None or self.result is None:
            return
        idx = np.round(np.asarray(heat.world_to_data(event.position))).astype(int)
        info = self.tile_info_at(idx)
        if info:
            self.hover_label.value = info

    def tile_info_at(self, idx) -> str:
        r = self.result
        z = int(idx[0]) if r.is_stack else 0
        i, j = int(idx[-2]), int(idx[-1])
        if not (0 <= z < r.scores.shape[0] and 0 <= i < r.scores.shape[1] and 0 <= j < r.scores.shape[2]):
            return ""
        s = r.scores[z, i, j]
        name = dec.DECISION_NAMES[int(r.decisions[z, i, j])] if np.isfinite(s) else "not scored"
        zs = f"z={z} " if r.is_stack else ""
        return f"{zs}({i}, {j}): {s:.3g} -> {name}"

    def export_csv(self, path: str | Path | None = None) -> Path | None:
        if self.result is None:
            notify("Score a layer before exporting", "warning")
            return None
        path = Path(path or self.csv_path.value)
        if not str(path) or path.is_dir() or path.name in ("", "."):
            notify("Choose a report file name (.csv) first", "warning")
            return None
        r = self.result
        rows = []
        for z in range(r.scores.shape[0]):
            rows.extend(dec.tile_rows(r.file, z, r.grid, r.scores[z], r.decisions[z]))
        try:
            dec.write_tile_csv(path, rows)
        except (OSError, ValueError) as e:
            notify(f"Could not write the report: {e}", "error")
            return None
        notify(f"Wrote {len(rows)} tile rows to {path}")
        return path
