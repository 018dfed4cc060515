"""How the pipeline sorts failures: a bad file (permanent) or a bad moment (transient)."""

from __future__ import annotations

import errno

from ..io.errors import EMReadError, user_message

__all__ = ["ModelLoadError", "classify_error"]


class ModelLoadError(RuntimeError):
    """The correcting model (or its device) cannot be loaded: stops the run instead of failing
    every tile that needs correcting.
    """


def classify_error(exc: BaseException) -> tuple[str, str]:
    """``(kind, message)`` of an exception raised while processing a tile.

    ``permanent``: the file itself is bad (unreadable, truncated, wrong shape, vanished) and is
    retried only when it changes. ``transient``: the environment is (permissions, full disk, I/O,
    out of memory) and the tile is retried later. The message is the one line the user reads
    (:func:`~napari_emdeblur.io.errors.user_message`): what is wrong, naming the file; only an
    unexpected exception (a bug) is prefixed with its Python class.
    """
    name = type(exc).__name__
    text = user_message(exc)
    if isinstance(exc, EMReadError):
        return "permanent", text
    if isinstance(exc, FileNotFoundError):
        return "permanent", f"file disappeared: {text}"
    if isinstance(exc, PermissionError):
        return "transient", text
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "transient", f"disk full: {text}"
        return "transient", text
    if isinstance(exc, MemoryError):
        return "transient", "out of memory"
    if name == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return "transient", text
    if isinstance(exc, ValueError):
        return "permanent", text
    return "permanent", f"{name}: {text}"
