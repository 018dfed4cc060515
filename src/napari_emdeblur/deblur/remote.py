"""The correction service in a spawned child process: :class:`ProcessCorrection`.

Importing torch (its C extension initialises holding the GIL) and the first model load stall
every other thread of the process for up to seconds, the GUI thread included, even when they
happen in a worker thread. A GUI therefore runs :func:`~.service.iter_correct` (the one
correction flow, unchanged) in a spawned child and relays its messages: the same Notice,
Progress, SectionScores, TileResult and CorrectionReport objects, in the same order, with the
same return value. torch is imported only in the child.

How the image reaches the child, decided in the calling thread (a worker thread, never the GUI
thread): a lazy array (dask, zarr, ...) whose pickle is small (a graph of file reads) is pickled
and read by the child itself; a numpy array, or any other array, is copied once (band by band)
into a memory-mapped scratch file (in ``/dev/shm`` where there is one, i.e. in RAM) that the child
maps read-only without another copy. The file is unlinked as soon as the child has mapped it (or
when the run ends), so nothing is left behind.

Stopping: :meth:`ProcessCorrection.stop` (any thread, non-blocking) asks the child to stop after
its current message; it closes the service generator (GPU memory released) and ends. Closing the
:meth:`~ProcessCorrection.messages` generator stops the child too; a reaper thread then waits for
it, terminates it if it does not end in time, and frees the shared memory. Nothing here blocks
the caller for long.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Generator

import numpy as np

__all__ = ["ProcessCorrection", "SharedArray", "share_array"]

log = logging.getLogger(__name__)

PICKLE_LIMIT = 16 << 20  # a lazy array pickled larger than this is materialised instead
BAND_BYTES = 64 << 20  # materialise lazy arrays in bands of about this size


@dataclass
class SharedArray:
    """A picklable handle on an array for the child: a memory-mapped scratch file or a pickle."""

    kind: str  # "file" | "pickle"
    shape: tuple[int, ...] = ()
    dtype: str = "uint8"
    path: str = ""
    payload: bytes = b""

    def open(self) -> Any:
        """In the child: the array (read-only for a file)."""
        if self.kind == "pickle":
            return pickle.loads(self.payload)
        return np.memmap(self.path, dtype=np.dtype(self.dtype), mode="r", shape=self.shape)


def _scratch_dir(nbytes: int) -> str:
    """``/dev/shm`` when it has room, else the temporary folder; a full file system would kill
    the writer (SIGBUS on a memory map), so the room is checked first.
    """
    import shutil
    import tempfile

    for d in ("/dev/shm", tempfile.gettempdir()):
        if os.path.isdir(d) and os.access(d, os.W_OK) and shutil.disk_usage(d).free > nbytes * 1.1 + (64 << 20):
            return d
    raise OSError(f"No room for a {nbytes / 2**30:.1f} GiB scratch copy of the image (in /dev/shm or "
                  f"{tempfile.gettempdir()})")


def _copy_bands(src: Any, dst: np.ndarray) -> None:
    if dst.ndim == 3:
        for z in range(dst.shape[0]):
            _copy_bands(src[z], dst[z])
        return
    row = max(1, dst.shape[1] * dst.dtype.itemsize)
    step = max(1, BAND_BYTES // row)
    for y in range(0, dst.shape[0], step):
        dst[y : y + step] = np.asarray(src[y : y + step])


def share_array(a: Any) -> tuple[SharedArray, str | None]:
    """``(handle for the child, scratch file to delete afterwards or None)``; see the module doc."""
    if not isinstance(a, np.ndarray):
        try:
            payload = pickle.dumps(a, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - not picklable: materialise it
            payload = b""
        if payload and len(payload) <= PICKLE_LIMIT:
            return SharedArray("pickle", payload=payload), None
    import tempfile

    shape = tuple(int(s) for s in a.shape)
    dtype = np.dtype(a.dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    fd, path = tempfile.mkstemp(prefix="emdeblur-", suffix=".raw", dir=_scratch_dir(nbytes))
    os.close(fd)
    try:
        dst = np.memmap(path, dtype=dtype, mode="w+", shape=shape)
        _copy_bands(a, dst)
        dst.flush()
        del dst
    except BaseException:
        os.unlink(path)
        raise
    return SharedArray("file", shape, dtype.str, path), path


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _exit_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """End this (child) process when its parent (pid ``parent``, passed by the parent: it may be
    gone before the child starts) is gone: a viewer that crashed or was killed must not leave a
    model process correcting, and holding memory, behind it.
    """

    def watch() -> None:
        import time

        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="emdeblur-parent-watch", daemon=True).start()


def _child_main(image: SharedArray, gt: SharedArray | None, selection: Any, params: Any, out: Any,
                stop: Any, nice: int, threads: int, parent: int | None = None) -> None:
    """The child process: run the service, put ("msg", m) per message, then ("end", value) or
    ("error", exception).
    """
    if parent is not None:
        _exit_with_parent(parent)
    try:
        if nice and hasattr(os, "nice"):
            try:
                os.nice(nice)
            except OSError:
                pass
        from .service import iter_correct

        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        img = image.open()
        ref = gt.open() if gt is not None else None
        out.put(("opened", None))  # the parent may delete the scratch files now
        gen = iter_correct(img, selection, params, ground_truth=ref)
        value = None
        try:
            while not stop.is_set():
                try:
                    msg = next(gen)
                except StopIteration as end:
                    value = end.value
                    break
                out.put(("msg", msg))
        finally:
            gen.close()  # releases GPU memory also after a stop
        del img, ref
        out.put(("end", value))
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
        tb = traceback.format_exc(limit=20)  # before the traceback is dropped (frames do not pickle)
        e.__traceback__ = None
        out.put(("error", _portable(e), tb))


class ProcessCorrection:
    """:func:`~.service.iter_correct` run in a spawned child process (see the module doc).

    Parameters
    ----------
    image, selection, params, ground_truth
        As for :func:`~.service.iter_correct`.
    nice : int
        Added to the child's niceness (POSIX), so that the GUI keeps the CPU when both want it.
    threads : int
        CPU threads of the child's torch; default: all cores but one (left to the GUI), at least 1;
        0 = torch's own default.
    join_timeout_s : float
        How long the reaper waits for a stopped child before terminating it.
    """

    def __init__(self, image: Any, selection: Any, params: Any, *, ground_truth: Any = None, nice: int = 5,
                 threads: int | None = None, join_timeout_s: float = 60.0):
        self.image, self.selection, self.params, self.ground_truth = image, selection, params, ground_truth
        self.nice = nice
        self.threads = max(1, (os.cpu_count() or 2) - 1) if threads is None else int(threads)
        self.join_timeout_s = join_timeout_s
        self.process: Any = None
        self.finished = threading.Event()  # set once the child has ended and everything is freed
        self.scratch: list[str] = []  # scratch files made for the child (deleted by then)
        self._stop: Any = None
        self._stop_requested = threading.Event()

    def stop(self) -> None:
        """Ask the child to stop after its current message (thread-safe, returns at once)."""
        self._stop_requested.set()
        if self._stop is not None:
            self._stop.set()

    def messages(self) -> Generator[Any, None, Any]:
        """The service's messages, relayed from the child (run it in a worker thread)."""
        import multiprocessing as mp

        files: list[str] = []
        out = proc = None
        try:
            img, f1 = share_array(self.image)
            files += [f1] if f1 else []
            gt = None
            if self.ground_truth is not None:
                gt, f2 = share_array(self.ground_truth)
                files += [f2] if f2 else []
            self.scratch = list(files)
            if self._stop_requested.is_set():
                return None
            ctx = mp.get_context("spawn")
            out, self._stop = ctx.Queue(), ctx.Event()
            proc = ctx.Process(target=_child_main, name="emdeblur-correction", daemon=True,
                               args=(img, gt, self.selection, self.params, out, self._stop, self.nice,
                                     self.threads, os.getpid()))
            proc.start()
            self.process = proc
            while True:
                try:
                    item = out.get(timeout=0.1)
                except queue.Empty:
                    if not proc.is_alive():
                        try:
                            item = out.get(timeout=1.0)  # the last message may still be in the pipe
                        except queue.Empty:
                            raise RuntimeError(f"the correction process ended unexpectedly "
                                               f"(exit code {proc.exitcode})") from None
                    else:
                        continue
                if item[0] == "msg":
                    yield item[1]
                elif item[0] == "opened":
                    _remove(files)  # mapped by the child: the data stays until it unmaps it
                elif item[0] == "end":
                    return item[1]
                else:  # the child's traceback goes to the log (the GUI shows one line)
                    expected = isinstance(item[1], (ValueError, OSError, MemoryError))
                    log.log(logging.DEBUG if expected else logging.ERROR, "correction process failed:\n%s",
                            item[2] if len(item) > 2 else item[1])
                    item[1].emdeblur_logged = True  # with the child's traceback: not again by the dock
                    raise item[1]
        finally:
            self.stop()
            threading.Thread(target=self._reap, args=(proc, out, files), name="emdeblur-reaper", daemon=True).start()

    def _reap(self, proc: Any, out: Any, files: list[str]) -> None:
        import time

        deadline = time.monotonic() + self.join_timeout_s
        try:
            if proc is not None:
                # drain so that the child's queue feeder can flush and the child can exit
                while proc.is_alive() and time.monotonic() < deadline:
                    proc.join(timeout=0.2)
                    try:
                        while True:
                            out.get_nowait()
                    except (queue.Empty, OSError, ValueError):
                        pass
                if proc.is_alive():
                    proc.terminate()
                    proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
            if out is not None:
                out.close()
                out.cancel_join_thread()
        finally:
            _remove(files)
            self.finished.set()


def _remove(files: list[str]) -> None:
    """Delete scratch files (those already gone, or still open on Windows, are left to the end)."""
    for f in list(files):
        try:
            os.unlink(f)
            files.remove(f)
        except FileNotFoundError:
            files.remove(f)
        except OSError:
            pass
