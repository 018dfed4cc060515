"""The one error type of the readers: a file or folder that cannot be read as an EM section."""

from __future__ import annotations

__all__ = ["EMReadError"]


class EMReadError(ValueError):
    """A file or folder could not be read as an EM section; the message names the path."""
