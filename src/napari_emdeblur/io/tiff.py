"""TIFF reading: OME / ImageJ / Zeiss SEM / FEI metadata, truncation checks, lazy memory maps.

Pixel size (nm, ``(y, x)``) comes from OME ``PhysicalSizeX/Y`` (+unit), ImageJ resolution tags
+ ``unit``, Zeiss SEM (CZ_SEM) or FEI/Thermo metadata, a JSON description written by
:func:`napari_emdeblur.io.save_image`, or plain TIFF resolution tags in cm/inch when they give
a pixel smaller than 1 um (so the 72-9600 dpi of ordinary image software are ignored).
A TIFF larger than the lazy limit is returned as a dask array (memory-mapped when contiguous and
uncompressed, else through tifffile's zarr store), so it is never read whole.
"""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EMReadError, GuardedReads, read_error
from .units import ok_pixel_nm, plausible_nm, unit_to_nm

PLAIN_TIFF_MAX_NM = 1000.0  # plain TIFF cm/inch resolution tags trusted only below 1 um/px

__all__ = ["check_tiff_complete", "read_tiff", "read_tiff_levels", "tiff_pixel_size", "tiff_to_yx"]


def _tif_name(tif) -> str:
    return str(getattr(tif.filehandle, "path", None) or tif.filename or "TIFF")


def _ome_pixel_size(tif, notes: list[str] | None = None) -> tuple[tuple[float, float] | None, float | None, dict]:
    xml = tif.ome_metadata
    if not xml:
        return None, None, {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None, {}
    extra: dict = {}
    pix = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    desc = next((el for el in root.iter() if el.tag.endswith("}Description")), None)
    if desc is not None and desc.text:
        try:
            d = json.loads(desc.text)
            if isinstance(d, dict):
                extra = d
        except ValueError:
            extra = {"description": desc.text}
    if pix is None:
        return None, None, extra

    def size(ax: str, judge: bool = True) -> float | None:
        v = pix.get(f"PhysicalSize{ax}")
        if v is None:
            return None
        unit = pix.get(f"PhysicalSize{ax}Unit", "µm")
        if not judge:  # z: judged by load_section (only stacks have one)
            f = unit_to_nm(unit)
            try:
                return float(v) * f if f else None
            except ValueError:
                return None
        return plausible_nm(v, f"OME PhysicalSize{ax}", _tif_name(tif), notes if notes is not None else [], unit)

    py, px, pz = size("Y"), size("X"), size("Z", judge=False)
    if px is not None and py is None:
        py = px
    ps = (py, px) if px is not None and py is not None else None
    return ps, pz, extra


def _tag_resolution(page, factor: float, notes: list[str] | None = None) -> tuple[float, float] | None:
    try:
        xr = page.tags["XResolution"].value
        yr = page.tags["YResolution"].value
        xres = xr[0] / xr[1] if isinstance(xr, tuple) else float(xr)
        yres = yr[0] / yr[1] if isinstance(yr, tuple) else float(yr)
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    if xres <= 0 or yres <= 0:
        return None
    if notes is None:
        px, py = factor / xres, factor / yres
        return (py, px) if ok_pixel_nm(px) and ok_pixel_nm(py) else None
    name = str(getattr(page.parent.filehandle, "path", "") or "TIFF")
    px = plausible_nm(factor / xres, "pixel size (XResolution)", name, notes)
    py = plausible_nm(factor / yres, "pixel size (YResolution)", name, notes)
    return (py, px) if px is not None and py is not None else None


def tiff_pixel_size(tif, notes: list[str] | None = None) -> tuple[tuple[float, float] | None, float | None, dict]:
    """((py, px) nm or None, z spacing nm or None, extra metadata); implausible or unreadable
    pixel sizes found in the metadata are dropped with a warning in ``notes``.
    """
    extra: dict = {}
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    # our own JSON description (plain TIFFs written by save_image)
    desc = getattr(page, "description", "") or ""
    if desc.startswith("{"):
        try:
            d = json.loads(desc)
            if isinstance(d, dict):
                extra = d.get("emdeblur", {}) if "emdeblur" in d else {}
                ps = d.get("pixel_size_nm")
                if ps and len(ps) == 2 and all(ok_pixel_nm(float(v)) for v in ps):
                    return (float(ps[0]), float(ps[1])), d.get("z_spacing_nm"), extra
        except (ValueError, TypeError):
            pass
    if tif.is_ome:
        ps, pz, extra = _ome_pixel_size(tif, notes)
        if ps:
            return ps, pz, extra
    if tif.is_imagej:
        ij = tif.imagej_metadata or {}
        info = ij.get("Info")
        if isinstance(info, str) and info.startswith("{"):
            try:
                extra = json.loads(info)
            except ValueError:
                pass
        f = unit_to_nm(ij.get("unit"))
        if not f and ij.get("unit") not in (None, "", "pixel", "pixels") and notes is not None:
            notes.append(f"{_tif_name(tif)}: ImageJ unit {str(ij.get('unit'))[:40]!r} is unknown; pixel size ignored")
        if f:
            ps = _tag_resolution(page, f, notes)
            spacing = ij.get("spacing")
            try:
                pz = float(spacing) * f if spacing is not None else None
            except (TypeError, ValueError):
                pz = None
                if notes is not None:
                    notes.append(f"{_tif_name(tif)}: ImageJ spacing {str(spacing)[:40]!r} is not a number; ignored")
            if ps:
                return ps, pz, extra
    try:  # Zeiss SEM
        sem = tif.sem_metadata
        if sem:
            for key in ("ap_image_pixel_size", "ap_pixel_size"):
                v = sem.get(key)
                if isinstance(v, (tuple, list)) and len(v) >= 3:
                    f = unit_to_nm(v[2])
                    if f and ok_pixel_nm(float(v[1]) * f):
                        p = float(v[1]) * f
                        return (p, p), None, extra
    except Exception:  # noqa: BLE001 - vendor metadata is best effort
        pass
    try:  # FEI / Thermo Fisher
        fei = tif.fei_metadata
        if fei:
            scan = fei.get("Scan") or fei.get("EScan") or {}
            pw, ph = scan.get("PixelWidth"), scan.get("PixelHeight")
            if pw:
                px = float(pw) * 1e9
                py = float(ph) * 1e9 if ph else px
                if ok_pixel_nm(px) and ok_pixel_nm(py):
                    return (py, px), None, extra
    except Exception:  # noqa: BLE001
        pass
    try:
        unit = page.tags["ResolutionUnit"].value
    except KeyError:
        unit = 2
    factor = {2: 2.54e7, 3: 1e7}.get(int(unit))
    if factor:
        ps = _tag_resolution(page, factor, notes if int(unit) == 3 else None)  # dpi: ordinary image software
        if ps and max(ps) < PLAIN_TIFF_MAX_NM:  # ignore the dpi of ordinary image software
            return ps, None, extra
    return None, None, extra


def check_tiff_complete(tif, series, path: Path, size: int | None = None, notes: list[str] | None = None) -> None:
    """Raise EMReadError when image data would lie beyond the end of the file or a page holds no
    data at all; warn (``notes``) when some strips or tiles are missing (they read as black).
    """
    size = os.path.getsize(path) if size is None else size
    first = series.pages[0] if len(series.pages) else None
    cnts0 = getattr(first, "databytecounts", ()) or ()
    if cnts0 and not any(cnts0):
        raise EMReadError(f"{path}: TIFF page holds no image data (every strip or tile is empty)")
    if series.dataoffset is not None:
        if series.dataoffset + series.nbytes > size:
            raise EMReadError(f"{path}: TIFF file is truncated (image data beyond end of file)")
        return
    missing = total = 0
    for page in series.pages:
        if page is None:
            continue
        offs = getattr(page, "dataoffsets", ()) or ()
        cnts = getattr(page, "databytecounts", ()) or ()
        end = max((o + c for o, c in zip(offs, cnts) if c), default=0)
        if end > size:
            raise EMReadError(f"{path}: TIFF file is truncated (image data beyond end of file)")
        if cnts and not any(cnts):
            raise EMReadError(f"{path}: TIFF page holds no image data (every strip or tile is empty)")
        missing += sum(1 for c in cnts if not c)
        total += len(cnts)
    if missing and notes is not None:
        notes.append(f"{path}: {missing} of {total} TIFF strips/tiles are missing and read as black")


def _other_images(tif, series, path: Path, notes: list[str] | None) -> None:
    """The first image (series) of a TIFF is read. Reduced-resolution copies (both sides at most
    half, e.g. thumbnails) are skipped silently; other smaller images are skipped with a warning
    in ``notes``; a second full-size image (same size or larger, e.g. a page of another type or
    a second OME image) is refused, since which one is meant cannot be known.
    """
    h, w = (int(v) for v in series.shape[-2:]) if len(series.shape) >= 2 else (0, 0)
    skipped = 0
    for k, s in enumerate(tif.series[1:], 2):
        try:
            sh, sw = (int(v) for v in s.shape[-2:])
        except (TypeError, ValueError):
            continue
        if 2 * sh <= h and 2 * sw <= w:
            continue
        if sh >= h or sw >= w:
            raise EMReadError(
                f"{path}: TIFF holds {len(tif.series)} images ({'x'.join(map(str, series.shape))} "
                f"{series.dtype} and {'x'.join(map(str, s.shape))} {s.dtype} as image {k}); "
                "only one image or one uniform stack per file can be read"
            )
        skipped += 1
    if skipped and notes is not None:
        notes.append(f"{path}: {skipped} smaller page(s) of another shape ignored; only the first image "
                     f"({'x'.join(map(str, series.shape))} {series.dtype}) is read")


def read_tiff(
    path: Path, lazy_bytes: int, content: bytes | None = None, notes: list[str] | None = None,
) -> tuple[Any, str, dict, tuple | None, float | None]:
    """Returns (array, tifffile axes, extra metadata, pixel size, z spacing).

    ``content``: the file's bytes, already read (decoded from memory, never lazily). What was
    ignored (other pages) is described in ``notes``.
    """
    if content is not None:
        lazy_bytes = 1 << 62
    with _open_tiff(path, content, "corrupt or truncated TIFF file (its image data cannot be decoded)") as opened:
        tif = opened.tif
        if not tif.series:
            raise EMReadError(f"{path}: TIFF file holds no image")
        series = tif.series[0]
        check_tiff_complete(tif, series, path, None if content is None else len(content), notes)
        _other_images(tif, series, path, notes)
        if notes is not None and int(getattr(series.keyframe, "photometric", 0) or 0) == 5:  # SEPARATED
            notes.append(f"{path}: CMYK (ink-separated) image: its first three inks are taken as RGB and "
                         "converted to grey; the grey levels are approximate")
        ps, pz, extra = tiff_pixel_size(tif, notes)
        axes = series.axes
        if series.nbytes > lazy_bytes:
            import dask.array as da

            chunk = 4096
            if series.dataoffset is not None:
                view = _MemmapView(str(path), int(series.dataoffset), tuple(series.shape),
                                   np.dtype(series.dtype).newbyteorder(tif.byteorder).str)
                nd = view.ndim
                chunks = tuple(1 if i < nd - 2 else chunk for i in range(nd))
                if axes.endswith("S"):
                    chunks = chunks[:-3] + (chunk, chunk, -1)
                data = da.from_array(view, chunks=chunks, name=f"tiffmm-{path}-{os.path.getmtime(path)}",
                                     meta=np.empty((0,) * nd, view.dtype))
            else:
                data = _lazy_level(tif, 0, path, "tiffz")
                opened.keep_open = True  # the store reads from this file handle on demand
        else:
            data = series.asarray()
        return data, axes, extra, ps, pz


def read_tiff_levels(path: Path, lazy_bytes: int) -> tuple[list[Any], str] | None:
    """The pyramid levels of a TIFF's first series (OME-TIFF SubIFDs, or any level layout
    tifffile recognises), level 0 first, with their tifffile axes; None for a single level.

    Levels are read into memory when the series is at most ``lazy_bytes``, else they are lazy
    dask arrays over tifffile's zarr stores (the file stays open while they are in use).
    """
    with _open_tiff(path, None, "corrupt pyramid levels (reduced-resolution images) in the TIFF file") as opened:
        tif = opened.tif
        if not tif.series or len(tif.series[0].levels) < 2:
            return None
        series = tif.series[0]
        if series.nbytes <= lazy_bytes:
            return [lv.asarray() for lv in series.levels], series.axes
        levels = [_lazy_level(tif, k, path, f"tiffz{k}") for k in range(len(series.levels))]
        opened.keep_open = True
        return levels, series.axes


class _OpenTiff:
    """A TIFF file being read; ``keep_open`` when lazy arrays read from its file handle."""

    def __init__(self, tif: Any):
        self.tif = tif
        self.keep_open = False


@contextmanager
def _open_tiff(path: Path, content: bytes | None, corrupt: str) -> Iterator[_OpenTiff]:
    """Open ``path`` (or its ``content``) with tifffile; any failure inside the block other than
    an :class:`EMReadError` becomes a read error naming the file with the reason ``corrupt``.
    The file is closed on leaving unless ``keep_open`` was set.
    """
    import tifffile

    try:
        tif = tifffile.TiffFile(path if content is None else io.BytesIO(content))
    except Exception as e:  # noqa: BLE001 - any parse failure is a read error
        raise read_error(path, e, "corrupt, truncated or not a TIFF file") from None
    opened = _OpenTiff(tif)
    try:
        yield opened
    except EMReadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise read_error(path, e, corrupt) from None
    finally:
        if not opened.keep_open and not tif.filehandle.closed:
            tif.close()


def _lazy_level(tif: Any, k: int, path: Path, prefix: str) -> Any:
    """Level ``k`` of the first series as a dask array over tifffile's zarr store (it reads from
    ``tif``'s file handle on demand, its read errors naming ``path``).
    """
    import dask.array as da
    import zarr

    z = zarr.open(tif.aszarr(series=0, level=k), mode="r")
    return da.from_array(GuardedReads(z, path), chunks=z.chunks, name=f"{prefix}-{path}-{os.path.getmtime(path)}",
                         meta=np.empty((0,) * z.ndim, z.dtype))


class _MemmapView:
    """Lazily memory-maps contiguous, uncompressed TIFF data.

    Given to dask instead of an ndarray because dask copies numpy inputs into its graph chunk
    by chunk (reading the whole file at once). Pickles as (path, offset, shape, dtype), so it
    also works with distributed schedulers.
    """

    def __init__(self, path: str, offset: int, shape: tuple[int, ...], dtype: str):
        self.path, self.offset, self.shape, self._dt = path, offset, shape, np.dtype(dtype)
        self.dtype = self._dt.newbyteorder("=")
        self.ndim = len(shape)
        self._mm = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_mm"} | {"_mm": None}

    def __getitem__(self, idx):
        if self._mm is None:
            self._mm = np.memmap(self.path, self._dt, "r", self.offset, self.shape)
        return np.asarray(self._mm[idx], dtype=self.dtype)


def tiff_to_yx(data: Any, axes: str, path: Path, notes: list[str] | None = None) -> Any:
    """Squeeze singleton axes; colour stays as a trailing sample axis for validate_image.

    Channels are never read as sections: samples stored planar (axes ``SYX``) move last, like
    contiguous colour; of a channel axis (``C``, e.g. ImageJ channels) only the first channel is
    read, with a warning in ``notes``.
    """
    shape = data.shape
    keep = [i for i, (a, s) in enumerate(zip(axes, shape)) if s > 1 or a in "YX"]
    if len(keep) != len(shape):
        idx = tuple(slice(None) if i in keep else 0 for i in range(len(shape)))
        data = data[idx]
        axes = "".join(axes[i] for i in keep)
    if "C" in axes:
        c = axes.index("C")
        n = data.shape[c]
        data = data[tuple(0 if i == c else slice(None) for i in range(data.ndim))]
        axes = axes[:c] + axes[c + 1:]
        if notes is not None:
            notes.append(f"{path}: image has {n} channels; only the first channel is read")
    if "S" in axes and not axes.endswith("S"):
        s = axes.index("S")
        order = [i for i in range(len(axes)) if i != s] + [s]
        data = data.transpose(order)
        axes = "".join(axes[i] for i in order)
    if axes.endswith("S") and data.shape[-1] not in (2, 3, 4):
        raise EMReadError(f"{path}: {data.shape[-1]}-sample TIFF is not supported")
    if len(axes) - axes.endswith("S") > 3:
        raise EMReadError(
            f"{path}: TIFF with axes {axes} (shape {tuple(data.shape)}) is not a section or a "
            "(z, y, x) stack"
        )
    return data
