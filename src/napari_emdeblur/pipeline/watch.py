"""Watch an acquisition folder and process every complete tile exactly once (no Qt).

:func:`watch` is a generator: it polls ``DIR`` recursively (plain ``os.walk``, no inotify, so it
works on network shares; discovery rules in :mod:`.discover`), registers every *complete* tile in
the output folder's journal, processes the new ones and keeps the reports current (a
:class:`~.session.Session`). It yields :class:`~napari_emdeblur.qc.messages.Progress` (one per
tile), ``Notice`` and, at the end, a :class:`~.session.RunSummary`.

Everything that can be checked before work starts is checked before the output folder is created
(the input folder can be read, the output folder is not the input, the device exists, the
correcting model loads), so a refused run leaves nothing behind. Files that can never be tiles
(pipes, devices, unreadable folders) are reported once as warnings; with ``once``, what is still
unfinished at the end (an empty tile, an unparseable coordinates file, listed tiles that never
arrived) is reported too. All of them count as failed (exit code 3 in the CLI), none is waited for.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

from ..qc.messages import Notice, Progress
from .config import PipelineConfig
from .discover import Scanner, check_input_folder
from .session import Session, check_model, progress_line

__all__ = ["watch"]


def watch(
    indir: str | os.PathLike,
    outdir: str | os.PathLike,
    cfg: PipelineConfig | None = None,
    *,
    once: bool = False,
    poll: float = 2.0,
    stop: threading.Event | None = None,
    max_seconds: float | None = None,
) -> Iterator[object]:
    """Watch ``indir`` and process its tiles into ``outdir`` (see the module docstring).

    ``once``: process what is there (waiting for files still being written) and return.
    Otherwise run until ``stop`` is set, ``max_seconds`` have passed, or the consumer stops.
    """
    cfg = cfg or PipelineConfig()
    root = check_input_folder(indir)
    out = Path(outdir).resolve()
    if out == root:
        raise ValueError(f"--out {outdir} must not be the watched folder itself")
    if out in root.parents:
        raise ValueError(f"--out {outdir} must not contain the watched folder")
    check_model(cfg)  # device and model, before the output folder exists
    session = Session(out, cfg, "watch --once" if once else "watch")
    t_start = time.monotonic()
    scanner = Scanner(root, cfg.stable_seconds, exclude=[out])
    retried_transient = False
    needs_recover = False
    problem: str | None = None  # the output folder problem last reported
    done_in_run = 0
    calib_seen = -1
    try:
        yield Notice(f"watching {root} -> {out}" + (" (once)" if once else f" (poll {poll:g} s)"))
        n_retry = session.requeue_transient(force=True)  # a new run is the "later" of a retry
        if n_retry:
            yield Notice(f"retrying {n_retry} tile(s) that failed for a transient reason before")
        while True:
            res = scanner.scan()
            for msg in session.report_problems(res.bad):
                yield Notice(f"warning: {msg}", "warning")
            ready = False
            try:
                if needs_recover:  # a tile claimed when the output failed: back to the queue first
                    session.journal.recover()
                    needs_recover = False
                session.update_positions(res.positions)
                calib_final = once and not res.waiting
                ready = session.settle_thresholds([c.path for c in res.complete], final=calib_final)
                if ready:
                    if session.calibrated_now:
                        session.calibrated_now = False
                        yield Notice(f"thresholds calibrated on {session.calibrated_from} tile(s): "
                                     f"{session.thresholds_text()}")
                    n_new = session.register(res.complete)
                    session.requeue_transient()
                    if n_new:
                        yield Notice(f"{n_new} new file(s)")
                    pending = session.journal.pending()
                    total = done_in_run + len(pending)
                    for done_row, rec in session.process_rows(pending, stop):
                        done_in_run += 1
                        for w in rec.warnings:
                            yield Notice(f"warning: {w}", "warning")
                        yield Progress(done_in_run, total, "tile", progress_line(done_row, rec))
                        session.flush_reports()
                    session.flush_reports()
                elif len(res.complete) != calib_seen:
                    calib_seen = len(res.complete)
                    yield Notice(f"calibration: {calib_seen} of {cfg.calibrate} tiles complete, waiting")
            except (sqlite3.OperationalError, OSError) as e:
                # the journal or the output disk failed (full disk, permissions): put any
                # interrupted tile back and try again later; --once gives up
                try:
                    session.journal.recover()
                except (sqlite3.OperationalError, OSError):
                    needs_recover = True  # tried again at the next turn
                if once:
                    raise OSError(f"output folder {out}: {e}") from e
                if str(e) != problem:  # once per problem, not every poll
                    problem = str(e)
                    yield Notice(f"output folder problem, retrying every {poll:g} s: {e}", "warning")
                _sleep(poll, stop)
                continue
            if problem is not None:
                problem = None
                yield Notice(f"output folder {out} works again")
            session.summary.waiting = len(res.waiting)
            if stop is not None and stop.is_set():
                break
            if max_seconds is not None and time.monotonic() - t_start >= max_seconds:
                break
            if once and ready and not res.waiting and not session.journal.pending():
                for msg in session.report_problems(res.unfinished):
                    yield Notice(f"warning: {msg}", "warning")
                transient = [r for r in session.journal.rows(state="failed") if r.error_kind == "transient"]
                if transient and not retried_transient and session.summary.transient:
                    retried_transient = True
                    session.requeue_transient(force=True)
                    yield Notice(f"retrying {len(transient)} tile(s) that failed for a transient reason")
                    continue
                break
            _sleep(min(poll, 0.25) if once else poll, stop)
    finally:  # (closing rebuilds the reports, also when interrupted)
        summary = session.close()
    yield summary


def _sleep(seconds: float, stop: threading.Event | None) -> None:
    if stop is not None:
        stop.wait(seconds)
    else:
        time.sleep(seconds)
