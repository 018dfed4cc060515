"""Where the shipped GRAN weights live (no torch import: the pipeline client and the widgets
ask for the path and the card without loading a model).
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_NAME = "gran_em_v1"


def shipped_weights_path() -> Path:
    """Path of the shipped GRAN weights (``deblur/shipped_weights/<SHIPPED_NAME>.pt``); may not exist yet."""
    return Path(__file__).resolve().parent / "shipped_weights" / f"{SHIPPED_NAME}.pt"
