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
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EMReadError
from .units import ok_pixel_nm, unit_to_nm

PLAIN_TIFF_MAX_NM = 1000.0  # plain TIFF cm/inch resolution tags trusted only below 1 um/px

__all__ = ["read_tiff", "read_tiff_levels", "tiff_pixel_size", "tiff_to_yx"]


def _ome_pixel_size(tif) -> tuple[tuple[float, float] | None, float | None, dict]:
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

    def size(ax: str) -> float | None:
        v = pix.get(f"PhysicalSize{ax}")
        if v is None:
            return None
        f = unit_to_nm(pix.get(f"PhysicalSize{ax}Unit", "µm"))
        try:
            return float(v) * f if f else None
        except ValueError:
            return None

    py, px, pz = size("Y"), size("X"), size("Z")
    if ok_pixel_nm(px) and not ok_pixel_nm(py):
        py = px
    ps = (py, px) if ok_pixel_nm(px) and ok_pixel_nm(py) else None
    return ps, pz, extra


def _tag_resolution(page, factor: float) -> tuple[float, float] | None:
    try:
        xr = page.tags["XResolution"].value
        yr = page.tags["YResolution"].value
        xres = xr[0] / xr[1] if isinstance(xr, tuple) else float(xr)
        yres = yr[0] / yr[1] if isinstance(yr, tuple) else float(yr)
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    if xres <= 0 or yres <= 0:
        return None
    px, py = factor / xres, factor / yres
    return (py, px) if ok_pixel_nm(px) and ok_pixel_nm(py) else None


def tiff_pixel_size(tif) -> tuple[tuple[float, float] | None, float | None, dict]:
    """((py, px) nm or None, z spacing nm or None, extra metadata)."""
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
        ps, pz, extra = _ome_pixel_size(tif)
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
        if f:
            ps = _tag_resolution(page, f)
            spacing = ij.get("spacing")
            pz = float(spacing) * f if spacing else None
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
        ps = _tag_resolution(page, factor)
        if ps and max(ps) < PLAIN_TIFF_MAX_NM:  # ignore the dpi of ordinary image software
            return ps, None, extra
    return None, None, extra


def _check_tiff_complete(tif, series, path: Path, size: int | None = None) -> None:
    """Raise EMReadError when image data would lie beyond the end of the file."""
    size = os.path.getsize(path) if size is None else size
    if series.dataoffset is not None:
        if series.dataoffset + series.nbytes > size:
            raise EMReadError(f"{path}: TIFF file is truncated (image data beyond end of file)")
        return
    for page in series.pages:
        if page is None:
            continue
        offs = getattr(page, "dataoffsets", ()) or ()
        cnts = getattr(page, "databytecounts", ()) or ()
        end = max((o + c for o, c in zip(offs, cnts) if c), default=0)
        if end > size:
            raise EMReadError(f"{path}: TIFF file is truncated (image data beyond end of file)")


def read_tiff(
    path: Path, lazy_bytes: int, content: bytes | None = None
) -> tuple[Any, str, dict, tuple | None, float | None]:
    """Returns (array, tifffile axes, extra metadata, pixel size, z spacing).

    ``content``: the file's bytes, already read (decoded from memory, never lazily).
    """
    import tifffile

    if content is not None:
        lazy_bytes = 1 << 62
    try:
        tif = tifffile.TiffFile(path if content is None else io.BytesIO(content))
    except Exception as e:  # noqa: BLE001 - any parse failure is a read error
        raise EMReadError(f"{path}: not a readable TIFF file ({e})") from e
    keep_open = False
    try:
        if not tif.series:
            raise EMReadError(f"{path}: TIFF file holds no image")
        series = tif.series[0]
        _check_tiff_complete(tif, series, path, None if content is None else len(content))
        ps, pz, extra = tiff_pixel_size(tif)
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
                import zarr

                store = tif.aszarr(series=0, level=0)
                z = zarr.open(store, mode="r")
                data = da.from_zarr(z)
                keep_open = True  # the store reads from this file handle on demand
        else:
            data = series.asarray()
        return data, axes, extra, ps, pz
    except EMReadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise EMReadError(f"{path}: corrupt or truncated TIFF file ({e})") from e
    finally:
        if not keep_open and not tif.filehandle.closed:
            tif.close()


def read_tiff_levels(path: Path, lazy_bytes: int) -> tuple[list[Any], str] | None:
    """The pyramid levels of a TIFF's first series (OME-TIFF SubIFDs, or any level layout
    tifffile recognises), level 0 first, with their tifffile axes; None for a single level.

    Levels are read into memory when the series is at most ``lazy_bytes``, else they are lazy
    dask arrays over tifffile's zarr stores (the file stays open while they are in use).
    """
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as e:  # noqa: BLE001
        raise EMReadError(f"{path}: not a readable TIFF file ({e})") from e
    keep_open = False
    try:
        if not tif.series or len(tif.series[0].levels) < 2:
            return None
        series = tif.series[0]
        if series.nbytes <= lazy_bytes:
            return [lv.asarray() for lv in series.levels], series.axes
        import dask.array as da
        import zarr

        levels = [da.from_zarr(zarr.open(tif.aszarr(series=0, level=k), mode="r"))
                  for k in range(len(series.levels))]
        keep_open = True
        return levels, series.axes
    except EMReadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise EMReadError(f"{path}: cannot read the TIFF's pyramid levels ({e})") from e
    finally:
        if not keep_open and not tif.filehandle.closed:
            tif.close()


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


def tiff_to_yx(data: Any, axes: str, path: Path) -> Any:
    """Squeeze singleton axes; colour stays as a trailing sample axis for validate_image."""
    shape = data.shape
    keep = [i for i, (a, s) in enumerate(zip(axes, shape)) if s > 1 or a in "YX"]
    if len(keep) != len(shape):
        idx = tuple(slice(None) if i in keep else 0 for i in range(len(shape)))
        data = data[idx]
        axes = "".join(axes[i] for i in keep)
    if axes.endswith("S") and data.shape[-1] not in (2, 3, 4):
        raise EMReadError(f"{path}: {data.shape[-1]}-sample TIFF is not supported")
    if len(axes) - axes.endswith("S") > 3:
        raise EMReadError(
            f"{path}: TIFF with axes {axes} (shape {tuple(data.shape)}) is not a section or a "
            "(z, y, x) stack"
        )
    return data
