"""How long the Qt event loop is blocked while something runs: the UI pauses a user feels.

:class:`PauseProbe` runs a precise ``QTimer`` every ``interval_ms`` on the GUI thread and records
the time between consecutive timeouts. A gap of ``g`` ms means the event loop could not turn for
about ``g - interval_ms`` ms: input, repaints and timers all waited that long. ``stop()`` returns
the longest such pause; :attr:`PauseProbe.gaps` keeps every gap (ms) and :meth:`PauseProbe.summary`
the figures a benchmark reports. Measure against a bare repaint in the same run
(:func:`bare_repaint_ms`): on a loaded machine with software OpenGL a repaint alone costs 100-200 ms.
With ``stacks=True`` a sampling thread also records where the GUI thread is while a tick is overdue
(Python's ``sys._current_frames``, every ``sample_ms``): :attr:`PauseProbe.pause_sites` names, per
long pause, the code it was spent in, so a benchmark can say what the pauses are instead of guessing.

:func:`run_loop_until` spins a nested ``QEventLoop`` (the normal way the application runs) until a
condition holds, so a measurement sees real event processing rather than a ``processEvents`` loop.
Used by tests and by ``benchmarks/``; Qt only (no napari needed except for :func:`bare_repaint_ms`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import Any, Callable

import numpy as np
from qtpy.QtCore import QEventLoop, QObject, Qt, QTimer

__all__ = ["PauseProbe", "bare_repaint_ms", "run_loop_for", "run_loop_until", "stack_site"]


class PauseProbe(QObject):
    """Longest gaps between event-loop turns while the probe runs (create it in the GUI thread).

    Parameters
    ----------
    interval_ms : int
        Timer period; the resolution of the measurement.
    log_over_ms : float
        Pauses longer than this are also logged with their start time (:attr:`long_pauses`).
    stacks : bool
        Sample the GUI thread's Python stack while a tick is overdue (see :attr:`pause_sites`).
    sample_ms : float
        Sampling period of ``stacks``.
    """

    _timer_active = False

    def __init__(self, interval_ms: int = 10, log_over_ms: float = 100.0, parent: QObject | None = None, *,
                 stacks: bool = False, sample_ms: float = 20.0):
        super().__init__(parent)
        self.interval_ms = int(interval_ms)
        self.log_over_ms = float(log_over_ms)
        self.gaps: list[float] = []  # ms between consecutive ticks
        self.long_pauses: list[tuple[float, float]] = []  # (start s after start(), pause ms)
        # per logged long pause: (start s, pause ms, [(site, samples), ...] most sampled first)
        self.pause_sites: list[tuple[float, float, list[tuple[str, int]]]] = []
        self.stacks = bool(stacks)
        self.sample_ms = float(sample_ms)
        self._samples: Counter[str] = Counter()  # stack sites sampled while the tick after _sampled_tick is overdue
        self._sampled_tick: float | None = None
        self._sampler: threading.Thread | None = None
        self._samples_lock = threading.Lock()  # the sampler adds while the GUI thread reads at a tick
        self._gui_ident = threading.get_ident()
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(self.interval_ms)
        self._timer.timeout.connect(self._tick)
        self._t0 = 0.0
        self._last: float | None = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            g = (now - self._last) * 1000.0
            self.gaps.append(g)
            if g - self.interval_ms > self.log_over_ms:
                start, ms = round(now - self._t0 - g / 1000.0, 3), round(g - self.interval_ms, 1)
                self.long_pauses.append((start, ms))
                if self.stacks:
                    with self._samples_lock:
                        sites = self._samples.most_common(3) if self._sampled_tick == self._last else []
                    self.pause_sites.append((start, ms, sites))
        self._last = now

    def _sample(self) -> None:
        """Sampling thread: where the GUI thread is while its next tick is overdue."""
        period = self.sample_ms / 1000.0
        while self._timer_active:
            time.sleep(period)
            last = self._last
            if last is None or (time.perf_counter() - last) * 1000.0 - self.interval_ms < self.log_over_ms / 2:
                continue
            frame = sys._current_frames().get(self._gui_ident)
            if frame is None:
                continue
            site = stack_site(frame)
            with self._samples_lock:
                if self._sampled_tick != last:
                    self._samples, self._sampled_tick = Counter(), last
                self._samples[site] += 1

    def start(self) -> "PauseProbe":
        """Clear the record and start measuring (a block right after this call counts too)."""
        self.gaps.clear()
        self.long_pauses.clear()
        self.pause_sites.clear()
        self._t0 = self._last = time.perf_counter()
        self._gui_ident = threading.get_ident()
        self._timer.start()
        self._timer_active = True
        if self.stacks and (self._sampler is None or not self._sampler.is_alive()):
            self._sampler = threading.Thread(target=self._sample, name="pause-probe-sampler", daemon=True)
            self._sampler.start()
        return self

    def stop(self) -> float:
        """Stop; returns the longest pause (ms). The time since the last tick counts as a gap,
        so work done synchronously just before ``stop()`` is seen too.
        """
        self._timer_active = False
        if self._timer.isActive():
            self._timer.stop()
            self._tick()
        return self.longest_ms

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._timer.isActive()

    @property
    def longest_ms(self) -> float:
        """The longest pause so far (ms): the longest gap less the timer period."""
        return max(0.0, max(self.gaps, default=float(self.interval_ms)) - self.interval_ms)

    def over(self, ms: float) -> int:
        """How many pauses were longer than ``ms``."""
        return int(sum(g - self.interval_ms > ms for g in self.gaps))

    def summary(self, keep: int = 40, all_over_ms: float | None = None) -> dict[str, Any]:
        """Longest and 99th-percentile pause, counts over 100 / 200 ms, ticks, and the ``keep``
        longest long pauses in time order (with ``stacks``: also ``pause_sites``, the same for where
        they were spent, plus every pause over ``all_over_ms`` when given).
        """
        p = np.asarray(self.gaps, float) - self.interval_ms if self.gaps else np.zeros(1)

        def longest(items: list, n: int) -> list:
            return sorted(sorted(items, key=lambda e: -e[1])[:n])

        out = {"longest_pause_ms": round(float(p.max()), 1), "p99_pause_ms": round(float(np.percentile(p, 99)), 1),
               "pauses_over_100ms": int((p > 100).sum()), "pauses_over_200ms": int((p > 200).sum()),
               "ticks": len(self.gaps), "long_pauses": longest(self.long_pauses, keep)}
        if self.stacks:
            n_over = int((p > all_over_ms).sum()) if all_over_ms is not None else 0
            out["pause_sites"] = longest(self.pause_sites, max(keep, n_over))
        return out

    def __enter__(self) -> "PauseProbe":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def stack_site(frame: Any, depth: int = 3) -> str:
    """A short name for where ``frame`` is: its innermost ``depth`` frames (``module:function:line``,
    innermost first), then the innermost frame of this package and of napari further out, if any.
    """
    inner: list[str] = []
    ours = theirs = ""
    f = frame
    while f is not None:
        mod = str(f.f_globals.get("__name__", "?"))
        name = f"{mod}:{f.f_code.co_name}:{f.f_lineno}"
        if len(inner) < depth:
            inner.append(name)
        elif not ours and mod.startswith("napari_emdeblur"):
            ours = name
        elif not theirs and mod.startswith("napari.") and not ours:
            theirs = name
        f = f.f_back
    return " < ".join(inner + [x for x in (theirs, ours) if x])


def run_loop_until(pred: Callable[[], bool], timeout_s: float, poll_ms: int = 20) -> bool:
    """Run a nested Qt event loop until ``pred()`` is true (returns True) or ``timeout_s`` passed."""
    loop = QEventLoop()
    t_end = time.perf_counter() + timeout_s
    state = {"ok": bool(pred())}
    if state["ok"]:
        return True

    def check() -> None:
        if pred():
            state["ok"] = True
            loop.quit()
        elif time.perf_counter() > t_end:
            loop.quit()

    timer = QTimer()
    timer.setInterval(poll_ms)
    timer.timeout.connect(check)
    timer.start()
    loop.exec()
    timer.stop()
    return state["ok"]


def run_loop_for(seconds: float) -> None:
    """Let the event loop run for ``seconds``."""
    run_loop_until(lambda: False, seconds)


def bare_repaint_ms(viewer: Any, repeat: int = 5, settle_s: float = 0.35) -> list[float]:
    """Pauses (ms) of ``repeat`` repaints that change nothing but the camera zoom by 0.1 %: what
    any pan or zoom costs on this machine, the baseline to report UI pauses against.
    """
    probe = PauseProbe()
    cam = viewer.scene.camera
    out = []
    for _ in range(repeat):
        probe.start()
        cam.zoom = cam.zoom * 1.001
        run_loop_for(settle_s)
        out.append(round(probe.stop(), 1))
    return out
