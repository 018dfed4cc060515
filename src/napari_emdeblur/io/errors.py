"""The one error type of the readers, and the one way an error is worded for the user.

:class:`EMReadError` (a ``ValueError``): a file or folder cannot be read as an EM section; its
message names the path and says what is wrong in the user's terms. :func:`user_message` turns any
exception the CLI, the pipeline or a widget reports into one line: the message of a ``ValueError``
as it is, an ``OSError`` as ``"<path>: <reason>"`` (without Python's ``[Errno N]``), anything else
as its text; line breaks are folded so that the report stays one line.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = ["EMReadError", "os_reason", "user_message"]


class EMReadError(ValueError):
    """A file or folder could not be read as an EM section; the message names the path."""


# plain words for the OS errors a user meets with files (strerror is kept for the others)
_REASONS = {
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.ENOENT: "no such file or folder",
    _errno.ENOTDIR: "a path component is not a folder",
    _errno.EISDIR: "is a folder, not a file",
    _errno.ENOSPC: "no space left on the disk",
    _errno.EFBIG: "file too large (file size limit or file system limit reached)",
    _errno.EROFS: "read-only file system",
    _errno.EIO: "input/output error (disk or network problem)",
    _errno.ELOOP: "too many levels of symbolic links (a link loop)",
    _errno.ENAMETOOLONG: "file name too long",
    _errno.EEXIST: "already exists",
}
if hasattr(_errno, "EDQUOT"):
    _REASONS[_errno.EDQUOT] = "disk quota exceeded"


def os_reason(exc: OSError) -> str:
    """The reason of an ``OSError`` in plain words (no errno number, no path)."""
    if exc.errno in _REASONS and (exc.strerror is None or exc.strerror == os.strerror(exc.errno)):
        return _REASONS[exc.errno]
    if exc.strerror:
        return str(exc.strerror)
    if exc.args:
        return " ".join(str(a) for a in exc.args)
    return type(exc).__name__


def _one_line(text: str) -> str:
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    return "; ".join(parts)


def user_message(exc: BaseException) -> str:
    """One line describing ``exc`` for the user (see the module docstring)."""
    if isinstance(exc, OSError) and (exc.strerror or exc.filename is not None):
        reason = os_reason(exc)
        if exc.filename is not None:
            where = os.fsdecode(exc.filename)
            if exc.filename2 is not None:
                where += f" -> {os.fsdecode(exc.filename2)}"
            return _one_line(f"{where}: {reason}")
        return _one_line(reason)
    text = str(exc)
    if not text:
        return type(exc).__name__
    return _one_line(text)
