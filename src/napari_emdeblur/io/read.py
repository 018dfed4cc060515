"""``load_section``: any readable path (file, stack, folder, MultiSEM mosaic, OME-Zarr) -> Section."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EMReadError, read_error
from .formats import (
    IMAGE_SUFFIXES,
    OME_TIFF_SUFFIXES,
    OTHER_IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    is_tiff,
    natural_sort_key,
    stem_of,
    suffix_of,
)
from .multisem import COORDS_NAME, load_multisem
from .planes import probe_shape, read_other, read_plane, yx_shape
from .pyramid import Pyramid, block_tiles, multiscale_min_side, n_levels_for, source_key
from .section import Section
from .tiff import read_tiff, read_tiff_levels, tiff_pixel_size, tiff_to_yx
from .units import plausible_nm
from .values import validate_image
from .zarr import is_zarr_dir, load_zarr

log = logging.getLogger(__name__)

DEFAULT_LAZY_BYTES = 1 << 30

__all__ = ["DEFAULT_LAZY_BYTES", "can_read", "load_section"]


def _lazy_limit(lazy_bytes: int | None) -> int:
    if lazy_bytes is not None:
        return int(lazy_bytes)
    env = os.environ.get("EMDEBLUR_LAZY_BYTES")
    try:
        return int(float(env)) if env else DEFAULT_LAZY_BYTES
    except ValueError:
        return DEFAULT_LAZY_BYTES


def can_read(path: str | os.PathLike) -> bool:
    """Cheap check (no pixel data read) whether :func:`load_section` should handle ``path``."""
    p = Path(path)
    if p.is_dir():
        if is_zarr_dir(p) or os.path.lexists(p / COORDS_NAME):
            return True
        try:
            with os.scandir(p) as it:
                for e in it:
                    n = e.name.lower()
                    if not n.startswith(".") and (n.endswith(IMAGE_SUFFIXES) or n == COORDS_NAME):
                        return True
                    if e.is_dir() and (Path(e.path) / COORDS_NAME).is_file():
                        return True
        except OSError:  # cannot be listed: load_section says why
            return True
        return name_is_image(p)
    name = p.name.lower()
    if name == COORDS_NAME:
        return True
    if name.endswith(".zarr"):
        return p.is_dir()
    return name.endswith(IMAGE_SUFFIXES)


def name_is_image(p: Path) -> bool:
    """Whether ``p``'s name has an image suffix (a folder so named is taken, then refused by name)."""
    return p.name.lower().endswith(IMAGE_SUFFIXES)


def _image_files(folder: Path) -> list[Path]:
    files = [
        f for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(IMAGE_SUFFIXES)
    ]
    return sorted(files, key=natural_sort_key)


def _load_folder_stack(folder: Path, files: list[Path], lazy_bytes: int) -> Section:
    import dask
    import dask.array as da

    shapes = []
    for f in files:
        shape, dtype = probe_shape(f)
        yx = yx_shape(shape)
        colour = len(shape) >= 3 and yx == (shape[-3], shape[-2])
        shapes.append((yx, dtype, len(shape), int(colour)))
    ref = shapes[0][0]
    bad = [(f.name, s[0]) for f, s in zip(files, shapes) if s[0] != ref]
    if bad:
        listing = ", ".join(f"{n} {s[0]}x{s[1]}" for n, s in bad[:10])
        raise EMReadError(
            f"{folder}: images in the folder differ in size ({files[0].name} is {ref[0]}x{ref[1]}; "
            f"{listing}{' ...' if len(bad) > 10 else ''}); cannot stack them"
        )
    multi = [f.name for f, s in zip(files, shapes) if s[2] > 2 + s[3]]
    if multi:
        raise EMReadError(f"{folder}: files {multi[:5]} are stacks; cannot stack stacks")
    notes: list[str] = []
    first = read_plane(files[0])
    if first.ndim != 2:
        raise EMReadError(f"{files[0]}: a folder stack needs single 2-D images, this one is {first.shape}")
    ps = pz = None
    extra: dict = {}
    if is_tiff(files[0]):
        import tifffile

        with tifffile.TiffFile(files[0]) as tif:
            ps, pz, extra = tiff_pixel_size(tif)
    total = first.nbytes * len(files)
    if total > lazy_bytes:
        def read(f: Path) -> np.ndarray:
            a = read_plane(f)
            if a.shape != first.shape or a.dtype != first.dtype:
                raise EMReadError(f"{f}: {a.shape} {a.dtype} differs from {files[0].name}")
            return a

        parts = [first] + [
            da.from_delayed(dask.delayed(read)(f), first.shape, first.dtype) for f in files[1:]
        ]
        data = da.stack([da.from_array(parts[0])] + parts[1:])
    else:
        planes = [first]
        for f in files[1:]:
            a = read_plane(f)
            if a.dtype != first.dtype:
                raise EMReadError(f"{f}: pixel type {a.dtype} differs from {files[0].name} ({first.dtype})")
            planes.append(a)
        data = np.stack(planes)
    axes = "zyx"
    if len(files) == 1:
        data, axes = data[0], "yx"
    meta: dict[str, Any] = {"warnings": notes, "format": "folder", "files": [str(f) for f in files],
                            "z_spacing": pz}
    if extra:
        meta["emdeblur"] = extra
    return Section(data, ps, folder.name, str(folder), axes, None, meta)


def _squeeze_like(level, ndim: int):
    while level.ndim > ndim and level.shape[0] == 1:
        level = level[0]
    return level


def _set_levels(sec: Section, raw, path: Path | None, multiscale: bool | None) -> None:
    """Keep a file's own levels when they fit the validated data, else generate levels when wanted."""
    if sec.levels and sec.pyramid is None:
        levels = [_squeeze_like(lv, sec.data.ndim) for lv in sec.levels[1:]]
        ok = (multiscale is not False and sec.data is raw
              and all(np.dtype(lv.dtype) == sec.dtype and lv.ndim == sec.data.ndim for lv in levels)
              and all(a.shape[-1] > b.shape[-1] for a, b in zip([sec.data, *levels], levels)))
        sec.levels = [sec.data, *levels] if ok else None
        if ok:
            sec.metadata["levels"] = "file"
            return
    if sec.pyramid is not None:
        sec.metadata["levels"] = "generated"
        return
    yx = sec.shape[-2:]
    if multiscale is False or (multiscale is None and max(yx) <= multiscale_min_side()):
        return
    n_levels = n_levels_for(yx)
    if n_levels < 2:
        return
    data = sec.data
    tiles = block_tiles(sec.shape, 2048)

    def read(i: int) -> np.ndarray:
        t = tiles[i]
        plane = data[t.z] if data.ndim == 3 else data
        return np.asarray(plane[t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width])

    key = None
    if sec.is_lazy and path is not None:  # in-memory data are quick to reduce: no cache
        files = sec.metadata.get("files") or ([str(path)] if path.is_file() else [])
        if files:
            key = source_key("image", str(path.resolve()), sec.shape, sec.dtype.str, n_levels, files=files)
    pyr = Pyramid(data, tiles, read, n_levels=n_levels, cache_key=key,
                  describe={"source": sec.source, "name": sec.name})
    sec.levels, sec.pyramid = pyr.levels, pyr
    sec.metadata["levels"] = "generated"


def load_section(
    path: str | os.PathLike,
    *,
    lazy_bytes: int | None = None,
    pixel_size: tuple[float, float] | float | None = None,
    origin: str = "global",
    chunk: int | None = None,
    content: bytes | None = None,
    multiscale: bool | None = None,
) -> Section:
    """Load an EM section or stack from ``path`` (see the module docstring for the formats).

    ``lazy_bytes``: single TIFFs larger than this are returned as dask arrays (default 1 GiB or
    env ``EMDEBLUR_LAZY_BYTES``). ``pixel_size`` (nm) overrides what the file says.
    ``origin``/``chunk``: MultiSEM mosaic placement ('global' or 'per_z') and dask chunk size.
    ``multiscale``: give the section pyramid levels (``Section.levels``): the file's own
    (OME-TIFF SubIFDs, OME-Zarr multiscales) or generated ones (:mod:`.pyramid`); None (default)
    = the file's own levels when it has some, generated ones when a y or x side exceeds
    :func:`~.pyramid.multiscale_min_side`; False = single scale. Opening never waits for
    generated levels: they fill in from a background thread.
    Raises :class:`EMReadError` (a ValueError) naming the offending file for unreadable input.
    """
    p = Path(path).expanduser()
    limit = _lazy_limit(lazy_bytes)
    if content is None and not p.exists():
        raise EMReadError(f"{p}: no such file or folder")
    notes: list[str] = []
    if p.is_dir():
        try:
            with os.scandir(p) as it:
                first = next(it, None)
                if first is not None:
                    first.stat(follow_symlinks=False)  # needs search permission on the folder
        except OSError as e:
            raise read_error(p, e, "cannot list the folder") from None
        if content is not None:
            raise EMReadError(f"{p}: content= is for single image files, not folders")
        if is_zarr_dir(p):
            sec = load_zarr(p)
        elif os.path.lexists(p / COORDS_NAME):
            sec = load_multisem([p / COORDS_NAME], p, origin, chunk, multiscale)
        else:
            subs = sorted(
                (d / COORDS_NAME for d in p.iterdir() if d.is_dir() and (d / COORDS_NAME).is_file()),
                key=lambda c: natural_sort_key(c.parent),
            )
            files = _image_files(p)
            if subs and not files:
                sec = load_multisem(subs, p, origin, chunk, multiscale)
            elif not files:
                raise EMReadError(f"{p}: folder holds no readable images (tif, png, bmp, jpg)")
            else:
                sec = _load_folder_stack(p, files, limit)
    elif content is None and p.name.lower() == COORDS_NAME:
        sec = load_multisem([p], p.parent, origin, chunk, multiscale)
    else:
        suf = suffix_of(p)
        if (p.stat().st_size if content is None else len(content)) == 0:
            raise EMReadError(f"{p}: file is empty")
        if suf in TIFF_SUFFIXES or suf in OME_TIFF_SUFFIXES:
            tnotes: list[str] = []
            data, axes, extra, ps, pz = read_tiff(p, limit, content, tnotes)
            data = tiff_to_yx(data, axes, p, tnotes)
            meta: dict[str, Any] = {"format": "ome-tiff" if suf.startswith(".ome") else "tiff",
                                    "z_spacing": pz, "warnings": tnotes}
            if extra:
                meta["emdeblur"] = extra
            sec = Section(data, ps, stem_of(p), str(p), "yx", None, meta)
            if content is None and multiscale is not False:
                found = read_tiff_levels(p, limit)
                if found is not None:
                    sec.levels = [data] + [tiff_to_yx(lv, found[1], p) for lv in found[0][1:]]
        elif suf in OTHER_IMAGE_SUFFIXES:
            sec = Section(read_other(p, content), None, stem_of(p), str(p), "yx", None,
                          {"format": suf.lstrip(".")})
        else:
            raise EMReadError(f"{p}: unsupported file type {suf or '(none)'}")
    notes.extend(sec.metadata.get("warnings", []))
    raw = sec.data
    sec.data = validate_image(sec.data, str(p), notes)
    sec.metadata["warnings"] = notes
    _set_levels(sec, raw, p if content is None else None, multiscale)
    sec.axes = "zyx" if sec.data.ndim == 3 else "yx"
    sec.metadata["lazy"] = sec.is_lazy
    if pixel_size is not None:
        if isinstance(pixel_size, (int, float)):
            pixel_size = (float(pixel_size), float(pixel_size))
        sec.pixel_size = (float(pixel_size[0]), float(pixel_size[1]))
    elif sec.pixel_size is not None:  # 10 significant digits: undo rational round-off
        y, x = (plausible_nm(v, "pixel size", str(p), notes) for v in sec.pixel_size[:2])
        sec.pixel_size = None if y is None or x is None else (float(f"{y:.10g}"), float(f"{x:.10g}"))
    pz = sec.metadata.get("z_spacing")
    pz = plausible_nm(pz, "z spacing", str(p), notes) if sec.axes == "zyx" else None
    if pz is not None:
        sec.metadata["z_spacing"] = float(f"{pz:.10g}")
    else:
        sec.metadata.pop("z_spacing", None)
    for n in notes:  # told by each caller (CLI lines, notifications, pipeline reports): logged, not printed twice
        log.info(n)
    return sec
