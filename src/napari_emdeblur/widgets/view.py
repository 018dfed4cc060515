"""What a proofreader sees: one display policy for the plugin's layers in a viewer.

:func:`review_view` gives the viewer's one :class:`ReviewView`, shared by the Focus QC and the
GRAN correction docks. It keeps, with napari's own overlays and public API only:

* **a legend** of the flag and review colours: one canvas ``TextOverlay`` (bottom left) whose
  lines each dock registers (:meth:`ReviewView.legend`);
* **colour bars** on the focus heatmaps and the PSNR-gain layer (``layer.colorbar``; its ticks
  are the contrast limits);
* **the heatmap tint by zoom**: zoomed out (a screen pixel covers more than ``ZOOMED_OUT`` image
  pixels) the focus heatmap tints the section and the flagged tiles are filled; closer in, the
  heatmap is hidden and the flagged tiles are outlined (the same read-only "<image> flagged" layer,
  its lazy multiscale :class:`~napari_emdeblur.qc.tilemap.TileRaster` switched to outline mode: an
  opaque ring along each flagged tile's footprint) so the EM stays readable. Switched when the zoom
  crosses the limit, so a proofreader's own eye toggles hold until the next crossing;
* **layer order**: overlay mode stacks original < corrected < ground truth < tints < flags
  < review marks, so marks are never under the opaque corrected image; the grid mode
  shows labelled panels original | corrected | ground truth, left to right, each with its marks,
  one shared camera (zoom and pan linked); both are re-applied on every toggle;
* **read-only mark layers** (:func:`read_only`: no paint controls, also after a data change,
  which makes napari set ``editable`` again);
* **one layer set-up per event-loop turn** (:meth:`ReviewView.later`): both docks queue the
  creation of their layers here; layers are added hidden and shown by a step of their own
  (:meth:`ReviewView.show_later`), colour bars and the legend's new glyphs too, so each layer's
  set-up and each first paint are separate, short pauses of the viewer instead of one long one,
  and two docks never stack theirs.
"""

from __future__ import annotations

import re
import weakref
from typing import Any, Iterable

from .._reader import redraw
from .common import DECISIONS_KEY, HEATMAP_KEY, layer_by_name

__all__ = ["OUTLINE_PX", "RING_ADD", "ZOOMED_OUT", "ReviewView", "read_only", "review_view"]

LEGEND_KEY = "emdeblur_legend"  # our key in viewer.canvas.overlays
ZOOMED_OUT = 4.0  # image pixels per screen pixel above which the view counts as zoomed out
OUTLINE_PX = 3  # width of the flagged-tile outline, in pixels of the level on screen
RING_ADD = 3  # outline ring pixels are drawn with code + RING_ADD (the flag colormap's opaque colours)
GRID_SPACING = 8  # px between grid panels
GLYPHS_PER_STEP = 2  # new characters a legend set-up step may draw (see legend_steps)
_DRAWN_CHARS: set[str] = set()  # characters the legend has drawn in this process (glyphs are cached)
STEP_GAP_MS = 120  # between two queued set-up steps: the first one's repaint runs in between

_VIEWS: "weakref.WeakKeyDictionary[Any, ReviewView]" = weakref.WeakKeyDictionary()


def review_view(viewer: Any) -> "ReviewView":
    """The viewer's :class:`ReviewView` (made on first use)."""
    view = _VIEWS.get(viewer)
    if view is None:
        view = _VIEWS[viewer] = ReviewView(viewer)
    return view


_READ_ONLY: "weakref.WeakSet[Any]" = weakref.WeakSet()


def read_only(layer: Any) -> None:
    """No paint controls on ``layer``, now and after any later data change."""
    layer.editable = False
    if layer in _READ_ONLY:
        return
    ref = weakref.ref(layer)

    def _keep(*_: Any) -> None:
        lyr = ref()
        if lyr is not None and lyr.editable:
            lyr.editable = False

    layer.events.editable.connect(_keep)
    _READ_ONLY.add(layer)


def _outline(flags: Any, on: bool) -> None:
    """Draw the QC flags layer's tiles outlined (``on``) or filled; redraws only on a change."""
    level = flags.data[0] if flags.multiscale else None
    raster = getattr(level, "raster", None)
    if raster is None:
        return
    width = OUTLINE_PX if on else 0
    if raster.outline != width:
        raster.outline = width
        redraw(flags)


def _deleted(obj: Any) -> bool:
    """True when the Qt object behind ``obj`` was deleted."""
    try:
        obj.objectName()
    except RuntimeError:
        return True
    return False


def _CloseWatch(view: "ReviewView", win: Any) -> Any:
    """Record in ``view`` that ``win`` got a close event (an event filter; lives as long as ``win``)."""
    from qtpy.QtCore import QEvent, QObject

    ref = weakref.ref(view)

    class Watch(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
            v = ref()
            if v is not None and event.type() == QEvent.Type.Close:
                v._closed.add(obj)
            return False

    w = Watch(win)
    win.installEventFilter(w)
    return w


class ReviewView:
    """The display policy of one viewer (see the module doc); get it with :func:`review_view`."""

    def __init__(self, viewer: Any):
        self._viewer_ref = weakref.ref(viewer)
        self._legend_parts: dict[str, str] = {}
        self._zoomed_out: bool | None = None
        self._saved_visibility: dict[str, bool] | None = None
        self._grid_panels: list[str] = []
        self._grid_args: tuple[str, str | None] | None = None  # (source, ground truth) of the grid shown
        self._after_grid: list[Any] = []  # weak refs of layers to show when the overlay comes back
        self._revealed: "weakref.WeakSet[Any]" = weakref.WeakSet()  # layers shown once by their set-up
        self._steps: list[Any] = []
        self._step_scheduled = False
        self._watched: set[int] = set()
        self._closed: "weakref.WeakSet[Any]" = weakref.WeakSet()  # windows that got a close event
        viewer.scene.camera.events.zoom.connect(self._on_zoom)
        self._leaving_grid = False
        viewer.canvas.grid.events.enabled.connect(self._on_grid_toggled)

    @property
    def viewer(self) -> Any:
        return self._viewer_ref()

    # ------------------------------------------------------------------ set-up steps
    def later(self, fn: Any, sync: bool = False, owner: Any = None, display: bool = False) -> None:
        """Run ``fn`` (a layer set-up step) after the steps queued before it, one step per turn of
        the event loop with the repaint in between; at once with ``sync`` (synchronous runs).
        ``owner`` (a dock's Qt widget): the step is dropped if the dock is deleted or taken out of
        its window first, or the window is closed. A ``display`` step only shows what is already in
        the viewer (a layer, a colour bar, the legend): it outlives its dock and is dropped only with
        the window. When a dock's own steps are dropped, the layers it had added (hidden) get the
        zoom policy's visibility in a last step.
        """
        if sync:
            fn()
            return
        win = None
        if owner is not None:
            if _deleted(owner):  # the dock is gone: nothing to set up for it
                return
            win = owner.window()
            if id(win) not in self._watched:
                self._watched.add(id(win))
                _CloseWatch(self, win)
        self._steps.append((owner, win, fn, display))
        self._schedule_step()

    def run_pending(self, owner: Any) -> None:
        """Run now the set-up steps ``owner`` queued, in order (e.g. a dock's last run's, before its
        next run replaces the state they read).
        """
        mine = [st for st in self._steps if st[0] is owner]
        if not mine:
            return
        self._steps = [st for st in self._steps if st[0] is not owner]
        for _, _, fn, _ in mine:
            fn()

    @property
    def idle(self) -> bool:
        """True when no set-up step is waiting."""
        return not self._steps

    def _schedule_step(self) -> None:
        if self._step_scheduled or not self._steps:
            return
        from qtpy.QtCore import QTimer

        self._step_scheduled = True
        QTimer.singleShot(STEP_GAP_MS, self._run_step)

    def _run_step(self) -> None:
        self._step_scheduled = False
        while self._steps:
            owner, win, fn, display = self._steps.pop(0)
            if self.viewer is None:  # the viewer is gone: drop what was left
                self._steps.clear()
                return
            if win is not None and (_deleted(win) or (win in self._closed and not win.isVisible())):
                continue  # the window was closed
            if owner is not None and not display and (_deleted(owner) or owner.window() is not win):
                if not any(f == self._settle for _, _, f, _ in self._steps):  # the dock went: show what it added
                    self._steps.append((None, win, self._settle, True))
                continue
            try:
                fn()
            finally:
                self._schedule_step()
            return

    def _settle(self) -> None:
        """Each plugin layer as the zoom wants it (after a dock's set-up was cut short): also the QC
        flags whose first showing was cut.
        """
        self.apply_zoom(force=True)
        v = self.viewer
        if v is not None:
            for layer in list(v.layers):
                if DECISIONS_KEY in layer.metadata and layer not in self._revealed:
                    self._reveal(layer)

    # ------------------------------------------------------------------ legend, colour bars
    def legend(self, part: str, text: str | None) -> Any:
        """Set (or with None remove) one line of the shared legend; returns the overlay."""
        from napari.components.overlays import TextOverlay

        if text:
            self._legend_parts[part] = text
        else:
            self._legend_parts.pop(part, None)
        overlays = self.viewer.canvas.overlays
        ov = overlays[LEGEND_KEY] if LEGEND_KEY in overlays else None
        body = "\n".join(self._legend_parts[k] for k in sorted(self._legend_parts))
        _DRAWN_CHARS.update(body)
        if ov is None:
            ov = TextOverlay(text=body, position="bottom_left", visible=bool(body), font_size=10, box=True,
                             color="white")
            overlays[LEGEND_KEY] = ov
        else:
            ov.text = body
            ov.visible = bool(body)
        return ov

    def legend_steps(self, part: str, text: str, sync: bool = False, owner: Any = None) -> None:
        """:meth:`legend` as set-up steps (:meth:`later`): the text grows so that each step draws at
        most ``GLYPHS_PER_STEP`` characters no text of the viewer has drawn before (the first paint
        of a character renders its glyph, a signed-distance field computed on the CPU); a step ends
        after a whole word where it can, inside a word that alone brings more new characters.
        """
        seen = set(_DRAWN_CHARS) | set(" \n")
        prefixes, prefix, new = [], "", 0
        for word in re.split(r"(?<=\s)", text):
            add = set(word) - seen
            if new and new + len(add) > GLYPHS_PER_STEP:  # end the step before this word
                prefixes.append(prefix)
                new = 0
            for ch in word:
                if ch not in seen:
                    if new == GLYPHS_PER_STEP:  # the word alone brings more: end the step inside it
                        prefixes.append(prefix)
                        new = 0
                    seen.add(ch)
                    new += 1
                prefix += ch
        prefixes.append(text)
        for p in dict.fromkeys(x.rstrip() for x in prefixes if x.strip()):
            self.later(lambda p=p: self.legend(part, p), sync, owner, display=True)

    @staticmethod
    def colorbar(layer: Any) -> None:
        """Show ``layer``'s colour bar (Image layers)."""
        cb = getattr(layer, "colorbar", None)
        if cb is not None:
            cb.visible = True

    # ------------------------------------------------------------------ QC layers
    def qc_layers(self, heat: Any, flags: Any, blur: Any = None, sync: bool = False, owner: Any = None) -> None:
        """The Focus QC dock's heatmap, flagged and blur (px) layers, added hidden: read-only flags,
        marks above the images, then (each a set-up step of its own, see :meth:`later`) the layers
        the current zoom wants shown one at a time, the colour bars and the legend, so that no
        single turn of the event loop pays for several first paints.
        """
        if flags is not None:
            read_only(flags)
            source = (flags.metadata.get(DECISIONS_KEY) or {}).get("source")
            if source and not self.viewer.canvas.grid.enabled:
                self.overlay_order(source)
            elif source and self._grid_args is not None and self._grid_args[0] == source:
                self.show_grid(*self._grid_args, reset_view=False)  # the panels again, with the new flags
        ratio = self._image_px_per_screen_px()
        self._zoomed_out = None if ratio is None else ratio > ZOOMED_OUT
        for layer in (flags, heat, blur):
            if layer is not None:
                self.later(lambda x=layer: self._reveal(x), sync, owner, display=True)
        self.legend_steps("1 flags", "flagged tiles: cyan = correct (deblur), red = retake (re-image), grey = empty\n"
                                     "heatmap: blur (px) bright = more blur; focus score dark = soft", sync, owner)
        for layer in (heat, blur):
            if layer is not None:
                self.colorbar_later(layer, sync, owner)
        self.later(self._settle, sync, owner, display=True)  # all of them as the zoom is now

    def colorbar_later(self, layer: Any, sync: bool = False, owner: Any = None) -> None:
        """Show ``layer``'s colour bar in a set-up step of its own (:meth:`later`): its first paint
        (bar, ticks, new glyphs) is then a pause of its own.
        """
        self.later(lambda: self.colorbar(layer) if self._alive(layer) else None, sync, owner, display=True)

    def show_later(self, layer: Any, sync: bool = False, owner: Any = None, in_grid: bool = True) -> None:
        """Show ``layer`` (added hidden) in a set-up step of its own (:meth:`later`): its first paint
        is then a pause of its own. ``in_grid=False``: a layer that is no panel of the grid view
        (e.g. astigmatism lines) waits, while the grid is shown, for the overlay view.
        """
        def show() -> None:
            if not self._alive(layer) or layer.visible:
                return
            if not in_grid and self.viewer.canvas.grid.enabled:
                self._after_grid.append(weakref.ref(layer))
                return
            layer.visible = True

        self.later(show, sync, owner, display=True)

    def _alive(self, layer: Any) -> bool:
        v = self.viewer
        return v is not None and any(x is layer for x in v.layers)

    def _reveal(self, layer: Any) -> None:
        """Show ``layer`` if the current zoom wants it (one first paint per set-up step)."""
        if self._zoomed_out is None or self.viewer.canvas.grid.enabled or not self._alive(layer):
            return
        self._revealed.add(layer)
        if self._wanted(layer, self._zoomed_out, first=True):
            _outline(layer, not self._zoomed_out)
            layer.visible = True

    def flags_changed(self, flags: Any) -> None:
        """The QC dock changed the decisions ``flags`` draws (thresholds moved): redraw what is on
        screen of it (a hidden layer redraws when it is shown again).
        """
        redraw(flags)

    # ------------------------------------------------------------------ tint by zoom
    def _image_px_per_screen_px(self) -> float | None:
        v = self.viewer
        zoom = float(v.scene.camera.zoom)
        for layer in v.layers:
            if DECISIONS_KEY in layer.metadata:  # the QC flags: drawn at the image's own scale
                px = float(layer.scale[-1])  # world units per image pixel
                return 1.0 / max(zoom * px, 1e-12)
        return None

    def _zoomed_in_now(self) -> bool:
        ratio = self._image_px_per_screen_px()
        return ratio is not None and ratio <= ZOOMED_OUT

    def _on_zoom(self, *_: Any) -> None:
        self.apply_zoom()

    def apply_zoom(self, force: bool = False) -> None:
        """Tint (heatmaps shown, flags filled) zoomed out, outlines closer in; only on a crossing
        of the limit (or ``force``), never in the grid view.
        """
        v = self.viewer
        if v is None or v.canvas.grid.enabled:
            return
        ratio = self._image_px_per_screen_px()
        if ratio is None:
            return
        out = ratio > ZOOMED_OUT
        if out == self._zoomed_out and not force:
            return
        self._zoomed_out = out
        self.apply_policy(list(v.layers))

    def apply_policy(self, layers: Iterable[Any]) -> bool:
        """Show or hide ``layers`` as the zoom policy wants them now (e.g. the heatmap the QC dock
        switched to; the QC flags also filled or outlined); False while the policy is not set up yet
        (before the QC layers' set-up ends) or in the grid view.
        """
        v = self.viewer
        if self._zoomed_out is None or v is None or v.canvas.grid.enabled:
            return False
        for layer in layers:
            if layer is None:
                continue
            if DECISIONS_KEY in layer.metadata:
                _outline(layer, not self._zoomed_out)  # filled zoomed out, outlined closer in
            want = self._wanted(layer, self._zoomed_out)
            if want is not None and layer.visible != want:  # setting it again would refresh the layer
                layer.visible = want
        return True

    @staticmethod
    def _wanted(layer: Any, out: bool, first: bool = False) -> bool | None:
        """The zoom policy for ``layer``: shown or not (None: a layer it leaves alone). The QC flags
        are shown when they are set up (``first``) and afterwards only filled or outlined by the zoom:
        whether they show is the user's (a flags layer the user hid stays hidden).
        """
        heat = layer.metadata.get(HEATMAP_KEY)
        qc_tint = heat is not None and (heat.get("kind") == "blur_px" or (
            heat.get("kind") is None and "metric" in heat)) and \
            not str(heat.get("source", "")).endswith(" corrected")
        if qc_tint:  # the focus score or blur (px) heatmap: the one the QC dock shows, zoomed out
            return out and bool(heat.get("shown", True))
        if DECISIONS_KEY in layer.metadata:
            return True if first else None  # filled or outlined, by the zoom
        return None

    @property
    def zoomed_out(self) -> bool | None:
        """True when the tint is on, False when outlines show, None before any QC layer."""
        return self._zoomed_out

    # ------------------------------------------------------------------ order, grid
    def _names(self, source: str, gt: str | None) -> dict[str, list[str]]:
        return {
            "images": [source, f"{source} corrected"] + ([gt] if gt else []),
            "tints": [f"{source} focus", f"{source} blur (px)", f"{source} corrected focus", f"{source} PSNR gain"],
            "marks": [f"{source} flagged", f"{source} astigmatism", f"{source} review"],
        }

    def _reorder(self, wanted: list[Any]) -> None:
        """Put ``wanted`` (bottom to top) as one block where the lowest of them is now; other layers
        keep their order below and above it.
        """
        layers = self.viewer.layers
        current = list(layers)
        ids = {id(x) for x in wanted}
        first = min((current.index(x) for x in wanted), default=0)
        below = [x for x in current[:first] if id(x) not in ids]
        above = [x for x in current[first:] if id(x) not in ids]
        new = below + wanted + above
        if [id(x) for x in new] == [id(x) for x in current]:
            return
        for pos, layer in enumerate(new):
            cur = layers.index(layer)
            if cur != pos:
                layers.move(cur, pos)

    def overlay_order(self, source: str, gt: str | None = None) -> list[str]:
        """Stack the plugin's layers of ``source`` for the overlay view; returns the order (bottom first)."""
        names = self._names(source, gt)
        wanted = [layer_by_name(self.viewer, n) for n in names["images"] + names["tints"] + names["marks"]]
        present = [x for x in wanted if x is not None]
        if present:
            self._reorder(present)
        return [x.name for x in present]

    def show_grid(self, source: str, gt: str | None = None, reset_view: bool = True) -> list[str]:
        """Side by side: labelled panels original | corrected | ground truth, left to right, each
        with its marks (flag outlines on the original, review marks on the corrected, PSNR gain on
        the ground truth). Returns the panel names. ``reset_view``: fit the panels in the canvas
        (not when the panels are only regrouped, e.g. after a new QC of the image shown).
        """
        v = self.viewer
        names = self._names(source, gt)
        panels = []
        for img, extra in zip(names["images"], ([f"{source} flagged"], [f"{source} review"],
                                                 [f"{source} PSNR gain"])):
            layer = layer_by_name(v, img)
            if layer is not None:
                panels.append((layer, [x for x in (layer_by_name(v, n) for n in extra) if x is not None]))
        if not panels:
            return []
        if self._saved_visibility is None:
            self._saved_visibility = {x.name: x.visible for x in v.layers}
        in_panels = {id(x) for img, ovs in panels for x in [img, *ovs]}
        rest = [x for x in v.layers if id(x) not in in_panels]
        stride = max(1 + len(ovs) for _, ovs in panels)
        pads_needed = sum(stride - 1 - len(ovs) for _, ovs in panels)
        if pads_needed > len(rest):  # not enough hidden layers to keep the groups aligned: images only
            rest += [x for _, ovs in panels for x in ovs]
            panels = [(img, []) for img, _ in panels]
            stride = 1
        order: list[Any] = []
        spare = list(rest)
        for img, ovs in panels:
            group = [img, *ovs]
            while len(group) < stride:
                group.append(spare.pop())
            order.extend(group)
        order.extend(spare)
        for x in v.layers:
            x.visible = False
        for img, ovs in panels:
            for x in [img, *ovs]:
                if DECISIONS_KEY in x.metadata:
                    _outline(x, True)  # the flagged tiles outlined on the original's panel
                x.visible = True
        self._reorder(order)
        for x in v.layers:
            overlay = getattr(x, "name_overlay", None)
            if overlay is not None:
                overlay.visible = any(x is img for img, _ in panels)
        grid = v.canvas.grid
        grid.stride = stride
        grid.shape = (1, len(panels))
        grid.spacing = GRID_SPACING
        grid.enabled = True
        if reset_view:
            v.reset_view()
        self._grid_panels = [img.name for img, _ in panels]
        self._grid_args = (source, gt)
        return list(self._grid_panels)

    def _on_grid_toggled(self, event: Any = None) -> None:
        """The grid turned off with napari's own button: back to the overlay as the dock's toggle does
        (visibility as before, waiting layers shown, the overlay order).
        """
        v = self.viewer
        if v is None or v.canvas.grid.enabled or self._leaving_grid or self._grid_args is None:
            return
        self.show_overlay(*self._grid_args)

    def show_overlay(self, source: str, gt: str | None = None) -> list[str]:
        """Back from the grid: name labels off, visibility as before the grid (corrected shown),
        the overlay order, the tint for the zoom. Returns the order (bottom first).
        """
        v = self.viewer
        self._leaving_grid = True
        try:
            v.canvas.grid.enabled = False
        finally:
            self._leaving_grid = False
        for x in v.layers:
            overlay = getattr(x, "name_overlay", None)
            if overlay is not None and x.name in self._grid_panels:
                overlay.visible = False
        saved = self._saved_visibility or {}
        for x in v.layers:
            if x.name in saved:
                x.visible = saved[x.name]
        corrected = layer_by_name(v, f"{source} corrected")
        if corrected is not None:
            corrected.visible = True
        waiting, self._after_grid = self._after_grid, []
        for ref in waiting:  # added while the grid was shown, for the overlay
            layer = ref()
            if layer is not None and self._alive(layer):
                layer.visible = True
        self._saved_visibility = None
        self._grid_panels = []
        self._grid_args = None
        order = self.overlay_order(source, gt)
        self.apply_zoom(force=self._zoomed_out is not None)
        return order

    def grid_positions(self, names: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Grid panel ``(row, col)`` of each named layer ((-1, -1) when hidden)."""
        v = self.viewer
        layers = list(v.layers)
        return {n: v.canvas.grid.position(layers.index(v.layers[n]), layers) for n in names if n in v.layers}
