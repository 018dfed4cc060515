"""The one device resolver: which torch device a run uses, and its name for people.

``auto`` means CUDA when available, then Apple MPS, then the CPU; an explicit name is checked
(``cuda`` without CUDA is a ``ValueError`` saying what to use instead). Every entry point (the
correction service, training, the pipeline and its Dask workers) asks here.
"""

from __future__ import annotations

import torch

__all__ = ["cuda_device_for_worker", "device_name", "gpu_count", "is_gpu", "release_memory", "resolve_device"]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Resolve a device name.

    Parameters
    ----------
    name : str or torch.device or None
        ``auto`` (or None), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        An unknown name, or a device that is not available here.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available (use --device cpu or auto)")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' requested but Apple MPS is not available")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}") from e


def is_gpu(name: str | torch.device | None) -> bool:
    """True when ``name`` resolves to CUDA or Apple MPS (devices that serialise corrections)."""
    return resolve_device(name).type in ("cuda", "mps")


def cuda_device_for_worker(index: int) -> str:
    """``cuda:<index mod GPU count>`` for the ``index``-th worker, or ``cpu`` without CUDA."""
    n = torch.cuda.device_count()
    return f"cuda:{index % n}" if n else "cpu"


def device_name(device: torch.device) -> str:
    """``cuda (<GPU name>)`` for CUDA devices, else ``str(device)``."""
    try:
        if device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(device)})"
    except Exception:  # pragma: no cover - best effort
        pass
    return str(device)


def gpu_count() -> int:
    """How many CUDA devices this process sees (0 without CUDA): ``cuda:0`` .. ``cuda:N-1``."""
    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - a broken driver reads as no GPU
        return 0


def release_memory(device: torch.device) -> None:
    """Give cached GPU memory back after a run (no-op elsewhere)."""
    try:
        if getattr(device, "type", "") == "cuda":
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass
