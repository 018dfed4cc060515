"""Option value types for the sub-commands: each refuses a bad value with a message that argparse
prefixes with the option's name (``argument --infer-tile: must be at least 64, got 10``).

NaN, infinities, negative sizes and unknown words are refused here, at parse time, before any
file is read or written.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Callable

__all__ = ["device_arg", "finite_float", "int_range", "json_object", "threshold_or_auto", "value_range_arg", "window_arg"]


def int_range(lo: int, hi: int | None = None, unit: str = "") -> Callable[[str], int]:
    """An integer option in ``[lo, hi]`` (``hi`` None: no upper bound)."""
    u = f" {unit}" if unit else ""

    def parse(text: str) -> int:
        try:
            v = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            rng = f"at least {lo}{u}" if hi is None else f"between {lo} and {hi}{u}"
            raise argparse.ArgumentTypeError(f"must be {rng}, got {v}")
        return v

    parse.__name__ = "integer"
    return parse


def finite_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    """A finite float option, optionally bounded (``lo_open``: strictly above ``lo``)."""

    def parse(text: str) -> float:
        try:
            v = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"must be {'above' if lo_open else 'at least'} {lo:g}, got {v:g}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi:g}, got {v:g}")
        return v

    parse.__name__ = "number"
    return parse


def device_arg(text: str) -> str:
    """A device name (auto, cpu, cuda, cuda:N, mps); whether it exists is checked at model load."""
    from ..deblur.service import check_device_name

    try:
        return check_device_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def threshold_or_auto(text: str) -> str:
    """A focus threshold: a finite number or ``auto``; kept as text (``correct`` parses it)."""
    if str(text).strip().lower() == "auto":
        return "auto"
    finite_float()(text)
    return str(text).strip()


def value_range_arg(text: str) -> str:
    """``auto``, ``dtype`` or ``LO,HI`` with finite ``LO < HI`` (see ``io.values``)."""
    from ..io.values import parse_range_mode

    try:
        parse_range_mode(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return str(text)


def json_object(text: str) -> dict:
    """A JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"is not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"width\": 32}'")
    return value


def window_arg(v: str) -> int | None:
    """``--window`` (blur metric): one of the window sizes the blur map has weights for
    (:data:`~napari_emdeblur.qc.blurmap.WINDOWS`, px) or ``full`` (None).
    """
    from ..qc.blurmap import WINDOWS

    if str(v).strip().lower() in ("full", "none", "whole"):
        return None
    n = int_range(1, unit="px")(v)
    if n not in WINDOWS:
        sizes = ", ".join(str(w) for w in WINDOWS if w is not None)
        raise argparse.ArgumentTypeError(f"must be {sizes} or full (the sizes the blur map was trained on), got {n}")
    return n
