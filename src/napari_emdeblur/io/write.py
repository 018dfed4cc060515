"""Writing sections and stacks: TIFF / OME-TIFF through :func:`atomic_write`, OME-Zarr by folder rename.

dtype is preserved; the pixel size (nm) and z spacing are written as the format expects; an
existing target is replaced only with ``overwrite=True`` and the paths in ``protect`` (the
inputs) are never written.

Pyramids: OME-TIFF and OME-Zarr outputs of a section with a y or x side above
:func:`~.pyramid.multiscale_min_side` (or with ``levels=n`` given) also get the coarser levels
(``levels`` in total, by default down to a larger side of at most 1024 px): level ``k`` has
``ceil(shape / 2**k)`` pixels in y and x, each the area mean of the ``2**k x 2**k`` level-0
pixels it covers (the part inside the image at the bottom/right edge). They are computed from
level 0 while it is streamed block by block (never the whole image in memory) and written with
the libraries' own conventions: OME-TIFF SubIFDs (tifffile ``subifds``, tiles of 512 px; read
back as ``TiffFile.series[0].levels``) and NGFF 0.4 ``multiscales`` datasets ``0 .. n-1`` with
their scale and translation (the centre of a ``2**k`` block). Plain ImageJ TIFF has no pyramid.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .atomic import atomic_write, umask_mode
from .formats import WRITE_SUFFIXES, ZARR_SUFFIXES, stem_of, suffix_of
from .pyramid import area_levels, level_shapes, multiscale_min_side, n_levels_for
from .section import json_safe
from .units import ok_pixel_nm
from .values import as_lazy, is_dask_array

__all__ = ["export_levels", "input_conflict", "iter_pyramid_blocks", "not_a_folder", "save_image", "save_ome_zarr"]

TIFF_TILE = 512  # tile size of pyramidal OME-TIFF outputs
STRIP_BYTES = 1 << 26  # largest strip of a TIFF streamed from lazy data (64 MB)


def export_levels(shape: Sequence[int], levels: int | None = None) -> int:
    """How many levels an OME-TIFF / OME-Zarr export of ``shape`` gets (1 = no pyramid).

    ``levels`` given: that many (at least 1). None: :func:`~.pyramid.n_levels_for` when a y or x
    side exceeds :func:`~.pyramid.multiscale_min_side`, else 1.
    """
    if levels is not None:
        return max(1, int(levels))
    yx = tuple(int(s) for s in shape[-2:])
    return n_levels_for(yx) if max(yx) > multiscale_min_side() else 1


def iter_pyramid_blocks(data: Any, n_levels: int, block: tuple[int, int] = (1024, 4096),
                        ) -> Iterator[tuple[int, int, int, dict[int, np.ndarray]]]:
    """Stream ``data`` (2-D or (z, y, x); numpy, dask or any sliceable array) block by block with
    its pyramid levels: yields ``(z, y, x, {k: block at level k})`` in row-major order per plane,
    where ``(y, x)`` is the block's corner at level 0 and level ``k``'s block starts at
    ``(y >> k, x >> k)``. Blocks are aligned to ``2**(n_levels - 1)`` so that no level pixel
    straddles two blocks; memory stays at about one block (in float64) whatever the image size.
    """
    shape = tuple(int(s) for s in data.shape)
    nz = shape[0] if len(shape) == 3 else 1
    h, w = shape[-2:]
    m = 1 << (n_levels - 1)
    by, bx = (-(-int(b) // m) * m for b in block)
    factors = {k: (float(1 << k), float(1 << k)) for k in range(1, n_levels)}
    for z in range(nz):
        plane = data[z] if len(shape) == 3 else data
        for y in range(0, h, by):
            for x in range(0, w, bx):
                blk = plane[y : min(y + by, h), x : min(x + bx, w)]
                blk = np.asarray(blk.compute() if hasattr(blk, "compute") else blk)
                out = {0: blk}
                for k, (_, _, im) in area_levels(blk, y, x, factors, blk.dtype).items():
                    out[k] = im
                yield z, y, x, out


def _tiles_of(arr: Any, tile: int) -> Iterator[np.ndarray]:
    """Full ``tile`` x ``tile`` tiles of a 2-D or (z, y, x) array in TIFF order (padded with 0)."""
    nz = arr.shape[0] if arr.ndim == 3 else 1
    for z in range(nz):
        plane = arr[z] if arr.ndim == 3 else arr
        h, w = plane.shape
        for y in range(0, h, tile):
            band = np.asarray(plane[y : min(y + tile, h)])
            for x in range(0, w, tile):
                t = band[:, x : x + tile]
                if t.shape != (tile, tile):
                    t = np.pad(t, ((0, tile - t.shape[0]), (0, tile - t.shape[1])))
                yield t


def _strip_rows(data: Any) -> int:
    """Rows per strip when lazy ``data`` is streamed into a TIFF without tiles: the data's own
    row blocks (a lazy mosaic reads each tile file once per band), at most :data:`STRIP_BYTES`.
    """
    row_bytes = max(1, int(data.shape[-1]) * np.dtype(data.dtype).itemsize)
    cap = max(1, STRIP_BYTES // row_bytes)
    chunks = getattr(data, "chunks", None)
    rows = int(max(chunks[-2])) if chunks else cap
    return max(1, min(rows, cap, int(data.shape[-2])))


def _strips(data: Any, rows: int, dt: np.dtype) -> Iterator[bytes]:
    """The strips of a 2-D or (z, y, x) array as bytes, plane by plane (what tifffile takes for an
    image without tiles); only one band of ``rows`` rows is in memory at a time.
    """
    planes = [data] if data.ndim == 2 else (data[z] for z in range(data.shape[0]))
    for plane in planes:
        for y in range(0, int(plane.shape[0]), rows):
            yield np.ascontiguousarray(np.asarray(plane[y : y + rows]), dtype=dt).tobytes()


def _write_tiff_pyramid(tmp: Any, data: Any, n_levels: int, md: dict, big: bool, scratch: Path) -> None:
    """Level 0 tile by tile into an OME-TIFF with ``n_levels - 1`` SubIFDs, then the coarser
    levels (kept in memory maps in ``scratch`` while level 0 is written).
    """
    import tifffile

    shape = tuple(int(s) for s in data.shape)
    dt = np.dtype(data.dtype)
    shapes = level_shapes(shape, n_levels)
    maps: dict[int, np.ndarray] = {}
    files = []
    for k in range(1, n_levels):
        f = tempfile.NamedTemporaryFile(prefix=".level", suffix=".tmp", dir=scratch, delete=False)
        f.close()
        files.append(f.name)
        maps[k] = np.lib.format.open_memmap(f.name, mode="w+", dtype=dt, shape=shapes[k])
    tile = TIFF_TILE
    band = max(tile, 1 << (n_levels - 1))

    def level0_tiles() -> Iterator[np.ndarray]:
        # bands of whole tile rows, read in blocks that also fill the coarser levels
        pieces: list[np.ndarray] = []
        current = None
        for z, y, x, blocks in iter_pyramid_blocks(data, n_levels, (band, 4096)):
            if current is not None and (z, y) != current:
                yield from _tiles_of(np.concatenate(pieces, axis=1), tile)
                pieces = []
            current = (z, y)
            pieces.append(blocks[0])
            for k, im in blocks.items():
                if k:
                    dst = maps[k][z] if len(shape) == 3 else maps[k]
                    dst[y >> k : (y >> k) + im.shape[0], x >> k : (x >> k) + im.shape[1]] = im
        if pieces:
            yield from _tiles_of(np.concatenate(pieces, axis=1), tile)

    try:
        opts = {"dtype": dt, "tile": (tile, tile), "photometric": "minisblack", "compression": "zlib"}
        with tifffile.TiffWriter(tmp, bigtiff=big, ome=True) as tw:
            tw.write(level0_tiles(), shape=shape, subifds=n_levels - 1, metadata=md, **opts)
            for k in range(1, n_levels):
                tw.write(_tiles_of(maps[k], tile), shape=shapes[k], subfiletype=1, metadata=None, **opts)
    finally:
        for k in list(maps):
            del maps[k]
        for name in files:
            try:
                os.unlink(name)
            except OSError:
                pass

def input_conflict(out: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> str | None:
    """Why writing ``out`` would touch an input, or None: ``out`` is an input file (also through a
    link), or lies inside an input folder (a folder stack or mosaic, the folder of a coordinates
    file, an OME-Zarr), where it would replace a tile or join the input the next time it is read.
    """
    o = Path(out).expanduser()
    for inp in inputs:
        src = Path(inp).expanduser()
        if _same_path(o, src):
            return f"{o}: is the input {src}; refusing to write over it"
        folder = src if src.is_dir() else (src.parent if src.name.lower() == "full_image_coordinates.txt" else None)
        if folder is None:
            continue
        try:
            inside = folder.resolve() in o.resolve().parents
        except (OSError, RuntimeError):
            inside = False
        if inside:
            return f"{o}: lies inside the input folder {folder}; write it elsewhere"
    return None


def _same_path(a: Path, b: str | os.PathLike) -> bool:
    try:
        b = Path(b)
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, ValueError):
        return False


def _check_target(path: Path, overwrite: bool, protect: Iterable[str | os.PathLike]) -> None:
    for src in protect or ():
        if src and _same_path(path, src):
            raise ValueError(f"{path}: refusing to write into the input {src}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: its folder {path.parent} {not_a_folder(path.parent)}")


def not_a_folder(p: Path) -> str:
    """Why ``p`` cannot hold output: 'is a file, not a folder' or 'does not exist'."""
    return "is a file, not a folder" if p.exists() else "does not exist"


def _norm_pixel(pixel_size) -> tuple[float, float] | None:
    if pixel_size is None:
        return None
    if isinstance(pixel_size, (int, float)):
        pixel_size = (pixel_size, pixel_size)
    py, px = float(pixel_size[-2]), float(pixel_size[-1])
    if not (ok_pixel_nm(py) and ok_pixel_nm(px)):
        raise ValueError(f"pixel size {pixel_size} nm is not a positive size below 100 um")
    return py, px


def save_image(
    path: str | os.PathLike,
    data: Any,
    pixel_size: tuple[float, float] | float | None = None,
    metadata: dict | None = None,
    overwrite: bool = False,
    *,
    z_spacing: float | None = None,
    protect: Sequence[str | os.PathLike] = (),
    levels: int | None = None,
) -> Path:
    """Write a 2-D section or (Z, Y, X) stack as TIFF atomically; returns the path written.

    ``.ome.tif``/``.ome.tiff``: OME-TIFF with PhysicalSizeX/Y (and Z) in nm, ``metadata`` as
    JSON in the image Description, and pyramid levels in SubIFDs (``levels``, see
    :func:`export_levels` and the module docstring; tiled, zlib-compressed, streamed block by
    block). ``.tif``/``.tiff``: ImageJ-compatible TIFF (resolution tags
    + ``unit=nm``, ``metadata`` as JSON in ImageJ's Info) for uint8/uint16/float32; other
    dtypes are written as plain TIFF with a JSON description and cm resolution tags. ``.zarr``
    is passed to :func:`save_ome_zarr` (with ``levels``). dtype is preserved. The file is written to a temporary
    file in the same folder and moved into place; an existing file is only replaced with
    ``overwrite=True`` and paths in ``protect`` (the inputs) are never written.
    """
    import tifffile

    path = Path(path).expanduser()
    suf = suffix_of(path)
    data = as_lazy(data)  # another array-like (a lazy pyramid level, a corrected view): read block by block
    if suf in ZARR_SUFFIXES:
        return save_ome_zarr(path, data, pixel_size, metadata=metadata, overwrite=overwrite,
                             z_spacing=z_spacing, protect=protect, levels=levels)
    if suf not in WRITE_SUFFIXES:
        raise ValueError(f"{path}: unsupported output type {suf or '(none)'}; use .tif, .ome.tif or .zarr")
    if data.ndim not in (2, 3):
        raise ValueError(f"can only save 2-D or (z, y, x) images, got shape {tuple(data.shape)}")
    ps = _norm_pixel(pixel_size)
    _check_target(path, overwrite, protect)
    dt = np.dtype(data.dtype).newbyteorder("=")
    meta_json = json.dumps(json_safe(metadata or {}))
    lazy = is_dask_array(data)
    shape = tuple(int(s) for s in data.shape)
    n_levels = export_levels(shape, levels) if suf.startswith(".ome") else 1
    payload: Any = None
    kw: dict = {}
    if n_levels > 1:
        pass  # streamed block by block by _write_tiff_pyramid
    elif lazy and dt != np.dtype(bool):  # strip by strip: never the whole image in memory (bool: bit-packed)
        rows = _strip_rows(data)
        payload = _strips(data, rows, dt)
        kw = {"shape": shape, "dtype": dt, "rowsperstrip": rows}
    else:
        payload = np.asarray(data)
    big = int(np.prod(shape)) * dt.itemsize * (4 if n_levels > 1 else 3) // 3 > 2**31 - 2**25

    def write(tmp) -> None:  # tmp: the open temporary file
        if suf.startswith(".ome"):
            md: dict = {"axes": "ZYX" if len(shape) == 3 else "YX", "Description": meta_json}
            if ps:
                md.update(PhysicalSizeY=ps[0], PhysicalSizeYUnit="nm",
                          PhysicalSizeX=ps[1], PhysicalSizeXUnit="nm")
            if z_spacing and len(shape) == 3:
                md.update(PhysicalSizeZ=float(z_spacing), PhysicalSizeZUnit="nm")
            if n_levels > 1:
                _write_tiff_pyramid(tmp, data, n_levels, md, big, path.parent)
                return
            tifffile.imwrite(tmp, payload, ome=True, bigtiff=big, photometric="minisblack",
                             metadata=md, **kw)
        elif dt in (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)) and not big:
            md = {"axes": "ZYX" if len(shape) == 3 else "YX", "Info": meta_json}
            res = None
            if ps:
                md["unit"] = "nm"
                res = (1.0 / ps[1], 1.0 / ps[0])
                if z_spacing and len(shape) == 3:
                    md["spacing"] = float(z_spacing)
            tifffile.imwrite(tmp, payload, imagej=True, resolution=res, metadata=md,
                             photometric="minisblack", **kw)
        else:
            desc = {"emdeblur": json.loads(meta_json)}
            extra: dict = {}
            if ps:
                desc["pixel_size_nm"] = [ps[0], ps[1]]
                extra = {"resolution": (1e7 / ps[1], 1e7 / ps[0]), "resolutionunit": "CENTIMETER"}
            if z_spacing:
                desc["z_spacing_nm"] = float(z_spacing)
            tifffile.imwrite(tmp, payload, bigtiff=big, description=json.dumps(desc),
                             metadata=None, photometric="minisblack", **extra, **kw)

    atomic_write(path, write, overwrite=overwrite)
    return path


def _remove_tree(path: Path, tries: int = 50) -> None:
    """Rmtree that wins against dask threads still writing chunks after a failed compute."""
    import time

    for _ in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.02)


def save_ome_zarr(
    path: str | os.PathLike,
    data: Any,
    pixel_size: tuple[float, float] | float | None = None,
    *,
    z_spacing: float | None = None,
    name: str | None = None,
    metadata: dict | None = None,
    chunks: int | Sequence[int] | None = None,
    overwrite: bool = False,
    protect: Sequence[str | os.PathLike] = (),
    levels: int | None = None,
) -> Path:
    """Write a 2-D section or (Z, Y, X) stack as OME-Zarr (NGFF 0.4, zarr v2 format).

    Data (numpy or dask, streamed block by block) go into ``<path>/0`` with chunks of ``chunks``
    px in y/x (default 1024, one z plane per chunk), the coarser pyramid levels (``levels``, see
    :func:`export_levels`) into ``<path>/1`` ...; the multiscales metadata carry the pixel size
    in nanometres (scale ``2**k`` pixels and translation ``(2**k - 1) / 2`` pixels per level) and
    ``metadata`` is stored as JSON under the group attribute ``emdeblur``. Written into a
    temporary folder beside ``path`` and renamed into place.
    """
    import dask.array as da
    import zarr

    path = Path(path).expanduser()
    if not path.name.lower().endswith(".zarr"):
        raise ValueError(f"{path}: OME-Zarr output must end with .zarr")
    data = as_lazy(data)
    if data.ndim not in (2, 3):
        raise ValueError(f"can only save 2-D or (z, y, x) images, got shape {tuple(data.shape)}")
    ps = _norm_pixel(pixel_size)
    _check_target(path, overwrite, protect)
    shape = tuple(int(s) for s in data.shape)
    c = chunks if chunks is not None else 1024
    if isinstance(c, int):
        c = (1,) * (len(shape) - 2) + (c, c)
    c = tuple(int(min(a, b)) for a, b in zip(c, shape))
    n_levels = export_levels(shape, levels)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        g = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        arr = g.create_array("0", shape=shape, dtype=np.dtype(data.dtype), chunks=c)
        if n_levels > 1:
            arrays = [arr] + [g.create_array(str(k), shape=sk, dtype=np.dtype(data.dtype),
                                             chunks=tuple(min(a, b) for a, b in zip(c, sk)))
                              for k, sk in enumerate(level_shapes(shape, n_levels)) if k]
            for z, y, x, blocks in iter_pyramid_blocks(data, n_levels, (c[-2], max(c[-1], 4096))):
                for k, im in blocks.items():
                    region = (slice(y >> k, (y >> k) + im.shape[0]), slice(x >> k, (x >> k) + im.shape[1]))
                    arrays[k][((z,) if len(shape) == 3 else ()) + region] = im
        elif is_dask_array(data):
            # our own pool: leaving the `with` waits for every chunk task, so after a failure no
            # straggler thread can re-create the temp folder while it is being removed
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                da.store(data.rechunk(c), arr, lock=False, scheduler="threads", pool=pool)
        else:
            arr[...] = np.asarray(data)
        yx = ps or (1.0, 1.0)
        names = ["z", "y", "x"][-len(shape):]
        unit = {"unit": "nanometer"} if ps else {}
        axes = [{"name": n, "type": "space", **unit} for n in names]
        zs = [float(z_spacing or 1.0)] if len(shape) == 3 else []
        datasets = []
        for k in range(n_levels):
            f = float(1 << k)
            tr: list[dict] = [{"type": "scale", "scale": zs + [yx[0] * f, yx[1] * f]}]
            if k:
                tr.append({"type": "translation",
                           "translation": [0.0] * len(zs) + [yx[0] * (f - 1) / 2, yx[1] * (f - 1) / 2]})
            datasets.append({"path": str(k), "coordinateTransformations": tr})
        g.attrs["multiscales"] = [{
            "version": "0.4",
            "name": name or stem_of(path),
            "axes": axes,
            "datasets": datasets,
            "type": "mean" if n_levels > 1 else "none",
        }]
        g.attrs["emdeblur"] = json_safe(metadata or {})
        os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes 0700 folders
        trash = None
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
            trash = path.with_name(f".{path.name}.old-{os.getpid()}-{id(tmp)}")
            os.replace(path, trash)
        os.replace(tmp, path)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        _remove_tree(tmp)
        raise
    return path
