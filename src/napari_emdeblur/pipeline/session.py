"""One run over an output folder: the journal (locked, recovered), thresholds, tile threads, reports.

``watch`` and ``batch`` both drive a :class:`Session`; neither knows the other.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from ..io.errors import os_reason, user_message
from .config import PipelineConfig, TileRecord, model_identity, output_settings, resolve_thresholds
from .discover import Candidate
from .errors import classify_error
from .journal import INDEX_HTML, Journal, JournalLockedError, Row, is_transient_os_error, open_outdir
from .process import analyse_tile, calibrate_thresholds
from .report import ReportWriter, prewarm_in_background, thresholds_text

log = logging.getLogger(__name__)

__all__ = ["RunSummary", "Session", "check_model", "progress_line", "tile_workers"]


def check_model(cfg: PipelineConfig) -> None:
    """Refuse a correcting run whose device or model cannot be used, before any output exists:
    the card is checked (no torch), then the model is loaded once through the model cache (the
    tiles reuse it). ``ValueError`` (``WeightsError``) names the weights file or the device.
    """
    if not cfg.correct:
        return
    model_identity(cfg)
    from ..deblur.cache import get_model

    try:
        get_model(cfg.weights, cfg.device)
    except (ValueError, OSError):
        raise
    except Exception as e:  # noqa: BLE001 - e.g. a CUDA runtime error: a usage problem here
        raise ValueError(f"cannot load the model ({cfg.weights or 'shipped weights'}, {cfg.device}): "
                         f"{user_message(e)}") from None


def _open_journal(outdir: str | os.PathLike, max_failures: int) -> tuple[Journal, bool]:
    """``(journal, created)``; a start-up failure (full disk, permissions, a damaged journal)
    raises one ``OSError`` naming the output folder and leaves no folder it created behind.
    """
    out = Path(outdir)
    existed = out.exists()
    try:
        return open_outdir(out, max_failures=max_failures), not existed
    except JournalLockedError:
        raise
    except (sqlite3.Error, OSError) as e:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        reason = os_reason(e) if isinstance(e, OSError) else str(e)
        code = e.errno if isinstance(e, OSError) and e.errno else errno.EIO
        raise OSError(code, f"output folder {out}: cannot start its journal ({reason})") from None


@dataclass
class RunSummary:
    """What one watch/batch run did (yielded last)."""

    new: int = 0  # files registered (or re-queued because they changed) in this run
    done: int = 0
    failed: int = 0
    transient: int = 0  # of the failures, the retry-later kind
    ok: int = 0
    correct: int = 0
    retake: int = 0
    empty: int = 0  # tiles without tissue signal (never corrected)
    corrected: int = 0
    pixels: int = 0
    seconds: float = 0.0
    waiting: int = 0  # incomplete files left when the run ended
    pending: int = 0  # registered but not processed when the run ended

    @property
    def tiles_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def mpx_per_s(self) -> float:
        return self.pixels / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def line(self) -> str:
        s = (
            f"{self.new} new, {self.done} done ({self.ok} ok, {self.correct} to correct, "
            f"{self.retake} to retake, {self.corrected} corrected), {self.failed} failed"
        )
        if self.empty:
            s = s.replace(" to retake, ", f" to retake, {self.empty} empty, ", 1)
        if self.done:
            s += f", {self.tiles_per_s:.2f} tiles/s, {self.mpx_per_s:.1f} Mpx/s"
        if self.waiting:
            s += f", {self.waiting} still being written"
        if self.pending:
            s += f", {self.pending} pending"
        return s


class Session:
    """One run over an output folder: journal (locked + recovered), thresholds, reports."""

    def __init__(self, outdir: str | os.PathLike, cfg: PipelineConfig, kind: str):
        self.cfg = cfg
        self.journal, created = _open_journal(outdir, cfg.max_failures)
        self.outdir = self.journal.outdir
        try:
            self.reports = ReportWriter(self.journal, cfg.report_interval)
            self.run_id = self.journal.start_run(kind)
        except (sqlite3.Error, OSError) as e:
            self.journal.close()
            if created:
                shutil.rmtree(self.outdir, ignore_errors=True)
            reason = os_reason(e) if isinstance(e, OSError) else str(e)
            raise OSError(errno.EIO, f"output folder {self.outdir}: cannot start its journal ({reason})") from None
        prewarm_in_background()
        self.summary = RunSummary()
        self.thresholds: tuple[float, float] | None = None
        self.settings: dict | None = None
        self._problems: dict[str, str] = {}  # path -> message: files reported and skipped in this run
        if self.journal.get_meta("problems"):  # the last run's: this run reports its own
            self._keep_problems()
        self._t0 = time.monotonic()
        self._settled: dict[str, str | None] = {}
        for r in self.journal.rows():
            if r.state == "done" or (r.state == "failed" and r.error_kind == "permanent"):
                self._settled[r.path] = r.fingerprint
        self._failed: dict[int, str] = {}  # row id -> kind, tiles failed in this run
        self.workers = tile_workers(cfg)
        # each tile runs on one thread (scoring and torch): the parallelism is across tiles,
        # so that the process never asks for more threads than cores (no oversubscription)
        self.tile_cfg = replace(cfg, threads=1)
        self._pool: ThreadPoolExecutor | None = None
        self.calibrated_now = False  # the thresholds were calibrated by this run (settle_thresholds)
        self._gpu_lock: _GPULock | None = None

    # -------------------------------------------------------------- settings
    def settle_thresholds(self, calibration_paths: list[str] | None = None, final: bool = False) -> bool:
        """Fix the thresholds for this OUTDIR. Returns False while calibration waits for tiles."""
        if self.thresholds is not None:
            return True
        cfg = self.cfg
        stored = self.journal.get_meta("settings")
        explicit = any(v is not None for v in (cfg.correct_threshold, cfg.retake_threshold, cfg.correct_px,
                                               cfg.retake_px))
        if stored is not None:
            if cfg.calibrate or not explicit:
                th = (stored["correct_threshold"], stored["retake_threshold"])
            else:
                th = resolve_thresholds(cfg)
            new = output_settings(cfg, th)
            diff = {k: (stored.get(k), new[k]) for k in new if stored.get(k) != new[k]}
            if diff:
                what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
                raise ValueError(
                    f"{self.outdir} was made with other settings ({what}); "
                    "use a new --out folder to process with these settings"
                )
            self.thresholds, self.settings = th, stored
            return True
        if cfg.calibrate:
            paths = list(calibration_paths or [])
            if len(paths) < cfg.calibrate and not (final and paths):
                return False
            th = calibrate_thresholds(sorted(paths)[: cfg.calibrate], cfg)
            self.calibrated_now = True
            resolve_thresholds(PipelineConfig(tile=cfg.tile, metric=cfg.metric, correct_threshold=th[0],
                                              retake_threshold=th[1]))
        else:
            th = resolve_thresholds(cfg)
        self.settings = output_settings(cfg, th)
        self.settings["calibrated_from"] = min(cfg.calibrate, len(calibration_paths or [])) if cfg.calibrate else 0
        self.journal.set_meta("settings", self.settings)
        self.thresholds = th
        return True

    @property
    def calibrated_from(self) -> int:
        """How many tiles the thresholds were calibrated on (0: given or defaults)."""
        return int((self.settings or {}).get("calibrated_from") or 0)

    def thresholds_text(self) -> str:
        """The OUTDIR's thresholds as the user gives them (px of excess blur for the blur metric)."""
        return thresholds_text(self.settings or {})

    # -------------------------------------------------------------- registration
    def update_positions(self, positions: dict[str, dict[str, tuple[float, float]]]) -> None:
        for section, pos in positions.items():
            if pos:
                self.journal.set_positions(section, pos)
                self.reports.mark(section)

    def register(self, cands: list[Candidate]) -> int:
        """Register complete candidates; returns how many are new or changed."""
        n = 0
        now = time.time()
        with self.journal.transaction():
            for c in cands:
                fp = f"{c.size}:{c.mtime_ns}"
                if self._settled.get(c.path) == fp:
                    continue
                what = self.journal.register(
                    c.path, root=c.root, rel=c.rel, section=c.section, name=c.name, out_rel=c.out_rel,
                    size=c.size, mtime_ns=c.mtime_ns, now=now,
                )
                if what in ("new", "changed", "retry"):
                    n += what != "retry"
                    self.reports.mark(c.section)
                    self._settled.pop(c.path, None)
                elif what == "same":
                    row = self.journal.get_path(c.path)
                    if row is not None and (
                        row.state == "done" or (row.state == "failed" and row.error_kind == "permanent")
                    ):
                        self._settled[c.path] = row.fingerprint
        self.summary.new += n
        return n

    def requeue_transient(self, force: bool = False) -> int:
        """Queue again the transient failures whose back-off is over (all with ``force``)."""
        now = time.time()
        due = [
            r for r in self.journal.rows(state="failed")
            if r.error_kind == "transient" and (force or r.retry_after is None or r.retry_after <= now)
        ]
        for r in due:
            self.reports.mark(r.section)
        return self.journal.requeue_transient(now=now, force=force) if due else 0

    # -------------------------------------------------------------- processing
    def claim(self, row: Row) -> Row | None:
        return self.journal.claim(row.id)

    def analyse(self, row: Row) -> TileRecord:
        if self.thresholds is None:
            raise RuntimeError("tiles are analysed only after settle_thresholds")
        return analyse_tile(
            row.path,
            self.tile_cfg,
            correct_lock=self._gpu_lock,
            thresholds=self.thresholds,
            file=row.rel,
            section=row.section,
            name=row.name,
            out_rel=row.out_rel,
            stage_dir=self.journal.staging_dir(row.id),
        )

    def finish(self, row: Row, rec: TileRecord) -> Row:
        """Commit (or fail) a claimed row with its record; updates counters and reports."""
        return self.finish_many([(row, rec)])[0]

    def finish_many(self, group: list[tuple[Row, TileRecord]]) -> list[Row]:
        """Commit (or fail) claimed rows with their records: the outputs are published first,
        then all successful rows are marked done in one journal transaction.
        """
        for row, rec in group:
            self.reports.mark(row.section)  # before the journal changes (see ReportWriter)
            if rec.error is not None:  # reports name inputs relative to their root
                rec.error = rec.error.replace(str(Path(row.root)) + os.sep, "")
        good = [(row, rec) for row, rec in group if rec.error is None]
        outcomes = self.journal.commit_many([(row, rec.to_result(), rec.staged, rec.sha256) for row, rec in good])
        done: dict[int, Row] = {}
        for (row, rec), res in zip(good, outcomes):
            if isinstance(res, OSError):
                kind, msg = classify_error(res)
                rec.error, rec.error_kind = f"writing output: {msg}", kind
            else:
                done[row.id] = res
        return [self._account(row, rec, done.get(row.id)) for row, rec in group]

    def _account(self, row: Row, rec: TileRecord, out: Row | None) -> Row:
        s = self.summary
        if rec.error is not None:
            out = self.journal.fail(row.id, rec.error, rec.error_kind or "permanent", result=rec.to_result())
            self._failed[row.id] = rec.error_kind or "permanent"
            if rec.error_kind != "transient":
                self._settled[row.path] = out.fingerprint
        else:
            assert out is not None  # finish_many committed every row without an error
            self._failed.pop(row.id, None)
            s.done += 1
            s.pixels += rec.pixels
            if rec.decision == "ok":
                s.ok += 1
            elif rec.decision == "correct":
                s.correct += 1
            elif rec.decision == "retake":
                s.retake += 1
            elif rec.decision == "empty":
                s.empty += 1
            if rec.corrected:
                s.corrected += 1
            self._settled[row.path] = out.fingerprint
        s.failed = len(self._failed) + len(self._problems)
        s.transient = sum(1 for k in self._failed.values() if k == "transient")
        return out

    def report_problems(self, problems: dict[str, str]) -> list[str]:
        """Record files that are skipped (``path -> message``); returns the messages not reported
        before in this run. Each counts as a failed tile of the run.
        """
        new = [msg for key, msg in problems.items() if key not in self._problems]
        self._problems.update(problems)
        self.summary.failed = len(self._failed) + len(self._problems)
        if new:
            self._keep_problems()
        return new

    def _keep_problems(self) -> None:
        """The files skipped in this run, for the index (their own line each)."""
        try:
            self.journal.set_meta("problems", dict(sorted(self._problems.items())))
            self.reports.index_dirty = True
        except (sqlite3.Error, OSError) as e:  # the reports miss them; the run goes on
            log.warning("%s: skipped files not recorded for the reports (%s)", self.outdir, e)

    def process_serial(self, row: Row) -> tuple[Row, TileRecord] | None:
        claimed = self.claim(row)
        if claimed is None:
            return None
        rec = self.analyse(claimed)
        return self.finish(claimed, rec), rec

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="emdeblur-tile")
            if self.cfg.correct and self.workers > 1:
                self._gpu_lock = _GPULock(self.cfg.device)  # one correction at a time on a GPU
        return self._pool

    def process_rows(self, rows: list[Row], stop: threading.Event | None = None) -> Iterator[tuple[Row, TileRecord]]:
        """Process ``rows`` (``seen``) on the tile thread pool; yields ``(row, record)`` per tile
        after its commit, in the order of ``rows``.

        Rows are claimed a window ahead in one transaction (so reading, hashing and scoring of
        the next tiles overlap with the journal work of this thread), and finished tiles are
        committed in groups (one transaction; every output renamed into place first). When
        ``stop`` is set, tiles not yet started are given back (``seen``) and the running ones
        are finished.
        """
        pool = self._executor()
        window = max(4, 4 * self.workers)
        queue = deque(rows)
        inflight: deque[tuple[Row, Future]] = deque()
        buf: list[tuple[Row, TileRecord]] = []
        try:
            while queue or inflight or buf:
                if stop is not None and stop.is_set() and queue:
                    queue.clear()
                    for row, fut in list(inflight):
                        if fut.cancel():
                            inflight.remove((row, fut))
                            self.journal.unclaim(row.id)
                if queue and len(inflight) < window // 2:
                    take = [queue.popleft() for _ in range(min(len(queue), window - len(inflight)))]
                    for row in self.journal.claim_many([r.id for r in take]):
                        inflight.append((row, pool.submit(self.analyse, row)))
                    continue
                head = inflight[0][1] if inflight else None
                if buf and (head is None or not head.done() or len(buf) >= window):
                    done = self.finish_many(buf)
                    for (_row, rec), out in zip(buf, done):
                        yield out, rec
                    buf = []
                    continue
                if head is None:
                    continue
                row, fut = inflight.popleft()
                buf.append((row, fut.result()))  # ModelLoadError propagates: the run stops
        finally:
            for _row, fut in inflight:  # stopped by an error or by the consumer
                fut.cancel()
            if inflight:
                wait([f for _, f in inflight])

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def live(self) -> dict:
        s = self.summary
        return {"run_id": self.run_id, "done": s.done, "failed": s.failed, "pixels": s.pixels}

    def flush_reports(self, force: bool = False) -> None:
        try:
            self.reports.flush(force=force, live=self.live())
        except OSError as e:  # reports are rebuilt later; never stop the pipeline for them
            if not is_transient_os_error(e):
                raise

    def close(self) -> RunSummary:
        self.summary.seconds = time.monotonic() - self._t0
        try:
            self.shutdown()  # no tile thread may write into staging while recovering
            # an interrupted tile (Ctrl-C) is put back as at a restart
            if self.journal.rows(state="processing"):
                self.journal.recover()
            try:  # the reports as the journal now is, also after Ctrl-C (they are "always rebuilt at the end")
                if self.reports.stale or not (self.outdir / INDEX_HTML).exists():
                    self.flush_reports(force=True)
            except Exception as e:  # noqa: BLE001 - never in the way of closing the journal
                log.warning("%s: reports not rebuilt (%s); the next run rebuilds them", self.outdir, e)
            self.summary.pending = len(self.journal.pending())
            s = self.summary
            self.journal.end_run(self.run_id, s.done, s.failed, s.pixels)
        finally:
            self.journal.close()
        return self.summary


def tile_workers(cfg: PipelineConfig) -> int:
    """Tiles processed in parallel by one watch/batch process: ``cfg.threads``, or (0) the
    usable CPU cores, at most 8.
    """
    if cfg.threads:
        return int(cfg.threads)
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


class _GPULock:
    """Serialises corrections when they run on a GPU, CUDA or Apple MPS (not thread-safe),
    decided at the first correction, so a run that corrects nothing never imports torch; a
    no-op on the CPU, where each tile thread corrects with its own single torch thread.
    """

    def __init__(self, device: str):
        self.device = device
        self._lock = threading.Lock()
        self._gpu: bool | None = None

    def __enter__(self):
        if self._gpu is None:
            from ..deblur.device import is_gpu

            self._gpu = is_gpu(self.device)
        if self._gpu:
            self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        if self._gpu:
            self._lock.release()


def progress_line(row: Row, rec: TileRecord) -> str:
    if rec.error:
        return f"{row.rel}: FAILED ({rec.error_kind}) {rec.error}"
    sc = "nan" if rec.score is None or not math.isfinite(rec.score) else f"{rec.score:.4f}"
    s = f"{row.rel}: score {sc} {rec.decision}"
    if rec.corrected:
        after = f" (after {rec.score_after:.4f})" if rec.score_after is not None else ""
        s += f" -> {rec.corrected}{after}"
    return s + f" [{rec.seconds:.2f} s]"
