"""Writing sections and stacks: TIFF / OME-TIFF through :func:`atomic_write`, OME-Zarr by folder rename.

dtype is preserved; the pixel size (nm) and z spacing are written as the format expects; an
existing target is replaced only with ``overwrite=True`` and the paths in ``protect`` (the
inputs) are never written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .atomic import atomic_write, umask_mode
from .formats import WRITE_SUFFIXES, stem_of, suffix_of
from .section import json_safe
from .units import ok_pixel_nm
from .values import is_dask_array

__all__ = ["input_conflict", "save_image", "save_ome_zarr"]


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
        raise FileNotFoundError(f"{path.parent}: output folder does not exist")


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
) -> Path:
    """Write a 2-D section or (Z, Y, X) stack as TIFF atomically; returns the path written.

    ``.ome.tif``/``.ome.tiff``: OME-TIFF with PhysicalSizeX/Y (and Z) in nm, ``metadata`` as
    JSON in the image Description. ``.tif``/``.tiff``: ImageJ-compatible TIFF (resolution tags
    + ``unit=nm``, ``metadata`` as JSON in ImageJ's Info) for uint8/uint16/float32; other
    dtypes are written as plain TIFF with a JSON description and cm resolution tags. ``.zarr``
    is passed to :func:`save_ome_zarr`. dtype is preserved. The file is written to a temporary
    file in the same folder and moved into place; an existing file is only replaced with
    ``overwrite=True`` and paths in ``protect`` (the inputs) are never written.
    """
    import tifffile

    path = Path(path).expanduser()
    suf = suffix_of(path)
    if suf in (".zarr", ".ome.zarr"):
        return save_ome_zarr(path, data, pixel_size, metadata=metadata, overwrite=overwrite,
                             z_spacing=z_spacing, protect=protect)
    if suf not in WRITE_SUFFIXES:
        raise ValueError(f"{path}: unsupported output type {suf or '(none)'}; use .tif, .ome.tif or .zarr")
    if data.ndim not in (2, 3):
        raise ValueError(f"can only save 2-D or (z, y, x) images, got shape {tuple(data.shape)}")
    ps = _norm_pixel(pixel_size)
    _check_target(path, overwrite, protect)
    dt = np.dtype(data.dtype)
    meta_json = json.dumps(json_safe(metadata or {}))
    lazy = is_dask_array(data)
    shape = tuple(int(s) for s in data.shape)
    if lazy and data.ndim == 3:
        payload: Any = (np.asarray(data[i]) for i in range(shape[0]))
    else:
        payload = np.asarray(data)
    big = int(np.prod(shape)) * dt.itemsize > 2**31 - 2**25
    kw: dict = {"shape": shape, "dtype": dt} if not isinstance(payload, np.ndarray) else {}

    def write(tmp) -> None:  # tmp: the open temporary file
        if suf.startswith(".ome"):
            md: dict = {"axes": "ZYX" if len(shape) == 3 else "YX", "Description": meta_json}
            if ps:
                md.update(PhysicalSizeY=ps[0], PhysicalSizeYUnit="nm",
                          PhysicalSizeX=ps[1], PhysicalSizeXUnit="nm")
            if z_spacing and len(shape) == 3:
                md.update(PhysicalSizeZ=float(z_spacing), PhysicalSizeZUnit="nm")
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
) -> Path:
    """Write a 2-D section or (Z, Y, X) stack as OME-Zarr (NGFF 0.4, zarr v2 format, one scale).

    Data (numpy or dask, streamed block by block) go into ``<path>/0`` with chunks of ``chunks``
    px in y/x (default 1024, one z plane per chunk); the multiscales metadata carry the pixel
    size in nanometres and ``metadata`` is stored as JSON under the group attribute
    ``emdeblur``. Written into a temporary folder beside ``path`` and renamed into place.
    """
    import dask.array as da
    import zarr

    path = Path(path).expanduser()
    if not path.name.lower().endswith(".zarr"):
        raise ValueError(f"{path}: OME-Zarr output must end with .zarr")
    if data.ndim not in (2, 3):
        raise ValueError(f"can only save 2-D or (z, y, x) images, got shape {tuple(data.shape)}")
    ps = _norm_pixel(pixel_size)
    _check_target(path, overwrite, protect)
    shape = tuple(int(s) for s in data.shape)
    c = chunks if chunks is not None else 1024
    if isinstance(c, int):
        c = (1,) * (len(shape) - 2) + (c, c)
    c = tuple(int(min(a, b)) for a, b in zip(c, shape))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        g = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        arr = g.create_array("0", shape=shape, dtype=np.dtype(data.dtype), chunks=c)
        if is_dask_array(data):
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
        scale = ([float(z_spacing or 1.0)] if len(shape) == 3 else []) + [yx[0], yx[1]]
        g.attrs["multiscales"] = [{
            "version": "0.4",
            "name": name or stem_of(path),
            "axes": axes,
            "datasets": [{"path": "0",
                          "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
            "type": "none",
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
