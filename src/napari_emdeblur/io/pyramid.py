"""Multiscale pyramids of big sections: area-averaged levels that fill in without blocking.

A section whose y or x side exceeds :func:`multiscale_min_side` (4096 px, env
``EMDEBLUR_MULTISCALE_SIDE``) is given a pyramid: level 0 is the section itself, level ``k``
has shape ``ceil(H / 2**k) x ceil(W / 2**k)`` (a stack keeps its z), down to a level whose
larger side is at most :data:`COARSEST_SIDE` px. Files that carry their own levels (OME-TIFF
SubIFDs, OME-Zarr multiscales) keep them; for the others a :class:`Pyramid` makes them.

Geometry
--------
napari places pixel ``i`` of level ``k`` over the level-0 pixels ``[i d, (i + 1) d)`` with
``d = shape_0 / shape_k`` (per axis; its downsample factor is that ratio). Every level made here
holds exactly the **area mean** of those level-0 pixels, through a cumulative integral, so the
levels are aligned with level 0 at any ``d`` (also when the shape is not a multiple of
``2**k``); where a pixel is only partly covered by the data (a mosaic's gaps, a tile's edge) it
is the mean of the covered part (where two tiles share a pixel, the later tile's part). Mosaics pad their level 0 to a multiple of ``2**(n-1)`` so that
``d`` is exactly ``2**k`` (:func:`padded_extent`).

Tiles and the builder
---------------------
A pyramid is made from *tiles*: the acquisition tiles of a MultiSEM mosaic (they overlap; the
tile listed later wins, gaps stay 0) or regular blocks of one big image. Each tile's level
images are computed from the tile alone, so the pyramid is built one tile at a time, in a
background thread (lower priority than the GUI thread where the OS allows it):

* **overview levels** (the coarse ones, held in memory: every level whose array takes at most
  ``level_memory`` bytes, from the finest such level up): built for every tile in file order by a
  background pass (so later tiles overwrite earlier ones, as in level 0) from the tile's
  **thumbnail** when the source has thumbnails (MultiSEM ``thumbnail_*`` files, area averages of
  about 1/8) and the level is at least as coarse as the thumbnail; else from one read of the
  full-resolution tile. Until a tile is done its area reads as 0.
* **fine levels** (between level 0 and the overview levels): computed on demand for the tiles
  in view, newest request first, from the full-resolution tile, kept in an LRU of
  ``lru_bytes``; until then a tile is drawn from the finest overview level, enlarged.
* **level 0**: the section's own data (read on demand, as before).

Nothing here reads a full-resolution tile when the pyramid is made (opening returns at once),
and with thumbnails the overview never reads one. :attr:`Pyramid.generation` grows whenever new
tile images are ready: a viewer polls it and refreshes the layer (the npe2 reader does).

Cache
-----
When the overview levels are complete they are written once as an OME-Zarr (NGFF 0.4,
``multiscales`` with one dataset per overview level) into :func:`pyramid_cache_dir` (env
``EMDEBLUR_CACHE``, default the platform's user cache folder; never beside the raw data),
named by a hash of the source's identity (path, size, modification time, coordinates file
content), its shape, dtype and the level geometry: built in a temporary folder and renamed into
place. The next open loads the overview from there (:attr:`Pyramid.stats` ``sidecar_loads``)
and reads no tile for it.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "COARSEST_SIDE",
    "DEFAULT_MULTISCALE_SIDE",
    "LAYOUT_VERSION",
    "LevelArray",
    "Pyramid",
    "PyramidLevel",
    "Tile",
    "TileIndex",
    "area_levels",
    "index_ranges",
    "block_tiles",
    "cache_root",
    "level_shapes",
    "multiscale_min_side",
    "n_levels_for",
    "padded_extent",
    "pyramid_cache_dir",
]

COARSEST_SIDE = 1024  # the coarsest level's larger side is at most this
DEFAULT_MULTISCALE_SIDE = 4096  # sections with a larger y or x side get a pyramid
LAYOUT_VERSION = 1  # bump when the sidecar's content or geometry changes


# ----------------------------------------------------------------------------- places and sizes
def cache_root() -> Path:
    """The package's user cache folder: env ``EMDEBLUR_CACHE``, else the platform's cache dir."""
    env = os.environ.get("EMDEBLUR_CACHE")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("napari-emdeblur", appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs comes with napari/npe2
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "napari-emdeblur"


def pyramid_cache_dir() -> Path:
    """Where pyramid sidecars are cached: ``cache_root() / "pyramids"``."""
    return cache_root() / "pyramids"


def multiscale_min_side() -> int:
    """Sections with a y or x side above this get a pyramid (env ``EMDEBLUR_MULTISCALE_SIDE``)."""
    env = os.environ.get("EMDEBLUR_MULTISCALE_SIDE")
    try:
        return int(float(env)) if env else DEFAULT_MULTISCALE_SIDE
    except ValueError:
        return DEFAULT_MULTISCALE_SIDE


def n_levels_for(shape_yx: Sequence[int], coarsest: int = COARSEST_SIDE) -> int:
    """Number of levels (level 0 included) until the larger side is at most ``coarsest``."""
    side = max(int(shape_yx[-2]), int(shape_yx[-1]))
    n = 1
    while -(-side // (1 << (n - 1))) > coarsest:
        n += 1
    return n


def padded_extent(n: int, n_levels: int) -> int:
    """``n`` rounded up to a multiple of ``2**(n_levels - 1)`` (exact factors for a mosaic)."""
    m = 1 << max(n_levels - 1, 0)
    return -(-int(n) // m) * m


def level_shapes(shape: Sequence[int], n_levels: int) -> list[tuple[int, ...]]:
    """Shapes of levels 0 .. n_levels-1: y and x divided by ``2**k`` (rounded up), z kept."""
    shape = tuple(int(s) for s in shape)
    out = []
    for k in range(n_levels):
        f = 1 << k
        out.append(shape[:-2] + (-(-shape[-2] // f), -(-shape[-1] // f)))
    return out


# ----------------------------------------------------------------------------- area means
def _axis_means(t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Means of ``t`` along axis 0 over the intervals ``[lo, hi)`` (in ``t``'s pixel units,
    clipped to ``[0, len(t))``; empty intervals give 0), through the cumulative integral.
    """
    n = t.shape[0]
    c = np.empty((n + 1,) + t.shape[1:], np.float64)
    c[0] = 0
    np.cumsum(t, axis=0, dtype=np.float64, out=c[1:])
    shape = (-1,) + (1,) * (t.ndim - 1)

    def integral(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 0.0, float(n))
        i = np.minimum(p.astype(np.int64), n - 1)
        return c[i] + (p - i).reshape(shape) * t[i]

    width = (np.clip(hi, 0, n) - np.clip(lo, 0, n)).reshape(shape)
    return (integral(hi) - integral(lo)) / np.where(width > 0, width, 1.0)


def _pixel_range(start: float, length: float, d: float) -> tuple[int, int]:
    """Level pixels (of size ``d``) that overlap ``[start, start + length)``: ``[a, b)``."""
    return int(np.floor(start / d + 1e-9)), int(np.ceil((start + length) / d - 1e-9))


def _cast(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(a), info.min, info.max).astype(dtype)
    return a.astype(dtype)


def _direct(img: np.ndarray, y0: float, x0: float, d: tuple[float, float], scale: tuple[float, float],
            band: int) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """One level straight from ``img``: ``(a, c, float means, row coverage, column coverage)``."""
    (dy, dx), (sy, sx) = d, scale
    n_rows, n_cols = img.shape
    a, b = _pixel_range(y0, n_rows * sy, dy)
    c, e = _pixel_range(x0, n_cols * sx, dx)
    ys = (np.arange(a, b + 1, dtype=np.float64) * dy - y0) / sy  # pixel edges in img rows
    xs = (np.arange(c, e + 1, dtype=np.float64) * dx - x0) / sx
    res = np.empty((b - a, e - c), np.float64)
    step = max(1, int(band / max(dy / sy, 1.0)))  # output rows per band of img rows
    for r0 in range(0, b - a, step):
        r1 = min(r0 + step, b - a)
        lo_row = int(np.clip(np.floor(ys[r0]), 0, n_rows - 1))
        hi_row = int(np.clip(np.ceil(ys[r1]), lo_row + 1, n_rows))
        rows = _axis_means(img[lo_row:hi_row], ys[r0:r1] - lo_row, ys[r0 + 1 : r1 + 1] - lo_row)
        res[r0:r1] = _axis_means(np.ascontiguousarray(rows.T), xs[:-1], xs[1:]).T
    cov_y = np.clip(ys[1:], 0, n_rows) - np.clip(ys[:-1], 0, n_rows)
    cov_x = np.clip(xs[1:], 0, n_cols) - np.clip(xs[:-1], 0, n_cols)
    return a, c, res, cov_y, cov_x


def _pairs(v: np.ndarray, phase: int, axis: int) -> np.ndarray:
    """Sums of neighbouring pairs along ``axis`` after ``phase`` (0/1) leading zeros."""
    n = v.shape[axis]
    tail = (phase + n) & 1
    if phase or tail:
        widths = [(0, 0)] * v.ndim
        widths[axis] = (phase, tail)
        v = np.pad(v, widths)
    return v[0::2] + v[1::2] if axis == 0 else v[:, 0::2] + v[:, 1::2]


def area_levels(img: np.ndarray, y0: float, x0: float, factors: dict[int, tuple[float, float]],
                dtype: Any = None, scale: tuple[float, float] = (1.0, 1.0), band: int = 512,
                ) -> dict[int, tuple[int, int, np.ndarray]]:
    """Area-mean images of a tile at several levels.

    Parameters
    ----------
    img : ndarray
        The tile (2-D), or a reduced copy of it (a thumbnail) with ``scale`` tile pixels per
        pixel along (y, x).
    y0, x0 : float
        The tile's top-left corner in level-0 pixels.
    factors : dict
        ``{level: (dy, dx)}``: level-0 pixels per level pixel along y and x.
    dtype : dtype, optional
        Output dtype (default ``img.dtype``); integers are rounded.
    scale : (float, float)
        Tile pixels per ``img`` pixel (1 for the tile itself).
    band : int
        Rows of ``img`` converted to float at a time (bounds the memory for big tiles).

    Returns
    -------
    dict
        ``{level: (a, c, image)}``: the level image covers level pixels ``[a, a + h)`` x
        ``[c, c + w)``; each pixel is the mean of the tile's pixels inside it (pixels only partly
        covered by the tile get the mean of the covered part). A level whose factor is twice the
        previous one's is computed from it (exactly, weighting by coverage).
    """
    dtype = np.dtype(dtype or img.dtype)
    out: dict[int, tuple[int, int, np.ndarray]] = {}
    prev: tuple[tuple[float, float], int, int, np.ndarray, np.ndarray, np.ndarray] | None = None
    if scale == (1.0, 1.0) and float(y0).is_integer() and float(x0).is_integer():
        # the tile itself as the level of factor 1: a factor-2 level follows by pair sums
        prev = ((1.0, 1.0), int(y0), int(x0), img.astype(np.float64),
                np.ones(img.shape[0]), np.ones(img.shape[1]))
    for k in sorted(factors):
        d = (float(factors[k][0]), float(factors[k][1]))
        if prev is not None and abs(d[0] - 2 * prev[0][0]) < 1e-9 and abs(d[1] - 2 * prev[0][1]) < 1e-9:
            _, pa, pc, mean, cov_y, cov_x = prev
            sums = _pairs(_pairs(mean * cov_y[:, None] * cov_x[None, :], pa & 1, 0), pc & 1, 1)
            cov_y, cov_x = _pairs(cov_y, pa & 1, 0), _pairs(cov_x, pc & 1, 0)
            den = cov_y[:, None] * cov_x[None, :]
            mean = sums / np.where(den > 0, den, 1.0)
            a, c = pa >> 1, pc >> 1
        else:
            a, c, mean, cov_y, cov_x = _direct(img, y0, x0, d, scale, band)
        prev = (d, a, c, mean, cov_y, cov_x)
        out[k] = (a, c, _cast(mean, dtype))
    return out


# ----------------------------------------------------------------------------- tiles
@dataclass(frozen=True)
class Tile:
    """One tile of a pyramid's source: plane ``z``, top-left ``(y0, x0)``, size ``(height, width)``."""

    z: int
    y0: int
    x0: int
    height: int
    width: int


def block_tiles(shape: Sequence[int], block: int = 2048) -> list[Tile]:
    """Regular ``block`` x ``block`` tiles covering a 2-D or (z, y, x) shape (partial at the edges)."""
    shape = tuple(int(s) for s in shape)
    nz = shape[0] if len(shape) == 3 else 1
    h, w = shape[-2:]
    return [Tile(z, y, x, min(block, h - y), min(block, w - x))
            for z in range(nz) for y in range(0, h, block) for x in range(0, w, block)]


# ----------------------------------------------------------------------------- the pyramid
class Pyramid:
    """Levels of a section made from its tiles, built in a background thread (module docstring).

    Parameters
    ----------
    level0 : array-like
        The section (2-D or (z, y, x)); it is level 0 as it is.
    tiles : list of Tile
        The tiles level 0 is made of, in file order (a later tile wins where tiles overlap).
    read_tile : callable
        ``read_tile(i)`` -> the full-resolution 2-D image of tile ``i`` (called in the builder).
    read_thumbnail : callable, optional
        ``read_thumbnail(i)`` -> an area-averaged thumbnail of tile ``i`` or None.
    thumbnail_factor : float, optional
        Tile pixels per thumbnail pixel (about 8 for MultiSEM); None = no thumbnails.
    n_levels : int, optional
        Levels including level 0 (default :func:`n_levels_for`).
    cache_key : str, optional
        Identity of the source for the sidecar cache; None = no cache.
    cache_dir : Path, optional
        Sidecar folder (default :func:`pyramid_cache_dir`).
    describe : dict, optional
        JSON-able description stored in the sidecar (source path etc.).
    level_memory : int
        Bytes a level may take to be an overview level (held in memory, cached).
    lru_bytes : int
        Memory for fine-level tile images.
    start : bool
        Start the builder thread (and the overview pass) now.
    """

    def __init__(self, level0: Any, tiles: Sequence[Tile], read_tile: Callable[[int], np.ndarray], *,
                 read_thumbnail: Callable[[int], np.ndarray | None] | None = None,
                 thumbnail_factor: float | None = None, n_levels: int | None = None,
                 cache_key: str | None = None, cache_dir: str | os.PathLike | None = None,
                 describe: dict | None = None, level_memory: int = 64 << 20, lru_bytes: int = 128 << 20,
                 start: bool = True):
        self.level0 = level0
        self.tiles = list(tiles)
        self.read_tile = read_tile
        self.read_thumbnail = read_thumbnail if thumbnail_factor else None
        self.shape = tuple(int(s) for s in level0.shape)
        self.dtype = np.dtype(level0.dtype)
        self.nz = self.shape[0] if len(self.shape) == 3 else 1
        self.n_levels = int(n_levels or n_levels_for(self.shape))
        self.shapes = level_shapes(self.shape, self.n_levels)
        h0, w0 = self.shape[-2:]
        self.factors = {k: (h0 / s[-2], w0 / s[-1]) for k, s in enumerate(self.shapes)}
        # overview levels: the coarse ones that fit in memory, at least as coarse as the thumbnails
        self.thumb_level: int | None = None
        if self.read_thumbnail is not None and thumbnail_factor:
            self.thumb_level = next((k for k in range(1, self.n_levels) if (1 << k) >= 0.75 * thumbnail_factor),
                                    None)
            if self.thumb_level is None:
                self.read_thumbnail = None
        first = self.n_levels
        for k in range(self.n_levels - 1, 0, -1):
            if self.nz * self.shapes[k][-2] * self.shapes[k][-1] * self.dtype.itemsize > level_memory:
                break
            first = k
        if self.thumb_level is not None:
            first = max(first, self.thumb_level)
        self.first_overview = min(first, self.n_levels)
        self.overview: dict[int, np.ndarray] = {
            k: np.zeros(self.shapes[k] if len(self.shapes[k]) == 3 else (1, *self.shapes[k]), self.dtype)
            for k in range(self.first_overview, self.n_levels)}
        self.overview_done = np.zeros(len(self.tiles), bool)
        self.cache_key = cache_key
        self.cache_dir = Path(cache_dir) if cache_dir is not None else pyramid_cache_dir()
        self.describe = dict(describe or {})
        self.stats = {"full_reads": 0, "thumb_reads": 0, "sidecar_loads": 0, "sidecar_writes": 0,
                      "tiles_built": 0, "build_s": 0.0}
        self.generation = 0
        self.error: str | None = None
        self._lru: OrderedDict[tuple[int, int], tuple[int, int, np.ndarray]] = OrderedDict()
        self._lru_bytes, self._lru_max = 0, int(lru_bytes)
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._queue: list[tuple[int, int, int]] = []
        self._queued: set[int] = set()
        self._seq = itertools.count()
        self._busy = False
        self._overview_started = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._index = TileIndex(self.tiles)
        self.levels: list[Any] = [level0] + [PyramidLevel(self, k) for k in range(1, self.n_levels)]
        if not self.overview:
            self.overview_done[:] = True
        if start:
            self.start()

    # ------------------------------------------------------------------ state
    @property
    def complete(self) -> bool:
        """True when every overview level is built for every tile."""
        return bool(self.overview_done.all())

    @property
    def sidecar_path(self) -> Path | None:
        """The OME-Zarr sidecar of this pyramid (it may not exist yet); None without a cache key."""
        if self.cache_key is None:
            return None
        return self.cache_dir / f"{self.cache_key}.ome.zarr"

    def idle(self) -> bool:
        """True when the builder has nothing queued and the overview is complete."""
        with self._lock:
            return self.complete and not self._queue and not self._busy

    def wait(self, timeout: float | None = None, predicate: Callable[[], bool] | None = None) -> bool:
        """Block until ``predicate()`` (default: :meth:`idle`) holds; False on timeout."""
        pred = predicate or self.idle
        end = None if timeout is None else time.monotonic() + timeout
        while not pred():
            if self.error is not None:
                return False
            if end is not None and time.monotonic() > end:
                return False
            time.sleep(0.02)
        return True

    # ------------------------------------------------------------------ geometry
    def tile_range(self, i: int, k: int) -> tuple[int, int, int, int]:
        """Level-``k`` pixel rows ``[a, b)`` and columns ``[c, e)`` touched by tile ``i``."""
        t = self.tiles[i]
        dy, dx = self.factors[k]
        a, b = _pixel_range(t.y0, t.height, dy)
        c, e = _pixel_range(t.x0, t.width, dx)
        return a, b, c, e

    def tiles_in(self, z: int, y0: float, y1: float, x0: float, x1: float) -> list[int]:
        """Tiles of plane ``z`` overlapping level-0 rows ``[y0, y1)`` x columns ``[x0, x1)``, in file order."""
        return self._index.query(z, y0, y1, x0, x1)

    # ------------------------------------------------------------------ tile images
    def _lru_get(self, key: tuple[int, int]) -> tuple[int, int, np.ndarray] | None:
        with self._lock:
            v = self._lru.get(key)
            if v is not None:
                self._lru.move_to_end(key)
            return v

    def _lru_put(self, key: tuple[int, int], v: tuple[int, int, np.ndarray]) -> None:
        with self._lock:
            old = self._lru.pop(key, None)
            if old is not None:
                self._lru_bytes -= old[2].nbytes
            self._lru[key] = v
            self._lru_bytes += v[2].nbytes
            while self._lru_bytes > self._lru_max and len(self._lru) > 1:
                _, (_, _, a) = self._lru.popitem(last=False)
                self._lru_bytes -= a.nbytes

    def fine_tile(self, k: int, i: int) -> tuple[int, int, np.ndarray] | None:
        """Tile ``i``'s level-``k`` image ``(a, c, image)`` if ready, else None (fine levels)."""
        return self._lru_get((k, i))

    def request(self, tiles: Sequence[int]) -> None:
        """Queue tiles for their fine levels, newest request first."""
        with self._cv:
            for i in tiles:
                if i in self._queued:
                    continue
                self._queued.add(i)
                heapq.heappush(self._queue, (0, -next(self._seq), int(i)))
            self._cv.notify()

    # ------------------------------------------------------------------ builder
    def start(self) -> None:
        """Start the builder thread (idempotent); it first loads the sidecar or runs the overview pass."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=_builder, args=(weakref.ref(self), self._cv),
                                            name="emdeblur-pyramid", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the builder thread (after the tile it is working on)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30)

    def _next_job(self) -> tuple[str, int] | None:
        """Called with the lock held: the next thing to do, or None."""
        if self._queue:
            _, _, i = heapq.heappop(self._queue)
            self._queued.discard(i)
            return ("fine", i)
        if not self._overview_started:
            self._overview_started = True
            return ("overview", -1)
        return None

    def _build_fine(self, i: int) -> None:
        fine = [k for k in range(1, self.first_overview) if self._lru_get((k, i)) is None]
        if not fine:
            return
        img = np.asarray(self.read_tile(i))
        self.stats["full_reads"] += 1
        t = self.tiles[i]
        for k, v in area_levels(img, t.y0, t.x0, {k: self.factors[k] for k in fine}, self.dtype).items():
            self._lru_put((k, i), v)

    def _paste(self, i: int, imgs: dict[int, tuple[int, int, np.ndarray]]) -> None:
        z = self.tiles[i].z
        for k, (a, c, im) in imgs.items():
            arr = self.overview[k]
            h, w = arr.shape[-2:]
            ya, xa = max(a, 0), max(c, 0)
            yb, xb = min(a + im.shape[0], h), min(c + im.shape[1], w)
            if ya < yb and xa < xb:
                arr[z, ya:yb, xa:xb] = im[ya - a : yb - a, xa - c : xb - c]

    def _overview_pass(self, should_stop: Callable[[], bool]) -> None:
        with self._lock:
            self._busy = True
        try:
            self._overview_tiles(should_stop)
        finally:
            with self._lock:
                self._busy = False

    def _overview_tiles(self, should_stop: Callable[[], bool]) -> None:
        if self._load_sidecar():
            return
        levels = {k: self.factors[k] for k in self.overview}
        thumb_levels = {k: f for k, f in levels.items() if self.thumb_level is not None and k >= self.thumb_level}
        full_levels = {k: f for k, f in levels.items() if k not in thumb_levels}
        last = time.monotonic()
        for i, t in enumerate(self.tiles):
            # fine-level requests (tiles in view) go first
            while True:
                with self._lock:
                    if self._stop or should_stop():
                        return
                    job = heapq.heappop(self._queue) if self._queue else None
                    if job is not None:
                        self._queued.discard(job[2])
                if job is None:
                    break
                self._timed(self._build_fine, job[2])
            t0 = time.perf_counter()
            imgs: dict[int, tuple[int, int, np.ndarray]] = {}
            thumb = None
            if thumb_levels and self.read_thumbnail is not None:
                thumb = self.read_thumbnail(i)
                if thumb is not None:
                    self.stats["thumb_reads"] += 1
                    thumb = np.asarray(thumb)
                    scale = (t.height / thumb.shape[0], t.width / thumb.shape[1])
                    imgs.update(area_levels(thumb, t.y0, t.x0, thumb_levels, self.dtype, scale))
            need_full = dict(full_levels)
            if thumb is None:
                need_full.update(thumb_levels)
            if need_full:
                img = np.asarray(self.read_tile(i))
                self.stats["full_reads"] += 1
                imgs.update(area_levels(img, t.y0, t.x0, need_full, self.dtype))
            self._paste(i, imgs)
            self.overview_done[i] = True
            self.stats["tiles_built"] += 1
            self.stats["build_s"] += time.perf_counter() - t0
            if time.monotonic() - last > 0.25:
                self.generation += 1
                last = time.monotonic()
        self.generation += 1
        self._save_sidecar()

    def _timed(self, fn: Callable[[int], None], i: int) -> None:
        with self._lock:
            self._busy = True
        t0 = time.perf_counter()
        try:
            fn(i)
        finally:
            self.stats["build_s"] += time.perf_counter() - t0
            self.generation += 1
            with self._lock:
                self._busy = False

    # ------------------------------------------------------------------ sidecar
    def _sidecar_attrs(self) -> dict:
        return {"version": LAYOUT_VERSION, "key": self.cache_key, "shape": list(self.shape),
                "dtype": self.dtype.str, "n_levels": self.n_levels, "levels": sorted(self.overview),
                "thumbnails": self.thumb_level is not None, **self.describe}

    def _load_sidecar(self) -> bool:
        path = self.sidecar_path
        if path is None or not self.overview or not path.is_dir():
            return False
        try:
            import zarr

            g = zarr.open_group(str(path), mode="r")
            attrs = dict(g.attrs.get("emdeblur_pyramid", {}))
            want = self._sidecar_attrs()
            if any(attrs.get(k) != want[k] for k in ("version", "key", "shape", "dtype", "n_levels", "levels")):
                return False
            for k in self.overview:
                a = np.asarray(g[str(k)][...])
                self.overview[k][...] = a.reshape(self.overview[k].shape)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
            return False
        self.overview_done[:] = True
        self.stats["sidecar_loads"] += 1
        self.generation += 1
        return True

    def _save_sidecar(self) -> None:
        path = self.sidecar_path
        if path is None or not self.overview or not self.complete or path.exists():
            return
        try:
            import zarr

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            try:
                g = zarr.open_group(str(tmp), mode="w", zarr_format=2)
                datasets = []
                names = ["z", "y", "x"][-len(self.shape):]
                for k, arr in sorted(self.overview.items()):
                    data = arr if len(self.shape) == 3 else arr[0]
                    chunks = (1,) * (data.ndim - 2) + tuple(min(s, 1024) for s in data.shape[-2:])
                    z = g.create_array(str(k), shape=data.shape, dtype=data.dtype, chunks=chunks,
                                       compressors=None)
                    z[...] = data
                    dy, dx = self.factors[k]
                    scale = [1.0] * (len(self.shape) - 2) + [dy, dx]
                    trans = [0.0] * (len(self.shape) - 2) + [(dy - 1) / 2, (dx - 1) / 2]
                    datasets.append({"path": str(k), "coordinateTransformations": [
                        {"type": "scale", "scale": scale}, {"type": "translation", "translation": trans}]})
                g.attrs["multiscales"] = [{"version": "0.4", "name": self.describe.get("name", path.stem),
                                           "axes": [{"name": n, "type": "space"} for n in names],
                                           "datasets": datasets, "type": "mean"}]
                g.attrs["emdeblur_pyramid"] = self._sidecar_attrs()
                os.replace(tmp, path)
            except OSError:  # another process published it first, or the disk is full
                shutil.rmtree(tmp, ignore_errors=True)
                return
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self.stats["sidecar_writes"] += 1
        except Exception as e:  # noqa: BLE001 - the cache is an optimisation, never an error
            print(f"napari-emdeblur: pyramid cache not written ({e})", file=sys.stderr)


def _builder(ref: "weakref.ref[Pyramid]", cv: threading.Condition) -> None:
    """The builder thread: holds no strong reference to the pyramid while it waits."""
    try:  # Linux: a thread has its own nice value; keep the builder below the GUI thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
    except (AttributeError, OSError):
        pass

    def gone() -> bool:
        return ref() is None

    while True:
        pyr = ref()
        if pyr is None:
            return
        with cv:
            job = None
            while not pyr._stop:
                job = pyr._next_job()
                if job is not None:
                    break
                del pyr
                cv.wait(1.0)
                pyr = ref()
                if pyr is None:
                    return
            if pyr._stop:
                return
        try:
            if job is not None and job[0] == "overview":
                pyr._overview_pass(gone)
            elif job is not None:
                pyr._timed(pyr._build_fine, job[1])
        except Exception as e:  # noqa: BLE001 - reported, the viewer keeps the placeholder
            pyr.error = f"{type(e).__name__}: {e}"
            print(f"napari-emdeblur: pyramid builder failed ({pyr.error})", file=sys.stderr)
            return
        del pyr


class TileIndex:
    """Buckets of tiles per plane for quick 'which tiles overlap this rectangle' queries.

    ``tiles``: anything with ``z``, ``y0``, ``x0``, ``height`` and ``width`` (a :class:`Tile`,
    an ``io.AcqTile``).
    """

    def __init__(self, tiles: Sequence[Any], bucket: int = 2048):
        self.tiles = tiles
        self.bucket = bucket
        self.buckets: dict[tuple[int, int, int], list[int]] = {}
        for i, t in enumerate(tiles):
            for by in range(t.y0 // bucket, (t.y0 + t.height - 1) // bucket + 1):
                for bx in range(t.x0 // bucket, (t.x0 + t.width - 1) // bucket + 1):
                    self.buckets.setdefault((t.z, by, bx), []).append(i)

    def query(self, z: int, y0: float, y1: float, x0: float, x1: float) -> list[int]:
        """Tiles of plane ``z`` overlapping rows ``[y0, y1)`` x columns ``[x0, x1)``, in their order."""
        b = self.bucket
        out: set[int] = set()
        for by in range(max(int(y0), 0) // b, max(int(np.ceil(y1)) - 1, 0) // b + 1):
            for bx in range(max(int(x0), 0) // b, max(int(np.ceil(x1)) - 1, 0) // b + 1):
                for i in self.buckets.get((z, by, bx), ()):
                    t = self.tiles[i]
                    if t.y0 < y1 and t.y0 + t.height > y0 and t.x0 < x1 and t.x0 + t.width > x0:
                        out.add(i)
        return sorted(out)


def index_ranges(key: Any, shape: tuple[int, ...]) -> tuple[list[tuple[int, int]], list[bool]]:
    """A numpy-style key (ints, step-1 slices, Ellipsis) -> ``[(start, stop)]`` per axis and
    which axes were indexed by an integer (dropped from the result).
    """
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    if len(key) != len(shape):
        raise IndexError(f"too many indices for an array of shape {shape}")
    ranges, drop = [], []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)):
            j = int(k) + (n if int(k) < 0 else 0)
            if not 0 <= j < n:
                raise IndexError(f"index {int(k)} is out of bounds for size {n}")
            ranges.append((j, j + 1))
            drop.append(True)
        elif isinstance(k, slice):
            a, b, step = k.indices(n)
            if step != 1:
                raise IndexError("pyramid levels support step-1 slices only")
            ranges.append((a, max(a, b)))
            drop.append(False)
        else:
            raise IndexError(f"unsupported index {k!r} for a pyramid level")
    return ranges, drop


class LevelArray:
    """A read-only array-like over one level of a multiscale image (``shape``, ``dtype``,
    ``ndim``, ``size``, step-1 slicing): what napari's multiscale layers need.

    Subclasses implement :meth:`_read`; integer indices and 2-D levels are handled here.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, k: int):
        self.k = k
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.k} of shape {self.shape}>"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[...]
        return a.astype(dtype) if dtype is not None else a

    def __getitem__(self, key: Any) -> np.ndarray:
        ranges, drop = index_ranges(key, self.shape)
        if self.ndim == 3:
            (z0, z1), (y0, y1), (x0, x1) = ranges
        else:
            (z0, z1), ((y0, y1), (x0, x1)) = (0, 1), ranges
        out = self._read(z0, z1, y0, y1, x0, x1)
        if self.ndim == 2:
            out = out[0]
        if any(drop):
            out = out[tuple(0 if d else slice(None) for d in drop)]
        return out

    def _read(self, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Planes ``[z0, z1)``, rows ``[y0, y1)``, columns ``[x0, x1)`` as a ``(z, y, x)`` array."""
        raise NotImplementedError


class PyramidLevel(LevelArray):
    """Level ``k`` (>= 1) of a :class:`Pyramid` as a read-only array-like (see :class:`LevelArray`).
    Reading never blocks on tile files: tiles not built yet read as 0 (overview levels) or as
    the finest overview level enlarged (fine levels), and are queued.
    """

    def __init__(self, pyramid: Pyramid, k: int):
        super().__init__(pyramid.shapes[k], pyramid.dtype, k)
        self.pyramid = pyramid
        self.nbytes = self.size * self.dtype.itemsize

    def _read(self, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        out = np.zeros((z1 - z0, y1 - y0, x1 - x0), self.dtype)
        for z in range(z0, z1):
            self._fill(out[z - z0], z, y0, y1, x0, x1)
        return out

    def _fill(self, out: np.ndarray, z: int, y0: int, y1: int, x0: int, x1: int) -> None:
        pyr, k = self.pyramid, self.k
        if k in pyr.overview:
            out[...] = pyr.overview[k][z, y0:y1, x0:x1]
            return
        dy, dx = pyr.factors[k]
        missing = []
        for i in pyr.tiles_in(z, y0 * dy, y1 * dy, x0 * dx, x1 * dx):
            v = pyr.fine_tile(k, i)
            if v is None:
                missing.append(i)
                v = self._placeholder(i)
                if v is None:
                    continue
            a, c, im = v
            ya, yb = max(y0, a), min(y1, a + im.shape[0])
            xa, xb = max(x0, c), min(x1, c + im.shape[1])
            if ya < yb and xa < xb:
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = im[ya - a : yb - a, xa - c : xb - c]
        if missing:
            pyr.request(missing)

    def _placeholder(self, i: int) -> tuple[int, int, np.ndarray] | None:
        """Tile ``i`` at this level from the finest overview level (nearest), if built."""
        pyr, k = self.pyramid, self.k
        kk = pyr.first_overview
        if kk not in pyr.overview or not pyr.overview_done[i]:
            return None
        a, b, c, e = pyr.tile_range(i, k)
        dy, dx = pyr.factors[k]
        gy, gx = pyr.factors[kk]
        rows = np.minimum(((np.arange(a, b) + 0.5) * dy / gy).astype(np.int64), pyr.shapes[kk][-2] - 1)
        cols = np.minimum(((np.arange(c, e) + 0.5) * dx / gx).astype(np.int64), pyr.shapes[kk][-1] - 1)
        src = pyr.overview[kk][pyr.tiles[i].z]
        return a, c, src[np.clip(rows, 0, None)][:, np.clip(cols, 0, None)]


def source_key(*parts: Any, files: Sequence[str | os.PathLike] = ()) -> str:
    """A cache key from ``parts`` (JSON-able) and the identity of ``files`` (resolved path, size,
    modification time; small text files also by content).
    """
    h = hashlib.sha1()
    h.update(json.dumps(parts, default=str, sort_keys=True).encode())
    for f in files:
        p = Path(f).resolve()
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
        if st.st_size < (16 << 20) and p.suffix.lower() in (".txt", ".csv", ".json"):
            h.update(p.read_bytes())
    return h.hexdigest()[:24]
