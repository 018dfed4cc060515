"""Physical units of pixel sizes: factors to nanometres and the plausibility check."""

from __future__ import annotations

import math

__all__ = ["ok_pixel_nm", "unit_to_nm"]

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
    return v is not None and math.isfinite(v) and 0 < v < 1e5  # below 100 um
