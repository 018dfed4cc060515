"""One way for a dock to run a core generator: in a napari worker thread, or synchronously.

Both docks (Focus QC, GRAN correction) start their work through a :class:`WorkerRunner`. It wraps
the generator with napari's ``create_worker`` (the work runs in a thread; ``yielded`` messages,
errors and the end come back to the GUI thread), or drains it in the calling thread with
``sync=True`` (tests, scripts, ``emdeblur demo``), with the same callbacks in the same order:
``on_yield`` per message, then ``on_error(exc)`` *or* ``on_finished()``. After the end the
generator is closed, so its cleanup (GPU memory) runs also after a cancel. When the dock's Qt
widget is destroyed (the dock closed), the worker is asked to stop and no callback reaches the
dead widget any more.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Generator

from ..qc.messages import drain

__all__ = ["WorkerRunner"]

log = logging.getLogger(__name__)


def log_error(exc: BaseException) -> None:
    """Log ``exc`` with its traceback (the dock shows one line): at ERROR for what looks like a bug,
    at DEBUG for the usage and data errors the one line explains (ValueError, OSError, MemoryError).
    """
    if getattr(exc, "emdeblur_logged", False):  # logged where it happened (the correction process)
        return
    expected = isinstance(exc, (ValueError, OSError, MemoryError))
    log.log(logging.DEBUG if expected else logging.ERROR, "worker failed: %s: %s", type(exc).__name__, exc,
            exc_info=(type(exc), exc, exc.__traceback__))


def _relay(gen: Generator) -> Generator:
    return (yield from gen)


class WorkerRunner:
    """Runs generators for one dock widget, one at a time.

    Parameters
    ----------
    widget : magicgui widget
        The dock; its ``native`` Qt widget's ``destroyed`` signal stops a running worker.
    on_yield, on_error, on_finished : callable
        Called in the GUI thread for each message, on an exception, and at a normal or
        cancelled end (not after an error).
    on_busy : callable, optional
        ``on_busy(True)`` when a threaded run starts, ``on_busy(False)`` when it ends (buttons).
    """

    def __init__(self, widget: Any, on_yield: Callable[[Any], None], on_error: Callable[[BaseException], None],
                 on_finished: Callable[[], None], on_busy: Callable[[bool], None] | None = None):
        self._on_yield, self._on_error, self._on_finished = on_yield, on_error, on_finished
        self._on_busy = on_busy or (lambda busy: None)
        self._worker: Any = None
        self._gen: Generator | None = None
        self._stop: Callable[[], None] | None = None
        self._errored = False
        self._closed = False
        widget.native.destroyed.connect(self.close)

    @property
    def worker(self) -> Any:
        """The running napari worker, or None."""
        return self._worker

    @property
    def running(self) -> bool:
        """True while a threaded run is going on."""
        return self._worker is not None

    def start(self, gen: Generator, sync: bool = False, stop: Callable[[], None] | None = None) -> None:
        """Run ``gen``: in a worker thread, or to its end in this thread with ``sync=True``.

        ``stop``, if given, is called (from the GUI thread, must not block) by :meth:`quit`: it
        reaches work the generator waits on, e.g. a child process, before its next message.
        """
        if self.running:
            raise RuntimeError("a run is already going on")
        self._gen, self._errored, self._stop = gen, False, stop
        if sync:
            try:
                drain(gen, self._on_yield)
            except Exception as e:  # noqa: BLE001 - the same path as the worker's errored signal
                log_error(e)
                self._end()
                self._on_error(e)
                return
            self._end()
            self._on_finished()
            return
        from napari.qt.threading import create_worker

        worker = create_worker(_relay, gen, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._yielded)
        worker.errored.connect(self._errored_cb)
        worker.finished.connect(self._finished)
        self._worker = worker
        self._on_busy(True)
        worker.start()

    def quit(self) -> None:
        """Ask a running worker to stop at its next message (the generator then cleans up)."""
        if self._worker is not None:
            self._worker.quit()
            if self._stop is not None:
                self._stop()

    def close(self, *_: Any) -> None:
        """The dock is gone: stop the worker and drop the callbacks."""
        self._closed = True
        self.quit()

    def _yielded(self, msg: Any) -> None:
        if not self._closed:
            self._on_yield(msg)

    def _errored_cb(self, exc: BaseException) -> None:
        log_error(exc)
        self._errored = True
        if not self._closed:
            self._on_busy(False)
            self._on_error(exc)

    def _finished(self) -> None:  # napari emits finished after errored, too
        self._worker = None
        self._end()
        if self._closed:
            return
        self._on_busy(False)
        if not self._errored:
            self._on_finished()

    def _end(self) -> None:
        self._stop = None
        if self._gen is not None:
            self._gen.close()
            self._gen = None
