r"""SQLite journal of a pipeline output folder: one row per input file, exactly-once processing.

The journal lives in ``OUTDIR/.emdeblur/journal.sqlite`` (WAL mode, ``synchronous=NORMAL``: every
commit survives the death of the process; a power cut may lose the last few commits, which the
protocol below turns into re-processing, never into a lost or doubled output) and is
written by one process at a time (the ``watch`` process, or the ``batch`` *client*; Dask workers
never touch it): :func:`open_outdir` takes an exclusive ``flock`` on ``OUTDIR/.emdeblur/lock``
that the kernel releases when the process dies, even by ``kill -9``.

Row life cycle (``state``)::

    seen --claim--> processing --commit--> done
                         |        \\--fail--> failed (permanent: corrupt file, ...;
                         |                          transient: permission, disk full, ...)
                         \\--(process killed)--> recovered to seen at the next start

Exactly-once protocol, in this order:

1. ``claim`` (one transaction): ``seen -> processing``, ``attempts += 1``. The row's output path
   ``out_rel`` was fixed when the file was first registered.
2. The tile is processed and its output written into the row's private staging folder
   ``OUTDIR/.emdeblur/staging/<id>/`` (a hidden folder; nothing visible is touched).
3. ``commit``: each staged file is fsynced and moved to its final place with ``os.replace``
   (atomic: the final name holds either nothing/the previous file or the complete new one), a
   final path the new result does not produce is removed, the folder is fsynced, and only then
   the row is marked ``done`` with its result (one transaction). The staging folder is removed.
4. ``recover`` (at every start, under the lock): every row still ``processing`` was interrupted
   somewhere in 2-3. Its staging folder and its final output are removed and it goes back to
   ``seen``, so it is re-processed from scratch. Outputs are deterministic functions of the
   input bytes and the (journalled, fixed) settings, so the re-processing writes the same bytes
   as an uninterrupted run would have. Stale staging folders are removed as well.

A ``done`` row therefore always has its outputs in place; an output without a ``done`` row can
exist only between steps 3 and 4 of an interrupted attempt and is removed by ``recover``.

Fingerprint: ``size:mtime_ns`` of the input when it was registered (the pipeline also stores the
sha256 of the bytes it actually read). A ``done`` file whose fingerprint changes is processed
again; a ``failed`` (permanent) one is retried only when its fingerprint changes, at most
``max_failures`` times; a transient failure is retried after a back-off.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..io.atomic import fsync_dir  # noqa: F401  (re-exported in __all__)

STATES = ("seen", "processing", "done", "failed")
CONTROL_DIR = ".emdeblur"
JOURNAL_NAME = "journal.sqlite"
LOCK_NAME = "lock"
STAGING_DIR = "staging"
DEFAULT_MAX_FAILURES = 3
TRANSIENT_BACKOFF_S = (5.0, 15.0, 60.0, 300.0)  # retry delays after the 1st, 2nd, ... transient failure

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    root TEXT NOT NULL,
    rel TEXT NOT NULL,
    section TEXT NOT NULL,
    name TEXT NOT NULL,
    out_rel TEXT NOT NULL UNIQUE,
    size INTEGER,
    mtime_ns INTEGER,
    fingerprint TEXT,
    sha256 TEXT,
    state TEXT NOT NULL CHECK (state IN ('seen', 'processing', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_kind TEXT,
    retry_after REAL,
    result TEXT,
    first_seen REAL,
    started REAL,
    finished REAL,
    updated REAL
);
CREATE INDEX IF NOT EXISTS files_state ON files(state);
CREATE INDEX IF NOT EXISTS files_section ON files(section);
CREATE TABLE IF NOT EXISTS positions(
    section TEXT NOT NULL,
    name TEXT NOT NULL,
    x REAL NOT NULL,
    y REAL NOT NULL,
    PRIMARY KEY (section, name)
);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    pixels INTEGER NOT NULL DEFAULT 0
);
"""


class JournalLockedError(OSError):
    """Another pipeline process holds the output folder."""


@dataclass
class Row:
    """One journal row (see the module docstring for the columns' meaning)."""

    id: int
    path: str
    root: str
    rel: str
    section: str
    name: str
    out_rel: str
    size: int | None
    mtime_ns: int | None
    fingerprint: str | None
    sha256: str | None
    state: str
    attempts: int
    failures: int
    error: str | None
    error_kind: str | None
    retry_after: float | None
    result: str | None
    first_seen: float | None
    started: float | None
    finished: float | None
    updated: float | None

    @functools.cached_property
    def result_dict(self) -> dict:
        """The parsed ``result`` (parsed once per Row object; do not modify it)."""
        return json.loads(self.result) if self.result else {}


def fingerprint(size: int, mtime_ns: int) -> str:
    return f"{int(size)}:{int(mtime_ns)}"


def _fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str | os.PathLike) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


#: the output folder's layout: the overview page, and per section folder its reports, QC image and
#: corrected tiles (written by :mod:`.report` and :mod:`.process`)
INDEX_HTML = "index.html"
REPORT_CSV, REPORT_JSON, QC_PNG, CORRECTED_DIR = "report.csv", "report.json", "qc.png", "corrected"
_SECTION_OUTPUTS = (REPORT_CSV, REPORT_JSON, QC_PNG, CORRECTED_DIR)


def _output_clash(outdir: Path) -> list[str]:
    """Files of ``outdir`` (not yet an output folder) that a run would replace: ``index.html``, and
    section folders holding reports, QC images or corrected tiles (other files, e.g. a log the
    shell created, or hidden files, are left alone and do not matter).
    """
    out = []
    for p in sorted(outdir.iterdir()):
        if p.name == INDEX_HTML:
            out.append(p.name)
        elif p.is_dir() and not p.name.startswith("."):
            out += [f"{p.name}/{n}" for n in _SECTION_OUTPUTS if (p / n).exists()]
    return out


class Journal:
    """The journal of one output folder. Use :func:`open_outdir` (takes the lock) to get one."""

    def __init__(self, outdir: str | os.PathLike, *, max_failures: int = DEFAULT_MAX_FAILURES):
        self.outdir = Path(outdir).resolve()
        self.control = self.outdir / CONTROL_DIR
        clash = _output_clash(self.outdir) if self.outdir.is_dir() and not self.control.is_dir() else []
        if clash:  # a run would write its reports and corrected tiles over these
            more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
            raise ValueError(f"{outdir}: not an output folder of emdeblur (no journal), and it holds what a run "
                             f"writes ({', '.join(clash[:3])}{more}); choose a new or empty folder")
        self.control.mkdir(parents=True, exist_ok=True)
        self.staging = self.control / STAGING_DIR
        self.max_failures = int(max_failures)
        self.db_path = self.control / JOURNAL_NAME
        self._lock_fd: int | None = None
        self.con = sqlite3.connect(str(self.db_path), timeout=30.0, isolation_level=None)
        self.con.row_factory = sqlite3.Row
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute("PRAGMA foreign_keys=ON")
        self.con.executescript(_SCHEMA)

    # ------------------------------------------------------------------ lock / lifetime
    def lock(self) -> None:
        """Take the exclusive folder lock (non-blocking); raise JournalLockedError if held."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.control / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise JournalLockedError(
                    f"{self.outdir} is in use by another emdeblur watch/batch process"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            if self._lock_fd is not None:
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                finally:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def transaction(self):
        """A context manager: one SQLite transaction (``BEGIN IMMEDIATE`` ... commit or rollback)."""
        return _Transaction(self.con)

    @staticmethod
    def _row(r: sqlite3.Row | None) -> Row | None:
        return None if r is None else Row(**dict(r))

    def get(self, row_id: int) -> Row | None:
        return self._row(self.con.execute("SELECT * FROM files WHERE id=?", (row_id,)).fetchone())

    def _existing(self, row_id: int) -> Row:
        """The row ``row_id``, which must exist (rows are never deleted)."""
        row = self.get(row_id)
        if row is None:
            raise RuntimeError(f"no journal row {row_id}")
        return row

    def get_path(self, path: str) -> Row | None:
        return self._row(self.con.execute("SELECT * FROM files WHERE path=?", (str(path),)).fetchone())

    def rows(self, section: str | None = None, state: str | None = None) -> list[Row]:
        q, args = "SELECT * FROM files", []
        cond = []
        if section is not None:
            cond.append("section=?")
            args.append(section)
        if state is not None:
            cond.append("state=?")
            args.append(state)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY section, name, id"
        return [Row(**dict(r)) for r in self.con.execute(q, args)]

    def sections(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT section FROM files ORDER BY section")]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for state, n in self.con.execute("SELECT state, COUNT(*) FROM files GROUP BY state"):
            out[state] = n
        return out

    def staging_dir(self, row_id: int) -> Path:
        return self.staging / str(int(row_id))

    def final_path(self, row: Row) -> Path:
        return self.outdir / row.out_rel

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        r = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if r is None else json.loads(r[0])

    def set_meta(self, key: str, value: Any) -> None:
        self.con.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value, sort_keys=True)),
        )

    # ------------------------------------------------------------------ runs
    def start_run(self, kind: str) -> int:
        cur = self.con.execute("INSERT INTO runs(kind, started) VALUES(?, ?)", (kind, time.time()))
        assert cur.lastrowid is not None  # set by every successful INSERT
        return cur.lastrowid

    def end_run(self, run_id: int, done: int, failed: int, pixels: int) -> None:
        self.con.execute(
            "UPDATE runs SET ended=?, done=?, failed=?, pixels=? WHERE id=?",
            (time.time(), int(done), int(failed), int(pixels), int(run_id)),
        )

    def runs(self) -> list[dict]:
        return [dict(r) for r in self.con.execute("SELECT * FROM runs ORDER BY id")]

    # ------------------------------------------------------------------ positions
    def set_positions(self, section: str, positions: dict[str, tuple[float, float]]) -> None:
        with self.transaction():
            for name, (x, y) in positions.items():
                self.con.execute(
                    "INSERT INTO positions(section, name, x, y) VALUES(?, ?, ?, ?) "
                    "ON CONFLICT(section, name) DO UPDATE SET x=excluded.x, y=excluded.y",
                    (section, name, float(x), float(y)),
                )

    def positions(self, section: str) -> dict[str, tuple[float, float]]:
        return {
            n: (x, y)
            for n, x, y in self.con.execute("SELECT name, x, y FROM positions WHERE section=?", (section,))
        }

    # ------------------------------------------------------------------ recovery
    def recover(self) -> list[Row]:
        """Undo every interrupted attempt (rows left ``processing``); returns those rows.

        Must be called with the lock held, before any processing. Idempotent: if it is itself
        interrupted, the next call finishes the job.
        """
        stuck = self.rows(state="processing")
        for row in stuck:
            shutil.rmtree(self.staging_dir(row.id), ignore_errors=True)
            _unlink(self.final_path(row))
            self.con.execute(
                "UPDATE files SET state='seen', updated=? WHERE id=? AND state='processing'",
                (time.time(), row.id),
            )
        # stale staging folders of rows that are not processing (or unknown ids)
        if self.staging.is_dir():
            for p in self.staging.iterdir():
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else _unlink(p)
        # temp files of interrupted atomic writes of reports (".<name>.*.tmp")
        for dirpath, dirnames, filenames in os.walk(self.outdir):
            dirnames[:] = [d for d in dirnames if d != CONTROL_DIR]
            for fn in filenames:
                if fn.startswith(".") and fn.endswith(".tmp"):
                    _unlink(os.path.join(dirpath, fn))
        return stuck

    # ------------------------------------------------------------------ registration
    def register(
        self,
        path: str,
        *,
        root: str,
        rel: str,
        section: str,
        name: str,
        out_rel: str,
        size: int,
        mtime_ns: int,
        now: float | None = None,
    ) -> str:
        """Record a complete input file. Returns what happened:

        ``"new"`` (first time, now ``seen``), ``"changed"`` (a done/failed file whose
        fingerprint changed, queued again), ``"retry"`` (a transient failure whose back-off is
        over, queued again) or ``"same"`` (nothing to do).
        """
        now = time.time() if now is None else now
        fp = fingerprint(size, mtime_ns)
        row = self.get_path(path)
        if row is None:
            out_rel = self._unique_out_rel(out_rel)
            self.con.execute(
                "INSERT INTO files(path, root, rel, section, name, out_rel, size, mtime_ns, fingerprint,"
                " state, first_seen, updated) VALUES(?,?,?,?,?,?,?,?,?,'seen',?,?)",
                (path, root, rel, section, name, out_rel, size, mtime_ns, fp, now, now),
            )
            return "new"
        if row.state == "processing":
            return "same"
        if row.state == "seen":
            if row.fingerprint != fp:
                self.con.execute(
                    "UPDATE files SET size=?, mtime_ns=?, fingerprint=?, updated=? WHERE id=?",
                    (size, mtime_ns, fp, now, row.id),
                )
            return "same"
        changed = row.fingerprint != fp
        if row.state == "done":
            if not changed:
                return "same"
            # the old output (if any) stays until the new result replaces or removes it at
            # commit/fail: only a done row promises that its outputs are current
            self._requeue(row, size, mtime_ns, fp, now, reset_failures=True)
            return "changed"
        # failed
        if row.error_kind == "transient":
            if changed or (row.retry_after is not None and now >= row.retry_after):
                self._requeue(row, size, mtime_ns, fp, now, reset_failures=changed)
                return "changed" if changed else "retry"
            return "same"
        # a file that grew since it failed was still being written (a writer that pauses, a share whose
        # clock lags, so that it looked settled): retried however often; other changes max_failures times
        if changed and (row.failures < self.max_failures or size > (row.size or 0)):
            self._requeue(row, size, mtime_ns, fp, now, reset_failures=False)
            return "changed"
        if changed:  # keep the fingerprint current, but give up
            self.con.execute(
                "UPDATE files SET size=?, mtime_ns=?, fingerprint=?, updated=? WHERE id=?",
                (size, mtime_ns, fp, now, row.id),
            )
        return "same"

    def _requeue(self, row: Row, size: int, mtime_ns: int, fp: str, now: float, reset_failures: bool) -> None:
        self.con.execute(
            "UPDATE files SET state='seen', size=?, mtime_ns=?, fingerprint=?, updated=?, retry_after=NULL"
            + (", failures=0" if reset_failures and row.error_kind == "transient" else "")
            + " WHERE id=?",
            (size, mtime_ns, fp, now, row.id),
        )

    def _unique_out_rel(self, out_rel: str) -> str:
        cand, k = out_rel, 1
        while self.con.execute("SELECT 1 FROM files WHERE out_rel=?", (cand,)).fetchone():
            stem, dot, ext = out_rel.rpartition(".")
            cand = f"{stem}-{k}.{ext}" if dot else f"{out_rel}-{k}"
            k += 1
        return cand

    def requeue_transient(self, now: float | None = None, force: bool = False) -> int:
        """Queue again transient failures whose back-off is over (all of them with ``force``)."""
        now = time.time() if now is None else now
        q = "UPDATE files SET state='seen', retry_after=NULL, updated=? WHERE state='failed' AND error_kind='transient'"
        args: list = [now]
        if not force:
            q += " AND (retry_after IS NULL OR retry_after<=?)"
            args.append(now)
        return self.con.execute(q, args).rowcount

    def pending(self) -> list[Row]:
        """Rows waiting to be processed (``seen``), in a stable order."""
        return self.rows(state="seen")

    # ------------------------------------------------------------------ processing steps
    def claim(self, row_id: int) -> Row | None:
        """``seen -> processing`` (one transaction); None if the row is not ``seen``."""
        now = time.time()
        with self.transaction():
            cur = self.con.execute(
                "UPDATE files SET state='processing', attempts=attempts+1, started=?, updated=? "
                "WHERE id=? AND state='seen'",
                (now, now, row_id),
            )
            if cur.rowcount != 1:
                return None
            row = self.get(row_id)
        shutil.rmtree(self.staging_dir(row_id), ignore_errors=True)
        return row

    def claim_many(self, row_ids: list[int]) -> list[Row]:
        """:meth:`claim` for several rows in one transaction; returns the rows claimed (in the
        given order), skipping those that are not ``seen``.
        """
        now = time.time()
        claimed: list[int] = []
        with self.transaction():
            for rid in row_ids:
                cur = self.con.execute(
                    "UPDATE files SET state='processing', attempts=attempts+1, started=?, updated=? "
                    "WHERE id=? AND state='seen'",
                    (now, now, rid),
                )
                if cur.rowcount == 1:
                    claimed.append(rid)
            rows = {r.id: r for r in self._rows_by_id(claimed)}
        for rid in claimed:
            if self.staging_dir(rid).exists():
                shutil.rmtree(self.staging_dir(rid), ignore_errors=True)
        return [rows[rid] for rid in claimed]

    def _rows_by_id(self, ids: list[int]) -> list[Row]:
        out: list[Row] = []
        for k in range(0, len(ids), 500):
            part = ids[k : k + 500]
            q = f"SELECT * FROM files WHERE id IN ({','.join('?' * len(part))})"
            out.extend(Row(**dict(r)) for r in self.con.execute(q, part))
        return out

    def commit_many(self, items: list[tuple[Row, dict, str | None, str | None]]) -> list[Row | OSError]:
        """:meth:`commit` for a group of rows with one journal transaction.

        ``items``: ``(claimed row, result, staged file or None, sha256)``. Every staged output
        is fsynced and renamed into place (and each touched folder fsynced) *before* the single
        transaction that marks the rows ``done``: a kill in between leaves them ``processing``,
        which :meth:`recover` undoes. Returns, per item, the ``done`` row, or the OSError that
        stopped its output from being published (that row stays ``processing``; the caller
        fails it).
        """
        outcome: list[Row | OSError | None] = [None] * len(items)
        dirs: set[Path] = set()
        ok: list[int] = []
        for k, (row, _result, staged, _sha) in enumerate(items):
            final = self.final_path(row)
            try:
                if staged is not None:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    _fsync_file(staged)
                    os.replace(staged, final)
                    dirs.add(final.parent)
                elif _unlink(final):
                    dirs.add(final.parent)
            except OSError as e:
                outcome[k] = e
                continue
            ok.append(k)
        for d in sorted(dirs):
            fsync_dir(d)
        now = time.time()
        if ok:
            with self.transaction():
                for k in ok:
                    row, result, _staged, sha = items[k]
                    cur = self.con.execute(
                        "UPDATE files SET state='done', result=?, sha256=?, error=NULL, error_kind=NULL,"
                        " retry_after=NULL, finished=?, updated=? WHERE id=? AND state='processing'",
                        (json.dumps(result, sort_keys=True), sha, now, now, row.id),
                    )
                    if cur.rowcount != 1:
                        raise RuntimeError(f"journal row {row.id} is not being processed")
            done = {r.id: r for r in self._rows_by_id([items[k][0].id for k in ok])}
            for k in ok:
                rid = items[k][0].id
                outcome[k] = done[rid]
                sd = self.staging_dir(rid)
                if sd.exists():
                    shutil.rmtree(sd, ignore_errors=True)
        return outcome  # type: ignore[return-value]

    def commit(self, row_id: int, result: dict, staged: str | os.PathLike | None, sha256: str | None = None) -> Row:
        """Publish the staged output (or remove a stale one) and mark the row ``done``.

        ``staged`` is the file in the row's staging folder that becomes ``out_rel``, or None
        when the result has no output. Raises OSError if the move fails (the row stays
        ``processing``; the caller marks it failed).
        """
        row = self.get(row_id)
        if row is None or row.state != "processing":
            raise RuntimeError(f"journal row {row_id} is not being processed (state {row and row.state})")
        final = self.final_path(row)
        if staged is not None:
            final.parent.mkdir(parents=True, exist_ok=True)
            _fsync_file(staged)
            os.replace(staged, final)
            fsync_dir(final.parent)
        elif _unlink(final):
            fsync_dir(final.parent)
        now = time.time()
        self.con.execute(
            "UPDATE files SET state='done', result=?, sha256=?, error=NULL, error_kind=NULL, retry_after=NULL,"
            " finished=?, updated=? WHERE id=? AND state='processing'",
            (json.dumps(result, sort_keys=True), sha256, now, now, row_id),
        )
        shutil.rmtree(self.staging_dir(row_id), ignore_errors=True)
        return self._existing(row_id)

    def fail(self, row_id: int, error: str, kind: str = "permanent", result: dict | None = None) -> Row:
        """Mark a ``processing`` row failed. ``kind``: ``permanent`` (retried only when the file
        changes) or ``transient`` (retried after a back-off).
        """
        if kind not in ("permanent", "transient"):
            raise ValueError(f"unknown failure kind {kind!r}")
        row = self._existing(row_id)
        shutil.rmtree(self.staging_dir(row_id), ignore_errors=True)
        # a previous output of this row is no longer backed by a done row
        _unlink(self.final_path(row))
        now = time.time()
        failures = row.failures + 1
        retry_after = None
        if kind == "transient":
            retry_after = now + TRANSIENT_BACKOFF_S[min(failures, len(TRANSIENT_BACKOFF_S)) - 1]
        self.con.execute(
            "UPDATE files SET state='failed', error=?, error_kind=?, failures=?, retry_after=?, result=?,"
            " finished=?, updated=? WHERE id=?",
            (
                str(error),
                kind,
                failures,
                retry_after,
                json.dumps(result, sort_keys=True) if result else None,
                now,
                now,
                row_id,
            ),
        )
        return self._existing(row_id)

    def unclaim(self, row_id: int) -> None:
        """Give a claimed row back (``processing -> seen``) without counting a failure."""
        shutil.rmtree(self.staging_dir(row_id), ignore_errors=True)
        self.con.execute(
            "UPDATE files SET state='seen', updated=? WHERE id=? AND state='processing'", (time.time(), row_id)
        )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __enter__(self):
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.con.execute("COMMIT")
        else:
            self.con.execute("ROLLBACK")
        return False


def open_outdir(outdir: str | os.PathLike, *, max_failures: int = DEFAULT_MAX_FAILURES) -> Journal:
    """Create ``outdir`` if needed, lock it for this process and recover interrupted work."""
    j = Journal(outdir, max_failures=max_failures)
    try:
        j.lock()
        j.recover()
    except BaseException:
        j.close()
        raise
    return j


def iter_rows_by_section(journal: Journal) -> Iterator[tuple[str, list[Row]]]:
    for s in journal.sections():
        yield s, journal.rows(section=s)


def is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def is_transient_os_error(exc: BaseException) -> bool:
    """Errors worth retrying later: permissions, disk full/quota, I/O hiccups, stale handles."""
    if isinstance(exc, PermissionError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return True
    if isinstance(exc, OSError) and exc.errno in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.EAGAIN,
        errno.EBUSY,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.EROFS,
        errno.EMFILE,
        errno.ENFILE,
    ):
        return True
    return False


__all__ = [
    "Journal",
    "JournalLockedError",
    "Row",
    "STATES",
    "open_outdir",
    "fingerprint",
    "fsync_dir",
    "is_enospc",
    "is_transient_os_error",
    "iter_rows_by_section",
]

