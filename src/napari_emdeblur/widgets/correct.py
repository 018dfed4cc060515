"""GRAN correction dock widget: correct tiles through the correction service without freezing the viewer.

Flow: choose the image layer and which tiles (:mod:`.selection`: flagged by the Focus QC widget's
"<image> flagged" layer, the whole image, or those under a rectangle of a Shapes layer); Run
starts :func:`napari_emdeblur.deblur.service.iter_correct` (the same generator as ``emdeblur
correct`` and the pipeline) through the shared :class:`~.runner.WorkerRunner`. Threaded runs
put the service in a spawned child process (:class:`~napari_emdeblur.deblur.remote.ProcessCorrection`):
importing torch and loading the model would otherwise stall the GUI thread for seconds, even
from a worker thread. ``run(sync=True)`` drains the same generator in the calling thread.

"<image> corrected" is made on the first message as a :class:`~.corrected.CorrectedStore` over the
original's data (multiscale when the original is): no copy, no whole-section read. The worker
thread turns each corrected tile into per-level patches; the GUI thread inserts them and asks a
:class:`~.corrected.ThrottledRefresh` to redraw. The original layer is never modified. Review
(:mod:`.review`) and export (:mod:`.export`) are mixins of the dock; :mod:`.view` arranges what
the proofreader sees.
"""

from __future__ import annotations

import sys
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.viewer import Viewer

from .._reader import redraw
from ..deblur.remote import ProcessCorrection
from ..deblur.reports import CorrectionReport, TileReport
from ..deblur.service import DEVICE_CHOICES, PRECISION_NAMES, CorrectionParams, iter_correct
from ..deblur.shipped import shipped_weights_path
from ..io.atomic import sha256_file
from ..io.formats import WRITE_SUFFIXES
from ..qc.messages import Notice, Progress, SectionScores, TileResult
from ..qc.tilemap import TileFootprints, TileRaster, raster_level_shapes
from ..qc.tiling import DEFAULT_TILE, TileGrid
from .common import (
    DECISIONS_KEY,
    REVIEW_KEY,
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
    place_like,
    placement,
    plain_viewer,
    plugin_layer,
    preselect,
    tie_to_viewer,
)
from .corrected import CorrectedStore, PreparedTile, ThrottledRefresh
from .export import ExportMixin
from .review import REVIEW_CHECK, REVIEW_COLORS, REVIEW_LEGEND, ReviewMixin
from .runner import WorkerRunner
from .selection import TILE_MODES, choose_tiles
from .view import read_only, review_view

EXPORT_FILTER = " ".join(f"*{s}" for s in WRITE_SUFFIXES)  # the export's file dialog: what the writer writes


def with_patches(gen: Any, store: CorrectedStore) -> Any:
    """The service's messages, each ``TileResult`` turned into a :class:`~.corrected.PreparedTile`
    (its per-level patches are made here, in the worker thread). Returns the service's value.
    """
    try:
        while True:
            try:
                msg = next(gen)
            except StopIteration as end:
                return end.value
            if isinstance(msg, TileResult):
                msg = PreparedTile(msg, store.prepare((msg.z, msg.row, msg.col), msg.y0, msg.x0, msg.data))
            yield msg
    finally:
        gen.close()


#: the layers a correction run makes: "<image> <suffix>"
CORRECTION_LAYER_SUFFIXES = ("corrected", "review", "PSNR gain", "corrected focus")


class CorrectionWidget(ReviewMixin, ExportMixin, Container):
    """Dock widget: image, tiles, model and device; Run / Cancel; review; export."""

    use_process = True  # threaded runs: the service in a child process (False: in the worker thread)
    refresh_interval_ms = 250.0  # the corrected layer is redrawn at most this often

    def __init__(self, napari_viewer: Viewer):
        viewer = plain_viewer(napari_viewer)
        super().__init__(labels=True)
        self._viewer = viewer
        self.reports: dict[tuple[int, int, int], TileReport] = {}
        self.after_scores: np.ndarray | None = None  # (Z, rows, cols) focus of the corrected layer
        self.source_name: str | None = None
        self.grid: TileGrid | None = None
        self._layers_ready = False
        self._sync = True
        self._run_id = 0
        self._linked: set[tuple[int, int]] = set()
        self._store: CorrectedStore | None = None
        self._patches: dict = {}  # (z, row, col) -> TilePatch, kept for accept after a revert
        self.job: ProcessCorrection | None = None
        self.eta_log: list[tuple[float, int, int, float | None]] = []  # (t, done, total, eta_s)
        # redraws: throttled, only what is in view, the status line in the same repaint
        cam = viewer.scene.camera
        self._refresh = ThrottledRefresh(lambda: self.corrected_layer, self.refresh_interval_ms, parent=self.native,
                                         camera=cam, on_refresh=self._after_refresh)
        self._refresh_marks = ThrottledRefresh(lambda: self.review_layer, self.refresh_interval_ms,
                                               parent=self.native, camera=cam, update=self._apply_marks)
        self._pending_marks: dict[tuple[int, int, int], int] = {}
        from qtpy.QtCore import QTimer

        self._progress_timer = QTimer(self.native)  # the status line when nothing is redrawn
        self._progress_timer.setSingleShot(True)
        self._progress_timer.setInterval(1000)
        self._progress_timer.timeout.connect(self._show_progress)
        self._progress_msg: Progress | None = None
        self._before: dict[int, np.ndarray] = {}
        self._qc_metric: str | None = None
        self._corrected_ref: Any = None  # weak ref of the run's corrected layer
        self._removed_notice = False
        self._meta: dict = {}

        self.layer_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.tiles_combo = ComboBox(label="tiles", choices=TILE_MODES, value=TILE_MODES[0])
        self.shapes_combo = ComboBox(label="rectangle layer", choices=self._shapes_choices, nullable=True)
        self.gt_combo = ComboBox(label="ground truth", choices=self._gt_choices, nullable=True, value=None)
        self.qc_tile_spin = SpinBox(label="QC tile (px)", value=DEFAULT_TILE, min=16, max=16384, step=16)
        self.weights_edit = FileEdit(label="weights (.pt)", mode="r", filter="*.pt", value="")
        self.device_combo = ComboBox(label="device", choices=DEVICE_CHOICES, value="auto")
        self.device_label = compact(Label(label="", value=self._device_text("auto", probe=False)))
        self.precision_combo = ComboBox(label="precision", choices=PRECISION_NAMES, value="fp32")
        self.tile_spin = SpinBox(label="inference tile (0=auto)", value=0, min=0, max=4096, step=64)
        self.batch_spin = SpinBox(label="batch (0=auto)", value=0, min=0, max=256)
        self.ensemble_check = CheckBox(label="quality mode (8 flips/rotations, 8x slower)", value=False)
        self.gate_check = CheckBox(label="do no harm (sharp windows unchanged)", value=True,
                                   tooltip="Windows the QC calls sharp, and windows blurred beyond what the model "
                                           "was trained on (> 5 px), come out byte for byte; off: the network "
                                           "output everywhere (it also removes real detector noise)")
        self.run_btn = PushButton(text="Correct tiles")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = compact(Label(label="status", value=""))
        self.view_btn = PushButton(text="Toggle grid / overlay")
        self.sel_z = SpinBox(label="section", value=0, min=0, max=100000)
        self.sel_row = SpinBox(label="tile row", value=0, min=0, max=100000)
        self.sel_col = SpinBox(label="tile col", value=0, min=0, max=100000)
        self.accept_btn = PushButton(text="Accept tile")
        self.revert_btn = PushButton(text="Revert tile")
        self.retake_btn = PushButton(text="Mark retake")
        self.tile_label = compact(Label(label="tile", value=""))
        self.export_path = FileEdit(label="export to", mode="w", filter=EXPORT_FILTER, value="")
        self.export_report = CheckBox(label="with report (CSV+JSON)", value=True)
        self.export_btn = PushButton(text="Export")
        self.extend([
            self.layer_combo, self.tiles_combo, self.shapes_combo, self.gt_combo, self.qc_tile_spin,
            self.weights_edit, self.device_combo, self.device_label, self.precision_combo, self.tile_spin,
            self.batch_spin, self.ensemble_check, self.gate_check, self.run_btn, self.cancel_btn, self.progress, self.status, self.view_btn,
            self.sel_z, self.sel_row, self.sel_col, self.accept_btn, self.revert_btn, self.retake_btn,
            self.tile_label, self.export_path, self.export_report, self.export_btn,
        ])
        self.run_btn.changed.connect(lambda: self.run())
        self.cancel_btn.changed.connect(self.cancel)
        self.view_btn.changed.connect(self.toggle_view)
        self.device_combo.changed.connect(lambda v: setattr(self.device_label, "value", self._device_text(v)))
        self.accept_btn.changed.connect(lambda: self.review(*self._selected(), "accept"))
        self.revert_btn.changed.connect(lambda: self.review(*self._selected(), "revert"))
        self.retake_btn.changed.connect(lambda: self.review(*self._selected(), "retake"))
        for w in (self.sel_z, self.sel_row, self.sel_col):
            w.changed.connect(self._show_selected)
        self.export_btn.changed.connect(lambda: self.export(sync=False))
        tie_to_viewer(self, viewer, layers_changed=self._refresh_layers, mouse_drag=self._on_click)
        self._runner = WorkerRunner(self, self._on_yield, self._on_error, self._on_finished, self._set_busy)
        self._refresh_layers()

    # ------------------------------------------------------------------ layer lists
    def _image_choices(self, *_):
        return [l.name for l in image_layers(self._viewer) if not l.name.endswith((" corrected", " PSNR"))]

    def _gt_choices(self, *_):
        return [l.name for l in image_layers(self._viewer)]

    def _shapes_choices(self, *_):
        from napari.layers import Shapes

        return [l.name for l in self._viewer.layers if isinstance(l, Shapes)]

    def _refresh_layers(self, *_):
        for combo in (self.layer_combo, self.gt_combo, self.shapes_combo):
            cur = combo.value
            combo.reset_choices()
            if cur in combo.choices:
                combo.value = cur
        preselect(self.layer_combo, self._viewer)

    @staticmethod
    def _device_text(choice: str, probe: bool = True) -> str:
        """What ``choice`` resolves to. Without ``probe`` and before torch is loaded, ``auto``
        is described instead of resolved: opening the dock must not cost the torch import
        (seconds); the run reports the device it got (and this label shows it then).
        """
        if "torch" not in sys.modules:  # never import torch on the GUI thread
            if choice == "auto":
                return "-> CUDA, else Apple MPS, else CPU (shown when a run starts)"
            return f"-> {choice} (checked when a run starts)"
        if not probe and choice == "auto":
            return "-> CUDA, else Apple MPS, else CPU (shown when a run starts)"
        try:
            from ..deblur.device import device_name, resolve_device

            return f"-> {device_name(resolve_device(choice))}"
        except Exception as e:  # e.g. cuda asked but absent
            return f"unavailable: {e}"

    def _offer_gpus(self, n: int) -> None:
        """With several GPUs (as the correction process found them), offer each one (``cuda:N``)."""
        if n < 2:
            return
        extra = tuple(f"cuda:{i}" for i in range(n))
        choices = tuple(self.device_combo.choices)
        if not set(extra) <= set(choices):
            current = self.device_combo.value
            self.device_combo.choices = DEVICE_CHOICES + extra
            self.device_combo.value = current

    @property
    def corrected_layer(self):
        ref = self._corrected_ref() if self._corrected_ref is not None else None
        if ref is not None and any(x is ref for x in self._viewer.layers):  # also when the user renamed it
            return ref
        return plugin_layer(self._viewer, f"{self.source_name} corrected") if self.source_name else None

    @property
    def review_layer(self):
        return plugin_layer(self._viewer, f"{self.source_name} review") if self.source_name else None

    # ------------------------------------------------------------------ run
    def params(self) -> CorrectionParams:
        w = str(self.weights_edit.value)
        return CorrectionParams(
            weights=w if w not in ("", ".") and Path(w).is_file() else None,
            device=str(self.device_combo.value), precision=str(self.precision_combo.value),
            tile=int(self.tile_spin.value), batch=int(self.batch_spin.value),
            qc_tile=int(self.qc_tile_spin.value), metric=self._qc_metric, ensemble=bool(self.ensemble_check.value),
            keep_sharp=bool(self.gate_check.value),
        )

    @property
    def idle(self) -> bool:
        """True when no run is going and the layers it set up are all in the viewer."""
        return self.worker is None and review_view(self._viewer).idle

    @property
    def worker(self):
        """The running napari worker, or None."""
        return self._runner.worker

    def run(self, sync: bool = False) -> None:
        """Correct the chosen tiles. ``sync=True`` drains the same generator in this thread."""
        layer = layer_to_run(self._viewer, self._runner.running, self.layer_combo.value,
                             "A correction is already running", "Choose an image layer to correct")
        if layer is None:
            return
        self._qc_metric = None
        try:
            data = grayscale_data(layer)
            if np.dtype(data.dtype).kind == "f":
                raise ValueError(f"Floating-point image: GRAN corrects 8- or 16-bit EM (layer '{layer.name}')")
            w = str(self.weights_edit.value)
            if w not in ("", ".") and not Path(w).is_file():
                raise ValueError(f"Weights file not found: {w}")
            choice = choose_tiles(self._viewer, layer, data, str(self.tiles_combo.value),
                                  int(self.qc_tile_spin.value), self.shapes_combo.value)
            self.qc_tile_spin.value, self._qc_metric = choice.qc_tile, choice.metric
            gt_layer = layer_by_name(self._viewer, self.gt_combo.value)
            made = [s for s in CORRECTION_LAYER_SUFFIXES if s != "PSNR gain" or gt_layer is not None]
            clash = name_in_the_way(self._viewer, [f"{layer.name} {s}" for s in made])
            if clash:
                raise ValueError(clash)
            gt = None
            if gt_layer is not None:
                gt = grayscale_data(gt_layer)
                if tuple(gt.shape) != tuple(data.shape):
                    raise ValueError(f"Ground truth shape {tuple(gt.shape)} differs from the image's "
                                     f"{tuple(data.shape)} ('{gt_layer.name}')")
        except ValueError as e:
            notify(str(e), "error")
            return
        if not choice.selection.whole and not len(choice.selection):
            notify("No tiles to correct (none flagged at the current thresholds?)", "info")
            return
        params = self.params()
        n_tiles = (data.shape[0] if data.ndim == 3 else 1) * TileGrid(tuple(data.shape[-2:]), params.qc_tile).n_tiles
        self._prepare(layer, data, params, n_tiles if choice.selection.whole else len(choice.selection), gt is not None)
        stop = None
        self._sync = sync
        if sync or not self.use_process:
            gen = iter_correct(data, choice.selection, params, ground_truth=gt)
            self.job = None
        else:
            self.job = ProcessCorrection(data, choice.selection, params, ground_truth=gt)
            gen, stop = self.job.messages(), self.job.stop
            self.status.value = "starting the model (first run: several seconds)..."
        assert self._store is not None
        self._runner.start(with_patches(gen, self._store), sync=sync, stop=stop)

    def cancel(self) -> None:
        """Stop a running correction after the current batch."""
        if self._runner.running:
            self._runner.quit()
            self.status.value = "cancelling after the current batch..."

    def _set_busy(self, busy: bool) -> None:
        self.run_btn.enabled = not busy
        self.cancel_btn.enabled = busy

    def _prepare(self, layer, data, params: CorrectionParams, n_tiles: int, with_gt: bool) -> None:
        self._run_id += 1
        self._corrected_ref = None
        self._removed_notice = False
        self.source_name = layer.name
        self.grid = TileGrid(tuple(data.shape[-2:]), params.qc_tile)
        self.reports = {}
        self._patches = {}
        self.eta_log = []
        self._refresh.stop()
        self._refresh_marks.stop()
        self._pending_marks = {}
        self._progress_msg = None
        self._store = CorrectedStore(list(layer.data) if layer.multiscale else [data])
        self._before = {}
        self._is_stack = data.ndim == 3
        self._data = data
        self._with_gt = with_gt
        self._t0 = time.perf_counter()
        self._meta = {
            "source_layer": layer.name, "device": self.device_combo.value, "precision": params.precision,
            "weights": params.weights or "shipped", "qc_tile": params.qc_tile, "tiles_requested": n_tiles,
            "thresholds": self._qc_thresholds(layer.name),
        }
        card = (Path(params.weights) if params.weights else shipped_weights_path()).with_suffix(".json")
        self._meta["model_card_sha256"] = sha256_file(card) if card.is_file() else None
        self._pending = (layer, data, params)
        self._layers_ready = False
        self.progress.max = max(1, n_tiles)
        self.progress.value = 0

    def _create_layers(self) -> None:
        """Create (or reset) the corrected and review layers; called on the worker's first message,
        i.e. once the model has loaded, so a run that fails to start leaves no layer behind.
        """
        layer, data, params = self._pending
        self._layers_ready = True
        with_gt = self._with_gt
        store = self._store
        assert store is not None
        shown = store.levels if layer.multiscale else store.levels[0]
        corrected = self.corrected_layer
        if corrected is not None and (corrected.multiscale != layer.multiscale
                                      or tuple(corrected.level_shapes[0]) != tuple(store.levels[0].shape)):
            self._viewer.layers.remove(corrected)
            corrected = None
        if corrected is None:
            corrected = made_here(self._viewer.add_image(
                shown, name=f"{layer.name} corrected", **placement(layer),
                colormap=layer.colormap, contrast_limits=layer.contrast_limits, multiscale=layer.multiscale,
                visible=False,  # shown in a set-up step of its own (below): its first paint a pause of its own
            ))
            review_view(self._viewer).show_later(corrected, self._sync, self.native)
        else:
            corrected.data = shown
        self._corrected_ref = weakref.ref(corrected)  # the run's layer, whatever it gets called
        corrected.metadata["emdeblur_correction"] = dict(self._meta, corrected_tiles=[])
        # the writer refuses to write over the layer's emdeblur_source: the original's file
        for key in ("emdeblur_source", "pixel_size", "z_spacing"):
            if key in layer.metadata:
                corrected.metadata[key] = layer.metadata[key]
        src_path = getattr(layer.source, "path", None)
        if src_path and "emdeblur_source" not in corrected.metadata:
            corrected.metadata["emdeblur_source"] = str(src_path)
        self._link_contrast(layer, corrected)
        gt_layer = layer_by_name(self._viewer, self.gt_combo.value)
        if gt_layer is not None:
            self._link_contrast(layer, gt_layer)
        # the per-tile layers (review marks, PSNR gain, corrected focus) are drawn on the tiles' true
        # footprints at every level of the image, placed as the image (partial edge tiles end at its edge)
        place = placement(layer)
        shape = (data.shape[0] if self._is_stack else 1, *self.grid.grid_shape)
        self._review = np.zeros(shape, np.uint8)
        self._psnr = np.full(shape, np.nan, np.float32) if with_gt else None
        self._placement = place
        self._tile_footprints = TileFootprints.from_grid(tuple(int(s) for s in data.shape), params.qc_tile)
        self._tile_shapes = raster_level_shapes(
            tuple(int(s) for s in data.shape),
            [tuple(int(v) for v in s) for s in layer.level_shapes] if layer.multiscale else None)
        review_levels = self._tile_levels(self._review, 0)
        source, gt_name, review_meta = layer.name, self.gt_combo.value, {"tile": params.qc_tile}
        view = review_view(self._viewer)

        def add_review() -> None:  # its own set-up step: the corrected layer's first paint runs before
            if self.source_name != source:  # a newer run on another image
                return
            self._write_marks()
            review = self.review_layer
            if review is None:
                review = made_here(self._viewer.add_image(
                    review_levels, multiscale=True, name=f"{source} review", **place,
                    colormap=code_colormap(REVIEW_COLORS, "emdeblur review"),
                    contrast_limits=code_limits(len(REVIEW_COLORS)), interpolation2d="nearest",
                    blending="translucent", metadata={REVIEW_KEY: review_meta}, visible=False, cache=False,
                ))
                view.show_later(review, self._sync, self.native)
            else:  # a new run (maybe on another grid or image size): new data, placed as the image
                review.data = review_levels
                place_like(review, place)
                review.metadata[REVIEW_KEY] = review_meta
            read_only(review)

        def arrange() -> None:
            if not self._viewer.canvas.grid.enabled:
                view.overlay_order(source, gt_name)

        view.later(add_review, self._sync, self.native)
        view.later(arrange, self._sync, self.native)
        view.legend_steps("2 review", REVIEW_LEGEND, self._sync, self.native)

    def _qc_thresholds(self, name: str) -> dict:
        for l in self._viewer.layers:
            m = l.metadata.get(DECISIONS_KEY)
            if m and m.get("source") == name:
                return {k: m.get(k) for k in ("correct_threshold", "retake_threshold", "metric", "tile")}
        return {}

    def _show_progress(self) -> None:
        msg = self._progress_msg
        if msg is None:
            return
        self._progress_timer.stop()
        bar = self.progress.native
        bar.setUpdatesEnabled(False)  # QProgressBar repaints synchronously; this way it joins the next paint
        try:
            self.progress.max = max(1, msg.total)
            self.progress.value = msg.done
        finally:
            bar.setUpdatesEnabled(True)
        eta = f", about {_duration(msg.eta_s)} left" if msg.eta_s is not None and msg.done < msg.total else ""
        self.status.value = f"{msg.done} / {msg.total} tiles{eta}"

    def _write_marks(self) -> bool:
        """Pending review marks into the review grid (the review layer's data); True if any."""
        marks, self._pending_marks = self._pending_marks, {}
        for key, code in marks.items():
            self._review[key] = code
        return bool(marks)

    def _apply_marks(self, review: Any, full: bool) -> None:
        """Pending review marks into the review layer (its tile raster reads them)."""
        if self._write_marks() or full:
            redraw(review, thumbnail=full, final=full)

    def _tile_levels(self, values: np.ndarray, fill: Any) -> list:
        """One value per tile of this run (``values``: (Z, rows, cols), kept by reference) as the
        lazy levels of a multiscale layer over the image (``qc.tilemap.TileRaster``).
        """
        return TileRaster(self._tile_footprints, values, self._tile_shapes, fill=fill, dtype=values.dtype).levels

    def _after_refresh(self) -> None:
        """Right after the corrected layer's refresh: the marks and the status line join its repaint."""
        self._refresh_marks.flush(everything=False)
        self._show_progress()

    def _world_box(self, box: tuple[int, int, int, int]) -> tuple[float, float, float, float] | None:
        """A tile ``(y0, x0, h, w)`` of the source image in world coordinates."""
        src = layer_by_name(self._viewer, self.source_name)
        if src is None:
            return None
        y0, x0, h, w = box
        scale = np.asarray(src.scale, float)[-2:]
        tr = np.asarray(src.translate, float)[-2:]
        return (tr[0] + (y0 - 0.5) * scale[0], tr[1] + (x0 - 0.5) * scale[1],
                tr[0] + (y0 + h - 0.5) * scale[0], tr[1] + (x0 + w - 0.5) * scale[1])

    def _flush_ui(self) -> None:
        """Apply what is pending now (end of a run)."""
        self._refresh.flush()
        self._refresh_marks.flush()
        self._progress_timer.stop()
        self._show_progress()

    def _on_yield(self, msg: Any) -> None:
        if isinstance(msg, Notice) and msg.info and "device" in msg.info:
            self.device_label.value = f"-> {msg.info['device']}"
            self._meta["device"] = msg.info["device"]
            self._offer_gpus(int(msg.info.get("gpus") or 0))
        if not self._layers_ready:
            self._create_layers()
        if isinstance(msg, PreparedTile):
            corrected = self.corrected_layer
            if corrected is None or self._store is None:
                self._stop_without_layer()
                return
            patch, msg = msg.patch, msg.result
            self._store.put(patch)  # a dict insert: the pixels were prepared in the worker
            self._patches[patch.key] = patch
            box = self._world_box(patch.box)
            self._refresh.request(box)
            rep = TileReport.from_dict(msg.info)
            key = (msg.z, msg.row, msg.col)
            self.reports[key] = rep
            corrected.metadata["emdeblur_correction"]["corrected_tiles"].append(list(key))
            if rep.check_by_eye:
                self._pending_marks[key] = REVIEW_CHECK  # drawn with the next refresh, as a partial update
                self._refresh_marks.request(box)
            if self._psnr is not None and np.isfinite(rep.psnr_after):
                self._psnr[key] = rep.psnr_after - rep.psnr_before
        elif isinstance(msg, SectionScores):
            self._before[msg.z] = msg.scores
        elif isinstance(msg, Progress):
            self.eta_log.append((time.perf_counter(), msg.done, msg.total, msg.eta_s))
            self._progress_msg = msg
            if not self._progress_timer.isActive():
                self._progress_timer.start()
        elif isinstance(msg, Notice):
            self.status.value = msg.message
            if msg.level != "info":  # warnings pop up; the start notice stays in the status line
                notify(msg.message, msg.level)
        elif isinstance(msg, CorrectionReport):
            corrected = self.corrected_layer
            if corrected is not None:
                run = {k: v for k, v in msg.meta.items() if k not in self._meta}
                corrected.metadata["emdeblur_correction"].update(run)

    def _stop_without_layer(self) -> None:
        """The corrected layer was removed during the run: stop it, saying so once (the tiles
        corrected so far stay in the reports; correcting again shows them).
        """
        if self._runner.running and not self._removed_notice:
            self._removed_notice = True
            notify(f"The corrected layer of '{self.source_name}' was removed: correction stopped after "
                   f"{len(self.reports)} tiles", "warning")
            self.cancel()

    def _on_error(self, exc: BaseException) -> None:
        self._flush_ui()
        notify(f"Correction failed: {exc}", "error")
        self.status.value = f"failed: {exc}"

    def _on_finished(self) -> None:
        self._flush_ui()
        if not self._layers_ready:
            return
        n = len(self.reports)
        flagged = sum(r.check_by_eye for r in self.reports.values())
        el = time.perf_counter() - self._t0
        self.status.value = f"{n} tiles corrected in {el:.1f} s; {flagged} to check by eye"
        corrected = self.corrected_layer
        if corrected is not None:
            corrected.metadata["emdeblur_correction"]["tiles_corrected"] = n
        run, view = self._run_id, review_view(self._viewer)  # the new layers: one set-up step each
        if self._psnr is not None and n:
            view.later(lambda: self._show_psnr() if self._run_id == run else None, self._sync, self.native)
        view.later(lambda: self._update_qc_after() if self._run_id == run else None, self._sync, self.native)


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
