"""Focus QC dock widget: score an EM section per tile, show the heatmap, tune thresholds by eye.

The widget is a thin shell around :func:`napari_emdeblur.qc.scoring.iter_score_stack`. Scoring
runs in a napari worker thread through the docks' shared :class:`~.runner.WorkerRunner`;
``run(sync=True)`` drains the same generator in the calling thread (used by tests and scripts). Results live in two layers the other widgets
read through public layer metadata:

* ``"<image> focus"``: a low-resolution Image layer, one pixel per tile, with ``scale`` and
  ``translate`` set so tile ``(i, j)`` covers exactly its pixels of the image;
* ``"<image> flagged"``: a Labels layer on the same grid, 1 = correct (deblur), 2 = retake,
  3 = empty (no tissue signal: never "ok", never corrected; grey).

With the ``blur`` metric (the default) scoring also gives the blur map (``qc.blurmap``), and two
more layers on the same grid:

* ``"<image> blur (px)"``: the excess blur in px per tile, with its colour bar in px
  (contrast limits in px); the **show** choice switches between it and the focus score;
* ``"<image> astigmatism"``: a short line per tile whose excess blur is clearly anisotropic
  (minor / major < ``ASTIGMATISM_RATIO``), along the major axis, longer the stronger the
  anisotropy.

The thresholds are then set in px of excess blur ("correct above", "retake above"; defaults from
``qc.thresholds.DEFAULT_BLUR_PX``).
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
from ..qc.blurmap import BlurMap
from ..qc.content import REASONS
from ..qc.focus import DEFAULT_METRIC, METRICS
from ..qc.messages import Progress, SectionScores
from ..qc.scoring import ScoreParams, iter_score_stack
from ..qc.thresholds import DEFAULT_BLUR_PX, PX_METRICS, auto_thresholds, px_from_score, score_from_px
from ..qc.tiling import TileGrid, heatmap_transform
from .common import DECISIONS_KEY, HEATMAP_KEY, grayscale_data, image_layers, layer_by_name, notify, tie_to_viewer
from .runner import WorkerRunner

DECISION_COLORS = {
    None: (0.0, 0.0, 0.0, 0.0),
    0: (0.0, 0.0, 0.0, 0.0),
    dec.CORRECT: (0.0, 0.9, 1.0, 0.5),
    dec.RETAKE: (1.0, 0.1, 0.1, 0.65),
    dec.EMPTY: (0.6, 0.6, 0.6, 0.7),
}
SHOW_CHOICES = ("blur (px)", "focus score")
ASTIGMATISM_RATIO = 0.7  # excess minor / major below this: the tile's blur direction is shown
ASTIGMATISM_MIN_PX = 0.5  # ... when its major axis has at least this much excess blur


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
    blur: BlurMap | None = None  # (Z, rows, cols) blur map arrays (blur metric)

    @property
    def px_mode(self) -> bool:
        """Thresholds and the heatmap in px of excess blur (the ``blur`` metric)."""
        return self.metric in PX_METRICS

    def blur_at(self, z: int) -> BlurMap | None:
        """The blur map of section ``z`` (grid-shaped), None without one."""
        if self.blur is None:
            return None
        return BlurMap(**{k: v[z] for k, v in vars(self.blur).items()})

    @property
    def empty(self) -> np.ndarray | None:
        return None if self.blur is None else self.blur.empty

    @property
    def grid(self) -> TileGrid:
        return TileGrid(tuple(self.image_shape[-2:]), self.tile)

    @property
    def is_stack(self) -> bool:
        return len(self.image_shape) == 3


def _px_shown(score: float) -> float:
    """A score threshold of the blur metric as px for the px sliders: a score <= 0 flags nothing
    (infinitely many px), one > 1 everything (clipped to 0 by the widget's range).
    """
    return float(px_from_score(score)) if score > 0 else float("inf")


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
        self.show_combo = ComboBox(label="show", choices=list(SHOW_CHOICES), value=SHOW_CHOICES[0], enabled=False)
        self.show_combo.tooltip = "heatmap: excess blur in px (colour bar in px) or the focus score"
        self.correct_slider = FloatSlider(label="correct below", min=0, max=1, value=0, readout=False)
        self.correct_spin = FloatSpinBox(label="", min=-1e9, max=1e9, step=0.01, value=0)
        self.retake_slider = FloatSlider(label="retake below", min=0, max=1, value=0, readout=False)
        self.retake_spin = FloatSpinBox(label="", min=-1e9, max=1e9, step=0.01, value=0)
        self.auto_btn = PushButton(text="Suggest thresholds")
        self.count_label = Label(label="flagged", value="score a layer first")
        self.hover_label = Label(label="tile", value="")
        self.csv_path = FileEdit(label="report", mode="w", filter="*.csv", value="")
        self.export_btn = PushButton(text="Export CSV")
        for w in (self.correct_slider, self.correct_spin, self.retake_slider, self.retake_spin,
                  self.auto_btn, self.export_btn):
            w.enabled = False
        self.extend([
            self.layer_combo, self.metric_combo, self.tile_spin, self.score_btn, self.cancel_btn,
            self.progress, self.show_combo, self.correct_slider, self.correct_spin, self.retake_slider, self.retake_spin,
            self.auto_btn, self.count_label, self.hover_label, self.csv_path, self.export_btn,
        ])
        self._init_histogram()

        self.score_btn.changed.connect(lambda: self.run())
        self.cancel_btn.changed.connect(self.cancel)
        self.auto_btn.changed.connect(self.suggest_thresholds)
        self.export_btn.changed.connect(lambda: self.export_csv())
        self.correct_slider.changed.connect(lambda v: self._threshold_edited(correct=v))
        self.correct_spin.changed.connect(lambda v: self._threshold_edited(correct=v))
        self.retake_slider.changed.connect(lambda v: self._threshold_edited(retake=v))
        self.retake_spin.changed.connect(lambda v: self._threshold_edited(retake=v))
        self.show_combo.changed.connect(lambda v: self.show(v))
        tie_to_viewer(self, viewer, layers_changed=self._refresh_layers, mouse_move=self._on_mouse_move)
        self._runner = WorkerRunner(self, self._on_yield, self._on_error, self._on_finished, self._set_busy)
        self._refresh_layers()

    # ------------------------------------------------------------------ layers
    def _layer_choices(self, *_: Any) -> list[str]:
        return [layer.name for layer in image_layers(self._viewer)]

    def _refresh_layers(self, *_: Any) -> None:
        current = self.layer_combo.value
        self.layer_combo.reset_choices()
        if current in self.layer_combo.choices:
            self.layer_combo.value = current
        elif self.layer_combo.value is None:
            names = [c for c in self.layer_combo.choices if c is not None]
            if names:
                self.layer_combo.value = names[0]

    @property
    def heatmap_layer(self):
        return layer_by_name(self._viewer, f"{self.result.layer_name} focus") if self.result else None

    @property
    def decisions_layer(self):
        return layer_by_name(self._viewer, f"{self.result.layer_name} flagged") if self.result else None

    @property
    def blur_layer(self):
        """The excess-blur map in px (blur metric), or None."""
        return layer_by_name(self._viewer, f"{self.result.layer_name} blur (px)") if self.result else None

    @property
    def astigmatism_layer(self):
        return layer_by_name(self._viewer, f"{self.result.layer_name} astigmatism") if self.result else None

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
            params.validate()  # e.g. the blur metric on tiles under 64 px: one line, nothing started
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
        if self.result.px_mode:
            self.result.blur = BlurMap.blank(self.result.scores.shape)
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
        self._heat_xform = (scale, translate)
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
        self._place_blur_layers(meta)

    def _place_blur_layers(self, meta: dict) -> None:
        """The blur map in px (colour bar in px) and the astigmatism lines, for the blur metric."""
        r = self.result
        scale, translate = self._heat_xform
        blur = self.blur_layer
        if not r.px_mode:  # another metric: its score heatmap only
            self.show_combo.enabled = False
            for old in (blur, self.astigmatism_layer):
                if old is not None:
                    old.visible = False
            heat = self.heatmap_layer
            if heat is not None:
                heat.visible = True
            return
        bmeta = {k: v for k, v in meta.items() if k != "metric"}
        bmeta.update(kind="blur_px", unit="px")
        if blur is None:
            blur = self._viewer.add_image(
                self._display_blur(), name=f"{r.layer_name} blur (px)", colormap="inferno", opacity=0.45,
                interpolation2d="nearest", blending="translucent", scale=scale, translate=translate,
                contrast_limits=(0.0, float(DEFAULT_BLUR_PX[1]) + 1.0), metadata={HEATMAP_KEY: bmeta},
            )
        else:
            blur.data = self._display_blur()
            blur.scale, blur.translate = scale, translate
            blur.metadata[HEATMAP_KEY] = bmeta
        blur.colorbar.visible = True
        self.show_combo.enabled = True
        self.show(self.show_combo.value)

    def _display_blur(self) -> np.ndarray:
        e = self.result.blur.excess
        out = np.where(np.isfinite(e), e, 0.0).astype(np.float32)  # empty tiles: grey in the flagged layer
        return out if self.result.is_stack else out[0]

    def show(self, what: str) -> None:
        """Show the blur map in px (``"blur (px)"``) or the focus score (``"focus score"``) as the heatmap."""
        if what not in SHOW_CHOICES:
            raise ValueError(f"show one of {SHOW_CHOICES}, not {what!r}")
        if self.show_combo.value != what:
            self.show_combo.value = what  # calls back here
            return
        heat, blur = self.heatmap_layer, self.blur_layer
        if blur is None or heat is None:
            return
        blur.visible = what == SHOW_CHOICES[0]
        heat.visible = not blur.visible

    def _update_astigmatism(self) -> None:
        """One line per clearly anisotropic tile: along the excess blur's major axis, centred on the
        tile, ``0.9 (1 - minor / major)`` tiles long.
        """
        r = self.result
        if r is None or r.blur is None:
            return
        b = r.blur
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(b.excess_major > 0, b.excess_minor / b.excess_major, 1.0)
            sel = np.isfinite(b.excess_major) & (b.excess_major >= ASTIGMATISM_MIN_PX) & (ratio < ASTIGMATISM_RATIO)
        z, i, j = np.nonzero(sel)
        a = np.radians(b.excess_angle[sel].astype(np.float64))
        length = 0.9 * (1.0 - ratio[sel])
        dy, dx = np.sin(a) * length, np.cos(a) * length  # angle from +x towards +y (rows)
        pos = np.stack([i - dy / 2, j - dx / 2], axis=1)
        vec = np.stack([dy, dx], axis=1)
        if r.is_stack:
            pos = np.concatenate([z[:, None].astype(np.float64), pos], axis=1)
            vec = np.concatenate([np.zeros((len(z), 1)), vec], axis=1)
        nd = 3 if r.is_stack else 2
        data = np.stack([pos, vec], axis=1) if len(z) else np.zeros((0, 2, nd))
        scale, translate = self._heat_xform
        layer = self.astigmatism_layer
        meta = {HEATMAP_KEY: {"source": r.layer_name, "tile": r.tile, "kind": "astigmatism",
                              "ratio_below": ASTIGMATISM_RATIO}}
        feats = {"ratio": ratio[sel].astype(np.float32), "angle": b.excess_angle[sel].astype(np.float32)}
        if layer is None:
            self._viewer.add_vectors(data, name=f"{r.layer_name} astigmatism", edge_width=0.08, length=1.0,
                                     edge_color="#7cff4f", vector_style="line", scale=scale, translate=translate,
                                     ndim=nd, features=feats, metadata=meta)
        else:
            layer.data = data
            layer.features = feats
            layer.scale, layer.translate = scale, translate

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
            bm = msg.extras.get("blurmap")
            if bm is not None and self.result.blur is not None:
                self.result.blur.set(msg.z, bm)
                blur = self.blur_layer
                if blur is not None:
                    blur.data = self._display_blur()
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
            n_empty = 0 if r.empty is None else int(r.empty.sum())
            if n_empty:
                np.copyto(r.decisions, np.where(r.empty, dec.EMPTY, dec.OK).astype(np.int8))
                labels = self.decisions_layer
                if labels is not None:
                    labels.refresh()
            notify(f"No tile could be scored ({n_empty} tiles without tissue signal: empty or constant image?)",
                   "warning")
            return
        lo, hi = float(finite.min()), float(finite.max())
        if hi <= lo:
            hi = lo + 1e-6
        heat = self.heatmap_layer
        if heat is not None:  # fixed contrast limits over the whole stack
            heat.contrast_limits = (lo, hi)
            heat.metadata[HEATMAP_KEY]["contrast_limits"] = (lo, hi)
        if r.px_mode:  # the sliders and spin boxes in px of excess blur
            ex = r.blur.excess[np.isfinite(r.blur.excess)]
            lo, hi = 0.0, max(float(DEFAULT_BLUR_PX[1]) + 1.0, float(np.percentile(ex, 99)) if ex.size else 0.0)
            blur = self.blur_layer
            if blur is not None:
                blur.contrast_limits = (0.0, hi)
                blur.metadata[HEATMAP_KEY]["contrast_limits"] = (0.0, hi)
            self._update_astigmatism()
        self.correct_slider.label = "correct above (px)" if r.px_mode else "correct below"
        self.retake_slider.label = "retake above (px)" if r.px_mode else "retake below"
        pad = 0.02 * (hi - lo)
        self._updating = True
        try:
            for w in (self.correct_slider, self.retake_slider):
                w.min, w.max = (lo, hi) if r.px_mode else (lo - pad, hi + pad)
                w.step = (hi - lo) / 500
            for w in (self.correct_spin, self.retake_spin):
                w.step = max((hi - lo) / 500, 1e-6)
                if r.px_mode:
                    w.min = 0.0
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
        if r.px_mode:  # px thresholds transfer between datasets: start from the defaults
            self.set_thresholds_px(*DEFAULT_BLUR_PX)
        else:
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

    def _threshold_edited(self, correct: float | None = None, retake: float | None = None) -> None:
        """A slider or spin box moved: its value is a score, or px of excess blur in px mode."""
        if self._updating or self.result is None:
            return
        if self.result.px_mode:
            self.set_thresholds_px(correct, retake)
        else:
            self.set_thresholds(correct, retake)

    def set_thresholds_px(self, correct_px: float | None = None, retake_px: float | None = None) -> None:
        """Apply thresholds in px of excess blur (blur metric): correct above ``correct_px``, retake
        above ``retake_px`` (kept >= correct_px).
        """
        if self.result is None:
            return
        if not self.result.px_mode:
            raise ValueError(f"thresholds in px need the blur metric, this layer was scored with {self.result.metric!r}")
        self.set_thresholds(
            correct=None if correct_px is None else score_from_px(max(0.0, float(correct_px))),
            retake=None if retake_px is None else score_from_px(max(0.0, float(retake_px))),
        )

    @property
    def thresholds_px(self) -> tuple[float, float]:
        """The current ``(correct, retake)`` thresholds in px of excess blur (NaN without them)."""
        r = self.result
        if r is None or not np.isfinite(r.correct_threshold):
            return (np.nan, np.nan)
        return float(px_from_score(r.correct_threshold)), float(px_from_score(r.retake_threshold))

    def set_thresholds(self, correct: float | None = None, retake: float | None = None) -> None:
        """Apply thresholds as scores (keeping retake <= correct), recolour the flagged tiles, recount."""
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
        np.copyto(r.decisions, dec.classify(r.scores, c, t, empty=r.empty))
        labels = self.decisions_layer
        if labels is not None:
            labels.refresh()
            labels.metadata[DECISIONS_KEY].update(correct_threshold=c, retake_threshold=t)
        cv, tv = (_px_shown(c), _px_shown(t)) if r.px_mode else (c, t)
        self._updating = True
        try:
            for w, v in ((self.correct_slider, cv), (self.correct_spin, cv), (self.retake_slider, tv),
                         (self.retake_spin, tv)):
                if isinstance(w, FloatSlider) or r.px_mode:
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
        text = f"correct {nc} ({pct(nc):.1f}%) | retake {nr} ({pct(nr):.1f}%) of {n}"
        if r.empty is not None:
            text += f" | empty {int(r.empty.sum())}"
        return text

    @property
    def empty_count(self) -> int:
        """Tiles without tissue signal (decided empty; never corrected)."""
        r = self.result
        return 0 if r is None or r.empty is None else int(r.empty.sum())

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
        r = self.result
        if r.px_mode:
            finite = r.blur.excess[np.isfinite(r.blur.excess)]
            label = "excess blur (px, higher = softer)"
        else:
            finite = r.scores[np.isfinite(r.scores)]
            label = f"{r.metric} score (higher = sharper)"
        ax.hist(finite, bins=min(60, max(10, finite.size // 5)), color="0.45")
        ax.set_xlabel(label, fontsize=7)
        ax.tick_params(labelsize=6)
        self._lines = [ax.axvline(np.nan, color="#00e5ff", lw=1.5), ax.axvline(np.nan, color="#ff2020", lw=1.5)]
        self._move_histogram_lines()

    def _move_histogram_lines(self) -> None:
        if not self._lines or self.result is None:
            return
        vals = self.thresholds_px if self.result.px_mode else (self.result.correct_threshold,
                                                                self.result.retake_threshold)
        for line, v in zip(self._lines, vals):
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
        d = int(r.decisions[z, i, j])
        name = dec.DECISION_NAMES[d] if np.isfinite(s) or d == dec.EMPTY else "not scored"
        zs = f"z={z} " if r.is_stack else ""
        if r.blur is not None:
            b = r.blur
            if d == dec.EMPTY:
                return f"{zs}({i}, {j}): empty ({REASONS[int(b.reason[z, i, j])]})"
            if not np.isfinite(b.excess[z, i, j]):
                return f"{zs}({i}, {j}): not scored"
            return (f"{zs}({i}, {j}): blur {b.excess[z, i, j]:.2f} px ({b.excess_major[z, i, j]:.2f} / "
                    f"{b.excess_minor[z, i, j]:.2f} px at {b.excess_angle[z, i, j]:.0f} deg), total "
                    f"{b.total_major[z, i, j]:.2f} px, noise {b.noise[z, i, j]:.3g} -> {name}")
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
            rows.extend(dec.tile_rows(r.file, z, r.grid, r.scores[z], r.decisions[z], blur=r.blur_at(z)))
        try:
            dec.write_tile_csv(path, rows)
        except (OSError, ValueError) as e:
            notify(f"Could not write the report: {e}", "error")
            return None
        notify(f"Wrote {len(rows)} tile rows to {path}")
        return path
