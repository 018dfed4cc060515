"""npe2 reader: EM sections, stacks, MultiSEM mosaics and OME-Zarr through ``napari_emdeblur.io``.

``get_reader(path)`` returns :func:`read_sections` when every path looks readable (cheap check,
no pixel data read) and None otherwise, so that napari can try other readers.

A section with pyramid levels (``Section.levels``: a big MultiSEM mosaic, OME-TIFF with SubIFDs,
OME-Zarr multiscales, any section above ``io.pyramid.multiscale_min_side``) becomes one
multiscale Image layer (``interpolation2d='linear'``: between two levels the texture is filtered,
not point-sampled). Generated levels fill in from a background thread; the layer is created with
napari's chunk cache off (it would keep the not-yet-built placeholders) and
:func:`watch_pyramids` refreshes it on the GUI thread whenever new tiles are ready (at most once
a second, less often when a refresh and the repaint after it are slow).

:func:`redraw` is how every lazy multiscale layer of the plugin is redrawn after its levels changed
in place (this pyramid filling in, the QC heatmaps and flags, the corrected store): napari (0.9,
its PR 8715) keeps the *coarsest* level of a 2-D multiscale layer materialised, as its thumbnail
level, until the layer's data is replaced, so a plain ``refresh`` would leave that level stale
wherever it is on screen (a small image or a whole section zoomed out, a grid panel).
"""

from __future__ import annotations

import os
import time
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .io.pyramid import Pyramid, PyramidLevel
from .io.read import can_read, load_section
from .io.section import Section, json_safe
from .io.values import is_dask_array

PathLike = str | os.PathLike


def get_reader(path: PathLike | Sequence[PathLike]) -> Callable | None:
    """npe2 reader contribution: a reader function for ``path`` (or a list of paths) or None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path or [])
    if not paths:
        return None
    try:
        if not all(can_read(p) for p in paths):
            return None
    except OSError:
        return None
    return read_sections


def _contrast_limits(data: Any) -> tuple[float, float] | None:
    """Contrast limits for lazy data from a small central sample (napari would read it all)."""
    dt = np.dtype(data.dtype)
    if dt == np.uint8:
        return (0.0, 255.0)
    if not is_dask_array(data):
        return None
    plane = data[data.shape[0] // 2] if data.ndim == 3 else data
    h, w = plane.shape
    cy, cx, r = h // 2, w // 2, 512
    sample = np.asarray(plane[max(cy - r, 0) : cy + r, max(cx - r, 0) : cx + r])
    vals = sample[sample > 0] if (sample > 0).any() else sample.ravel()
    lo, hi = np.percentile(vals, [0.1, 99.9])
    if hi <= lo:
        hi = lo + 1
    return (float(lo), float(hi))


def section_to_layer_data(section: Section) -> tuple[Any, dict, str]:
    """A napari layer data tuple for a :class:`~napari_emdeblur.io.Section`."""
    meta = {k: json_safe(v) for k, v in section.metadata.items()}
    meta.update(
        emdeblur_source=section.source,
        pixel_size=list(section.pixel_size) if section.pixel_size else None,
        axes=section.axes,
        tiles=[asdict(t) for t in section.tiles] if section.tiles else None,
    )
    kwargs: dict = {"name": section.name or Path(section.source).name, "scale": section.scale,
                    "metadata": meta}
    data: Any = section.data
    if section.multiscale:
        data = list(section.levels or ())
        kwargs.update(multiscale=True, interpolation2d="linear")
        if section.pyramid is not None:
            kwargs["cache"] = False
        meta["level_shapes"] = [list(s) for s in section.level_shapes]
    cl = _contrast_limits(section.data)
    if cl is not None:
        kwargs["contrast_limits"] = cl
    return (data, kwargs, "image")


_STALE: "weakref.WeakSet[Any]" = weakref.WeakSet()  # multiscale layers whose cached coarsest level is old
_WATCHED: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _coarsest_on_screen(layer: Any) -> bool:
    return bool(layer.visible) and int(layer.data_level) == len(layer.level_shapes) - 1


def _rematerialise(layer: Any) -> None:
    """Replace ``layer``'s data by its own levels: napari drops the cached coarsest level (and resets
    the shown level, which its next draw sets again for the view; a level the user locked is kept).
    """
    _STALE.discard(layer)
    locked = getattr(layer, "locked_data_level", None)
    layer.data = layer.data
    if locked is not None:
        layer.locked_data_level = locked


def _on_sliced(event: Any) -> None:
    layer = event.source
    if layer in _STALE and _coarsest_on_screen(layer):  # the old coarsest level just came on screen
        from qtpy.QtCore import QTimer

        ref = weakref.ref(layer)

        def fix() -> None:
            lyr = ref()
            if lyr is not None and lyr in _STALE and _coarsest_on_screen(lyr):
                _rematerialise(lyr)

        QTimer.singleShot(0, fix)  # not inside napari's own slicing


def mark_changed(layer: Any) -> None:
    """Note that a multiscale ``layer``'s levels changed without redrawing it now (hidden, or the
    change is out of view): its cached coarsest level is replaced when that level comes on screen.
    """
    if getattr(layer, "multiscale", False):
        _STALE.add(layer)
        if layer not in _WATCHED:
            _WATCHED.add(layer)
            layer.events.set_data.connect(_on_sliced)


def redraw(layer: Any, *, thumbnail: bool = True, final: bool = False) -> None:
    """Redraw ``layer`` after its (lazy) levels changed in place; see the module doc.

    A single-scale layer is refreshed. A multiscale one is refreshed too, unless its coarsest level
    is on screen: then its levels are given to napari again, which drops its cached copy of that
    level. Otherwise the layer is remembered as stale and this is done when that level comes on
    screen (zooming out). ``final`` (the last change of a run): do it now, so that the layer list's
    thumbnail, drawn from that level, is right too.
    """
    if not getattr(layer, "multiscale", False):
        layer.refresh(thumbnail=thumbnail)
        return
    mark_changed(layer)
    if final or _coarsest_on_screen(layer):
        _rematerialise(layer)
    else:
        layer.refresh(thumbnail=thumbnail)


def pyramid_of(layer: Any) -> Pyramid | None:
    """The :class:`~napari_emdeblur.io.pyramid.Pyramid` behind a multiscale layer, or None."""
    if not getattr(layer, "multiscale", False):
        return None
    data = layer.data
    for k in range(len(data)):
        if isinstance(data[k], PyramidLevel):
            return data[k].pyramid
    return None


class _PyramidRefresher:
    """Refreshes a viewer's layers whose pyramids got new tile images (GUI thread, QTimer).

    Every ``interval_ms`` it compares each pyramid's ``generation`` with the one last shown and
    calls ``layer.refresh()`` for visible layers that changed; after a refresh whose slicing and
    repaint took ``c`` ms (measured to the next turn of the event loop) it waits at least ``3 c``
    ms, so that refreshing takes at most about a quarter of the GUI thread (and of the GIL the
    builder thread needs). It stops when the viewer has no pyramid layer left.
    """

    def __init__(self, viewer: Any, interval_ms: int = 1000):
        from qtpy.QtCore import QTimer

        self._viewer = weakref.ref(viewer)
        self.interval_ms = interval_ms
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.tick)
        self.seen: dict[int, int] = {}
        self.refreshes = 0
        self.last_cost_ms = 0.0
        self._next = 0.0
        self._started = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()
        if not self.timer.isActive():
            self.timer.start()

    def tick(self) -> None:
        viewer = self._viewer()
        if viewer is None:
            self.timer.stop()
            return
        now = time.perf_counter()
        found = False
        for layer in list(viewer.layers):
            pyr = pyramid_of(layer)
            if pyr is None:
                continue
            found = True
            gen = pyr.generation
            if self.seen.get(id(layer)) == gen or now < self._next or not layer.visible:
                continue
            self.seen[id(layer)] = gen
            t0 = time.perf_counter()
            redraw(layer, final=pyr.complete)
            self.refreshes += 1
            self._next = float("inf")  # until the repaint is done and measured
            self._measure(t0)
        if not found and now - self._started > 2.0:  # (the reader starts it before napari adds the layer)
            self.timer.stop()

    def _measure(self, t0: float) -> None:
        from qtpy.QtCore import QTimer

        def done() -> None:
            self.last_cost_ms = (time.perf_counter() - t0) * 1000
            self._next = time.perf_counter() + 3 * self.last_cost_ms / 1000

        QTimer.singleShot(0, done)


_REFRESHERS: "weakref.WeakKeyDictionary[Any, _PyramidRefresher]" = weakref.WeakKeyDictionary()


def watch_pyramids(viewer: Any = None) -> _PyramidRefresher | None:
    """Keep ``viewer``'s pyramid layers refreshed while their levels are built (see the module
    docstring); default the current viewer. Returns the refresher, or None without a viewer or
    outside the GUI thread. The reader calls it; scripts that add pyramid layers themselves
    (``viewer.add_image(section.levels, multiscale=True)``) call it once.
    """
    if viewer is None:
        try:
            import napari

            viewer = napari.current_viewer()
        except ImportError:  # pragma: no cover
            return None
    if viewer is None:
        return None
    from qtpy.QtCore import QThread
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None or QThread.currentThread() is not app.thread():
        return None
    ref = _REFRESHERS.get(viewer)
    if ref is None:
        ref = _REFRESHERS[viewer] = _PyramidRefresher(viewer)
    ref.start()
    return ref


def _tell_warnings(sections: list[Section]) -> None:
    """What the reader converted or found suspicious, as napari notifications (one line each, the
    file named): accepted input is never changed silently (the CLI prints the same lines).
    """
    from napari.utils.notifications import show_warning

    for s in sections:
        for w in s.metadata.get("warnings", []):
            show_warning(w)


def read_sections(path: PathLike | Sequence[PathLike]) -> list[tuple[Any, dict, str]]:
    """Read one path, or a list of paths, into napari layer data tuples.

    A list of single 2-D sections of equal shape and dtype becomes one (z, y, x) stack (what
    napari asks for with ``stack=True``); otherwise every path gives its own layer.
    Unreadable input raises :class:`~napari_emdeblur.io.EMReadError` naming the file.
    """
    if isinstance(path, (str, os.PathLike)):
        sections = [load_section(path)]
    else:
        sections = [load_section(p) for p in path]
    _tell_warnings(sections)
    if any(s.pyramid is not None for s in sections):
        watch_pyramids()
    if len(sections) == 1:
        return [section_to_layer_data(sections[0])]
    if len(sections) > 1 and all(
        s.axes == "yx" and s.shape == sections[0].shape and s.dtype == sections[0].dtype and not s.multiscale
        for s in sections
    ):
        if any(s.is_lazy for s in sections):
            import dask.array as da

            data = da.stack([s.data if s.is_lazy else da.from_array(s.data) for s in sections])
        else:
            data = np.stack([s.data for s in sections])
        first = sections[0]
        stack = Section(
            data, first.pixel_size, f"{first.name} (+{len(sections) - 1})",
            first.source, "zyx", None,
            {"format": "stack", "files": [s.source for s in sections],
             "warnings": [w for s in sections for w in s.metadata.get("warnings", [])]},
        )
        return [section_to_layer_data(stack)]
    return [section_to_layer_data(s) for s in sections]
