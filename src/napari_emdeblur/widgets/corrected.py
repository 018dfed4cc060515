"""The corrected layer without a copy of the section: the original with corrected tiles overlaid.

:class:`CorrectedStore` wraps the original's data (numpy, dask, zarr, ... and every level of a
multiscale layer) and the corrected tiles; :attr:`CorrectedStore.levels` are array-likes napari
slices like any other data: a read returns the original's pixels of that region with the
corrected tiles pasted in. Nothing reads the whole section: building the layer costs nothing,
and a refresh re-reads only what napari displays (the visible part of one level of a multiscale
layer). Only the corrected tiles are held in memory, one patch per pyramid level.

A tile's patches are made by :meth:`CorrectedStore.prepare` in the worker thread (it reads the
original's pixels under the tile, a few KB, and averages the correction's difference down to each
level, so coarse levels keep the original pyramid's own values around the tile); the GUI thread
only puts them in (:meth:`~CorrectedStore.put`, a dict insert) and asks :class:`ThrottledRefresh` for a
refresh: at most one per ``min_interval_ms`` and never more often than ``cost_factor`` times the
last refresh's cost, skipped when the changed tiles are out of view of a multiscale layer.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .._reader import mark_changed, redraw

__all__ = ["CorrectedLevel", "CorrectedStore", "PreparedTile", "ThrottledRefresh", "TilePatch"]


@dataclass
class TilePatch:
    """A corrected tile at every level: ``levels[k] = (y0, x0, pixels)`` in level-k pixels."""

    key: tuple[int, int, int]  # (z, row, col)
    z: int
    box: tuple[int, int, int, int]  # (y0, x0, h, w) in level-0 pixels
    levels: list[tuple[int, int, np.ndarray]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Memory held by the patch's pixels."""
        return int(sum(a.nbytes for _, _, a in self.levels))


@dataclass
class PreparedTile:
    """A service :class:`~napari_emdeblur.qc.messages.TileResult` and its patches (made in the worker)."""

    result: Any
    patch: TilePatch


def _axis_range(key: Any, n: int) -> tuple[np.ndarray, bool]:
    """Indices selected along an axis of length ``n`` by an int or a slice; True if it was an int."""
    if isinstance(key, (int, np.integer)):
        i = int(key) + (n if int(key) < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"index {int(key)} out of range for axis of length {n}")
        return np.array([i]), True
    if isinstance(key, slice):
        return np.arange(*key.indices(n)), False
    raise IndexError(f"only integers and slices are supported, got {type(key).__name__}")


class CorrectedLevel:
    """Level ``k`` of a :class:`CorrectedStore` as a read-only array-like (basic indexing)."""

    def __init__(self, store: "CorrectedStore", k: int):
        self.store, self.k = store, k
        base = store.base[k]
        self.shape = tuple(int(s) for s in base.shape)
        self.dtype = np.dtype(base.dtype)
        self.ndim = len(self.shape)
        self.size = int(math.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<CorrectedLevel {self.k} {self.shape} {self.dtype}, {len(self.store)} corrected tiles>"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[(slice(None),) * self.ndim]
        return a if dtype is None else a.astype(dtype, copy=False)

    def _normalise(self, key: Any) -> tuple:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        return key + (slice(None),) * (self.ndim - len(key))

    def __getitem__(self, key: Any) -> np.ndarray:
        key = self._normalise(key)
        if len(key) != self.ndim:
            raise IndexError(f"too many indices for an array of {self.ndim} dimensions")
        ranges = [_axis_range(k, n) for k, n in zip(key, self.shape)]
        as_slices = tuple(slice(int(r[0]), int(r[0]) + 1) if is_int else k
                          for (r, is_int), k in zip(ranges, key))
        patches = self.store.patches_in(self.k, ranges)
        out = np.asarray(self.store.base[self.k][as_slices])
        if patches:
            out = np.array(out, copy=True)  # never write into the original's buffer
            ys, xs = ranges[-2][0], ranges[-1][0]
            zs = ranges[0][0] if self.ndim == 3 else None
            for p, (py, px, pix) in patches:
                sy = (ys >= py) & (ys < py + pix.shape[0])
                sx = (xs >= px) & (xs < px + pix.shape[1])
                if not (sy.any() and sx.any()):
                    continue
                src = pix[np.ix_(ys[sy] - py, xs[sx] - px)]
                if zs is None:
                    out[np.ix_(np.flatnonzero(sy), np.flatnonzero(sx))] = src
                else:
                    for iz in np.flatnonzero(zs == p.z):
                        out[iz][np.ix_(np.flatnonzero(sy), np.flatnonzero(sx))] = src
        squeeze = tuple(0 if is_int else slice(None) for _, is_int in ranges)
        return out[squeeze]


class CorrectedStore:
    """The original's levels with corrected tiles overlaid (see the module doc). Thread-safe.

    Parameters
    ----------
    levels : sequence of arrays
        The original layer's data: one array, or the levels of a multiscale layer (level 0 first),
        2-D ``(y, x)`` or 3-D ``(z, y, x)``.
    """

    def __init__(self, levels: Sequence[Any]):
        self.base = list(levels)
        shape0 = tuple(int(s) for s in self.base[0].shape)
        self.ndim = len(shape0)
        self.factors = []
        for a in self.base:
            f = tuple(max(1, round(s0 / max(1, int(s)))) for s0, s in zip(shape0[-2:], a.shape[-2:]))
            self.factors.append(f)
        self._tiles: dict[tuple[int, int, int], TilePatch] = {}
        self._lock = threading.Lock()
        self._index: list[tuple[np.ndarray, list[TilePatch]]] | None = None
        self.levels = [CorrectedLevel(self, k) for k in range(len(self.base))]

    def __len__(self) -> int:
        return len(self._tiles)

    def __contains__(self, key: object) -> bool:
        return key in self._tiles

    @property
    def nbytes(self) -> int:
        """Memory held by the corrected tiles (all levels)."""
        with self._lock:
            return sum(p.nbytes for p in self._tiles.values())

    # ------------------------------------------------------------------ worker side
    def prepare(self, key: tuple[int, int, int], y0: int, x0: int, pixels: np.ndarray) -> TilePatch:
        """The tile's patch at every level (worker thread; reads only the original under the tile)."""
        z = int(key[0])
        h, w = pixels.shape
        patch = TilePatch(tuple(int(v) for v in key), z, (int(y0), int(x0), int(h), int(w)))  # type: ignore[arg-type]
        patch.levels.append((int(y0), int(x0), np.ascontiguousarray(pixels)))
        if len(self.base) == 1:
            return patch
        zsel: tuple = (z,) if self.ndim == 3 else ()
        orig = np.asarray(self.base[0][zsel + (slice(y0, y0 + h), slice(x0, x0 + w))])
        diff = pixels.astype(np.float32) - orig.astype(np.float32)
        H0, W0 = self.base[0].shape[-2:]
        kind = np.dtype(self.base[0].dtype)
        for k in range(1, len(self.base)):
            fy, fx = self.factors[k]
            Hk, Wk = self.base[k].shape[-2:]
            a0, b0 = y0 // fy, x0 // fx
            a1, b1 = min(Hk, -(-(y0 + h) // fy)), min(Wk, -(-(x0 + w) // fx))
            if a1 <= a0 or b1 <= b0:
                continue
            # sum of the difference per level-k cell, divided by the cell's pixels inside the image
            acc = np.zeros(((a1 - a0) * fy, (b1 - b0) * fx), np.float32)
            oy, ox = y0 - a0 * fy, x0 - b0 * fx
            hh, ww = min(h, acc.shape[0] - oy), min(w, acc.shape[1] - ox)
            acc[oy : oy + hh, ox : ox + ww] = diff[:hh, :ww]
            sums = acc.reshape(a1 - a0, fy, b1 - b0, fx).sum(axis=(1, 3))
            ny = np.clip(np.minimum((np.arange(a0, a1) + 1) * fy, H0) - np.arange(a0, a1) * fy, 1, None)
            nx = np.clip(np.minimum((np.arange(b0, b1) + 1) * fx, W0) - np.arange(b0, b1) * fx, 1, None)
            cells = ny[:, None] * nx[None, :]
            mean = sums / cells
            base_k = np.asarray(self.base[k][zsel + (slice(a0, a1), slice(b0, b1))]).astype(np.float32)
            out = base_k + mean
            # cells the tile covers whole: the area mean of the corrected pixels themselves (exact
            # even while a lazily built level still shows a placeholder there)
            acc[:] = 0
            acc[oy : oy + hh, ox : ox + ww] = pixels[:hh, :ww]
            inside = np.zeros(acc.shape, np.float32)
            inside[oy : oy + hh, ox : ox + ww] = 1
            n_in = inside.reshape(a1 - a0, fy, b1 - b0, fx).sum(axis=(1, 3))
            full = n_in >= cells
            if full.any():
                own = acc.reshape(a1 - a0, fy, b1 - b0, fx).sum(axis=(1, 3)) / np.maximum(n_in, 1)
                out = np.where(full, own, out)
            if kind.kind in "ui":
                info = np.iinfo(kind)
                out = np.clip(np.rint(out), info.min, info.max)
            patch.levels.append((int(a0), int(b0), out.astype(kind)))
        return patch

    # ------------------------------------------------------------------ GUI side
    def put(self, patch: TilePatch) -> None:
        """Show ``patch`` (replaces an earlier one of the same tile)."""
        with self._lock:
            self._tiles[patch.key] = patch
            self._index = None

    def remove(self, key: tuple[int, int, int]) -> TilePatch | None:
        """Show the original again under tile ``key``; returns its patch (or None)."""
        with self._lock:
            p = self._tiles.pop(tuple(int(v) for v in key), None)  # type: ignore[arg-type]
            self._index = None
        return p

    def clear(self) -> None:
        """Forget every corrected tile."""
        with self._lock:
            self._tiles.clear()
            self._index = None

    def snapshot(self) -> "CorrectedStore":
        """A store over the same original with the tiles shown now: later puts and removes (review)
        do not change it (patches are never modified, so they are shared, not copied).
        """
        snap = CorrectedStore(self.base)
        with self._lock:
            snap._tiles = dict(self._tiles)
        return snap

    def keys(self) -> list[tuple[int, int, int]]:
        """The tiles shown corrected."""
        with self._lock:
            return list(self._tiles)

    def patches_in(self, k: int, ranges: list[tuple[np.ndarray, bool]]) -> list[tuple[TilePatch, tuple]]:
        """Patches of level ``k`` overlapping the selected index ranges."""
        with self._lock:
            if self._index is None:
                index = []
                for lvl in range(len(self.base)):
                    ps = [p for p in self._tiles.values() if len(p.levels) > lvl]
                    boxes = np.array([(p.z, y, x, y + a.shape[0], x + a.shape[1])
                                      for p in ps for (y, x, a) in [p.levels[lvl]]], np.int64).reshape(-1, 5)
                    index.append((boxes, ps))
                self._index = index
            boxes, ps = self._index[k]
        if not len(ps):
            return []
        ys, xs = ranges[-2][0], ranges[-1][0]
        if not (ys.size and xs.size):
            return []
        hit = ((boxes[:, 1] <= ys.max()) & (boxes[:, 3] > ys.min())
               & (boxes[:, 2] <= xs.max()) & (boxes[:, 4] > xs.min()))
        if self.ndim == 3:
            hit &= np.isin(boxes[:, 0], ranges[0][0])
        return [(ps[i], ps[i].levels[k]) for i in np.flatnonzero(hit)]


class ThrottledRefresh:
    """Coalescing ``layer.refresh()`` on the GUI thread (see the module doc).

    Changes are reported as world-coordinate boxes ``(y0, x0, y1, x1)`` (or None: anywhere). A
    change out of view is kept and refreshed once the camera brings it into view (or on
    :meth:`flush`), so nothing is redrawn that no one sees.

    Parameters
    ----------
    get_layer : callable
        Returns the layer to refresh, or None (the layer was deleted).
    min_interval_ms : float
        Shortest time between two refreshes.
    cost_factor : float
        Never refresh more often than this many times the last refresh's cost.
    parent : QObject, optional
        The timer's parent (the dock): it dies with it, so no refresh fires after the dock closed.
    camera : napari camera, optional
        Watched for changes that bring kept changes into view.
    on_refresh : callable, optional
        Called right after each refresh (e.g. to update a status line in the same repaint).
    update : callable, optional
        ``update(layer, full)`` instead of ``layer.refresh()`` (e.g. a partial texture update);
        ``full`` is True on :meth:`flush` with ``everything``.
    """

    def __init__(self, get_layer: Callable[[], Any], min_interval_ms: float = 250.0, cost_factor: float = 3.0,
                 parent: Any = None, camera: Any = None, on_refresh: Callable[[], None] | None = None,
                 update: Callable[[Any, bool], None] | None = None):
        from qtpy.QtCore import QTimer

        self.get_layer = get_layer
        self.update = update
        self.min_interval_ms = float(min_interval_ms)
        self.cost_factor = float(cost_factor)
        self.on_refresh = on_refresh
        self.count = 0  # refreshes done
        self.skipped = 0  # timer firings without a refresh (layer hidden or changes out of view)
        self.costs_ms: list[float] = []
        self.last_cost_ms = 0.0
        self._boxes: list[tuple[float, float, float, float] | None] = []
        self._out_of_view: list[tuple[float, float, float, float]] = []
        self._last = -1e9
        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._fire)
        if camera is not None:
            camera.events.center.connect(self._camera_moved)
            camera.events.zoom.connect(self._camera_moved)

    @property
    def interval_ms(self) -> float:
        """The current shortest time between refreshes."""
        return max(self.min_interval_ms, self.cost_factor * self.last_cost_ms)

    @property
    def pending(self) -> bool:
        """True while a refresh is scheduled."""
        return self._timer.isActive()

    @property
    def out_of_view(self) -> int:
        """Changes kept until they come into view."""
        return len(self._out_of_view)

    def request(self, box: tuple[float, float, float, float] | None = None) -> None:
        """Ask for a refresh; ``box`` = the changed ``(y0, x0, y1, x1)`` in world coordinates."""
        self._boxes.append(box)
        self._schedule()

    def _schedule(self) -> None:
        if self._timer.isActive():
            return
        wait = self.interval_ms - (time.perf_counter() - self._last) * 1000.0
        self._timer.start(max(0, int(wait)))

    def _camera_moved(self, *_: Any) -> None:
        if self._out_of_view and not self._timer.isActive():
            self._boxes.extend(self._out_of_view)
            self._out_of_view = []
            self._schedule()

    def flush(self, everything: bool = True) -> None:
        """Refresh now what is pending; with ``everything``, also changes out of view (and the
        layer's thumbnail), e.g. at the end of a run.
        """
        if everything and self._out_of_view:
            self._boxes.extend(self._out_of_view)
            self._out_of_view = []
        elif not self._timer.isActive():
            return
        self._timer.stop()
        self._fire(timed_to_paint=False, force=everything)

    def stop(self) -> None:
        """Drop what is pending and forget the last cost (a new run measures afresh)."""
        self._boxes.clear()
        self._out_of_view.clear()
        self.last_cost_ms = 0.0
        try:
            self._timer.stop()
        except RuntimeError:  # the parent (and the timer) are already gone
            pass

    @staticmethod
    def _view_box(layer: Any) -> tuple[float, float, float, float] | None:
        """The part of ``layer`` on screen, in world coordinates (None if unknown)."""
        try:
            corners = np.asarray(layer.corner_pixels, float)[:, -2:]
            if getattr(layer, "multiscale", False):
                corners = corners * np.asarray(layer.downsample_factors[layer.data_level], float)[-2:]
            scale = np.asarray(layer.scale, float)[-2:]
            translate = np.asarray(layer.translate, float)[-2:]
        except (AttributeError, IndexError, ValueError, TypeError):
            return None
        lo = translate + (corners[0] - 0.5) * scale
        hi = translate + (corners[1] + 1.5) * scale
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def _fire(self, timed_to_paint: bool = True, force: bool = False) -> None:
        from qtpy.QtCore import QTimer

        boxes, self._boxes = self._boxes, []
        self._last = time.perf_counter()
        layer = self.get_layer()
        if layer is not None:
            mark_changed(layer)  # also when not redrawn now (hidden, out of view): see _reader.redraw
        if layer is None or not layer.visible:
            self.skipped += 1
            return
        view = self._view_box(layer)
        if not force and view is not None and None not in boxes:
            vy0, vx0, vy1, vx1 = view
            seen = [b for b in boxes if b is not None and b[0] < vy1 and b[2] > vy0 and b[1] < vx1 and b[3] > vx0]
            self._out_of_view.extend(b for b in boxes if b is not None and b not in seen)
            if not seen:
                self.skipped += 1
                return
        t0 = time.perf_counter()
        if self.update is not None:
            self.update(layer, force)
        else:  # the thumbnail is redone at the end (flush): per tile it would only repaint the layer list
            redraw(layer, thumbnail=force, final=force)
        if self.on_refresh is not None:
            self.on_refresh()
        self.count += 1
        self.last_cost_ms = (time.perf_counter() - t0) * 1000.0
        if not timed_to_paint:  # called from other work: its time is not the refresh's
            self.costs_ms.append(round(self.last_cost_ms, 1))
            return

        def _after_paint() -> None:  # the refresh plus what it caused up to the next loop turn
            self.last_cost_ms = max(self.last_cost_ms, (time.perf_counter() - t0) * 1000.0)
            self.costs_ms.append(round(self.last_cost_ms, 1))

        QTimer.singleShot(0, _after_paint)
