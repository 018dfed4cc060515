"""Focus QC dock widget: score an EM section per tile, show the heatmap, tune thresholds by eye.

The widget is a thin shell around the scoring generators: for a mosaic whose layer lists its
acquisition tiles (a MultiSEM folder opened by the npe2 reader: ``metadata['tiles']``),
:func:`napari_emdeblur.qc.acquisition.iter_score_files` (one decision per tile *file*, its
sub-tiles of ``tile`` px scored); for any other image, the regular grid of
:func:`napari_emdeblur.qc.scoring.iter_score_stack`. Scoring runs in a napari worker thread
through the docks' shared :class:`~.runner.WorkerRunner`; ``run(sync=True)`` drains the same
generator in the calling thread (tests, scripts). Results live in two layers the other widgets
read through public layer metadata:

* ``"<image> focus"``: the score of each tile (grid cell or acquisition tile) drawn on the
  tile's real footprint (metadata ``emdeblur_heatmap``: ``scores``, the ``(z, rows, cols)``
  scores of the ``tile`` px grid cells, for a mosaic those of the file owning each cell's centre) (:class:`~napari_emdeblur.qc.tilemap.TileRaster`: a lazy multiscale
  layer with the image's level shapes, scale and translate, so it lines up with every level;
  partial edge tiles end where the image ends; mosaic gaps and overlaps as in the mosaic:
  the later tile wins, gaps stay empty);
* ``"<image> flagged"``: the decisions the same way (an Image layer with a fixed colour per
  decision: 1 = correct (deblur, cyan), 2 = retake (red), 3 = empty (no tissue signal: never
  "ok", never corrected; grey); nothing to paint; mosaic gaps stay clear). Its metadata
  ``emdeblur_decisions`` holds the thresholds and ``decisions``, the ``(z, rows, cols)``
  decisions of the ``tile`` px grid cells (for a mosaic: of the file owning each cell's
  centre), which the correction dock corrects.

With the ``blur`` metric (the default) scoring also gives the blur map (``qc.blurmap``; for a
mosaic each file's, ``qc.acquisition.file_blur``), and two more layers:

* ``"<image> blur (px)"``: the excess blur in px per tile or file, drawn the same lazy
  multiscale way, with its colour bar in px (contrast limits in px); the **show** choice
  switches between it and the focus score;
* ``"<image> astigmatism"``: a line per tile or file whose excess blur is clearly anisotropic
  (minor / major < ``ASTIGMATISM_RATIO``), along the major axis, longer the stronger the
  anisotropy.

The thresholds are then set in px of excess blur ("correct above", "retake above"; defaults from
``qc.thresholds.DEFAULT_BLUR_PX``, the same absolute policy as ``emdeblur score``).

The layers are created empty when scoring starts and refreshed at most every
``REFRESH_S`` while results come in (a refresh redraws only what is on screen), the progress bar
at most every ``PROGRESS_S``: with software OpenGL every repaint of the window costs 0.1-0.3 s.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
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

from .._reader import redraw
from ..io.section import AcqTile
from ..qc import decisions as dec
from ..qc.acquisition import FILE_CSV_COLUMNS, AcquisitionQC, file_blur, iter_score_files
from ..qc.blurmap import BlurMap
from ..qc.content import REASONS
from ..qc.focus import DEFAULT_METRIC, METRICS
from ..qc.messages import FileScores, Progress, SectionScores
from ..qc.scoring import ScoreParams, iter_score_stack
from ..qc.thresholds import DEFAULT_BLUR_PX, PX_METRICS, auto_thresholds, px_from_score, score_from_px
from ..qc.tilemap import TileFootprints, TileRaster, raster_level_shapes
from ..qc.tiling import DEFAULT_TILE, TileGrid
from .common import (
    DECISIONS_KEY,
    FLAG_COLORS,
    HEATMAP_KEY,
    code_colormap,
    code_limits,
    compact,
    grayscale_data,
    image_layers,
    layer_by_name,
    layer_to_run,
    made_here,
    name_in_the_way,
    notify,
    placement,
    plain_viewer,
    plugin_layer,
    preselect,
    tie_to_viewer,
    with_imports,
)
from .runner import WorkerRunner
from .view import RING_ADD, review_view

DECISION_COLORS = {
    None: (0.0, 0.0, 0.0, 0.0),
    0: (0.0, 0.0, 0.0, 0.0),
    dec.CORRECT: (*FLAG_COLORS[dec.CORRECT], 0.5),
    dec.RETAKE: (*FLAG_COLORS[dec.RETAKE], 0.65),
    dec.EMPTY: (0.6, 0.6, 0.6, 0.7),
}
SHOW_CHOICES = ("blur (px)", "focus score")
ASTIGMATISM_RATIO = 0.7  # excess minor / major below this: the blur direction is shown
ASTIGMATISM_MIN_PX = 0.5  # ... when its major axis has at least this much excess blur
UNIT_GRID, UNIT_FILE = "grid tile", "acquisition tile"
REFRESH_S = 2.0  # the QC layers are redrawn at most this often while results come in
PROGRESS_S = 1.0  # the progress bar is updated at most this often (each update repaints the window)


def _flag_colormap():
    """Decision code -> colour, no blending between codes: 0 transparent, the codes translucent
    (tiles filled, zoomed out), the codes + ``RING_ADD`` opaque (the outline rings drawn up close).
    """
    fills = [DECISION_COLORS[dec.CORRECT], DECISION_COLORS[dec.RETAKE], DECISION_COLORS[dec.EMPTY]]
    assert RING_ADD == len(fills)
    return code_colormap([DECISION_COLORS[0], *fills, *[(*c[:3], 1.0) for c in fills]], "emdeblur decisions")


def layer_tiles(layer) -> list[AcqTile] | None:
    """The acquisition tiles a layer lists in its metadata (a MultiSEM mosaic), or None."""
    tiles = (layer.metadata or {}).get("tiles")
    if not tiles:
        return None
    try:
        return [AcqTile(**t) if isinstance(t, dict) else t for t in tiles]
    except TypeError:
        return None


@dataclass
class QCResult:
    """Scores of one image layer (all sections) and the thresholds applied to them.

    ``unit`` is :data:`UNIT_GRID` (``scores``/``decisions`` are ``(Z, rows, cols)`` over the
    ``tile`` px grid) or :data:`UNIT_FILE` (one entry per acquisition tile file, in the layer's
    tile order; ``acquisition`` holds the files' sub-tile scores). ``cell_decisions`` is always
    the ``(Z, rows, cols)`` grid view the correction dock reads. ``blur`` (``blur`` metric): the
    blur map shaped like ``scores`` (per file: :func:`~napari_emdeblur.qc.acquisition.file_blur`).
    """

    layer_name: str
    image_shape: tuple[int, ...]
    file: str  # the layer's source file (or its name) for the CSV report
    tile: int
    metric: str
    scores: np.ndarray  # (Z, rows, cols) or (n_files,), NaN = not scored (yet)
    correct_threshold: float = np.nan
    retake_threshold: float = np.nan
    decisions: np.ndarray = field(default=None)  # like scores, int8
    unit: str = UNIT_GRID
    tiles: list[AcqTile] | None = None
    acquisition: AcquisitionQC | None = None
    footprints: TileFootprints | None = None
    cell_decisions: np.ndarray = field(default=None)  # (Z, rows, cols) int8
    cell_owner: np.ndarray | None = None  # (Z, rows, cols) file owning each grid cell (UNIT_FILE)
    blur: BlurMap | None = None  # shaped like scores (blur metric)

    @property
    def grid(self) -> TileGrid:
        return TileGrid(tuple(self.image_shape[-2:]), self.tile)

    @property
    def is_stack(self) -> bool:
        return len(self.image_shape) == 3

    @property
    def by_file(self) -> bool:
        return self.unit == UNIT_FILE

    @property
    def px_mode(self) -> bool:
        """Thresholds and the heatmap in px of excess blur (the ``blur`` metric)."""
        return self.metric in PX_METRICS

    @property
    def empty(self) -> np.ndarray | None:
        """Tiles (or files) without tissue signal, shaped like ``scores``; None without a blur map."""
        return None if self.blur is None else self.blur.empty

    def blur_at(self, z: int) -> BlurMap | None:
        """The blur map of section ``z`` of a grid result, None without one."""
        if self.blur is None or self.by_file:
            return None
        return BlurMap(**{k: v[z] for k, v in vars(self.blur).items()})


def _px_shown(score: float) -> float:
    """A score threshold of the blur metric as px for the px sliders: a score <= 0 flags nothing
    (infinitely many px), one > 1 everything (clipped to 0 by the widget's range).
    """
    return float(px_from_score(score)) if score > 0 else float("inf")


#: the layers a QC run makes: "<image> <suffix>"
QC_LAYER_SUFFIXES = ("focus", "flagged", "blur (px)", "astigmatism")


class QCWidget(Container):
    """Dock widget: layer, metric and tile size; Score / Cancel; thresholds; histogram; export."""

    def __init__(self, napari_viewer: Viewer):
        viewer = plain_viewer(napari_viewer)
        super().__init__(labels=True)
        self._viewer = viewer
        self.result: QCResult | None = None
        self._source_ref: Any = None  # weak ref of the image the last run scored
        self.last_update_ms: float = 0.0
        self._updating = False

        self.layer_combo = ComboBox(label="image", choices=self._layer_choices, nullable=True)
        self.metric_combo = ComboBox(label="metric", choices=list(METRICS), value=DEFAULT_METRIC)
        self.metric_combo.tooltip = "\n".join(f"{k}: {v}" for k, v in METRICS.items())
        self.tile_spin = SpinBox(label="tile (px)", value=DEFAULT_TILE, min=16, max=16384, step=16)
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
        self.hover_label = compact(Label(label="tile", value=""))
        self.csv_path = FileEdit(label="report", mode="w", filter="*.csv", value="")
        self.subtiles_check = CheckBox(text="with sub-tile rows", value=False)
        self.subtiles_check.tooltip = "mosaics: also one row per scored sub-tile of each acquisition tile file"
        self.export_btn = PushButton(text="Export CSV")
        for w in (self.correct_slider, self.correct_spin, self.retake_slider, self.retake_spin,
                  self.auto_btn, self.export_btn):
            w.enabled = False
        self.extend([
            self.layer_combo, self.metric_combo, self.tile_spin, self.score_btn, self.cancel_btn,
            self.progress, self.show_combo, self.correct_slider, self.correct_spin, self.retake_slider, self.retake_spin,
            self.auto_btn, self.count_label, self.hover_label, self.csv_path, self.subtiles_check, self.export_btn,
        ])
        self.tile_spin.tooltip = ("QC tile size; for a mosaic with acquisition tiles, the sub-tiles of each tile "
                                  "file (one decision per file)")
        self._last_refresh = self._last_progress = 0.0
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
        if current is not None and current in self.layer_combo.choices:
            self.layer_combo.value = current
        preselect(self.layer_combo, self._viewer)

    @property
    def heatmap_layer(self):
        return plugin_layer(self._viewer, f"{self.result.layer_name} focus") if self.result else None

    @property
    def decisions_layer(self):
        return plugin_layer(self._viewer, f"{self.result.layer_name} flagged") if self.result else None

    @property
    def blur_layer(self):
        """The excess-blur map in px (blur metric), or None."""
        return plugin_layer(self._viewer, f"{self.result.layer_name} blur (px)") if self.result else None

    @property
    def astigmatism_layer(self):
        return plugin_layer(self._viewer, f"{self.result.layer_name} astigmatism") if self.result else None

    # ------------------------------------------------------------------ scoring
    def run(self, sync: bool = False) -> None:
        """Score the chosen layer. ``sync=True`` runs in this thread (tests, scripts)."""
        layer = layer_to_run(self._viewer, self._runner.running, self.layer_combo.value,
                             "Focus scoring is already running", "Choose an image layer to score first")
        if layer is None:
            return
        try:
            data = grayscale_data(layer)
            params = ScoreParams(tile=int(self.tile_spin.value), metric=str(self.metric_combo.value))
            params.validate()  # e.g. the blur metric on tiles under 64 px: one line, nothing started
            TileGrid(tuple(data.shape[-2:]), params.tile)
            if min(data.shape[-2:]) < 16:
                raise ValueError(f"layer '{layer.name}' is {data.shape[-2:]} px, too small to score")
            made = QC_LAYER_SUFFIXES if params.has_blurmap else QC_LAYER_SUFFIXES[:2]  # blur, astigmatism: px only
            clash = name_in_the_way(self._viewer, [f"{layer.name} {s}" for s in made])
            if clash:
                raise ValueError(clash)
        except ValueError as e:
            notify(str(e), "error")
            return
        tiles = layer_tiles(layer)
        review_view(self._viewer).run_pending(self.native)  # the last run's layers, complete, before its state goes
        self._sync = sync
        self._start(layer, data, params, tiles)
        if tiles:
            gen = iter_score_files(tiles, params, tuple(data.shape))
        else:
            gen = iter_score_stack(data, params)
        if not sync and self.result.px_mode:  # the astigmatism lines: a Vectors layer with features
            gen = with_imports(gen, "pandas")
        self._runner.start(gen, sync=sync)

    def cancel(self) -> None:
        """Stop a running scoring after the current section."""
        self._runner.quit()

    @property
    def idle(self) -> bool:
        """True when no run is going and the layers it set up are all in the viewer."""
        return self.worker is None and review_view(self._viewer).idle

    @property
    def worker(self):
        """The running napari worker, or None."""
        return self._runner.worker

    def _set_busy(self, busy: bool) -> None:
        self.score_btn.enabled = not busy
        self.cancel_btn.enabled = busy

    def _start(self, layer, data, params: ScoreParams, tiles: list[AcqTile] | None = None) -> None:
        grid = TileGrid(tuple(data.shape[-2:]), params.tile)
        nz = data.shape[0] if data.ndim == 3 else 1
        file = getattr(layer.source, "path", None) or layer.metadata.get("emdeblur_source") or layer.name
        shape = tuple(int(s) for s in data.shape)
        if tiles:
            n = len(tiles)
            boxes = np.array([(t.z, t.y0, t.x0, t.height, t.width) for t in tiles], np.int64)
            footprints = TileFootprints.from_boxes(shape, boxes)
            scores = np.full(n, np.nan, np.float32)
            owner = footprints.grid_owners(params.tile)
        else:
            footprints = TileFootprints.from_grid(shape, params.tile)
            scores = np.full((nz, *grid.grid_shape), np.nan, np.float32)
            owner = None
        self.result = QCResult(
            layer_name=layer.name, image_shape=shape, file=str(file), tile=params.tile,
            metric=params.metric, scores=scores, unit=UNIT_FILE if tiles else UNIT_GRID, tiles=tiles,
            footprints=footprints, cell_owner=owner,
        )
        self.result.decisions = np.zeros(scores.shape, np.int8)
        self.result.cell_decisions = (self.result.decisions if not tiles
                                      else np.zeros((nz, *grid.grid_shape), np.int8))
        self._cell_scores = (self.result.scores if not tiles
                             else np.full((nz, *grid.grid_shape), np.nan, np.float32))
        self._heat_values = np.full(scores.shape, np.nan, np.float32)
        self._blur_values = np.full(scores.shape, np.nan, np.float32)
        if self.result.px_mode:
            self.result.blur = BlurMap.blank(scores.shape)
        self._sections_done: set[int] = set()
        self._t0 = time.perf_counter()
        self._last_refresh = self._last_progress = 0.0
        self.progress.max = len(tiles) if tiles else nz
        self.progress.value = 0
        old = self._source_ref() if self._source_ref is not None else None
        if old is not None:
            old.events.name.disconnect(self._source_renamed)
        self._source_ref = weakref.ref(layer)
        layer.events.name.connect(self._source_renamed)
        self._place_layers(layer)

    def _place_layers(self, layer) -> None:
        r = self.result
        levels = [tuple(int(v) for v in s) for s in layer.level_shapes] if layer.multiscale else None
        shapes = raster_level_shapes(r.image_shape, levels)
        place = placement(layer)  # the image's transform: the QC layers line up at every level
        heat_raster = TileRaster(r.footprints, self._heat_values, shapes, fill=np.nan, dtype=np.float32)
        flag_raster = TileRaster(r.footprints, r.decisions, shapes, fill=0, dtype=np.uint8)
        flag_raster.ring_add = RING_ADD  # up close the review view rings flagged tiles (opaque) instead of filling them
        blur_raster = TileRaster(r.footprints, self._blur_values, shapes, fill=np.nan, dtype=np.float32)
        self._rasters = (heat_raster, flag_raster, blur_raster)
        self._image_place = place
        meta = {"source": r.layer_name, "tile": r.tile, "metric": r.metric, "image_shape": r.image_shape,
                "unit": r.unit}
        hmeta = dict(meta, scores=self._cell_scores)
        self._remove_qc_layers(r.layer_name)
        view = review_view(self._viewer)
        sync = getattr(self, "_sync", True)
        self._heat_limits = self._blur_limits = None  # set when the run ends

        def add_heat() -> None:  # each layer its own set-up step: short pauses, one at a time
            if self.result is not r or not self._source_alive():  # a newer run replaced this one
                return
            hmeta["source"] = r.layer_name  # (renamed since the run started?)
            heat = made_here(self._viewer.add_image(
                heat_raster.levels, multiscale=True, name=f"{r.layer_name} focus", colormap="magma", opacity=0.35,
                interpolation2d="nearest", blending="translucent", **place,
                contrast_limits=self._heat_limits or (0.0, 1.0), metadata={HEATMAP_KEY: hmeta}, cache=False,
                visible=False,  # shown by the review view's set-up steps, one first paint at a time
            ))
            if self._heat_limits is None:
                self._refresh_layers_throttled(force=True)
            else:
                heat.metadata[HEATMAP_KEY]["contrast_limits"] = self._heat_limits

        dmeta = dict(meta, decisions=r.cell_decisions)

        def add_flags() -> None:
            if self.result is not r or not self._source_alive():
                return
            dmeta.update(correct_threshold=r.correct_threshold, retake_threshold=r.retake_threshold,
                         source=r.layer_name)
            made_here(self._viewer.add_image(
                flag_raster.levels, multiscale=True, name=f"{r.layer_name} flagged", colormap=_flag_colormap(),
                contrast_limits=code_limits(1 + 2 * RING_ADD), interpolation2d="nearest", blending="translucent",
                **place, opacity=1.0, metadata={DECISIONS_KEY: dmeta}, cache=False,
                visible=False,
            ))

        def arrange() -> None:  # colour bar, read-only, legend, the tint or the outlines for the zoom, order
            if self.result is r and self._source_alive():
                view.qc_layers(self.heatmap_layer, self.decisions_layer, self.blur_layer, sync, self.native)

        view.later(add_heat, sync, self.native)
        view.later(add_flags, sync, self.native)
        self.show_combo.enabled = r.px_mode
        if r.px_mode:
            bmeta = {k: v for k, v in meta.items() if k != "metric"}  # not a score heatmap (review dock)
            bmeta.update(kind="blur_px", unit="px")

            def add_blur() -> None:
                if self.result is not r or not self._source_alive():
                    return
                hi = (self._blur_limits or (0.0, float(DEFAULT_BLUR_PX[1]) + 1.0))[1]
                bmeta["source"] = r.layer_name
                blur = made_here(self._viewer.add_image(
                    blur_raster.levels, multiscale=True, name=f"{r.layer_name} blur (px)", colormap="inferno",
                    opacity=0.45, interpolation2d="nearest", blending="translucent", **place,
                    contrast_limits=(0.0, hi), metadata={HEATMAP_KEY: bmeta}, cache=False, visible=False,
                ))
                if self._blur_limits is not None:
                    blur.metadata[HEATMAP_KEY]["contrast_limits"] = self._blur_limits
                self._set_shown(self.show_combo.value)

            view.later(add_blur, sync, self.native)
        view.later(arrange, sync, self.native)

    def _update_heat_values(self) -> None:
        r = self.result
        np.copyto(self._heat_values, r.scores)
        if r.blur is not None:
            np.copyto(self._blur_values, r.blur.excess)
        if r.by_file and r.cell_owner is not None:
            own = r.cell_owner
            np.copyto(self._cell_scores, np.where(own >= 0, r.scores[np.maximum(own, 0)], np.nan))

    def _refresh_layers_throttled(self, force: bool = False, final: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_refresh < REFRESH_S:
            return
        self._last_refresh = now
        self._update_heat_values()
        heat = self.heatmap_layer
        finite = self.result.scores[np.isfinite(self.result.scores)]
        if heat is not None:
            if finite.size:
                lo, hi = float(finite.min()), float(finite.max())
                heat.contrast_limits = (lo, hi if hi > lo else lo + 1e-6)
            redraw(heat, final=final)
        blur = self.blur_layer
        if blur is not None:
            redraw(blur, final=final)
        flags = self.decisions_layer
        if final and flags is not None:
            redraw(flags, final=True)  # its thumbnail from the run's decisions

    def _set_progress(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last_progress < PROGRESS_S:
            return
        self._last_progress = now
        self.progress.max = max(1, total)
        self.progress.value = done

    def _on_yield(self, msg: Any) -> None:
        r = self.result
        if isinstance(msg, SectionScores):
            r.scores[msg.z] = msg.scores
            self._sections_done.add(int(msg.z))
            bm = msg.extras.get("blurmap")
            if bm is not None and r.blur is not None:
                r.blur.set(msg.z, bm)
            self._refresh_layers_throttled(force=msg.z == 0)
            self._set_progress(msg.z + 1, r.scores.shape[0])
        elif isinstance(msg, FileScores):
            r.scores[msg.index] = msg.score
            fb = file_blur(msg)
            if fb is not None and r.blur is not None:
                r.blur.set(msg.index, fb.reshape(()))
            self._refresh_layers_throttled()
        elif isinstance(msg, AcquisitionQC):
            r.acquisition = msg
        elif isinstance(msg, Progress):
            self._set_progress(msg.done, msg.total)

    def _on_error(self, exc: BaseException) -> None:
        notify(f"Focus scoring failed: {exc}", "error")

    def _source_renamed(self, event: Any = None) -> None:
        """The scored image was renamed: its QC layers follow (``<new name> focus`` ...), so the
        correction dock and the hover still find its result. If a layer of the user's already has one of
        the new names, nothing is renamed and the result stays under the old name (said once).
        """
        src = self._source_ref() if self._source_ref is not None else None
        r = self.result
        if r is None or src is None or src.name == r.layer_name:
            return
        old, new = r.layer_name, src.name
        ours = {s: plugin_layer(self._viewer, f"{old} {s}") for s in QC_LAYER_SUFFIXES}
        clash = name_in_the_way(self._viewer, [f"{new} {s}" for s, lyr in ours.items() if lyr is not None])
        if clash:
            notify(f"'{old}' was renamed '{new}', but {clash}; its QC result stays under '{old}'", "warning")
            return
        r.layer_name = new
        for suffix, lyr in ours.items():
            if lyr is None:
                continue
            for key in (HEATMAP_KEY, DECISIONS_KEY):
                if key in lyr.metadata:
                    lyr.metadata[key]["source"] = new
            lyr.name = f"{new} {suffix}"

    def _remove_qc_layers(self, image: str) -> None:
        """Remove the QC layers of ``image`` the dock made (never a layer of the user's)."""
        for suffix in QC_LAYER_SUFFIXES:
            old = plugin_layer(self._viewer, f"{image} {suffix}")
            if old is not None:
                self._viewer.layers.remove(old)

    def _source_alive(self) -> bool:
        """The image this run scores is still in the viewer (else its QC layers are not added)."""
        src = self._source_ref() if self._source_ref is not None else None
        return src is not None and any(x is src for x in self._viewer.layers)

    def _on_finished(self) -> None:
        r = self.result
        if r is None:
            return
        if not self._source_alive():  # removed while it was scored: nothing to show it on
            self._remove_qc_layers(r.layer_name)
            notify(f"'{r.layer_name}' was removed while it was scored: its QC result is not shown", "warning")
            return
        finite = r.scores[np.isfinite(r.scores)]
        self._refresh_layers_throttled(force=True, final=True)
        stopped = self._stopped_text(r)
        if finite.size == 0 and stopped:  # cancelled before anything was scored: say so, not "empty"
            notify(stopped, "warning")
            return
        if finite.size == 0:
            n_empty = 0 if r.empty is None else int(r.empty.sum())
            if n_empty:  # nothing to judge, but the empty tiles are shown and counted
                self._apply_decisions(np.where(r.empty, dec.EMPTY, dec.OK).astype(np.int8))
                self.count_label.value = self._count_text()
            notify(f"No tile could be scored ({n_empty} without tissue signal: empty or constant image?)"
                   if n_empty else "No tile could be scored (empty or constant image?)", "warning")
            return
        lo, hi = float(finite.min()), float(finite.max())
        if hi <= lo:
            hi = lo + 1e-6
        heat = self.heatmap_layer
        self._heat_limits = (lo, hi)  # (a heatmap still to be added takes them then)
        if heat is not None:  # fixed contrast limits over the whole stack
            heat.contrast_limits = (lo, hi)
            heat.metadata[HEATMAP_KEY]["contrast_limits"] = (lo, hi)
        if r.px_mode:  # the sliders, spin boxes and colour bar in px of excess blur
            ex = r.blur.excess[np.isfinite(r.blur.excess)]
            lo, hi = 0.0, max(float(DEFAULT_BLUR_PX[1]) + 1.0, float(np.percentile(ex, 99)) if ex.size else 0.0)
            self._blur_limits = (0.0, hi)
            blur = self.blur_layer
            if blur is not None:
                blur.contrast_limits = (0.0, hi)
                blur.metadata[HEATMAP_KEY]["contrast_limits"] = (0.0, hi)
            run = r
            review_view(self._viewer).later(lambda: self._update_astigmatism() if self.result is run else None,
                                            getattr(self, "_sync", True), self.native)
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
                w.min = 0.0 if r.px_mode else -1e9
        finally:
            self._updating = False
        for w in (self.correct_slider, self.correct_spin, self.retake_slider, self.retake_spin,
                  self.auto_btn, self.export_btn):
            w.enabled = True
        elapsed = time.perf_counter() - self._t0
        if stopped:
            notify(stopped, "warning")
        self._draw_histogram()
        if r.px_mode:  # px thresholds transfer between datasets: start from the defaults
            self.set_thresholds_px(*DEFAULT_BLUR_PX)
        else:
            self.suggest_thresholds()
        unit = "acquisition tiles" if r.by_file else "tiles"
        self.hover_label.value = f"{r.scores[np.isfinite(r.scores)].size} {unit} scored in {elapsed:.1f} s"

    def _stopped_text(self, r: QCResult) -> str | None:
        """"Scoring stopped: ..." when the run ended before scoring everything, else None."""
        if r.by_file:
            if r.acquisition is None:
                return f"Scoring stopped: {int(self.progress.value)} of {len(r.scores)} acquisition tiles scored"
            return None
        done = len(self._sections_done)  # (empty and too-small tiles stay NaN in a finished section)
        if done < r.scores.shape[0]:
            return f"Scoring stopped: {done} of {r.scores.shape[0]} sections scored"
        return None

    def show(self, what: str) -> None:
        """Show the blur map in px (``"blur (px)"``) or the focus score (``"focus score"``) as the heatmap."""
        if what not in SHOW_CHOICES:
            raise ValueError(f"show one of {SHOW_CHOICES}, not {what!r}")
        if self.show_combo.value != what:
            self.show_combo.value = what  # calls back here
            return
        if self._set_shown(what):  # during the layers' set-up the review view shows the chosen one
            review_view(self._viewer).apply_policy((self.blur_layer, self.heatmap_layer))

    def _set_shown(self, what: str) -> bool:
        """Record which heatmap is the tint (kept in the layers' metadata: the review view shows the
        chosen one zoomed out and hides both closer in); False if the QC layers are not there.
        """
        heat, blur = self.heatmap_layer, self.blur_layer
        if blur is None or heat is None:
            return False
        blur.metadata[HEATMAP_KEY]["shown"] = what == SHOW_CHOICES[0]
        heat.metadata[HEATMAP_KEY]["shown"] = what != SHOW_CHOICES[0]
        return True

    def _update_astigmatism(self) -> None:
        """One line per clearly anisotropic tile or file: along the excess blur's major axis, centred
        on it, ``0.9 (1 - minor / major)`` of its side long (image pixel coordinates).
        """
        r = self.result
        if r is None or r.blur is None:
            return
        b = r.blur
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(b.excess_major > 0, b.excess_minor / b.excess_major, 1.0)
            sel = np.isfinite(b.excess_major) & (b.excess_major >= ASTIGMATISM_MIN_PX) & (ratio < ASTIGMATISM_RATIO)
        idx = np.nonzero(sel)
        if r.by_file:  # centre and side of each file's footprint
            t = [r.tiles[int(k)] for k in idx[0]] if r.tiles else []
            z = np.array([a.z for a in t], np.float64)
            cy = np.array([a.y0 + a.height / 2 for a in t], np.float64)
            cx = np.array([a.x0 + a.width / 2 for a in t], np.float64)
            side = np.array([min(a.height, a.width) for a in t], np.float64)
        else:
            z = idx[0].astype(np.float64)
            cy, cx = (idx[1] + 0.5) * r.tile, (idx[2] + 0.5) * r.tile
            side = np.full(len(z), float(r.tile))
        a = np.radians(b.excess_angle[sel].astype(np.float64))
        length = 0.9 * (1.0 - ratio[sel]) * side
        dy, dx = np.sin(a) * length, np.cos(a) * length  # angle from +x towards +y (rows)
        pos = np.stack([cy - dy / 2, cx - dx / 2], axis=1)
        vec = np.stack([dy, dx], axis=1)
        if r.is_stack:
            pos = np.concatenate([z[:, None], pos], axis=1)
            vec = np.concatenate([np.zeros((len(z), 1)), vec], axis=1)
        nd = 3 if r.is_stack else 2
        data = np.stack([pos, vec], axis=1) if len(z) else np.zeros((0, 2, nd))
        place = self._image_place
        meta = {HEATMAP_KEY: {"source": r.layer_name, "tile": r.tile, "kind": "astigmatism",
                              "ratio_below": ASTIGMATISM_RATIO}}
        feats = {"ratio": ratio[sel].astype(np.float32), "angle": b.excess_angle[sel].astype(np.float32)}
        old = self.astigmatism_layer
        if old is not None:
            self._viewer.layers.remove(old)
        layer = made_here(self._viewer.add_vectors(
            data, name=f"{r.layer_name} astigmatism", edge_width=max(2.0, 0.02 * r.tile), length=1.0,
            edge_color="#7cff4f", vector_style="line", **place, ndim=nd, features=feats,
            metadata=meta, visible=False))  # added hidden: its first paint a set-up step of its own
        review_view(self._viewer).show_later(layer, getattr(self, "_sync", True), self.native, in_grid=False)

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

    def _apply_decisions(self, decisions: np.ndarray) -> None:
        """Write decisions in place (the flags layer draws from them when sliced: a refresh of what
        is on screen is all it needs), into the grid view of a mosaic too.
        """
        r = self.result
        np.copyto(r.decisions, decisions)
        if r.by_file:
            owner = r.cell_owner
            if owner is not None:
                np.copyto(r.cell_decisions, np.where(owner >= 0, r.decisions[np.maximum(owner, 0)], 0))
        labels = self.decisions_layer
        if labels is not None:
            review_view(self._viewer).flags_changed(labels)  # refreshes the flags on screen

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
        if r.by_file and r.acquisition is not None:
            r.acquisition.set_thresholds(c, t)
        self._apply_decisions(dec.classify(r.scores, c, t, empty=r.empty))  # one policy: qc.decisions
        labels = self.decisions_layer
        if labels is not None:
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
            text += f" | empty {self.empty_count}"
        return text

    @property
    def empty_count(self) -> int:
        """Tiles (or files) without tissue signal (decided empty; never corrected)."""
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
        ax.hist(finite, bins=min(60, max(10, finite.size // 5)), color="0.45", histtype="stepfilled")  # one patch
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
        layer = layer_by_name(self._viewer, self.result.layer_name) if self.result else None
        if layer is None:
            return
        info = self.tile_info_at(layer.world_to_data(event.position))
        if info:
            self.hover_label.value = info
            if self.result is not None and self.result.by_file:
                viewer.status = info

    def tile_info_at(self, idx) -> str:
        """What the tile under image pixel ``idx`` (data coordinates: ``(y, x)`` or ``(z, y, x)``)
        is: for a mosaic the file's name, score and decision; for a grid the tile's grid index.
        """
        r = self.result
        if r is None or r.footprints is None:
            return ""
        z = int(np.round(idx[0])) if r.is_stack else 0
        if not 0 <= z < (r.image_shape[0] if r.is_stack else 1):
            return ""
        y, x = float(idx[-2]), float(idx[-1])
        owner = r.footprints.owner_at(z, y, x)
        if owner is None:
            return ""
        if r.by_file:
            if r.acquisition is not None:
                return r.acquisition.describe(owner)
            name = Path(r.tiles[owner].path).name if r.tiles else str(owner)
            s = r.scores[owner]
            return f"{name}: {s:.3g}" if np.isfinite(s) else f"{name}: not scored yet"
        i, j = divmod(owner, r.scores.shape[2])
        s = r.scores[z, i, j]
        d = int(r.decisions[z, i, j])
        name = dec.DECISION_NAMES[d] if np.isfinite(s) or d == dec.EMPTY else "not scored"
        zs = f"z={z} " if r.is_stack else ""
        if r.blur is not None:
            b = r.blur
            if d == dec.EMPTY or b.empty[z, i, j]:
                return f"{zs}({i}, {j}): empty ({REASONS[int(b.reason[z, i, j])]})"
            if not np.isfinite(b.excess[z, i, j]):
                return f"{zs}({i}, {j}): not scored"
            return (f"{zs}({i}, {j}): blur {b.excess[z, i, j]:.2f} px ({b.excess_major[z, i, j]:.2f} / "
                    f"{b.excess_minor[z, i, j]:.2f} px at {b.excess_angle[z, i, j]:.0f} deg), total "
                    f"{b.total_major[z, i, j]:.2f} px, noise {b.noise[z, i, j]:.3g} -> {name}")
        return f"{zs}({i}, {j}): {s:.3g} -> {name}"

    def export_csv(self, path: str | Path | None = None, subtiles: bool | None = None) -> Path | None:
        """Write the QC report: one row per grid tile, or for a mosaic one row per acquisition tile
        file (with its path; ``subtiles``, default the checkbox: also its sub-tile rows).
        """
        if self.result is None:
            notify("Score a layer before exporting", "warning")
            return None
        path = Path(path or self.csv_path.value)
        if not str(path) or path.is_dir() or path.name in ("", "."):
            notify("Choose a report file name (.csv) first", "warning")
            return None
        r = self.result
        if r.by_file:
            if r.acquisition is None:
                notify("Scoring did not finish: score the layer again before exporting", "warning")
                return None
            with_sub = bool(self.subtiles_check.value) if subtiles is None else bool(subtiles)
            rows = r.acquisition.rows(subtiles=with_sub)
            columns: tuple[str, ...] = FILE_CSV_COLUMNS
            what = f"{len(r.acquisition.files)} acquisition tile rows" + (" (+ sub-tile rows)" if with_sub else "")
        else:
            rows = []
            for z in range(r.scores.shape[0]):
                rows.extend(dec.tile_rows(r.file, z, r.grid, r.scores[z], r.decisions[z], blur=r.blur_at(z)))
            columns = dec.CSV_COLUMNS
            what = f"{len(rows)} tile rows"
        try:
            dec.write_tile_csv(path, rows, columns=columns)
        except (OSError, ValueError) as e:
            notify(f"Could not write the report: {e}", "error")
            return None
        notify(f"Wrote {what} to {path}")
        return path
