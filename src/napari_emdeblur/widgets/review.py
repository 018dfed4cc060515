"""Review of a correction in the GRAN correction dock: views, per-tile accept / revert / retake.

A mixin of :class:`~.correct.CorrectionWidget` (one role per module: this one changes what the
reviewer sees and decides, never runs a model). It keeps the "<image> review" labels layer
(accepted, retake, check by eye), the "<image> corrected focus" heatmap (focus after correction,
on the QC heatmap's colour scale) and the "<image> PSNR gain" layer, and flips between napari's
grid view (original | corrected | ground truth) and an overlay.
"""

from __future__ import annotations

import numpy as np

from ..qc.focus import DEFAULT_METRIC
from .common import HEATMAP_KEY, layer_by_name, notify

REVIEW_ACCEPTED, REVIEW_RETAKE, REVIEW_CHECK = 1, 2, 3
REVIEW_COLORS = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), REVIEW_ACCEPTED: (0.1, 0.9, 0.3, 0.5),
                 REVIEW_RETAKE: (1.0, 0.1, 0.1, 0.65), REVIEW_CHECK: (0.2, 0.6, 1.0, 0.6)}

__all__ = ["REVIEW_ACCEPTED", "REVIEW_CHECK", "REVIEW_COLORS", "REVIEW_RETAKE", "ReviewMixin"]


class ReviewMixin:
    """Views and per-tile review of :class:`~.correct.CorrectionWidget` (uses its state)."""

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

    def _refresh_review(self) -> None:
        review = self.review_layer
        if review is not None:
            review.data = self._review if self._is_stack else self._review[0]

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
        this runs in the GUI thread.
        """
        if not self.reports:
            return
        qc_heat = next((l for l in self._viewer.layers if l.metadata.get(HEATMAP_KEY, {}).get("source")
                        == self.source_name and "metric" in l.metadata[HEATMAP_KEY]), None)
        metric = self._qc_metric or (qc_heat.metadata[HEATMAP_KEY]["metric"] if qc_heat is not None
                                     else DEFAULT_METRIC)
        after = np.full(self._review.shape, np.nan, np.float32)
        if qc_heat is not None and qc_heat.metadata[HEATMAP_KEY].get("metric") == metric:
            base = np.asarray(qc_heat.metadata[HEATMAP_KEY]["scores"], np.float32)  # the QC grid's scores
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

    def _selected(self) -> tuple[int, int, int]:
        return int(self.sel_z.value), int(self.sel_row.value), int(self.sel_col.value)

    def _show_selected(self, *_):
        r = self.reports.get(self._selected())
        self.tile_label.value = "" if r is None else (
            f"score {r.score_before:.3g} -> {r.score_after:.3g}; blur {r.blur_major:.2f} x {r.blur_minor:.2f} px; "
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
        """Accept | revert (back to the original pixels) | retake (revert and mark for re-imaging)."""
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
