"""Watch an acquisition folder and process every complete tile exactly once (no Qt).

:func:`watch` is a generator: it polls ``DIR`` recursively (plain ``os.walk``, no inotify, so it
works on network shares), registers every *complete* tile in the output folder's journal,
processes the new ones one at a time and keeps the reports current. It yields
:class:`~napari_emdeblur.core.progress.Progress` (one per tile), ``Notice`` and, at the end,
a :class:`RunSummary`.

Discovery rules
---------------
* Tiles are ``*.tif``, ``*.tiff``, ``*.png``, ``*.bmp``; hidden files and folders (``.name``)
  and the output folder are skipped.
* Sections. A folder holding ``full_image_coordinates.txt`` (MultiSEM) is a section; the files
  below it belong to it, and the coordinates give each tile's stage position (px) for the QC
  heatmap. MultiSEM mFOV folders (six-digit names such as ``000001``) belong to their parent
  folder's section, also before any coordinates file is written. Any other tile belongs to the
  section named after its folder (its path relative to ``DIR``; ``DIR``'s own name for tiles at
  the top).
* Completeness. A tile is picked up once any of these holds: a marker file ``<name>.done`` or
  ``<stem>.done`` sits next to it; it is listed in its section's coordinates file; or it is
  non-empty and its size and mtime have not changed for ``stable_seconds`` (judged by its mtime
  age or by two observations that far apart). Files still being written are left for later.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from ..core.progress import Notice, Progress
from .journal import Journal, Row, is_transient_os_error, open_outdir
from .process import (
    IMAGE_EXTENSIONS,
    PipelineConfig,
    TileRecord,
    analyse_tile,
    calibrate_thresholds,
    classify_error,
    corrected_rel,
    get_model,
    output_settings,
    resolve_thresholds,
)
from .report import ReportWriter, prewarm_in_background

COORDS_NAME = "full_image_coordinates.txt"
MARKER_SUFFIX = ".done"
_MFOV_RE = re.compile(r"^\d{6}$")


# --------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class Candidate:
    """An input tile found on disk."""

    path: str  # absolute
    root: str  # the input root it was found under
    rel: str  # path relative to root (posix)
    section: str
    name: str  # path relative to the section folder (posix)
    size: int
    mtime_ns: int
    complete: bool = True

    @property
    def out_rel(self) -> str:
        return corrected_rel(self.section, self.name)


@dataclass
class ScanResult:
    complete: list[Candidate] = field(default_factory=list)
    waiting: list[Candidate] = field(default_factory=list)
    positions: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # changed only


def parse_coordinates(path: str | os.PathLike) -> dict[str, tuple[float, float]] | None:
    """``{relative tile path (posix): (x, y)}`` from a MultiSEM ``full_image_coordinates.txt``
    (``core.io.parse_coordinates``), or None while it cannot be parsed (e.g. being written)."""
    from ..core.io import EMReadError, parse_coordinates as _parse

    try:
        rows = _parse(path)
    except (EMReadError, OSError):
        return None
    out: dict[str, tuple[float, float]] = {}
    for name, x, y, _z in rows:
        if math.isfinite(x) and math.isfinite(y):
            out[name.lstrip("/") if not name.startswith("./") else name[2:]] = (float(x), float(y))
    return out


def _posix_rel(p: Path, base: Path) -> str:
    return p.relative_to(base).as_posix()


class Scanner:
    """Polls one input root; remembers what it saw to judge when files stop changing."""

    def __init__(self, root: str | os.PathLike, stable_seconds: float = 2.0, exclude: list | None = None):
        self.root = Path(root).resolve()
        self.stable_seconds = float(stable_seconds)
        self.exclude = {Path(p).resolve() for p in (exclude or [])}
        self._obs: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, first seen so)
        self._coords_fp: dict[str, tuple[int, int]] = {}
        self._coords: dict[str, dict[str, tuple[float, float]]] = {}  # coords file -> entries

    def section_name(self, sec_dir: Path) -> str:
        rel = _posix_rel(sec_dir, self.root)
        return self.root.name if rel in ("", ".") else rel

    def scan(self, now: float | None = None) -> ScanResult:
        now = time.time() if now is None else now
        mono = time.monotonic()
        res = ScanResult()
        sec_of: dict[Path, tuple[Path, bool]] = {}  # dir -> (section dir, decided by coordinates)
        listed: set[str] = set()
        section_coords: dict[Path, list[tuple[int, Path]]] = {}
        files: list[tuple[Path, Path, os.stat_result, bool]] = []
        seen_paths: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            d = Path(dirpath)
            dirnames[:] = sorted(
                n for n in dirnames if not n.startswith(".") and (d / n).resolve() not in self.exclude
            )
            has_coords = COORDS_NAME in filenames
            parent = sec_of.get(d.parent) if d != self.root else None
            if parent is not None and parent[1]:
                sec = parent  # inside a coordinates-defined section
            else:  # MultiSEM mFOV folders belong to their parent's section
                base = d.parent if d != self.root and _MFOV_RE.match(d.name) else d
                sec = (base, has_coords)
            sec_of[d] = sec
            if has_coords:
                depth = len(d.relative_to(self.root).parts)
                section_coords.setdefault(sec[0], []).append((depth, d / COORDS_NAME))
            names = set(filenames)
            for fn in sorted(filenames):
                if fn.startswith("."):
                    continue
                p = d / fn
                if p.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                try:
                    st = p.stat()
                except OSError:
                    continue
                marked = (fn + MARKER_SUFFIX) in names or (p.stem + MARKER_SUFFIX) in names
                files.append((p, sec[0], st, marked))

        # coordinates: deeper (mFOV) files first, so the section-level file wins
        for sec_dir, cfiles in section_coords.items():
            merged: dict[str, tuple[float, float]] = {}
            changed = False
            for _, cpath in sorted(cfiles, key=lambda t: (-t[0], str(t[1]))):
                try:
                    st = cpath.stat()
                except OSError:
                    continue
                fp = (st.st_size, st.st_mtime_ns)
                key = str(cpath)
                if self._coords_fp.get(key) != fp:
                    parsed = parse_coordinates(cpath)
                    if parsed is None:  # unreadable for now: try again at the next scan
                        parsed = self._coords.get(key, {})
                    else:
                        self._coords_fp[key] = fp
                        changed = True
                    self._coords[key] = parsed
                for name, xy in self._coords[key].items():
                    try:
                        rel = _posix_rel((cpath.parent / name).resolve(), sec_dir.resolve())
                    except ValueError:
                        continue
                    merged[rel] = xy
                    listed.add(str((sec_dir / rel)))
            if changed:
                res.positions[self.section_name(sec_dir)] = merged

        for p, sec_dir, st, marked in files:
            key = str(p)
            seen_paths.add(key)
            sig = (st.st_size, st.st_mtime_ns)
            prev = self._obs.get(key)
            if prev is None or prev[:2] != sig:
                self._obs[key] = (sig[0], sig[1], mono)
                first = mono
            else:
                first = prev[2]
            complete = marked or key in listed
            if not complete and st.st_size > 0:
                age = now - st.st_mtime_ns / 1e9
                complete = age >= self.stable_seconds or (mono - first) >= self.stable_seconds
            cand = Candidate(
                path=key,
                root=str(self.root),
                rel=_posix_rel(p, self.root),
                section=self.section_name(sec_dir),
                name=_posix_rel(p, sec_dir),
                size=int(st.st_size),
                mtime_ns=int(st.st_mtime_ns),
                complete=complete,
            )
            (res.complete if complete else res.waiting).append(cand)
        for key in list(self._obs):
            if key not in seen_paths:
                del self._obs[key]
        return res


def candidates_for_inputs(inputs: list[str | os.PathLike], exclude: list | None = None) -> ScanResult:
    """Discovery for ``batch``: folders are scanned like ``watch`` does (every file is taken as
    complete: a batch runs over finished acquisitions); single files are their folder's tiles."""
    total = ScanResult()
    by_root: dict[Path, list[Path]] = {}
    for inp in inputs:
        p = Path(inp)
        if not p.exists():
            raise FileNotFoundError(f"input {inp} does not exist")
        if p.is_dir():
            res = Scanner(p, 0.0, exclude).scan()
            total.complete.extend(res.complete + [_complete(c) for c in res.waiting])
            for s, pos in res.positions.items():
                total.positions.setdefault(s, {}).update(pos)
        else:
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(f"input {inp} is not a tile ({', '.join(IMAGE_EXTENSIONS)})")
            by_root.setdefault(p.resolve().parent, []).append(p.resolve())
    for root, paths in by_root.items():
        sc = Scanner(root, 0.0, exclude)
        for p in sorted(set(paths)):
            st = p.stat()
            total.complete.append(
                Candidate(
                    path=str(p), root=str(root), rel=p.name, section=sc.section_name(root), name=p.name,
                    size=int(st.st_size), mtime_ns=int(st.st_mtime_ns),
                )
            )
    seen: set[str] = set()
    uniq = []
    for c in total.complete:
        if c.path not in seen:
            seen.add(c.path)
            uniq.append(c)
    total.complete = sorted(uniq, key=lambda c: (c.section, c.name))
    return total


def _complete(c: Candidate) -> Candidate:
    return Candidate(c.path, c.root, c.rel, c.section, c.name, c.size, c.mtime_ns, True)


# --------------------------------------------------------------------------- run bookkeeping
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
        self.journal: Journal = open_outdir(outdir, max_failures=cfg.max_failures)
        self.outdir = self.journal.outdir
        self.reports = ReportWriter(self.journal, cfg.report_interval)
        prewarm_in_background()
        self.summary = RunSummary()
        self.thresholds: tuple[float, float] | None = None
        self.settings: dict | None = None
        self.run_id = self.journal.start_run(kind)
        self._t0 = time.monotonic()
        self._settled: dict[str, str | None] = {}
        for r in self.journal.rows():
            if r.state == "done" or (r.state == "failed" and r.error_kind == "permanent"):
                self._settled[r.path] = r.fingerprint
        self._model = None
        self._model_lock = threading.Lock()
        self._failed: dict[int, str] = {}  # row id -> kind, tiles failed in this run
        self.workers = tile_workers(cfg)
        # each tile runs on one thread (scoring and torch): the parallelism is across tiles,
        # so that the process never asks for more threads than cores (no oversubscription)
        self.tile_cfg = replace(cfg, threads=1)
        self._pool: ThreadPoolExecutor | None = None
        self._gpu_lock: _GPULock | None = None

    # -------------------------------------------------------------- settings
    def settle_thresholds(self, calibration_paths: list[str] | None = None, final: bool = False) -> bool:
        """Fix the thresholds for this OUTDIR. Returns False while calibration waits for tiles."""
        if self.thresholds is not None:
            return True
        cfg = self.cfg
        stored = self.journal.get_meta("settings")
        explicit = cfg.correct_threshold is not None or cfg.retake_threshold is not None
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
            resolve_thresholds(PipelineConfig(tile=cfg.tile, metric=cfg.metric, correct_threshold=th[0],
                                              retake_threshold=th[1]))
        else:
            th = resolve_thresholds(cfg)
        self.settings = output_settings(cfg, th)
        self.settings["calibrated_from"] = min(cfg.calibrate, len(calibration_paths or [])) if cfg.calibrate else 0
        self.journal.set_meta("settings", self.settings)
        self.thresholds = th
        return True

    def model(self):
        with self._model_lock:  # tile threads ask for it concurrently: load it once
            if self._model is None:
                self._model = get_model(self.cfg)[0]
            return self._model

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
        with self.journal._tx():
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
        return analyse_tile(
            row.path,
            self.tile_cfg,
            self.model,
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
        then all successful rows are marked done in one journal transaction."""
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
            self._failed.pop(row.id, None)
            s.done += 1
            s.pixels += rec.pixels
            if rec.decision == "ok":
                s.ok += 1
            elif rec.decision == "correct":
                s.correct += 1
            elif rec.decision == "retake":
                s.retake += 1
            if rec.corrected:
                s.corrected += 1
            self._settled[row.path] = out.fingerprint
        s.failed = len(self._failed)
        s.transient = sum(1 for k in self._failed.values() if k == "transient")
        return out

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
                    for (row, rec), out in zip(buf, done):
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
                _wait_all([f for _, f in inflight])

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
            self.summary.pending = len(self.journal.pending())
            s = self.summary
            self.journal.end_run(self.run_id, s.done, s.failed, s.pixels)
        finally:
            self.journal.close()
        return self.summary


def tile_workers(cfg: PipelineConfig) -> int:
    """Tiles processed in parallel by one watch/batch process: ``cfg.threads``, or (0) the
    usable CPU cores, at most 8."""
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
    no-op on the CPU, where each tile thread corrects with its own single torch thread."""

    def __init__(self, device: str):
        self.device = device
        self._lock = threading.Lock()
        self._gpu: bool | None = None

    def __enter__(self):
        if self._gpu is None:
            from .process import resolve_device

            self._gpu = str(resolve_device(self.device)).startswith(("cuda", "mps"))
        if self._gpu:
            self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        if self._gpu:
            self._lock.release()


def _wait_all(futs: list[Future]) -> None:
    from concurrent.futures import wait

    wait(futs)


def progress_line(row: Row, rec: TileRecord) -> str:
    if rec.error:
        return f"{row.rel}: FAILED ({rec.error_kind}) {rec.error}"
    sc = "nan" if rec.score is None or not math.isfinite(rec.score) else f"{rec.score:.4f}"
    s = f"{row.rel}: score {sc} {rec.decision}"
    if rec.corrected:
        after = f" (after {rec.score_after:.4f})" if rec.score_after is not None else ""
        s += f" -> {rec.corrected}{after}"
    return s + f" [{rec.seconds:.2f} s]"


# --------------------------------------------------------------------------- the watcher
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
    root = Path(indir).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {indir} does not exist")
    out = Path(outdir).resolve()
    if out == root:
        raise ValueError("--out must not be the watched folder itself")
    if out in root.parents:
        raise ValueError("--out must not contain the watched folder")
    if cfg.correct and cfg.device not in ("auto", "cpu"):
        from .process import resolve_device

        resolve_device(cfg.device)  # e.g. --device cuda without CUDA: a usage error, now
    session = Session(out, cfg, "watch --once" if once else "watch")
    t_start = time.monotonic()
    scanner = Scanner(root, cfg.stable_seconds, exclude=[out])
    retried_transient = False
    done_in_run = 0
    calib_seen = -1
    try:
        yield Notice(f"watching {root} -> {out}" + (" (once)" if once else f" (poll {poll:g} s)"))
        n_retry = session.requeue_transient(force=True)  # a new run is the "later" of a retry
        if n_retry:
            yield Notice(f"retrying {n_retry} tile(s) that failed for a transient reason before")
        while True:
            res = scanner.scan()
            ready = False
            try:
                session.update_positions(res.positions)
                calib_final = once and not res.waiting
                ready = session.settle_thresholds([c.path for c in res.complete], final=calib_final)
                if ready:
                    n_new = session.register(res.complete)
                    session.requeue_transient()
                    if n_new:
                        yield Notice(f"{n_new} new file(s)")
                    pending = session.journal.pending()
                    total = done_in_run + len(pending)
                    for done_row, rec in session.process_rows(pending, stop):
                        done_in_run += 1
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
                    pass
                if once:
                    raise OSError(f"output folder {out}: {e}") from e
                yield Notice(f"output folder problem, retrying in {poll:g} s: {e}", "warning")
                _sleep(poll, stop)
                continue
            session.summary.waiting = len(res.waiting)
            if stop is not None and stop.is_set():
                break
            if max_seconds is not None and time.monotonic() - t_start >= max_seconds:
                break
            if once and ready and not res.waiting and not session.journal.pending():
                transient = [r for r in session.journal.rows(state="failed") if r.error_kind == "transient"]
                if transient and not retried_transient and session.summary.transient:
                    retried_transient = True
                    session.requeue_transient(force=True)
                    yield Notice(f"retrying {len(transient)} tile(s) that failed for a transient reason")
                    continue
                break
            _sleep(min(poll, 0.25) if once else poll, stop)
        if session.reports.dirty or not (session.outdir / "index.html").exists():
            session.flush_reports(force=True)
    finally:
        summary = session.close()
    yield summary


def _sleep(seconds: float, stop: threading.Event | None) -> None:
    if stop is not None:
        stop.wait(seconds)
    else:
        time.sleep(seconds)
