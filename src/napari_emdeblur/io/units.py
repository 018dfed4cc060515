"""Physical units of pixel sizes: factors to nanometres and the one plausibility check.

A pixel size or z spacing is plausible for EM when it is a finite number between
``MIN_NM`` (0.01 nm) and ``MAX_NM`` (100 um). The readers drop anything else (a negative, NaN or
infinite value, 1e-30 m, one metre per pixel, a unit they do not know) with a warning naming the
file and the value, so it never reaches the napari layer scale (:func:`plausible_nm`).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_NM", "MIN_NM", "ok_pixel_nm", "plausible_nm", "unit_to_nm"]

MIN_NM = 0.01
MAX_NM = 1e5

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


def ok_pixel_nm(v: float | None) -> bool:
    """True for a plausible EM pixel size or z spacing in nm (finite, 0.01 nm to 100 um)."""
    return v is not None and math.isfinite(v) and MIN_NM <= v <= MAX_NM


def plausible_nm(value: Any, what: str, name: str, notes: list[str], unit: str = "nm") -> float | None:
    """``value`` (in ``unit``) as nm when plausible, else None with a warning in ``notes`` naming
    ``name`` (the file), ``what`` (e.g. "z spacing") and the value. None stays None silently.
    """
    if value is None:
        return None
    try:
        factor = unit_to_nm(unit)
        if factor is None:
            notes.append(f"{name}: {what} given in unknown unit {unit!r}, ignored")
            return None
        v = float(value) * factor
    except (TypeError, ValueError, OverflowError):
        notes.append(f"{name}: {what} {value!r} is not a number, ignored"[:300])
        return None
    if not ok_pixel_nm(v):
        notes.append(f"{name}: {what} of {v:.6g} nm is implausible (outside {MIN_NM:g} nm to {MAX_NM / 1e3:g} um), "
                     "ignored")
        return None
    return v
