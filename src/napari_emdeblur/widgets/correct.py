"""GRAN correction dock widget: correct flagged tiles in a worker, review side by side, export.

Flow: choose the image layer and which tiles (flagged by the Focus QC widget's "<image> flagged"
layer, all, or those under a rectangle of a Shapes layer); Run creates "<image> corrected" at once
(a copy of the original) and fills it tile by tile as the worker yields results; the original
layer is never modified. Accept / revert / retake per tile; grid or overlay view; export the
corrected layer (TIFF / OME-TIFF / OME-Zarr) and the per-tile report (CSV + JSON), atomically.

torch is imported only inside the worker (through the core), never at import of this module.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import asdict
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

from ..core import decisions as dec
from ..core.correction import (
    CorrectionParams,
    TileReport,
    iter_correct_section,
    tiles_from_decisions,
    tiles_in_rectangle,
    write_reports,
)
from ..core.progress import Notice, Progress, SectionScores, TileResult
from ..core.tiling import TileGrid, heatmap_transform
from ._common import (DECISIONS_KEY, HEATMAP_KEY, drain, grayscale_data, image_layers, layer_by_name, notify,
                      tie_to_viewer)

from napari.viewer import Viewer

TILE_MODES = ("flagged (QC)", "all", "rectangle (Shapes)")
REVIEW_COLORS = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (0.1, 0.9, 0.3, 0.5), 2: (1.0, 0.1, 0.1, 0.65),
                 3: (0.2, 0.6, 1.0, 0.6)}
REVIEW_ACCEPTED, REVIEW_RETAKE, REVIEW_CHECK = 1, 2, 3
MAX_LAZY_BYTES = 1 << 30  # lazy (dask) layers above this are left to `emdeblur correct`


class CorrectionWidget(Container):
    def __init__(self, napari_viewer: Viewer):
        viewer = napari_viewer
        super().__init__(labels=True)
        self._viewer = viewer
        self._worker = None
        self.reports: dict[tuple[int, int, int], TileReport] = {}
        self.after_scores: np.ndarray | None = None  # (Z, rows, cols) focus of the corrected layer
        self.source_name: str | None = None
        self.grid: TileGrid | None = None
        self._layers_ready = False
        self._errored = False
        self._gen = None
        self._linked: set[tuple[int, int]] = set()
        self._saved_visibility: dict[str, bool] | None = None
        self._corrected_pixels: dict[tuple[int, int, int], np.ndarray] = {}
        self._before: dict[int, np.ndarray] = {}
        self._qc_metric: str | None = None
        self._meta: dict = {}

        self.layer_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.tiles_combo = ComboBox(label="tiles", choices=TILE_MODES, value=TILE_MODES[0])
        self.shapes_combo = ComboBox(label="rectangle layer", choices=self._shapes_choices, nullable=True)
        self.gt_combo = ComboBox(label="ground truth", choices=self._gt_choices, nullable=True, value=None)
        self.qc_tile_spin = SpinBox(label="QC tile (px)", value=256, min=16, max=16384, step=16)
        self.weights_edit = FileEdit(label="weights (.pt)", mode="r", filter="*.pt", value="")
        self.device_combo = ComboBox(label="device", choices=("auto", "cpu", "cuda", "mps"), value="auto")
        self.device_label = Label(label="", value=self._device_text("auto", probe=False))
        self.precision_combo = ComboBox(label="precision", choices=("fp32", "bf16", "fp16"), value="fp32")
        self.tile_spin = SpinBox(label="inference tile (0=auto)", value=0, min=0, max=4096, step=64)
        self.batch_spin = SpinBox(label="batch (0=auto)", value=0, min=0, max=256)
        self.run_btn = PushButton(text="Correct tiles")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = Label(label="status", value="")
        self.view_btn = PushButton(text="Toggle grid / overlay")
        self.sel_z = SpinBox(label="section", value=0, min=0, max=100000)
        self.sel_row = SpinBox(label="tile row", value=0, min=0, max=100000)
        self.sel_col = SpinBox(label="tile col", value=0, min=0, max=100000)
        self.accept_btn = PushButton(text="Accept tile")
        self.revert_btn = PushButton(text="Revert tile")
        self.retake_btn = PushButton(text="Mark retake")
        self.tile_label = Label(label="tile", value="")
        self.export_path = FileEdit(label="export to", mode="w", filter="*.tif *.ome.tif *.zarr", value="")
        self.export_report = CheckBox(label="with report (CSV+JSON)", value=True)
        self.export_btn = PushButton(text="Export")
        self.extend([
            self.layer_combo, self.tiles_combo, self.shapes_combo, self.gt_combo, self.qc_tile_spin,
            self.weights_edit, self.device_combo, self.device_label, self.precision_combo, self.tile_spin,
            self.batch_spin, self.run_btn, self.cancel_btn, self.progress, self.status, self.view_btn,
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
        self.export_btn.changed.connect(lambda: self.export())
        tie_to_viewer(self, viewer, layers_changed=self._refresh_layers, mouse_drag=self._on_click)
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
        names = [c for c in self.layer_combo.choices if c is not None]
        if self.layer_combo.value is None and names:
            self.layer_combo.value = names[0]

    @staticmethod
    def _device_text(choice: str, probe: bool = True) -> str:
        """What ``choice`` resolves to. Without ``probe`` and before torch is loaded, ``auto``
        is described instead of resolved: opening the dock must not cost the torch import
        (seconds); the run reports the device it got (and this label shows it then)."""
        if not probe and choice == "auto" and "torch" not in sys.modules:
            return "-> CUDA, else Apple MPS, else CPU (shown when a run starts)"
        try:
            from ..model.infer import resolve_device
            from ..core.correction import device_name

            return f"-> {device_name(resolve_device(choice))}"
        except Exception as e:  # e.g. cuda asked but absent
            return f"unavailable: {e}"

    @property
    def corrected_layer(self):
        return layer_by_name(self._viewer, f"{self.source_name} corrected") if self.source_name else None

    @property
    def review_layer(self):
        return layer_by_name(self._viewer, f"{self.source_name} review") if self.source_name else None

    # ------------------------------------------------------------------ tile selection
    def _select_tiles(self, layer, data) -> list[tuple[int, int, int]]:
        mode = self.tiles_combo.value
        is_stack = data.ndim == 3
        nz = data.shape[0] if is_stack else 1
        if mode == "flagged (QC)":
            qc = next((l for l in self._viewer.layers
                       if DECISIONS_KEY in l.metadata and l.metadata[DECISIONS_KEY].get("source") == layer.name),
                      None)
            if qc is None:
                raise ValueError(f"no focus QC result for '{layer.name}': score it in the Focus QC widget first")
            qmeta = qc.metadata[DECISIONS_KEY]
            if tuple(qmeta.get("image_shape", data.shape)) != tuple(data.shape):
                raise ValueError(f"the focus QC result for '{layer.name}' was made on an image of shape "
                                 f"{tuple(qmeta['image_shape'])}, not {tuple(data.shape)}: score it again")
            tile = int(qmeta["tile"])
            self.qc_tile_spin.value = tile
            self._qc_metric = qmeta.get("metric")
            d = np.asarray(qc.data)
            return tiles_from_decisions(d if is_stack else d[None], "flagged")
        grid = TileGrid(tuple(data.shape[-2:]), int(self.qc_tile_spin.value))
        if mode == "all":
            return [(z, i, j) for z in range(nz) for i, j in grid]
        shapes = layer_by_name(self._viewer, self.shapes_combo.value)
        if shapes is None or len(shapes.data) == 0:
            raise ValueError("draw a rectangle in a Shapes layer and choose it as the rectangle layer")
        out: set[tuple[int, int, int]] = set()
        for verts in shapes.data:
            verts = np.atleast_2d(np.asarray(verts, float))
            world = np.array([shapes.data_to_world(v) for v in verts])
            has_z = world.shape[1] == 3
            if is_stack and not has_z:  # a 2-D rectangle over a stack: every section
                world = np.column_stack([np.zeros(len(world)), world])
            pix = np.array([layer.world_to_data(v) for v in world])
            zs = {int(round(pix[0, 0]))} if is_stack and has_z else set(range(nz))
            (y0, x0), (y1, x1) = pix[:, -2:].min(0), pix[:, -2:].max(0)
            for z in zs:
                if 0 <= z < nz:
                    out.update((z, i, j) for i, j in tiles_in_rectangle(grid, y0, x0, y1, x1))
        return sorted(out)

    # ------------------------------------------------------------------ run
    def params(self) -> CorrectionParams:
        w = str(self.weights_edit.value)
        return CorrectionParams(
            weights=w if w not in ("", ".") and Path(w).is_file() else None,
            device=str(self.device_combo.value), precision=str(self.precision_combo.value),
            tile=int(self.tile_spin.value), batch=int(self.batch_spin.value),
            qc_tile=int(self.qc_tile_spin.value), metric=self._qc_metric,
        )

    def run(self, sync: bool = False) -> None:
        """Correct the chosen tiles. ``sync=True`` drains the same generator in this thread."""
        if self._worker is not None:
            notify("A correction is already running", "warning")
            return
        layer = layer_by_name(self._viewer, self.layer_combo.value)
        if layer is None:
            notify("Choose an image layer to correct", "warning")
            return
        self._qc_metric = None
        try:
            data = grayscale_data(layer)
            if not isinstance(data, np.ndarray) and data.nbytes > MAX_LAZY_BYTES:
                raise ValueError(f"layer '{layer.name}' is a lazy {data.nbytes / 2**30:.1f} GiB array; correct it "
                                 "headless with `emdeblur correct` (the widget keeps the corrected copy in memory)")
            if np.dtype(data.dtype).kind == "f":
                raise ValueError(f"layer '{layer.name}' is floating point; GRAN corrects 8- or 16-bit EM images")
            w = str(self.weights_edit.value)
            if w not in ("", ".") and not Path(w).is_file():
                raise ValueError(f"weights file {w} does not exist")
            tiles = self._select_tiles(layer, data)
            gt_layer = layer_by_name(self._viewer, self.gt_combo.value)
            gt = None
            if gt_layer is not None:
                gt = grayscale_data(gt_layer)
                if tuple(gt.shape) != tuple(data.shape):
                    raise ValueError(f"ground truth '{gt_layer.name}' has shape {tuple(gt.shape)}, "
                                     f"the image {tuple(data.shape)}")
        except ValueError as e:
            notify(str(e), "error")
            return
        if not tiles:
            notify("No tiles to correct (none flagged at the current thresholds?)", "info")
            return
        params = self.params()
        self._prepare(layer, data, params, tiles, gt is not None)
        gen = iter_correct_section(data, tiles, params, ground_truth=gt)
        self._gen = gen
        self._errored = False
        if sync:
            try:
                drain(gen, self._on_yield)
            except Exception as e:
                self._on_error(e)
                return
            self._on_finished()
            return
        from napari.qt.threading import create_worker

        worker = create_worker(lambda: (yield from gen), _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_yield)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_btn.enabled = False
        self.cancel_btn.enabled = True
        worker.start()

    @property
    def worker(self):
        return self._worker

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()
            self.status.value = "cancelling after the current batch..."

    def _prepare(self, layer, data, params: CorrectionParams, tiles, with_gt: bool) -> None:
        self.source_name = layer.name
        self.grid = TileGrid(tuple(data.shape[-2:]), params.qc_tile)
        self.reports = {}
        self._corrected_pixels = {}
        self._before = {}
        self._is_stack = data.ndim == 3
        self._data = data
        self._with_gt = with_gt
        self._t0 = time.perf_counter()
        self._meta = {
            "source_layer": layer.name, "device": self.device_combo.value, "precision": params.precision,
            "weights": params.weights or "shipped", "qc_tile": params.qc_tile, "tiles_requested": len(tiles),
            "thresholds": self._qc_thresholds(layer.name),
        }
        try:
            from ..model.weights import load_card_hash

            self._meta["model_card_sha256"] = load_card_hash(params.weights)
        except Exception:
            self._meta["model_card_sha256"] = _card_hash_fallback(params.weights)
        self._pending = (layer, data, params)
        self._layers_ready = False
        self.progress.max = max(1, len(tiles))
        self.progress.value = 0

    def _create_layers(self) -> None:
        """Create (or reset) the corrected and review layers; called on the worker's first message,
        i.e. once the model has loaded, so a run that fails to start leaves no layer behind."""
        layer, data, params = self._pending
        self._layers_ready = True
        with_gt = self._with_gt
        corrected = self.corrected_layer
        copy = np.array(data, copy=True)  # the original layer is never touched
        if corrected is None:
            corrected = self._viewer.add_image(
                copy, name=f"{layer.name} corrected", scale=layer.scale, translate=layer.translate,
                colormap=layer.colormap, contrast_limits=layer.contrast_limits,
            )
        else:
            corrected.data = copy
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
        scale, translate = heatmap_transform(params.qc_tile, tuple(layer.scale[-2:]), tuple(layer.translate[-2:]))
        if self._is_stack:
            scale, translate = (layer.scale[0], *scale), (layer.translate[0], *translate)
        shape = (data.shape[0] if self._is_stack else 1, *self.grid.grid_shape)
        self._review = np.zeros(shape, np.uint8)
        review = self.review_layer
        disp = self._review if self._is_stack else self._review[0]
        if review is None:
            from napari.utils.colormaps import DirectLabelColormap

            review = self._viewer.add_labels(disp, name=f"{layer.name} review", scale=scale, translate=translate,
                                             metadata={"emdeblur_review": {"tile": params.qc_tile}})
            review.colormap = DirectLabelColormap(color_dict=REVIEW_COLORS)
            review.editable = False
        else:
            review.data = disp
        self._psnr = np.full(shape, np.nan, np.float32) if with_gt else None
        self._heat_xform = (scale, translate)

    def _qc_thresholds(self, name: str) -> dict:
        for l in self._viewer.layers:
            m = l.metadata.get(DECISIONS_KEY)
            if m and m.get("source") == name:
                return {k: m.get(k) for k in ("correct_threshold", "retake_threshold", "metric", "tile")}
        return {}

    def _link_contrast(self, a, b) -> None:
        if (id(a), id(b)) in self._linked:  # connect each pair once, however many runs
            return
        self._linked.add((id(a), id(b)))

        def sync(src, dst):
            def _f(*_):
                if tuple(dst.contrast_limits) != tuple(src.contrast_limits):
                    dst.contrast_limits = src.contrast_limits
            return _f

        a.events.contrast_limits.connect(sync(a, b))
        b.events.contrast_limits.connect(sync(b, a))

    def _on_yield(self, msg: Any) -> None:
        if isinstance(msg, Notice) and msg.info and "device" in msg.info:
            self.device_label.value = f"-> {msg.info['device']}"
            self._meta["device"] = msg.info["device"]
        if not self._layers_ready:
            self._create_layers()
        if isinstance(msg, TileResult):
            corrected = self.corrected_layer
            if corrected is None:
                return
            h, w = msg.data.shape
            if self._is_stack:
                corrected.data[msg.z, msg.y0 : msg.y0 + h, msg.x0 : msg.x0 + w] = msg.data
            else:
                corrected.data[msg.y0 : msg.y0 + h, msg.x0 : msg.x0 + w] = msg.data
            corrected.refresh()
            self._corrected_pixels[(msg.z, msg.row, msg.col)] = msg.data
            rep = TileReport(**{k: v for k, v in msg.info.items() if k in TileReport.__dataclass_fields__})
            key = (msg.z, msg.row, msg.col)
            self.reports[key] = rep
            corrected.metadata["emdeblur_correction"]["corrected_tiles"].append(list(key))
            if rep.check_by_eye:
                self._review[key] = REVIEW_CHECK
                self._refresh_review()
            if self._psnr is not None and np.isfinite(rep.psnr_after):
                self._psnr[key] = rep.psnr_after - rep.psnr_before
        elif isinstance(msg, SectionScores):
            self._before[msg.z] = msg.scores
        elif isinstance(msg, Progress):
            self.progress.max = max(1, msg.total)
            self.progress.value = msg.done
            eta = f", {msg.eta_s:.0f} s left" if msg.eta_s is not None else ""
            self.status.value = f"{msg.done} / {msg.total} tiles{eta}"
        elif isinstance(msg, Notice):
            self.status.value = msg.message
            notify(msg.message, msg.level)

    def _refresh_review(self) -> None:
        review = self.review_layer
        if review is not None:
            review.data = self._review if self._is_stack else self._review[0]

    def _on_error(self, exc: BaseException) -> None:
        self._errored = True
        notify(f"Correction failed: {exc}", "error")
        self.status.value = f"failed: {exc}"
        self._finish_ui()

    def _on_finished(self) -> None:
        self._finish_ui()
        if self._gen is not None:  # after a cancel this runs the generator's cleanup (GPU memory)
            self._gen.close()
            self._gen = None
        if self._errored or not self._layers_ready:  # napari emits finished after errored
            return
        n = len(self.reports)
        flagged = sum(r.check_by_eye for r in self.reports.values())
        el = time.perf_counter() - self._t0
        self.status.value = f"{n} tiles corrected in {el:.1f} s; {flagged} to check by eye"
        corrected = self.corrected_layer
        if corrected is not None:
            corrected.metadata["emdeblur_correction"]["tiles_corrected"] = n
        if self._psnr is not None and n:
            self._show_psnr()
        self._update_qc_after()

    def _finish_ui(self) -> None:
        self._worker = None
        self.run_btn.enabled = True
        self.cancel_btn.enabled = False

    def _show_psnr(self) -> None:
        name = f"{self.source_name} PSNR gain"
        disp = self._psnr if self._is_stack else self._psnr[0]
        layer = layer_by_name(self._viewer, name)
        scale, translate = self._heat_xform
        if layer is None:
            self._viewer.add_image(disp, name=name, colormap="PiYG", contrast_limits=(-6, 6), opacity=0.5,
                                   interpolation2d="nearest", scale=scale, translate=translate,
                                   metadata={HEATMAP_KEY: {"source": self.source_name, "kind": "psnr_gain"}})
        else:
            layer.data = disp

    def _update_qc_after(self) -> None:
        """Show the corrected layer's focus as "<image> corrected focus": the per-section scores the
        worker computed before correcting, with each corrected (and not reverted) tile's score after
        correction; same grid, placement and contrast limits as the QC heatmap. No re-scoring here:
        this runs in the GUI thread."""
        from ..core.focus import DEFAULT_METRIC

        if not self.reports:
            return
        qc_heat = next((l for l in self._viewer.layers if l.metadata.get(HEATMAP_KEY, {}).get("source")
                        == self.source_name and "metric" in l.metadata[HEATMAP_KEY]), None)
        metric = self._qc_metric or (qc_heat.metadata[HEATMAP_KEY]["metric"] if qc_heat is not None
                                     else DEFAULT_METRIC)
        after = np.full(self._review.shape, np.nan, np.float32)
        if qc_heat is not None and qc_heat.metadata[HEATMAP_KEY].get("metric") == metric:
            base = np.asarray(qc_heat.data, np.float32)
            after[:] = base if base.ndim == 3 else base[None]
        for z, before in self._before.items():
            after[z] = before
        before_after = {}
        for (z, i, j), r in self.reports.items():
            if r.accepted is not False:
                after[z, i, j] = r.score_after
            before_after[f"{z},{i},{j}"] = (r.score_before, r.score_after if r.accepted is not False
                                           else r.score_before)
        self.after_scores = after
        finite = after[np.isfinite(after)]
        disp = np.where(np.isfinite(after), after, finite.min() if finite.size else 0).astype(np.float32)
        disp = disp if self._is_stack else disp[0]
        meta = {"source": f"{self.source_name} corrected", "tile": self.grid.tile, "metric": metric,
                "before_after": before_after}
        name = f"{self.source_name} corrected focus"
        layer = layer_by_name(self._viewer, name)
        scale, translate = self._heat_xform
        if layer is None:
            layer = self._viewer.add_image(disp, name=name, colormap="magma", opacity=0.35,
                                           interpolation2d="nearest", scale=scale, translate=translate,
                                           visible=False, metadata={HEATMAP_KEY: meta})
        else:
            layer.data = disp
            layer.metadata[HEATMAP_KEY] = meta
        if qc_heat is not None:
            layer.contrast_limits = qc_heat.contrast_limits  # same colour scale: before vs after
            qc_heat.metadata[HEATMAP_KEY]["after_correction"] = before_after

    # ------------------------------------------------------------------ view
    def toggle_view(self) -> None:
        """Flip between napari's grid (original | corrected | ground truth) and an overlay."""
        names = [self.source_name, f"{self.source_name} corrected", self.gt_combo.value]
        layers = [layer_by_name(self._viewer, n) for n in names if n]
        layers = [l for l in layers if l is not None]
        if not layers:
            return
        grid = self._viewer.grid
        if not grid.enabled:
            self._saved_visibility = {l.name: l.visible for l in self._viewer.layers}
            for l in self._viewer.layers:
                l.visible = l in layers
            # put them on top in the order original, corrected, ground truth: the grid then shows
            # them left to right in that order (checked on a screenshot)
            for l in layers:
                self._viewer.layers.move(self._viewer.layers.index(l), len(self._viewer.layers))
            grid.stride = 1
            grid.shape = (1, len(layers))
            grid.enabled = True
        else:
            grid.enabled = False
            saved = self._saved_visibility or {}
            for l in self._viewer.layers:
                l.visible = saved.get(l.name, l.visible)
            # overlay: the corrected layer shown over the original; toggle its eye to flip
            corrected = self.corrected_layer
            if corrected is not None:
                corrected.visible = True
            self._saved_visibility = None

    # ------------------------------------------------------------------ review
    def _selected(self) -> tuple[int, int, int]:
        return int(self.sel_z.value), int(self.sel_row.value), int(self.sel_col.value)

    def _show_selected(self, *_):
        r = self.reports.get(self._selected())
        self.tile_label.value = "" if r is None else (
            f"score {r.score_before:.3g} -> {r.score_after:.3g}; blur {r.blur_sigma:.2f} px; "
            f"fidelity {r.fidelity_ratio:.2f}{' CHECK' if r.check_by_eye else ''}"
            + (f"; PSNR {r.psnr_before:.1f} -> {r.psnr_after:.1f} dB" if np.isfinite(r.psnr_after) else ""))

    def _on_click(self, viewer, event):
        if self.grid is None or self.source_name is None:
            return
        src = layer_by_name(self._viewer, self.source_name)
        if src is None:
            return
        pos = src.world_to_data(event.position)
        t = self.grid.tile_of_pixel(pos[-2], pos[-1])
        if t is not None:
            if self._is_stack:
                self.sel_z.value = int(round(pos[0]))
            self.sel_row.value, self.sel_col.value = t
        yield

    def review(self, z: int, i: int, j: int, action: str) -> None:
        """accept | revert (back to the original pixels) | retake (revert and mark for re-imaging)."""
        key = (int(z), int(i), int(j))
        rep = self.reports.get(key)
        corrected = self.corrected_layer
        if rep is None or corrected is None:
            notify(f"tile {key} was not corrected", "warning")
            return
        y0, x0, h, w = self.grid.bounds(i, j)
        target = corrected.data[z] if self._is_stack else corrected.data
        tiles = corrected.metadata["emdeblur_correction"]["corrected_tiles"]
        if action == "accept":
            target[y0 : y0 + h, x0 : x0 + w] = self._corrected_pixels[key]  # back in, if it was reverted
            corrected.refresh()
            rep.accepted, rep.retake, rep.decision = True, False, "correct"
            self._review[key] = REVIEW_ACCEPTED
            if list(key) not in tiles:
                tiles.append(list(key))
        elif action in ("revert", "retake"):
            src = self._data[z] if self._is_stack else self._data
            target[y0 : y0 + h, x0 : x0 + w] = np.asarray(src[y0 : y0 + h, x0 : x0 + w])
            corrected.refresh()
            rep.accepted = False
            rep.retake = action == "retake"
            rep.decision = "retake" if rep.retake else "rejected"
            self._review[key] = REVIEW_RETAKE if rep.retake else 0
            if list(key) in tiles:
                tiles.remove(list(key))
        else:
            raise ValueError(f"unknown review action {action!r}")
        self._refresh_review()
        self._update_qc_after()
        self._show_selected()

    # ------------------------------------------------------------------ export
    def export(self, path: str | Path | None = None, overwrite: bool = False) -> Path | None:
        """Write the corrected layer (.tif / .ome.tif / .zarr) and, if asked, ``<name>_report.csv``
        and ``.json`` next to it. Every target is checked before anything is written; the input file
        is never a target; each file is written atomically."""
        from .._writer import write_layer

        corrected = self.corrected_layer
        if corrected is None:
            notify("Nothing to export: run a correction first", "warning")
            return None
        path = Path(path or self.export_path.value)
        if str(path) in ("", ".") or (path.is_dir() and not path.name.endswith(".zarr")):
            notify("Choose a file to export to (.tif, .ome.tif or .zarr)", "warning")
            return None
        report_stem = path.parent / (report_base_name(path.name) + "_report")
        targets = [path] + ([report_stem.with_name(report_stem.name + ".csv"),
                             report_stem.with_name(report_stem.name + ".json")]
                            if self.export_report.value else [])
        src = layer_by_name(self._viewer, self.source_name)
        protected = {str(p) for p in (getattr(getattr(src, "source", None), "path", None),
                                      corrected.metadata.get("emdeblur_source")) if p}
        if any(Path(p).resolve() == t.resolve() for p in protected for t in targets):
            notify("Refusing to write over the input file; choose another name", "error")
            return None
        existing = [t for t in targets if t.exists()]
        if existing and not overwrite:
            notify(f"{existing[0]} already exists; choose another name", "error")
            return None
        _, meta, _ = corrected.as_layer_data_tuple()
        meta = dict(meta, metadata=dict(meta.get("metadata") or {}))
        meta["metadata"]["reports"] = len(self.reports)
        try:
            write_layer(path, np.asarray(corrected.data), meta, overwrite=overwrite)
            if self.export_report.value:
                write_reports(report_stem, list(self.reports.values()),
                              corrected.metadata.get("emdeblur_correction", {}), overwrite=overwrite)
        except (OSError, ValueError) as e:
            notify(f"Export failed: {e}", "error")
            return None
        notify(f"Exported {path}")
        return path


def report_base_name(name: str) -> str:
    """``out.ome.tif`` -> ``out``; ``sec.v2.zarr`` -> ``sec.v2``; ``a.tiff`` -> ``a``."""
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _card_hash_fallback(weights: str | None) -> str | None:
    try:
        from ..model.shipped import shipped_weights_path

        p = Path(weights) if weights else shipped_weights_path()
        card = p.with_suffix(".json")
        return hashlib.sha256(card.read_bytes()).hexdigest() if card.exists() else None
    except Exception:
        return None
