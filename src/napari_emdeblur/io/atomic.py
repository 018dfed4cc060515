"""Atomic file writing and file hashing, shared by every module that writes outputs.

:func:`atomic_write` writes through a temporary file in the target's folder
(``.<name>.<random>.tmp``), flushes and fsyncs it, gives it the usual umask-based mode
(``mkstemp`` creates 0600 files) and only then publishes it under its final name, so that a
reader sees either the previous file (or none) or the complete new one, never a partial one:

* ``overwrite=True``: ``os.replace`` (atomic rename over any existing file);
* ``overwrite=False``: ``os.link(tmp, path)``, which fails with ``FileExistsError`` if the target
  exists, including one created by someone else while we were writing (no check-then-replace
  race); the temporary name is then removed. Where hard links are not supported (some network
  or FAT-like file systems) it falls back to an existence check followed by ``os.replace``.

On any error (in the writer, or ``KeyboardInterrupt``) the temporary file is removed and the
exception re-raised; an existing target is never touched unless ``overwrite=True``. An
``OSError`` (full disk, file size limit, permissions) is re-raised as the same kind of ``OSError``
whose message names the file: ``cannot write <path>: <reason>``.
OME-Zarr folders are not files and keep their own temp-folder + rename logic (``io.write``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import os_reason

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "sha256_file",
    "umask_mode",
]

# errnos meaning "this file system cannot make hard links" (-> check + os.replace fallback)
_NO_LINK_ERRNOS = {
    errno.EPERM,
    errno.EXDEV,
    errno.ENOSYS,
    getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
    errno.EOPNOTSUPP,
}
_umask_lock = threading.Lock()


def _current_umask() -> int:
    """The process umask, read without changing it where possible (Linux ``/proc``): the
    ``os.umask`` round trip briefly sets it to 0 for every thread of the process.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        um = os.umask(0o077)
        os.umask(um)
    return um


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` with the process umask applied (the mode ``open``/``mkdir`` would give)."""
    return mode & ~_current_umask()


def fsync_dir(path: str | os.PathLike) -> None:
    """Fsync a folder so that a rename/link in it is durable (best effort, no-op on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "already exists (pass overwrite=True to replace it)", str(path))


def _publish_new(tmp: str, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if ``path`` does not exist (atomically via a hard link)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as e:
        if e.errno not in _NO_LINK_ERRNOS and getattr(e, "winerror", None) is None:
            raise
        # no hard links here: best effort (a file created between check and replace is lost)
        if os.path.lexists(path):
            raise _exists_error(path) from None
        os.replace(tmp, path)
        return
    try:
        os.unlink(tmp)
    except OSError:  # pragma: no cover - published anyway; only a stray temp name remains
        pass


def _write_error(e: OSError, path: Path) -> OSError:
    """``e`` as the same kind of OSError (same errno) whose message names the file written."""
    if isinstance(e, FileExistsError) or getattr(e, "emdeblur_target", None) is not None:
        return e
    reason = os_reason(e)
    if isinstance(e, FileNotFoundError) and not path.parent.is_dir():
        reason = f"folder {path.parent} does not exist"
    err = OSError(e.errno, f"cannot write {path}: {reason}")
    err.emdeblur_target = str(path)  # type: ignore[attr-defined]
    return err


def atomic_write(
    path: str | os.PathLike,
    writer: Callable[[BinaryIO], object],
    *,
    overwrite: bool = False,
    fsync: bool = True,
    mode: int | None = None,
    sync_dir: bool = False,
    makedirs: bool = False,
) -> Path:
    """Write a file atomically: ``writer(f)`` fills an open binary file (``w+b``, seekable),
    which is then flushed, fsynced (``fsync``), chmod-ed to ``mode`` (default ``0o666`` minus the
    umask) and published as ``path``. Returns ``path``.

    ``overwrite=False`` raises ``FileExistsError`` if ``path`` exists when publishing, even if it
    appeared while ``writer`` ran; the existing file is left intact. ``sync_dir`` also fsyncs the
    folder after publishing. The folder must exist (``FileNotFoundError`` otherwise) unless
    ``makedirs``, which creates it and its parents.
    """
    path = Path(path)
    folder = path.parent
    try:
        if makedirs:
            folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise _write_error(e, path) from e
    os.close(fd)
    try:
        with open(tmp, "w+b") as f:  # by name: f.name is a path (tifffile needs one)
            writer(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, umask_mode(0o666) if mode is None else mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _write_error(e, path) from e
        raise
    if sync_dir:
        fsync_dir(folder)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, **kw) -> Path:
    """:func:`atomic_write` of ``data`` (same keyword arguments)."""
    return atomic_write(path, lambda f: f.write(data), **kw)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", **kw) -> Path:
    """:func:`atomic_write` of ``text`` encoded as is (no newline translation); bytes of file
    names that are not valid UTF-8 (surrogate escapes) are written as backslash escapes.
    """
    return atomic_write_bytes(path, text.encode(encoding, "backslashreplace"), **kw)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of the bytes of file ``path`` (read in ``chunk``-byte pieces)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
