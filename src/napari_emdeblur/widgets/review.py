"""Review of a correction in the GRAN correction dock: views, per-tile accept / revert / retake.

A mixin of :class:`~.correct.CorrectionWidget` (one role per module: this one changes what the
reviewer sees and decides, never runs a model). It keeps the "<image> review" marks layer
(accepted, retake, check by eye; read-only), the "<image> corrected focus" heatmap (focus after
correction, on the QC heatmap's colour scale) and the "<image> PSNR gain" layer (both with a
colour bar), and flips between napari's grid view (labelled panels original | corrected | ground
truth, left to right) and an overlay through the viewer's :class:`~.view.ReviewView`. Accept and
revert only put or remove a tile's patch in the corrected layer's store: no pixel copy.
"""

from __future__ import annotations

import numpy as np

from .._reader import redraw
from ..qc.focus import DEFAULT_METRIC
from .common import HEATMAP_KEY, layer_by_name, made_here, notify, place_like, plugin_layer
from .view import read_only, review_view

REVIEW_ACCEPTED, REVIEW_RETAKE, REVIEW_CHECK = 1, 2, 3
# the colour of each review code (0: none, transparent), indexed by code
REVIEW_COLORS = [(0, 0, 0, 0), (0.1, 0.9, 0.3, 0.5), (1.0, 0.1, 0.1, 0.65), (0.2, 0.6, 1.0, 0.6)]
REVIEW_LEGEND = "review marks: green = accepted, blue = check by eye, red = retake"

__all__ = ["REVIEW_ACCEPTED", "REVIEW_CHECK", "REVIEW_COLORS", "REVIEW_LEGEND", "REVIEW_RETAKE", "ReviewMixin"]


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
        if review is not None:  # its tile raster reads the marks
            redraw(review, final=True)
            read_only(review)

    def _show_psnr(self) -> None:
        name = f"{self.source_name} PSNR gain"
        disp = self._tile_levels(self._psnr, np.nan)
        layer = plugin_layer(self._viewer, name)
        place = self._placement
        if layer is None:
            layer = made_here(self._viewer.add_image(
                disp, multiscale=True, name=name, colormap="PiYG", contrast_limits=(-6, 6), opacity=0.5,
                interpolation2d="nearest", **place, visible=False, cache=False,
                metadata={HEATMAP_KEY: {"source": self.source_name, "kind": "psnr_gain"}}))
            self._arrange()
            view = review_view(self._viewer)  # its first paint, then its colour bar's: steps of their own
            view.show_later(layer, self._sync, self.native)
            view.colorbar_later(layer, self._sync, self.native)
        else:
            layer.data = disp
            place_like(layer, place)

    def _arrange(self) -> None:
        """Overlay order after adding a layer (the grid keeps its own until toggled back)."""
        if not self._viewer.canvas.grid.enabled and self.source_name:
            review_view(self._viewer).overlay_order(self.source_name, self.gt_combo.value)

    def _update_qc_after(self) -> None:
        """Show the corrected layer's focus as "<image> corrected focus": the per-section scores the
        worker computed before correcting, with each corrected (and not reverted) tile's score after
        correction; same grid, placement and contrast limits as the QC heatmap. No re-scoring here:
        this runs in the GUI thread.
        """
        if not self.reports:
            return
        # the QC heatmap of this image on this run's grid (a QC on another tile size is another grid)
        qc_heat = next((l for l in self._viewer.layers if l.metadata.get(HEATMAP_KEY, {}).get("source")
                        == self.source_name and "metric" in l.metadata[HEATMAP_KEY]
                        and l.metadata[HEATMAP_KEY].get("tile") == self.grid.tile), None)
        metric = self._qc_metric or (qc_heat.metadata[HEATMAP_KEY]["metric"] if qc_heat is not None
                                     else DEFAULT_METRIC)
        after = np.full(self._review.shape, np.nan, np.float32)
        if qc_heat is not None and qc_heat.metadata[HEATMAP_KEY].get("metric") == metric:
            base = np.asarray(qc_heat.metadata[HEATMAP_KEY]["scores"], np.float32)  # the QC grid's scores
            base = base if base.ndim == 3 else base[None]
            if base.shape == after.shape:
                after[:] = base
        for z, before in self._before.items():  # scores before (NaN where a lazy run scored none)
            after[z] = np.where(np.isfinite(before), before, after[z])
        before_after = {}
        for (z, i, j), r in self.reports.items():
            if r.accepted is not False:
                after[z, i, j] = r.score_after
            before_after[f"{z},{i},{j}"] = (r.score_before, r.score_after if r.accepted is not False
                                           else r.score_before)
        self.after_scores = after
        finite = after[np.isfinite(after)]
        disp = self._tile_levels(
            np.where(np.isfinite(after), after, finite.min() if finite.size else 0).astype(np.float32), np.nan)
        meta = {"source": f"{self.source_name} corrected", "tile": self.grid.tile, "metric": metric,
                "before_after": before_after}
        name = f"{self.source_name} corrected focus"
        layer = plugin_layer(self._viewer, name)
        place = self._placement
        if layer is None:
            layer = made_here(self._viewer.add_image(disp, multiscale=True, name=name, colormap="magma", opacity=0.35,
                                                     interpolation2d="nearest", **place,
                                                     visible=False, metadata={HEATMAP_KEY: meta}, cache=False))
            self._arrange()
            review_view(self._viewer).colorbar_later(layer, self._sync, self.native)  # a step of its own
        else:  # a run on another grid: new data, and the placement that goes with it
            layer.data = disp
            place_like(layer, place)
            layer.metadata[HEATMAP_KEY] = meta
        if qc_heat is not None:
            layer.contrast_limits = qc_heat.contrast_limits  # same colour scale: before vs after
            qc_heat.metadata[HEATMAP_KEY]["after_correction"] = before_after

    def toggle_view(self) -> None:
        """Flip between napari's grid (labelled panels original | corrected | ground truth, left to
        right, zoom linked) and the overlay (marks above the corrected image).
        """
        if not self.source_name or layer_by_name(self._viewer, self.source_name) is None:
            return
        view = review_view(self._viewer)
        if self._viewer.canvas.grid.enabled:
            view.show_overlay(self.source_name, self.gt_combo.value)
        else:
            view.show_grid(self.source_name, self.gt_combo.value)

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
        if corrected is None and self.source_name:
            notify(f"the corrected layer of '{self.source_name}' is gone: correct again to review its tiles", "warning")
            return
        if rep is None or corrected is None:
            notify(f"tile {key} was not corrected", "warning")
            return
        y0, x0, h, w = self.grid.bounds(i, j)
        self._pending_marks.pop(key, None)  # the reviewer's decision wins over a mark not drawn yet
        tiles = corrected.metadata["emdeblur_correction"]["corrected_tiles"]
        if action == "accept":
            self._store.put(self._patches[key])  # back in, if it was reverted
            rep.accepted, rep.retake, rep.decision = True, False, "correct"
            self._review[key] = REVIEW_ACCEPTED
            if list(key) not in tiles:
                tiles.append(list(key))
        elif action in ("revert", "retake"):
            self._store.remove(key)  # the original's pixels show again
            rep.accepted = False
            rep.retake = action == "retake"
            rep.decision = "retake" if rep.retake else "rejected"
            self._review[key] = REVIEW_RETAKE if rep.retake else 0
            if list(key) in tiles:
                tiles.remove(list(key))
        else:
            raise ValueError(f"unknown review action {action!r}")
        self._refresh.request(self._world_box((y0, x0, h, w)))
        self._refresh.flush()
        self._refresh_review()
        self._update_qc_after()
        self._show_selected()
