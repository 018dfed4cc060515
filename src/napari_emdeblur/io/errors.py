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

__all__ = ["EMReadError", "GuardedReads", "os_reason", "read_error", "user_message"]


class EMReadError(ValueError):
    """A file or folder could not be read as an EM section; the message names the path."""


def read_error(path, exc: BaseException, what: str) -> EMReadError:
    """The one wording of a failed read: ``"<path>: <reason>"`` where the reason is the OS's in
    plain words (permission denied, a folder, ...) or else ``what`` (e.g. "corrupt, truncated or
    not a TIFF file"); the library's own text (struct, zlib, imageio backends) is kept out of the
    message and logged at debug level.
    """
    import logging

    logging.getLogger("napari_emdeblur.io").debug("%s: %s: %s", path, type(exc).__name__, exc)
    if isinstance(exc, EMReadError):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno not in (_errno.EINVAL,):
        return EMReadError(f"{path}: cannot read it ({os_reason(exc)})")
    return EMReadError(f"{path}: {what}")


class GuardedReads:
    """An array-like over a lazily decoded store (a zarr array, a TIFF's tiles) whose reads fail
    with :func:`read_error` naming ``path`` ("corrupt data ...") instead of the codec's exception;
    wrap it in ``dask.array.from_array`` so that a damaged chunk met while drawing or scoring is
    reported like any other bad input.
    """

    def __init__(self, arr, path, what: str = "corrupt or truncated image data (a chunk cannot be decoded)"):
        self.arr, self.path, self.what = arr, path, what
        self.shape, self.dtype, self.ndim = tuple(arr.shape), arr.dtype, len(arr.shape)
        self.chunks = getattr(arr, "chunks", None)

    def __getitem__(self, idx):
        try:
            return self.arr[idx]
        except Exception as e:  # noqa: BLE001 - every decode failure is the file's fault
            raise read_error(self.path, e, self.what) from None


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
