"""Zeiss MultiSEM folders: the one parser of ``full_image_coordinates.txt`` and the lazy mosaic.

Coordinates are the top-left pixel of each tile (floats rounded, may be negative); all tiles are
shifted together so that the minimum is 0 (``origin='global'``, one frame for every z, keeps
sections registered) or per z plane (``origin='per_z'``). Where tiles overlap, **the tile listed
later in the file wins**; gaps are 0. A beam imaged twice (two files ``<scan>_<mfov>_<beam>_<time>``
with the same mFOV and beam, e.g. a retake) is one tile: the newest time stamp wins, the others
are listed in ``metadata['superseded']``. Distinct z values become planes 0..n-1 in increasing
order (originals in ``metadata['z_values']``). All tiles are assumed to have the shape/dtype of
the first tile (read once for metadata); the others are read on demand, block by block, through
a small LRU cache (:class:`MosaicReader`, kept as ``Section.reader``).

A mosaic larger than :func:`~.pyramid.multiscale_min_side` comes with a pyramid
(``Section.levels``, built by a :class:`~.pyramid.Pyramid` from the tiles): its overview levels
are made from the ``thumbnail_<name>`` files MultiSEM writes beside each tile (listed in
``full_thumbnail_coordinates.txt``) when they are there, else from one background read of each
tile, and cached. Its level 0 is padded with 0 (gap) on the bottom and right to a multiple of
``2**(levels - 1)`` so that the levels' downsample factors are exact powers of two.
"""

from __future__ import annotations

import math
import os
import re
import stat
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .errors import EMReadError, read_error
from .formats import is_tiff
from .planes import probe_shape, read_plane, yx_shape
from .pyramid import Pyramid, Tile, multiscale_min_side, n_levels_for, padded_extent, source_key
from .section import AcqTile, Section
from .tiff import tiff_pixel_size
from .values import MIN_SIZE

COORDS_NAME = "full_image_coordinates.txt"
THUMB_COORDS_NAME = "full_thumbnail_coordinates.txt"
THUMB_PREFIX = "thumbnail_"
_BEAM_NAME = re.compile(r"^(?P<scan>\d+)_(?P<mfov>\d+)_(?P<beam>\d+)_(?P<stamp>[^.]+)")

__all__ = ["COORDS_NAME", "THUMB_COORDS_NAME", "MosaicReader", "load_multisem", "parse_coordinates", "tile_path"]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_coordinates(path: str | os.PathLike) -> list[tuple[str, float, float, float]]:
    """Parse a Zeiss MultiSEM ``full_image_coordinates.txt``: ``(relpath, x, y, z)`` per tile.

    One tile per line: path, x, y and optionally z (default 0), tab separated. Also accepted:
    whitespace/comma/semicolon separators (paths may contain spaces when tabs are used), CRLF,
    a UTF-8 BOM, Windows backslashes, quoted paths, ``#``/``//`` comment lines, blank lines
    and a header line at the top. Other unparsable lines raise :class:`EMReadError`.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe would block the reader forever
            raise EMReadError(f"{path}: coordinates file is not a regular file")
        raw = path.read_bytes()
    except OSError as e:
        raise read_error(path, e, "cannot read the coordinates file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # names as the file system spells them (undecodable bytes escaped)
        text = os.fsdecode(raw)
    rows: list[tuple[str, float, float, float]] = []
    bad: list[int] = []
    first_data = True
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith(("#", "//", ";")):
            continue
        parsed = None
        if "\t" in s:
            fields = [f.strip() for f in s.split("\t") if f.strip() != ""]
            parsed = _fields_to_row(fields)
        else:  # no tabs: whitespace / comma / semicolon separated, the path may hold spaces
            m = re.match(rf"^(.*?)[\s,;]+({_NUM})[\s,;]+({_NUM})(?:[\s,;]+({_NUM}))?\s*[,;]?$", s)
            if m and m.group(1).strip():
                z = float(m.group(4)) if m.group(4) is not None else 0.0
                parsed = (m.group(1).strip(), float(m.group(2)), float(m.group(3)), z)
        if parsed is None:
            if first_data and not re.search(r"\d", s):  # a header line ("path x y z")
                first_data = False
                continue
            bad.append(lineno)
            continue
        first_data = False
        p = parsed[0].strip().strip('"').strip("'").replace("\\", "/")
        rows.append((p, parsed[1], parsed[2], parsed[3]))
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise EMReadError(f"{path}: cannot parse line(s) {shown} (expected: path, x, y, z)")
    if not rows:
        raise EMReadError(f"{path}: coordinates file lists no tiles")
    return rows


def _fields_to_row(fields: list[str]) -> tuple[str, float, float, float] | None:
    if len(fields) < 3:
        return None
    try:
        nums = [float(f.rstrip(",;")) for f in fields[1:4]]
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in nums):
        return None
    if len(nums) == 2:
        nums.append(0.0)
    return fields[0], nums[0], nums[1], nums[2]


def allow_outside_tiles() -> bool:
    """Whether coordinate entries may name tiles outside the section folder (env
    ``EMDEBLUR_ALLOW_OUTSIDE_TILES=1``); by default they may not.
    """
    return os.environ.get("EMDEBLUR_ALLOW_OUTSIDE_TILES", "").strip().lower() in ("1", "true", "yes")


def _inside(folder: Path, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def _resolvetile_path(folder: Path, rel: str, coords: Path | None = None, line: int | None = None) -> Path:
    """The tile file a coordinates entry names; an entry that leads outside ``folder`` (``..``,
    an absolute path elsewhere, a link) is refused unless :func:`allow_outside_tiles`.
    """
    p = tile_path(folder, rel)
    if not allow_outside_tiles() and not _inside(folder, p):
        where = f"{coords}" + (f" line {line}" if line else "") if coords else str(folder)
        raise EMReadError(f"{where}: tile entry {rel!r} lies outside the section folder {folder} "
                          "(set EMDEBLUR_ALLOW_OUTSIDE_TILES=1 to allow it)")
    return p


def tile_path(folder: Path, rel: str) -> Path:
    """The file a coordinates entry ``rel`` names (relative to ``folder``; absolute paths from the
    acquisition computer are matched by their tail under ``folder``); not checked to lie inside.
    """
    p = Path(rel)
    if p.is_absolute() and p.exists():
        return p
    parts = [q for q in rel.split("/") if q not in ("", ".")]
    if parts and re.match(r"^[A-Za-z]:$", parts[0]):  # Windows drive
        parts = parts[1:]
    direct = folder.joinpath(*parts) if parts else folder / rel
    if direct.exists() or not p.is_absolute() and not re.match(r"^[A-Za-z]:", rel):
        return direct
    # an absolute path from the acquisition computer: try ever shorter tails under folder
    for k in range(1, len(parts)):
        cand = folder.joinpath(*parts[k:])
        if cand.exists():
            return cand
    return direct


#: a mosaic whose extent is this many times the area its tiles cover is refused (an outlying
#: coordinate, e.g. x = 1e9, would otherwise build a graph of millions of empty chunks)
MAX_EXTENT_FACTOR = 64.0
#: and so is one above this many pixels per plane (1e12 px = a 1 mm square at 1 nm)
MAX_MOSAIC_PIXELS = 1e12


def _check_extent(entries, xs: np.ndarray, ys: np.ndarray, n_z: int, tile: tuple[int, int], coords: Path) -> None:
    """Refuse a mosaic extent the tiles cannot fill (see :data:`MAX_EXTENT_FACTOR`), naming the
    tiles that lie farthest from the others.
    """
    th, tw = tile
    h, w = float(ys.max()) + th, float(xs.max()) + tw
    covered = len(entries) / max(n_z, 1) * th * tw
    if h * w <= MAX_MOSAIC_PIXELS and (h * w <= max(MAX_EXTENT_FACTOR * covered, 1 << 26)):
        return
    dist = np.maximum(np.abs(xs - np.median(xs)) / tw, np.abs(ys - np.median(ys)) / th)
    far = [entries[i][0].name for i in np.argsort(-dist)[:3] if dist[i] > 2]
    raise EMReadError(
        f"{coords}: tile positions span {w:.4g} x {h:.4g} px, far more than {len(entries)} tiles of {tw}x{th} px "
        f"can cover" + (f"; outlying tile(s): {', '.join(far)}" if far else "") + " (check the coordinates)"
    )


def _check_tile_headers(paths: list[Path], first: tuple[tuple[int, ...], np.dtype]) -> None:
    """Every tile is a regular, non-empty, readable image with the first tile's shape and dtype
    (headers only), so that a bad tile is refused when the mosaic is opened, not when drawn.
    """
    shape0, dtype0 = first
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            raise read_error(p, e, "cannot read the tile") from None
        if not stat.S_ISREG(st.st_mode):
            raise EMReadError(f"{p}: mosaic tile is not a regular file")
        if st.st_size == 0:
            raise EMReadError(f"{p}: mosaic tile is empty (0 bytes)")
        shape, dtype = probe_shape(p)
        if min(yx_shape(tuple(shape))) < MIN_SIZE:
            raise EMReadError(f"{p}: mosaic tile of {'x'.join(map(str, shape))} px is too small "
                              f"(at least {MIN_SIZE}x{MIN_SIZE} px needed)")
        if tuple(shape) != tuple(shape0) or np.dtype(dtype) != np.dtype(dtype0):
            raise EMReadError(
                f"{p}: mosaic tile is {'x'.join(map(str, shape))} {np.dtype(dtype)}, the first tile "
                f"{paths[0].name} is {'x'.join(map(str, shape0))} {np.dtype(dtype0)}; all tiles must match"
            )


class MosaicReader:
    """Reads mosaic blocks on demand; keeps a small LRU cache of decoded tiles."""

    def __init__(self, tiles: list[AcqTile], tile_shape: tuple[int, int], dtype, chunk: tuple[int, int],
                 cache: int | None = None):
        self.tiles = tiles
        self.tile_shape = tile_shape
        self.dtype = np.dtype(dtype)
        self.chunk = chunk
        self.reads = 0
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        # keep up to ~256 MB of decoded tiles (at least 16): a full pass reads each tile once
        tile_bytes = max(1, tile_shape[0] * tile_shape[1] * self.dtype.itemsize)
        self._cache_size = cache or int(min(4096, max(16, (256 << 20) // tile_bytes)))
        self._lock = threading.Lock()
        self.index: dict[tuple[int, int, int], list[int]] = {}
        cy, cx = chunk
        for k, t in enumerate(tiles):
            for bi in range(t.y0 // cy, (t.y0 + t.height - 1) // cy + 1):
                for bj in range(t.x0 // cx, (t.x0 + t.width - 1) // cx + 1):
                    self.index.setdefault((t.z, bi, bj), []).append(k)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def tile(self, k: int) -> np.ndarray:
        with self._lock:
            if k in self._cache:
                self._cache.move_to_end(k)
                return self._cache[k]
        t = self.tiles[k]
        arr = read_plane(Path(t.path))
        if arr.ndim != 2 or arr.shape != (t.height, t.width):
            raise EMReadError(
                f"{t.path}: tile of shape {arr.shape} differs from the first tile's "
                f"{(t.height, t.width)}"
            )
        if arr.dtype != self.dtype:
            raise EMReadError(f"{t.path}: tile dtype {arr.dtype} differs from {self.dtype}")
        with self._lock:
            self.reads += 1
            self._cache[k] = arr
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return arr

    def block(self, block_info=None) -> np.ndarray:
        info = block_info[None]
        (z0, _), (y0, y1), (x0, x1) = info["array-location"]
        _, bi, bj = info["chunk-location"]
        out = np.zeros((1, y1 - y0, x1 - x0), self.dtype)
        for k in self.index.get((z0, bi, bj), ()):
            t = self.tiles[k]
            ty0, ty1 = max(y0, t.y0), min(y1, t.y0 + t.height)
            tx0, tx1 = max(x0, t.x0), min(x1, t.x0 + t.width)
            if ty0 >= ty1 or tx0 >= tx1:
                continue
            src = self.tile(k)
            out[0, ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0] = src[
                ty0 - t.y0 : ty1 - t.y0, tx0 - t.x0 : tx1 - t.x0
            ]
        return out


def _newest_per_beam(entries: list[tuple[Path, float, float, float]]) -> tuple[list, list[str]]:
    """Drop all but the newest file of each (z, mFOV, beam); file order kept. Names that do not
    follow the MultiSEM pattern are all kept.
    """
    best: dict[tuple, tuple[str, int]] = {}
    for i, (p, _, _, z) in enumerate(entries):
        m = _BEAM_NAME.match(p.name)
        if m:
            key = (z, int(m["mfov"]), int(m["beam"]))
            if key not in best or (m["stamp"], i) >= (best[key][0], best[key][1]):
                best[key] = (m["stamp"], i)
    keep = {i for _, i in best.values()}
    kept, superseded = [], []
    for i, e in enumerate(entries):
        m = _BEAM_NAME.match(e[0].name)
        if m is None or i in keep:
            kept.append(e)
        else:
            superseded.append(str(e[0]))
    return kept, superseded


def _thumbnails(coord_files: list[Path], tiles: list[Path]) -> list[Path | None]:
    """The MultiSEM thumbnail of every tile (``thumbnail_<name>`` listed in
    ``full_thumbnail_coordinates.txt`` beside the coordinates file), None where there is none.
    """
    listed: dict[Path, Path] = {}
    for cf in coord_files:
        tc = cf.parent / THUMB_COORDS_NAME
        if not tc.is_file():
            continue
        try:
            rows = parse_coordinates(tc)
        except EMReadError:
            continue
        for rel, *_ in rows:
            p = tile_path(cf.parent, rel)
            listed[p.parent / p.name[len(THUMB_PREFIX):]] = p
    out: list[Path | None] = []
    for t in tiles:
        p = listed.get(t)
        out.append(p if p is not None and p.is_file() else None)
    return out


def load_multisem(coord_files: list[Path], folder: Path, origin: str, chunk: int | None,
                  multiscale: bool | None = None) -> Section:
    """A MultiSEM mosaic (see the module docstring) from its coordinates file(s).

    ``multiscale``: give the section a pyramid (None: when a side exceeds
    :func:`~.pyramid.multiscale_min_side`).
    """
    import dask.array as da

    entries: list[tuple[Path, float, float, float]] = []
    for cf in coord_files:
        for k, (rel, x, y, z) in enumerate(parse_coordinates(cf)):
            entries.append((_resolvetile_path(cf.parent, rel, cf, k + 1), x, y, z))
    entries, superseded = _newest_per_beam(entries)
    notes: list[str] = []
    seen: dict[Path, int] = {}
    for p, *_ in entries:
        seen[p] = seen.get(p, 0) + 1
    dups = [p.name for p, n in seen.items() if n > 1]
    if dups:
        notes.append(f"{coord_files[0]}: {len(dups)} tile(s) listed more than once (e.g. {dups[0]}); "
                     "the entry listed last wins where they overlap")
    missing = [p.name for p, *_ in entries if not os.path.lexists(p)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise EMReadError(
            f"{folder}: {len(missing)} tile(s) named in {coord_files[0].name} are missing: {shown}"
        )
    # shape and dtype of every tile: from the first tile's header when it is plain 8/16-bit grey,
    # else from reading it (colour or odd types are converted on reading)
    first: np.ndarray | None = None
    shape0, dtype0 = probe_shape(entries[0][0])
    if len(shape0) != 2 or dtype0 not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        first = read_plane(entries[0][0])
        if first.ndim != 2:
            raise EMReadError(f"{entries[0][0]}: mosaic tiles must be single 2-D images")
        shape0, dtype0 = first.shape, first.dtype
    th, tw = (int(v) for v in shape0)
    _check_tile_headers([p for p, *_ in entries], probe_shape(entries[0][0]))
    z_values = sorted({z for *_, z in entries})
    z_index = {z: i for i, z in enumerate(z_values)}
    xs = np.array([round(x) for _, x, _, _ in entries], np.int64)
    ys = np.array([round(y) for _, _, y, _ in entries], np.int64)
    zs = np.array([z_index[z] for *_, z in entries], np.int64)
    if origin == "per_z":
        for zi in range(len(z_values)):
            m = zs == zi
            xs[m] -= xs[m].min()
            ys[m] -= ys[m].min()
    elif origin == "global":
        xs -= xs.min()
        ys -= ys.min()
    else:
        raise ValueError(f"origin must be 'global' or 'per_z', got {origin!r}")
    H, W = int(ys.max()) + th, int(xs.max()) + tw
    _check_extent(entries, xs, ys, len(z_values), (th, tw), coord_files[0])
    if multiscale is None:
        multiscale = max(H, W) > multiscale_min_side()
    n_levels = n_levels_for((H, W)) if multiscale else 1
    if n_levels > 1:
        H, W = padded_extent(H, n_levels), padded_extent(W, n_levels)
    tiles = [
        AcqTile(str(p), int(z), int(y), int(x), int(th), int(tw))
        for (p, *_), z, y, x in zip(entries, zs, ys, xs)
    ]
    cy = cx = int(chunk) if chunk else int(min(max(th, tw, 256), 4096))
    reader = MosaicReader(tiles, (th, tw), dtype0, (cy, cx))
    if first is not None:
        reader._cache[0] = first
        reader.reads = 1

    def splits(n: int, c: int) -> tuple[int, ...]:
        return tuple([c] * (n // c) + ([n % c] if n % c else []))

    chunks = ((1,) * len(z_values), splits(H, cy), splits(W, cx))
    data = da.map_blocks(
        reader.block, chunks=chunks, dtype=dtype0, meta=np.empty((0, 0, 0), dtype0),
        name=f"multisem-mosaic-{folder}-{id(reader)}",
    )
    axes = "zyx"
    if len(z_values) == 1:
        data = data[0]
        axes = "yx"
    ps = None
    if is_tiff(entries[0][0]):
        import tifffile

        try:
            with tifffile.TiffFile(entries[0][0]) as tif:
                ps, _, _ = tiff_pixel_size(tif)
        except Exception:  # noqa: BLE001
            ps = None
    meta = {
        "warnings": notes,
        "format": "multisem",
        "coordinates_file": [str(c) for c in coord_files],
        "n_tiles": len(tiles),
        "tile_shape": [int(th), int(tw)],
        "z_values": [float(z) for z in z_values],
        "origin": origin,
        "overlap_rule": "later tile in the coordinates file wins; gaps are 0",
    }
    if superseded:
        meta["superseded"] = superseded
    sec = Section(data, ps, folder.name, str(folder), axes, tiles, meta, reader=reader)
    if n_levels > 1:
        thumbs = _thumbnails(coord_files, [p for p, *_ in entries])
        factor = None
        first_thumb = next((t for t in thumbs if t is not None), None)
        if first_thumb is not None:
            try:
                sh = yx_shape(probe_shape(first_thumb)[0])
                factor = max(th / sh[0], tw / sh[1])
            except EMReadError:
                factor = None

        def read_thumb(i: int) -> np.ndarray | None:
            t = thumbs[i]
            return read_plane(t) if t is not None else None

        key = source_key("multisem", origin, data.shape, str(dtype0), n_levels, factor is not None,
                         files=[*coord_files, *(c.parent / THUMB_COORDS_NAME for c in coord_files
                                                if (c.parent / THUMB_COORDS_NAME).is_file())])
        pyr = Pyramid(data, [Tile(t.z, t.y0, t.x0, t.height, t.width) for t in tiles], reader.tile,
                      read_thumbnail=read_thumb if factor else None, thumbnail_factor=factor,
                      n_levels=n_levels, cache_key=key, describe={"source": str(folder), "name": folder.name})
        sec.levels, sec.pyramid = pyr.levels, pyr
        meta["thumbnails"] = sum(t is not None for t in thumbs)
    return sec
