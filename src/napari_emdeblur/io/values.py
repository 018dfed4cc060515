"""The dtype and value-range policy of images (numpy only).

Two rules live here, once:

* **what is accepted and how it is normalised** (:func:`validate_image`, :func:`to_grayscale`):
  uint8 and uint16 are kept as they are. Float images must be finite (NaN/inf ->
  :class:`~napari_emdeblur.io.errors.EMReadError`); floats in [0, 1] become
  ``uint16 = round(x * 65535)`` (unless they span fewer than ``MIN_LEVELS`` of those steps); other
  finite floats are rescaled linearly from their [min, max] to [0, 65535], computed in float64 (so
  float16 and +-3e38 float32 values neither overflow nor saturate); a span too wide for float64 is
  refused. Every conversion is described in the notes (warnings); so is an in-memory image that
  is constant (blank) or looks like pure noise (neighbouring pixels uncorrelated). int8/int16 with negative values are shifted by 2**(bits-1) into uint8/uint16;
  any other integer type is accepted if all values lie in [0, 65535], else refused. bool and
  complex images are refused, and images smaller than ``MIN_SIZE`` px along y or x. Colour
  (last axis 2/3/4) becomes grey: when all colour channels are equal the first is taken as is,
  otherwise ITU-R BT.709 luminance (0.2126 R + 0.7152 G + 0.0722 B); alpha is dropped. This is
  the one colour-to-grey of the package (readers, training data, inference).
* **how values map onto the [0, 1] the models work in** (:func:`value_range`): detectors write
  10-, 12- or 14-bit data into uint16 files. Scaled by the dtype range (/65535) such an image
  reaches the model as a dark, flat picture far from anything it was trained on, and PSNR against
  its ground truth comes out inflated. So the default mode, ``auto``, scales uint16 by its
  *significant* bit depth: ``2**b - 1`` with ``b`` the bit length of the image's maximum (at
  least 8). It is a power-of-two step, not the image's own maximum, so sections or tiles of one
  acquisition get the same range unless their maxima straddle a bit boundary; pass an explicit
  ``(lo, hi)`` to pin it. Modes: ``auto`` (above; every other dtype as ``dtype``),
  ``dtype`` (uint8 /255, uint16 /65535, other integers their ``iinfo`` range, floats in
  [0, 1] as they are, other floats by their min/max), or an explicit ``(lo, hi)`` pair (or the
  string ``"lo,hi"``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import EMReadError

MIN_SIZE = 16
MIN_LEVELS = 16  # a [0, 1] float image spanning fewer uint16 levels than this is rescaled instead
MODES = ("auto", "dtype")

__all__ = [
    "MIN_SIZE",
    "MODES",
    "fixed_range",
    "from_unit",
    "as_lazy",
    "is_dask_array",
    "parse_range_mode",
    "significant_bits",
    "to_grayscale",
    "to_unit",
    "validate_image",
    "value_range",
]


def is_dask_array(a: Any) -> bool:
    """True for dask arrays (checked by module name: dask need not be imported)."""
    return type(a).__module__.split(".")[0] == "dask"


def as_lazy(a: Any, chunk: int = 2048) -> Any:
    """``a`` unchanged if it is a numpy or dask array; any other array-like (a pyramid level read
    from tile files, a view with corrected tiles patched in) as a dask array over it, read in
    blocks of ``chunk`` px per y/x (one plane per block) only when computed: writers stream it
    instead of reading the whole image at once.
    """
    if isinstance(a, np.ndarray) or is_dask_array(a):
        return a
    import dask.array as da

    chunks = (1,) * (len(a.shape) - 2) + (int(chunk), int(chunk))
    return da.from_array(a, chunks=chunks, asarray=True, fancy=False, lock=False, name=False)


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
    if not is_dask_array(arr):
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            notes.append(f"{name}: grey image stored as RGB, first channel used")
            return np.ascontiguousarray(rgb[..., 0])
    notes.append(f"{name}: colour image converted to grey (BT.709 luminance)")
    w = np.array([0.2126, 0.7152, 0.0722], np.float32)
    if is_dask_array(arr):
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
    if is_dask_array(arr):
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
        _check_content(arr, name, notes)
        return arr
    with np.errstate(all="ignore"):  # conversions are computed in float64 below: nothing to warn about
        out = _to_16bit(arr, dt, name, notes)
    _check_content(out, name, notes)
    return out


def _to_16bit(arr: Any, dt: np.dtype, name: str, notes: list[str]) -> Any:
    """Other dtypes -> uint8/uint16 (see the module docstring)."""
    if dt.kind == "f":
        lo, hi, finite = _reduce_minmax(arr)
        if not finite:
            raise EMReadError(f"{name}: float image contains NaN or infinite values")
        if lo >= 0.0 and hi <= 1.0 and (hi == lo or (hi - lo) * 65535.0 >= MIN_LEVELS):
            notes.append(f"{name}: float image in [0, 1] stored as uint16 (x * 65535)")
            work = arr.astype(np.float64 if dt.itemsize >= 8 else np.float32)  # float16 * 65535 overflows
            return (work * 65535.0).round().astype(np.uint16)
        span = float(hi) - float(lo)  # float64: +-3e38 float32 values do not overflow here
        if not math.isfinite(span):
            raise EMReadError(
                f"{name}: float values span [{lo:.6g}, {hi:.6g}], too wide to rescale to 16 bits"
            )
        notes.append(
            f"{name}: float image rescaled from [{lo:.6g}, {hi:.6g}] to uint16 [0, 65535]"
        )
        if span == 0.0:
            return (arr * 0).astype(np.uint16)
        # (x - lo) / span first: 65535 / span overflows for a subnormal span
        return ((arr.astype(np.float64) - lo) / span * 65535.0).round().clip(0, 65535).astype(np.uint16)
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


#: neighbouring pixels of EM images are strongly correlated (the probe is wider than a pixel);
#: below this lag-1 correlation an image is taken for pure noise
NOISE_CORRELATION = 0.15


def _check_content(arr: Any, name: str, notes: list[str]) -> None:
    """Warn (``notes``) about an in-memory image that is blank (constant) or pure noise; lazy data
    are not read whole for this.
    """
    if not isinstance(arr, np.ndarray) or arr.size == 0:
        return
    step = max(1, arr.size // 65536)  # a cheap sample first: a varying sample ends the check
    sample = arr.reshape(-1)[::step]
    if sample.min() == sample.max() and arr.min() == arr.max():
        notes.append(f"{name}: image is constant (every pixel is {arr.flat[0]}): blank, no contrast to score "
                     "or correct")
        return
    plane = arr[arr.shape[0] // 2] if arr.ndim == 3 else arr
    h, w = plane.shape
    c = plane[max(0, h // 2 - 128): h // 2 + 128, max(0, w // 2 - 128): w // 2 + 128].astype(np.float32)
    c -= c.mean()
    var = float(np.mean(c * c))
    if var <= 0.0:
        return
    rx = float(np.mean(c[:, 1:] * c[:, :-1])) / var
    ry = float(np.mean(c[1:, :] * c[:-1, :])) / var
    if max(rx, ry) < NOISE_CORRELATION:
        notes.append(
            f"{name}: image looks like pure noise (neighbouring pixels uncorrelated, r = {max(rx, ry):.2f}); "
            "focus scores will be meaningless"
        )


def parse_range_mode(mode) -> str | tuple[float, float]:
    """Check ``mode``; returns ``'auto'``, ``'dtype'`` or a ``(lo, hi)`` tuple of floats."""
    if isinstance(mode, str):
        m = mode.strip().lower()
        if m in MODES:
            return m
        parts = m.split(",")
        if len(parts) != 2:
            raise ValueError(f"value range must be 'auto', 'dtype' or 'LO,HI', got {mode!r}")
        try:
            mode = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise ValueError(f"value range must be 'auto', 'dtype' or 'LO,HI', got {mode!r}") from None
    try:
        lo, hi = (float(v) for v in mode)
    except (TypeError, ValueError):
        raise ValueError(f"value range must be 'auto', 'dtype' or (lo, hi), got {mode!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"value range needs finite lo < hi, got ({lo}, {hi})")
    return lo, hi


def significant_bits(image: np.ndarray) -> int:
    """Bit length of the image's maximum, at least 8 (an unsigned integer image)."""
    m = int(np.max(image)) if np.size(image) else 0
    return max(8, m.bit_length())


def value_range(image: np.ndarray, mode="auto") -> tuple[float, float]:
    """The ``(lo, hi)`` that maps ``image`` onto [0, 1] (see the module docstring)."""
    mode = parse_range_mode(mode)
    if isinstance(mode, tuple):
        return mode
    dt = np.asarray(image).dtype if not hasattr(image, "dtype") else np.dtype(image.dtype)
    if dt == np.uint8:
        return 0.0, 255.0
    if dt == np.uint16:
        if mode == "auto":
            return 0.0, float(2 ** significant_bits(image) - 1)
        return 0.0, 65535.0
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return float(info.min), float(info.max)
    if dt.kind == "b":
        return 0.0, 1.0
    lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def fixed_range(data, mode="auto"):
    """``mode`` resolved to one ``(lo, hi)`` for all of ``data`` when it is an in-memory array
    (every section of a stack then shares it); a lazy array keeps ``mode`` (resolved per section).
    """
    return value_range(data, mode) if isinstance(data, np.ndarray) else parse_range_mode(mode)


def to_unit(block: np.ndarray, rng: tuple[float, float]) -> np.ndarray:
    """``block`` mapped from ``rng = (lo, hi)`` onto [0, 1] as float32 (the models' input)."""
    lo, hi = rng
    return ((np.asarray(block, np.float32) - lo) / (hi - lo)).astype(np.float32, copy=False)


def from_unit(block: np.ndarray, rng: tuple[float, float], dtype: np.dtype) -> np.ndarray:
    """Model output in [0, 1] back onto ``rng``, clipped and cast to ``dtype`` (integers rounded)."""
    lo, hi = rng
    x = np.clip(block, 0.0, 1.0) * (hi - lo) + lo
    if np.dtype(dtype).kind in "iub":
        return np.rint(x).astype(dtype)
    return x.astype(dtype)
