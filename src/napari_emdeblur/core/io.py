"""Loading and saving EM sections (no Qt, no napari).

``load_section(path)`` returns a :class:`Section` for any of:

* a single image: TIFF / OME-TIFF / BigTIFF (tifffile), PNG / BMP / JPEG (imageio);
* a multi-page TIFF stack -> ``(Z, Y, X)`` (serial sections on z);
* a Zeiss MultiSEM-style folder holding ``full_image_coordinates.txt`` (or the path of that file),
  assembled **lazily** into one mosaic per z as a dask array;
* a folder of images without a coordinates file -> a ``(Z, Y, X)`` stack, natural file order;
* an OME-Zarr (``.zarr`` folder, NGFF 0.4 or 0.5) or a plain zarr array -> dask array.

Policies (documented here once, tested in ``tests/test_io.py``)
---------------------------------------------------------------
* **dtype**: uint8 and uint16 are kept as they are. Float images must be finite (NaN/inf ->
  :class:`EMReadError`); floats in [0, 1] become ``uint16 = round(x * 65535)``; other finite
  floats are rescaled linearly from their [min, max] to [0, 65535] (recorded as a warning).
  int8/int16 with negative values are shifted by 2**(bits-1) into uint8/uint16 (warning); any
  other integer type is accepted if all values lie in [0, 65535] (cast to uint16, warning), else
  refused. bool and complex images are refused.
* **colour**: RGB/RGBA/grey+alpha (last axis 2/3/4) are converted to grey. When all colour
  channels are equal (grey saved as RGB, common for BMP exports) the first channel is taken
  as is; otherwise ITU-R BT.709 luminance (0.2126 R + 0.7152 G + 0.0722 B) is used. Alpha is
  dropped. Either way a note goes into ``Section.metadata['warnings']``.
* **size**: images with fewer than 16 px along y or x are refused.
* **pixel size** (nm, ``(y, x)``) comes from OME ``PhysicalSizeX/Y`` (+unit), ImageJ resolution
  tags + ``unit``, Zeiss SEM (CZ_SEM) or FEI/Thermo metadata, a JSON description written by
  :func:`save_image`, or plain TIFF resolution tags in cm/inch when they give a pixel smaller
  than 1 um (so the 72-9600 dpi of ordinary image software and scanners are ignored).
  Unknown -> None.
* **laziness**: a single TIFF larger than ``lazy_bytes`` (default 1 GiB, env
  ``EMDEBLUR_LAZY_BYTES``) is returned as a dask array (memory-mapped when the data are
  contiguous and uncompressed, else through ``tifffile``'s zarr store), so it is never read
  whole. Mosaics and zarr are always lazy. Lazy float/large-integer data are checked with a
  streaming dask reduction.
* **mosaic**: coordinates are the top-left pixel of each tile (floats rounded, may be
  negative); all tiles are shifted together so that the minimum is 0 (``origin='global'``,
  one frame for every z, keeps sections registered) or per z plane (``origin='per_z'``).
  Where tiles overlap, **the tile listed later in the file wins**; gaps are 0. Distinct z
  values become planes 0..n-1 in increasing order (originals in ``metadata['z_values']``).
  All tiles are assumed to have the shape/dtype of the first tile (read once for metadata).
"""

from __future__ import annotations

import json
import logging
import math
import io
import os
from concurrent.futures import ThreadPoolExecutor
import re
import shutil
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .atomic import atomic_write, umask_mode

log = logging.getLogger(__name__)

MIN_SIZE = 16
PLAIN_TIFF_MAX_NM = 1000.0  # plain TIFF cm/inch resolution tags trusted only below 1 um/px
DEFAULT_LAZY_BYTES = 1 << 30
COORDS_NAME = "full_image_coordinates.txt"
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
OTHER_IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg")
IMAGE_SUFFIXES = TIFF_SUFFIXES + OTHER_IMAGE_SUFFIXES
WRITE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".zarr")

__all__ = [
    "AcqTile",
    "EMReadError",
    "Section",
    "can_read",
    "load_section",
    "natural_sort_key",
    "parse_coordinates",
    "save_image",
    "save_ome_zarr",
    "to_grayscale",
    "validate_image",
]


class EMReadError(ValueError):
    """A file or folder could not be read as an EM section; the message names the path."""


@dataclass
class AcqTile:
    """One acquisition tile of a mosaic: its file and its placement (pixels) in plane ``z``."""

    path: str
    z: int
    y0: int
    x0: int
    height: int
    width: int


@dataclass
class Section:
    """An EM section (``axes='yx'``) or a stack of serial sections (``axes='zyx'``).

    ``data`` is a numpy array or, for large inputs, a dask array. ``pixel_size`` is ``(y, x)``
    in nm or None when unknown. ``metadata`` always holds a ``'warnings'`` list.
    """

    data: Any
    pixel_size: tuple[float, float] | None = None
    name: str = ""
    source: str = ""
    axes: str = "yx"
    tiles: list[AcqTile] | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metadata.setdefault("warnings", [])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def is_lazy(self) -> bool:
        return not isinstance(self.data, np.ndarray)

    @property
    def z_spacing(self) -> float | None:
        return self.metadata.get("z_spacing")

    @property
    def scale(self) -> tuple[float, ...]:
        """napari ``scale``: pixel size in nm (1 when unknown); z spacing 1 unless known."""
        yx = tuple(self.pixel_size) if self.pixel_size else (1.0, 1.0)
        if self.axes == "zyx":
            return (float(self.z_spacing or 1.0),) + yx
        return yx


# --------------------------------------------------------------------------- helpers
def natural_sort_key(s: str | os.PathLike) -> list:
    """Sort key treating digit runs as numbers: ``img2 < img10``."""
    parts = re.split(r"(\d+)", Path(s).name.lower())
    return [int(p) if p.isdigit() else p for p in parts]


def _lazy_limit(lazy_bytes: int | None) -> int:
    if lazy_bytes is not None:
        return int(lazy_bytes)
    env = os.environ.get("EMDEBLUR_LAZY_BYTES")
    try:
        return int(float(env)) if env else DEFAULT_LAZY_BYTES
    except ValueError:
        return DEFAULT_LAZY_BYTES


def _is_dask(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "dask"


def _suffix(p: Path) -> str:
    name = p.name.lower()
    for s in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.endswith(s):
            return s
    return p.suffix.lower()


def _stem(p: Path) -> str:
    name = p.name.rstrip("/\\")
    for s in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return Path(name).stem if Path(name).suffix else name


_UNIT_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "nanometre": 1.0, "nanometres": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3,
    "micrometers": 1e3, "micrometre": 1e3, "\\u00b5m": 1e3, "u": 1e3,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "cm": 1e7, "centimeter": 1e7, "centimetre": 1e7,
    "m": 1e9, "meter": 1e9, "metre": 1e9,
    "pm": 1e-3, "picometer": 1e-3,
    "a": 0.1, "å": 0.1, "Å".lower(): 0.1, "angstrom": 0.1, "ångström": 0.1,
    "in": 2.54e7, "inch": 2.54e7,
}


def unit_to_nm(unit: str | None) -> float | None:
    """Factor from ``unit`` to nm, or None when the unit is unknown / 'pixel'."""
    if unit is None:
        return None
    u = str(unit).strip().lower()
    return _UNIT_NM.get(u)


def _ok_pixel(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and 0 < v < 1e5  # below 100 um


def _json_safe(obj: Any, depth: int = 0) -> Any:
    """Best-effort conversion to JSON-serialisable values (arrays summarised, objects str'd)."""
    if depth > 8:
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not math.isfinite(obj):
            return str(obj)
        return obj
    if isinstance(obj, np.generic):
        return _json_safe(obj.item(), depth + 1)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.size <= 256:
            return _json_safe(obj.tolist(), depth + 1)
        return f"<array shape={obj.shape} dtype={obj.dtype}>"
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return _json_safe(asdict(obj), depth + 1)
    return str(obj)


# --------------------------------------------------------------------------- validation
def to_grayscale(arr: Any, notes: list[str] | None = None, name: str = "image") -> Any:
    """Colour (last axis 2/3/4: grey+alpha, RGB, RGBA) -> grey, same dtype. See module doc."""
    notes = notes if notes is not None else []
    c = arr.shape[-1]
    if c == 2:
        notes.append(f"{name}: grey+alpha image, alpha channel dropped")
        return arr[..., 0]
    rgb = arr[..., :3]
    if c == 4:
        notes.append(f"{name}: alpha channel dropped")
    if not _is_dask(arr):
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            notes.append(f"{name}: grey image stored as RGB, first channel used")
            return np.ascontiguousarray(rgb[..., 0])
    notes.append(f"{name}: colour image converted to grey (BT.709 luminance)")
    w = np.array([0.2126, 0.7152, 0.0722], np.float32)
    if _is_dask(arr):
        g = (rgb.astype(np.float32) * w).sum(axis=-1)
    else:
        g = rgb.astype(np.float32) @ w
    dt = np.dtype(arr.dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        g = g.round().clip(info.min, info.max)
    return g.astype(dt)


def _reduce_minmax(arr: Any) -> tuple[float, float, bool]:
    """(min, max, all_finite) of an array, streaming for dask."""
    if _is_dask(arr):
        import dask
        import dask.array as da

        if np.dtype(arr.dtype).kind == "f":
            lo, hi, fin = dask.compute(da.nanmin(arr), da.nanmax(arr), da.isfinite(arr).all())
        else:
            lo, hi = dask.compute(arr.min(), arr.max())
            fin = True
        return float(lo), float(hi), bool(fin)
    if np.dtype(arr.dtype).kind == "f":
        fin = bool(np.isfinite(arr).all())
        if not fin:
            return math.nan, math.nan, False
    return float(arr.min()), float(arr.max()), True


def validate_image(arr: Any, name: str = "image", notes: list[str] | None = None) -> Any:
    """Check and normalise an image to a 2-D (Y, X) or 3-D (Z, Y, X) uint8/uint16 array.

    Colour is converted to grey, odd dtypes converted or refused, tiny images refused (see the
    module docstring for the rules). Conversions are described in ``notes`` (appended).
    Raises :class:`EMReadError` with a message naming ``name``.
    """
    notes = notes if notes is not None else []
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        arr = np.asarray(arr)
    dt = np.dtype(arr.dtype)
    if dt.kind == "b":
        raise EMReadError(f"{name}: boolean (binary mask) image, not an EM section")
    if dt.kind == "c":
        raise EMReadError(f"{name}: complex-valued image is not supported")
    if dt.kind not in "uif":
        raise EMReadError(f"{name}: unsupported pixel type {dt}")
    if arr.ndim == 0 or 0 in arr.shape:
        raise EMReadError(f"{name}: empty image (shape {tuple(arr.shape)})")
    # colour: last axis 2/3/4 with a real image in front of it
    if arr.ndim in (3, 4) and arr.shape[-1] in (2, 3, 4) and min(arr.shape[-3:-1]) >= MIN_SIZE:
        arr = to_grayscale(arr, notes, name)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise EMReadError(
            f"{name}: expected a 2-D section or a 3-D (z, y, x) stack, got shape {tuple(arr.shape)}"
        )
    if arr.shape[-1] < MIN_SIZE or arr.shape[-2] < MIN_SIZE:
        raise EMReadError(
            f"{name}: image of {arr.shape[-2]}x{arr.shape[-1]} px is too small "
            f"(at least {MIN_SIZE}x{MIN_SIZE} px needed)"
        )
    dt = np.dtype(arr.dtype)
    if dt in (np.dtype(np.uint8), np.dtype(np.uint16)):
        return arr
    if dt.kind == "f":
        lo, hi, finite = _reduce_minmax(arr)
        if not finite:
            raise EMReadError(f"{name}: float image contains NaN or infinite values")
        if lo >= 0.0 and hi <= 1.0:
            notes.append(f"{name}: float image in [0, 1] stored as uint16 (x * 65535)")
            return (arr * 65535.0).round().astype(np.uint16)
        notes.append(
            f"{name}: float image rescaled from [{lo:.6g}, {hi:.6g}] to uint16 [0, 65535]"
        )
        span = (hi - lo) or 1.0
        return ((arr - lo) * (65535.0 / span)).round().clip(0, 65535).astype(np.uint16)
    # integers other than uint8/uint16
    lo, hi, _ = _reduce_minmax(arr)
    if dt in (np.dtype(np.int8), np.dtype(np.int16)) and lo < 0:
        bits = dt.itemsize * 8
        out_dt = np.uint8 if bits == 8 else np.uint16
        notes.append(f"{name}: signed {dt} shifted by +{2 ** (bits - 1)} into {np.dtype(out_dt)}")
        return (arr.astype(np.int32) + 2 ** (bits - 1)).astype(out_dt)
    if lo >= 0 and hi <= 255 and dt.itemsize == 1:
        notes.append(f"{name}: {dt} stored as uint8")
        return arr.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        notes.append(f"{name}: {dt} image stored as uint16")
        return arr.astype(np.uint16)
    raise EMReadError(
        f"{name}: {dt} values [{lo:.0f}, {hi:.0f}] do not fit 16 bits; "
        "convert the image to 8- or 16-bit first"
    )


# --------------------------------------------------------------------------- TIFF
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
    if _ok_pixel(px) and not _ok_pixel(py):
        py = px
    ps = (py, px) if _ok_pixel(px) and _ok_pixel(py) else None
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
    return (py, px) if _ok_pixel(px) and _ok_pixel(py) else None


def _tiff_pixel_size(tif) -> tuple[tuple[float, float] | None, float | None, dict]:
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
                if ps and len(ps) == 2 and all(_ok_pixel(float(v)) for v in ps):
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
                    if f and _ok_pixel(float(v[1]) * f):
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
                if _ok_pixel(px) and _ok_pixel(py):
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


def _read_tiff(
    path: Path, lazy_bytes: int, content: bytes | None = None
) -> tuple[Any, str, dict, tuple | None, float | None]:
    """Returns (array, tifffile axes, extra metadata, pixel size, z spacing).

    ``content``: the file's bytes, already read (decoded from memory, never lazily)."""
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
        ps, pz, extra = _tiff_pixel_size(tif)
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


def _tiff_to_yx(data: Any, axes: str, path: Path) -> Any:
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


# --------------------------------------------------------------------------- other images
def _read_other(path: Path, content: bytes | None = None) -> np.ndarray:
    import imageio.v3 as iio

    try:
        arr = iio.imread(path) if content is None else iio.imread(content, extension=path.suffix.lower())
    except Exception as e:  # noqa: BLE001
        raise EMReadError(f"{path}: corrupt, truncated or unsupported image ({e})") from e
    return np.asarray(arr)


def _read_plane(path: Path) -> np.ndarray:
    """Read one 2-D image (tile or stack slice) eagerly, validated to (Y, X)."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        data, axes, _, _, _ = _read_tiff(path, lazy_bytes=1 << 62)
        data = _tiff_to_yx(data, axes, path)
    else:
        data = _read_other(path)
    return validate_image(data, str(path))


def _probe_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header only (colour axis included)."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                s = tif.series[0]
                shape = tuple(int(v) for v, a in zip(s.shape, s.axes) if v > 1 or a in "YX")
                return shape, np.dtype(s.dtype)
        except Exception as e:  # noqa: BLE001
            raise EMReadError(f"{path}: not a readable TIFF file ({e})") from e
    import imageio.v3 as iio

    try:
        props = iio.improps(path)
    except Exception as e:  # noqa: BLE001
        raise EMReadError(f"{path}: corrupt or unsupported image ({e})") from e
    return tuple(int(v) for v in props.shape), np.dtype(props.dtype)


def _yx_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) >= 3 and shape[-1] in (2, 3, 4) and min(shape[-3:-1]) >= MIN_SIZE:
        return int(shape[-3]), int(shape[-2])
    return int(shape[-2]), int(shape[-1])


# --------------------------------------------------------------------------- MultiSEM
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
        raw = path.read_bytes()
    except OSError as e:
        raise EMReadError(f"{path}: cannot read coordinates file ({e})") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
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


def _resolve_tile_path(folder: Path, rel: str) -> Path:
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


class _MosaicReader:
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
        arr = _read_plane(Path(t.path))
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


def _load_multisem(coord_files: list[Path], folder: Path, origin: str, chunk: int | None) -> Section:
    import dask.array as da

    entries: list[tuple[Path, float, float, float]] = []
    for cf in coord_files:
        for rel, x, y, z in parse_coordinates(cf):
            entries.append((_resolve_tile_path(cf.parent, rel), x, y, z))
    missing = [str(p) for p, *_ in entries if not p.is_file()]
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise EMReadError(
            f"{folder}: {len(missing)} tile(s) named in {coord_files[0].name} are missing:\n  {shown}"
        )
    notes: list[str] = []
    first = _read_plane(entries[0][0])  # metadata only: shape and dtype of every tile
    if first.ndim != 2:
        raise EMReadError(f"{entries[0][0]}: mosaic tiles must be single 2-D images")
    th, tw = first.shape
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
    tiles = [
        AcqTile(str(p), int(z), int(y), int(x), int(th), int(tw))
        for (p, *_), z, y, x in zip(entries, zs, ys, xs)
    ]
    cy = cx = int(chunk) if chunk else int(min(max(th, tw, 256), 4096))
    reader = _MosaicReader(tiles, (th, tw), first.dtype, (cy, cx))
    reader._cache[0] = first
    reader.reads = 1

    def splits(n: int, c: int) -> tuple[int, ...]:
        return tuple([c] * (n // c) + ([n % c] if n % c else []))

    chunks = ((1,) * len(z_values), splits(H, cy), splits(W, cx))
    data = da.map_blocks(
        reader.block, chunks=chunks, dtype=first.dtype, meta=np.empty((0, 0, 0), first.dtype),
        name=f"multisem-mosaic-{folder}-{id(reader)}",
    )
    axes = "zyx"
    if len(z_values) == 1:
        data = data[0]
        axes = "yx"
    ps = None
    if entries[0][0].suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(entries[0][0]) as tif:
                ps, _, _ = _tiff_pixel_size(tif)
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
        "mosaic_reader": reader,
    }
    return Section(data, ps, folder.name, str(folder), axes, tiles, meta)


# --------------------------------------------------------------------------- zarr
def _is_zarr_dir(p: Path) -> bool:
    return p.is_dir() and (
        p.suffix.lower() == ".zarr"
        or any((p / n).exists() for n in (".zattrs", ".zgroup", ".zarray", "zarr.json"))
    )


def _load_zarr(path: Path) -> Section:
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:  # noqa: BLE001
        raise EMReadError(f"{path}: not a readable zarr store ({e})") from e
    ps = None
    pz = None
    extra: dict = {}
    axes_names: list[str] | None = None
    if isinstance(node, zarr.Array):
        arr = node
    else:
        attrs = dict(node.attrs)
        ms = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
        extra = attrs.get("emdeblur", {}) if isinstance(attrs.get("emdeblur"), dict) else {}
        if ms:
            m = ms[0]
            ds = m["datasets"][0]
            try:
                arr = node[ds["path"]]
            except KeyError as e:
                raise EMReadError(f"{path}: multiscales dataset {ds['path']!r} missing") from e
            axes = m.get("axes") or []
            axes_names = [a["name"] if isinstance(a, dict) else str(a) for a in axes] or None
            scale = None
            for tr in ds.get("coordinateTransformations", []):
                if tr.get("type") == "scale":
                    scale = [float(v) for v in tr["scale"]]
            for tr in m.get("coordinateTransformations", []) or []:
                if tr.get("type") == "scale" and scale is not None:
                    scale = [a * float(b) for a, b in zip(scale, tr["scale"])]
            if scale and axes_names and len(scale) == len(axes_names):
                units = {a["name"]: a.get("unit") for a in axes if isinstance(a, dict)}

                def phys(ax: str) -> float | None:
                    if ax not in axes_names:
                        return None
                    f = unit_to_nm(units.get(ax))
                    return scale[axes_names.index(ax)] * f if f else None

                py, px = phys("y"), phys("x")
                if _ok_pixel(py) and _ok_pixel(px):
                    ps = (py, px)
                pz = phys("z")
        else:
            arrays = sorted(k for k, _ in node.arrays())
            if not arrays:
                raise EMReadError(f"{path}: zarr group holds no array")
            arr = node[arrays[0]]
    data = da.from_zarr(arr)
    if axes_names and len(axes_names) == data.ndim:
        idx = tuple(
            0 if (a not in ("z", "y", "x") and s == 1) else slice(None)
            for a, s in zip(axes_names, data.shape)
        )
        data = data[idx]
    return Section(data, ps, _stem(path), str(path), "yx", None,
                   {"format": "zarr", "z_spacing": pz, **({"emdeblur": extra} if extra else {})})


# --------------------------------------------------------------------------- dispatch
def can_read(path: str | os.PathLike) -> bool:
    """Cheap check (no pixel data read) whether :func:`load_section` should handle ``path``."""
    p = Path(path)
    if p.is_dir():
        if _is_zarr_dir(p) or (p / COORDS_NAME).is_file():
            return True
        try:
            with os.scandir(p) as it:
                for e in it:
                    n = e.name.lower()
                    if not n.startswith(".") and (n.endswith(IMAGE_SUFFIXES) or n == COORDS_NAME):
                        return True
                    if e.is_dir() and (Path(e.path) / COORDS_NAME).is_file():
                        return True
        except OSError:
            return False
        return False
    name = p.name.lower()
    if name == COORDS_NAME:
        return True
    if name.endswith(".zarr"):
        return p.is_dir()
    return name.endswith(IMAGE_SUFFIXES)


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
        shape, dtype = _probe_shape(f)
        yx = _yx_shape(shape)
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
    first = _read_plane(files[0])
    if first.ndim != 2:
        raise EMReadError(f"{files[0]}: a folder stack needs single 2-D images, this one is {first.shape}")
    ps = pz = None
    extra: dict = {}
    if files[0].suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        with tifffile.TiffFile(files[0]) as tif:
            ps, pz, extra = _tiff_pixel_size(tif)
    total = first.nbytes * len(files)
    if total > lazy_bytes:
        def read(f: Path) -> np.ndarray:
            a = _read_plane(f)
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
            a = _read_plane(f)
            if a.dtype != first.dtype:
                raise EMReadError(f"{f}: pixel type {a.dtype} differs from {files[0].name} ({first.dtype})")
            planes.append(a)
        data = np.stack(planes)
    axes = "zyx"
    if len(files) == 1:
        data, axes = data[0], "yx"
    meta = {"warnings": notes, "format": "folder", "files": [str(f) for f in files], "z_spacing": pz}
    if extra:
        meta["emdeblur"] = extra
    return Section(data, ps, folder.name, str(folder), axes, None, meta)


def load_section(
    path: str | os.PathLike,
    *,
    lazy_bytes: int | None = None,
    pixel_size: tuple[float, float] | float | None = None,
    origin: str = "global",
    chunk: int | None = None,
    content: bytes | None = None,
) -> Section:
    """Load an EM section or stack from ``path`` (see the module docstring for the formats).

    ``lazy_bytes``: single TIFFs larger than this are returned as dask arrays (default 1 GiB or
    env ``EMDEBLUR_LAZY_BYTES``). ``pixel_size`` (nm) overrides what the file says.
    ``origin``/``chunk``: MultiSEM mosaic placement ('global' or 'per_z') and dask chunk size.
    Raises :class:`EMReadError` (a ValueError) naming the offending file for unreadable input.
    """
    p = Path(path).expanduser()
    limit = _lazy_limit(lazy_bytes)
    if content is None and not p.exists():
        raise EMReadError(f"{p}: no such file or folder")
    notes: list[str] = []
    if p.is_dir():
        if content is not None:
            raise EMReadError(f"{p}: content= is for single image files, not folders")
        if _is_zarr_dir(p):
            sec = _load_zarr(p)
        elif (p / COORDS_NAME).is_file():
            sec = _load_multisem([p / COORDS_NAME], p, origin, chunk)
        else:
            subs = sorted(
                (d / COORDS_NAME for d in p.iterdir() if d.is_dir() and (d / COORDS_NAME).is_file()),
                key=lambda c: natural_sort_key(c.parent),
            )
            files = _image_files(p)
            if subs and not files:
                sec = _load_multisem(subs, p, origin, chunk)
            elif not files:
                raise EMReadError(f"{p}: folder holds no readable images (tif, png, bmp, jpg)")
            else:
                sec = _load_folder_stack(p, files, limit)
    elif content is None and p.name.lower() == COORDS_NAME:
        sec = _load_multisem([p], p.parent, origin, chunk)
    else:
        suf = _suffix(p)
        if (p.stat().st_size if content is None else len(content)) == 0:
            raise EMReadError(f"{p}: file is empty")
        if suf in TIFF_SUFFIXES or suf in (".ome.tif", ".ome.tiff"):
            data, axes, extra, ps, pz = _read_tiff(p, limit, content)
            data = _tiff_to_yx(data, axes, p)
            meta = {"format": "ome-tiff" if suf.startswith(".ome") else "tiff", "z_spacing": pz}
            if extra:
                meta["emdeblur"] = extra
            sec = Section(data, ps, _stem(p), str(p), "yx", None, meta)
        elif suf in OTHER_IMAGE_SUFFIXES:
            sec = Section(_read_other(p, content), None, _stem(p), str(p), "yx", None,
                          {"format": suf.lstrip(".")})
        else:
            raise EMReadError(f"{p}: unsupported file type {suf or '(none)'}")
    notes.extend(sec.metadata.get("warnings", []))
    sec.data = validate_image(sec.data, str(p), notes)
    sec.metadata["warnings"] = notes
    sec.axes = "zyx" if sec.data.ndim == 3 else "yx"
    sec.metadata["lazy"] = sec.is_lazy
    if pixel_size is not None:
        if isinstance(pixel_size, (int, float)):
            pixel_size = (float(pixel_size), float(pixel_size))
        sec.pixel_size = (float(pixel_size[0]), float(pixel_size[1]))
    elif sec.pixel_size is not None:  # 10 significant digits: undo rational round-off
        sec.pixel_size = tuple(float(f"{float(v):.10g}") for v in sec.pixel_size[:2])
    if sec.metadata.get("z_spacing") is not None:
        sec.metadata["z_spacing"] = float(f"{float(sec.metadata['z_spacing']):.10g}")
    if sec.metadata.get("z_spacing") is None:
        sec.metadata.pop("z_spacing", None)
    for n in notes:
        log.warning(n)
    return sec


# --------------------------------------------------------------------------- writing
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
    if not (_ok_pixel(py) and _ok_pixel(px)):
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
    suf = _suffix(path)
    if suf in (".zarr", ".ome.zarr"):
        return save_ome_zarr(path, data, pixel_size, metadata=metadata, overwrite=overwrite,
                             z_spacing=z_spacing, protect=protect)
    if suf not in (".tif", ".tiff", ".ome.tif", ".ome.tiff"):
        raise ValueError(f"{path}: unsupported output type {suf or '(none)'}; use .tif, .ome.tif or .zarr")
    if data.ndim not in (2, 3):
        raise ValueError(f"can only save 2-D or (z, y, x) images, got shape {tuple(data.shape)}")
    ps = _norm_pixel(pixel_size)
    _check_target(path, overwrite, protect)
    dt = np.dtype(data.dtype)
    meta_json = json.dumps(_json_safe(metadata or {}))
    lazy = _is_dask(data)
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
    """rmtree that wins against dask threads still writing chunks after a failed compute."""
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
        if _is_dask(data):
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
            "name": name or _stem(path),
            "axes": axes,
            "datasets": [{"path": "0",
                          "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
            "type": "none",
        }]
        g.attrs["emdeblur"] = _json_safe(metadata or {})
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
