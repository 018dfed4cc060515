"""How the pipeline sorts failures: a bad file (permanent) or a bad moment (transient)."""

from __future__ import annotations

import errno

from ..io.errors import EMReadError

__all__ = ["ModelLoadError", "classify_error"]


class ModelLoadError(RuntimeError):
    """The correcting model (or its device) cannot be loaded: stops the run instead of failing
    every tile that needs correcting.
    """


def classify_error(exc: BaseException) -> tuple[str, str]:
    """``(kind, message)`` of an exception raised while processing a tile.

    ``permanent``: the file itself is bad (unreadable, truncated, wrong shape, vanished) and is
    retried only when it changes. ``transient``: the environment is (permissions, full disk, I/O,
    out of memory) and the tile is retried later.
    """
    name = type(exc).__name__
    msg = f"{name}: {exc}"
    if isinstance(exc, EMReadError):
        return "permanent", msg
    if isinstance(exc, FileNotFoundError):
        return "permanent", f"file disappeared: {exc}"
    if isinstance(exc, PermissionError):
        return "transient", msg
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "transient", f"disk full: {exc}"
        return "transient", msg
    if isinstance(exc, MemoryError):
        return "transient", "out of memory"
    if name == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return "transient", msg
    return "permanent", msg
