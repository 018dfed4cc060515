"""Where the shipped weights live (no torch import: the pipeline client and the widgets ask for the
path and the card without loading a model).

Two models ship: the semi-blind GRAN ``SHIPPED_NAME`` (the default of every entry point) and the
previous blind GRAN ``BLIND_NAME`` (kept loadable, and the baseline of the restoration benchmark).
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_NAME = "sbgran_em_v2"
BLIND_NAME = "gran_em_v1"


def shipped_weights_path(name: str = SHIPPED_NAME) -> Path:
    """Path of shipped weights ``deblur/shipped_weights/<name>.pt`` (default: the semi-blind GRAN)."""
    return Path(__file__).resolve().parent / "shipped_weights" / f"{name}.pt"
