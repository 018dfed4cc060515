"""The one model cache: each weights file is loaded once per process and device.

The correction service, the pipeline's tile threads and each Dask worker ask here. A key is the
weights file's resolved path, its size and modification time, and the device, so replacing the
file (a new training run) loads it again.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from torch import nn

from .device import resolve_device
from .shipped import shipped_weights_path
from .weights import load_model

_CACHE: dict[tuple, tuple[nn.Module, dict]] = {}
_LOCK = threading.Lock()

__all__ = ["clear_cache", "get_model"]


def get_model(weights: str | os.PathLike | None = None, device: str = "auto") -> tuple[nn.Module, dict]:
    """``(model in eval mode on the device, model card)`` for ``weights`` (None = shipped).

    Raises :class:`~napari_emdeblur.deblur.weights.WeightsError` for missing or mismatched
    weights and ``ValueError`` for an unavailable device, like ``load_model``.
    """
    path = Path(weights) if weights else shipped_weights_path()
    dev = resolve_device(device)
    try:
        st = path.stat()
        stamp: tuple | None = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None
    where = (str(path.resolve()), str(dev))
    with _LOCK:  # tile threads ask concurrently: load once
        hit = _CACHE.get(where + (stamp,))
        if hit is None:
            hit = load_model(path, device=str(dev))
            for key in [k for k in _CACHE if k[:2] == where]:
                del _CACHE[key]  # the file was replaced
            _CACHE[where + (stamp,)] = hit
    return hit


def clear_cache() -> None:
    """Forget every cached model (frees their memory once no one else holds them)."""
    with _LOCK:
        _CACHE.clear()
