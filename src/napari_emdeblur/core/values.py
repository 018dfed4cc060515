"""How image values map onto the [0, 1] the models work in (numpy only).

Detectors write 10-, 12- or 14-bit data into uint16 files. Scaled by the dtype range
(/65535) such an image reaches the model as a dark, flat picture far from anything it was
trained on, and PSNR against its ground truth comes out inflated. So the default mode,
``auto``, scales uint16 by its *significant* bit depth: ``2**b - 1`` with ``b`` the bit length
of the image's maximum (at least 8). It is a power-of-two step, not the image's own maximum, so
sections or tiles of one acquisition get the same range unless their maxima straddle a bit
boundary; pass an explicit ``(lo, hi)`` to pin it.

Modes: ``auto`` (above; every other dtype as ``dtype``), ``dtype`` (uint8 /255, uint16
/65535, other integers their ``iinfo`` range, floats in [0, 1] as they are, other floats by
their min/max), or an explicit ``(lo, hi)`` pair (or the string ``"lo,hi"``).
"""

from __future__ import annotations

import numpy as np

MODES = ("auto", "dtype")


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
    (every section of a stack then shares it); a lazy array keeps ``mode`` (resolved per section)."""
    return value_range(data, mode) if isinstance(data, np.ndarray) else parse_range_mode(mode)
