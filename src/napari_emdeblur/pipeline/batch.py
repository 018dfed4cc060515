"""Process finished acquisitions on a Dask cluster, with the same journal and reports as watch.

:func:`batch` is a generator (``Notice`` / ``Progress`` / final ``RunSummary``):

* Inputs are tiles and folders (folders are scanned like ``watch`` does, every file taken as
  complete). Each new tile gets one *score* task (CPU); a tile whose decision is ``correct``
  then gets one *correct* task, which asks for the worker resource ``GPU: 1`` when
  ``gpu_workers`` is set, so that at most one correction runs at a time per GPU worker while
  scoring keeps every worker busy.
* The cluster: ``dask.distributed.LocalCluster`` by default (``workers`` processes,
  ``threads_per_worker=1``; with ``gpu_workers`` every worker advertises ``GPU=1`` and uses
  ``cuda:<worker index mod GPU count>``), or an existing scheduler (``scheduler="tcp://..."``;
  start GPU workers there with ``dask worker ADDRESS --nthreads 1 --resources GPU=1``, one per
  GPU with ``CUDA_VISIBLE_DEVICES``). Workers must see the inputs and OUTDIR at the same paths
  (a shared file system): they write corrected tiles into the journal's staging folder.
* Only this (client) process touches the journal: it claims a tile before submitting its
  task, and commits (rename of the staged output + ``done``) when the result comes back, so a
  crash of the client is recovered like a crash of ``watch``. A crashed worker is handled by
  distributed, which re-runs its tasks elsewhere (the row simply stays ``processing`` until the
  result arrives); a tile that kills ``distributed.scheduler.allowed-failures`` workers in a row
  is marked failed with the error (``KilledWorker``) and the run goes on.
* Each task uses one thread for scoring and torch (``cfg.threads``, if set, overrides): the
  parallelism is across tiles. Score tasks take a group of tiles (:func:`group_size`, up to
  16), corrections one tile each; the client claims a group in one journal transaction and
  commits the finished tiles of a group in one transaction.
* ``workers=0`` runs everything serially in this process (no Dask), the reference the
  distributed results are identical to: the same functions compute the same bytes.
* Inputs, options and (when correcting) the model are checked before OUTDIR is created; files
  that cannot be tiles (pipes, unreadable folders, empty files, tiles listed in a coordinates file
  but absent, an unparseable coordinates file) are reported as warnings naming them and counted
  as failed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from ..qc.messages import Notice, Progress
from .config import PipelineConfig, TileRecord
from .discover import candidates_for_inputs
from .errors import ModelLoadError
from .journal import Row
from .process import analyse_tile, correct_recorded, needs_correction
from .session import RunSummary, Session, check_model, progress_line


# --------------------------------------------------------------------------- worker side
def _worker_device(cfg_device: str, gpu: bool) -> str | None:
    """The device of a GPU worker: the configured one, else its CUDA device by worker index."""
    if not gpu:
        return None
    if cfg_device and cfg_device != "auto":
        return cfg_device
    from ..deblur.device import cuda_device_for_worker

    try:
        from distributed import get_worker

        name = get_worker().name
        idx = int(name) if str(name).isdigit() else abs(hash(str(name)))
    except (ImportError, ValueError):
        idx = 0
    return cuda_device_for_worker(idx)


_MALLOC_TUNED = False


def tune_malloc() -> bool:
    """Undo, for this worker process, what ``MALLOC_TRIM_THRESHOLD_`` (set by distributed's
    nanny for its workers) does to glibc: with it, every allocation above 128 KiB is a fresh
    ``mmap`` whose pages fault in on first touch, which made scoring a tile ~4x slower in a
    worker than in a plain process (measured: 55 ms against 12 ms per 8 Mpx tile). Restores a
    32 MiB mmap threshold (glibc's dynamic maximum) and a 256 MiB trim threshold, once per
    process. Returns whether it did (glibc only).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    _MALLOC_TUNED = True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):
        return False


def _worker_cfg(cfg_dict: dict) -> PipelineConfig:
    tune_malloc()
    cfg = PipelineConfig.from_dict(cfg_dict)
    if not cfg.threads:  # the cluster runs tiles in parallel: one thread per task
        cfg.threads = 1
    return cfg


def score_task(path: str, cfg_dict: dict, thresholds: tuple, file: str, section: str, name: str) -> TileRecord:
    """Dask task: read and score one tile and decide (no correction)."""
    cfg = _worker_cfg(cfg_dict)
    return analyse_tile(path, cfg, thresholds=thresholds, file=file, section=section, name=name, correct=False)


def score_group_task(items: list[tuple[str, str, str, str]], cfg_dict: dict, thresholds: tuple) -> list[TileRecord]:
    """Dask task: :func:`score_task` for several tiles ``(path, file, section, name)`` (one
    task per group keeps the scheduler's per-task overhead small against ~10 ms per tile).
    """
    cfg = _worker_cfg(cfg_dict)
    return [
        analyse_tile(path, cfg, thresholds=thresholds, file=file, section=section, name=name, correct=False)
        for path, file, section, name in items
    ]


def group_size(n_tiles: int, n_workers: int, max_group: int = 16) -> int:
    """Tiles per score task: enough tasks to keep every worker busy (4 per worker), at most
    ``max_group`` tiles each.
    """
    return max(1, min(max_group, -(-n_tiles // max(1, 4 * n_workers))))


def correct_task(path: str, rec: TileRecord, cfg_dict: dict, out_rel: str, stage_dir: str, gpu: bool) -> TileRecord:
    """Dask task: correct a scored tile into ``stage_dir`` (model cached per worker)."""
    cfg = _worker_cfg(cfg_dict)
    return correct_recorded(path, rec, cfg, out_rel=out_rel, stage_dir=stage_dir,
                            device=_worker_device(cfg.device, gpu))


# --------------------------------------------------------------------------- client side
def _connect(scheduler: str | None, workers: int, gpu_workers: bool):
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    kw: dict[str, Any] = dict(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    if gpu_workers:
        kw["resources"] = {"GPU": 1}
    cluster = LocalCluster(**kw)
    return Client(cluster), cluster


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def batch(
    inputs: list[str | os.PathLike],
    outdir: str | os.PathLike,
    cfg: PipelineConfig | None = None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    gpu_workers: bool = False,
    client=None,
    max_inflight: int | None = None,
) -> Iterator[object]:
    """Process ``inputs`` into ``outdir`` on a Dask cluster (see the module docstring).

    ``client``: an existing ``distributed.Client`` to use (it is not closed). ``workers=0``:
    serial, in this process.
    """
    cfg = cfg or PipelineConfig()
    out = Path(outdir).resolve()
    for inp in inputs:
        if Path(inp).resolve() == out:
            raise ValueError(f"--out {outdir} must not be one of the inputs")
    found = candidates_for_inputs(list(inputs), exclude=[out])
    check_model(cfg)  # device and model, before the output folder exists
    if gpu_workers and cfg.correct and scheduler is None and client is None:
        from ..deblur.device import gpu_count

        if not gpu_count():
            yield Notice("warning: --gpu-workers, but this machine has no GPU: the workers correct on the CPU",
                         "warning")
    session = Session(out, cfg, "batch")
    try:
        for msg in session.report_problems(found.bad):
            yield Notice(f"warning: {msg}", "warning")
        session.update_positions(found.positions)
        if not session.settle_thresholds([c.path for c in found.complete], final=True):
            raise ValueError("no tiles to calibrate the thresholds from")
        if session.calibrated_now:
            yield Notice(f"thresholds calibrated on {session.calibrated_from} tile(s): "
                         f"{session.thresholds_text()}")
        n_new = session.register(found.complete)
        session.requeue_transient(force=True)
        pending = session.journal.pending()
        yield Notice(f"{n_new} new file(s), {len(pending)} to process")
        if pending:
            if workers == 0 and client is None and scheduler is None:
                yield from _run_serial(session, pending)
            else:
                yield from _run_dask(session, pending, scheduler, workers, gpu_workers, client, max_inflight)
    finally:  # (closing rebuilds the reports, also when interrupted)
        summary = session.close()
    yield summary


def _run_serial(session: Session, pending) -> Iterator[object]:
    k = 0
    for out, rec in session.process_rows(pending):
        k += 1
        for w in rec.warnings:
            yield Notice(f"warning: {w}", "warning")
        yield Progress(k, len(pending), "tile", progress_line(out, rec))
        session.flush_reports()


def _run_dask(session: Session, pending, scheduler, workers, gpu_workers, client, max_inflight) -> Iterator[object]:
    from distributed import as_completed

    own = client is None
    cluster = None
    if own:
        n = default_workers() if workers is None else int(workers)
        client, cluster = _connect(scheduler, n, gpu_workers)
    try:
        n_workers = max(1, sum(client.nthreads().values()))  # parallel task slots
        inflight_max = max_inflight or 4 * n_workers
        yield Notice(f"dask: {n_workers} task slot(s) at {client.scheduler.address}")
        cfg = session.cfg
        cfg_dict = cfg.to_dict()
        assert session.thresholds is not None  # settled before any tile is processed (batch)
        th = tuple(session.thresholds)
        queue = list(pending)
        gsize = group_size(len(queue), n_workers)
        rows: dict[str, tuple[list[Row], str]] = {}  # future key -> (rows, stage)
        ac = as_completed()
        total, done = len(queue), 0
        correct_resources = {"GPU": 1} if gpu_workers else None

        def submit_scores() -> None:
            while queue and len(rows) < inflight_max:
                take, queue[:gsize] = queue[:gsize], []
                claimed = session.journal.claim_many([r.id for r in take])
                if not claimed:
                    continue
                items = [(r.path, r.rel, r.section, r.name) for r in claimed]
                first = claimed[0]
                fut = client.submit(
                    score_group_task, items, cfg_dict, th,
                    key=f"emdeblur-score-{first.id}-{first.attempts}-{len(claimed)}", pure=False,
                )
                rows[fut.key] = (claimed, "score")
                ac.add(fut)

        submit_scores()
        for fut in ac:
            group, stage = rows.pop(fut.key)
            if fut.status == "error":
                exc = fut.exception()
                if isinstance(exc, ModelLoadError):
                    raise exc
                name = type(exc).__name__
                recs = []
                for row in group:
                    rec = TileRecord(file=row.rel, section=row.section, name=row.name)
                    rec.error_kind = "permanent" if name == "KilledWorker" else "transient"
                    rec.error = f"{name}: {exc}" + (
                        " (the tile crashed the workers that ran it)" if name == "KilledWorker" else ""
                    )
                    rec.decision = ""
                    recs.append(rec)
            else:
                res = fut.result()
                recs = res if isinstance(res, list) else [res]
            fut.release()
            finished = []
            for row, rec in zip(group, recs):
                if stage == "score" and needs_correction(rec, cfg):
                    stage_dir = str(session.journal.staging_dir(row.id))
                    f2 = client.submit(
                        correct_task, row.path, rec, cfg_dict, row.out_rel, stage_dir, bool(gpu_workers),
                        key=f"emdeblur-correct-{row.id}-{row.attempts}", pure=False, resources=correct_resources,
                    )
                    rows[f2.key] = ([row], "correct")
                    ac.add(f2)
                else:
                    finished.append((row, rec))
            if finished:
                outs = session.finish_many(finished)
                for out, (_row, rec) in zip(outs, finished):
                    done += 1
                    for w in rec.warnings:
                        yield Notice(f"warning: {w}", "warning")
                    yield Progress(done, total, "tile", progress_line(out, rec))
                session.flush_reports()
            submit_scores()
    finally:
        if own:
            try:
                client.close()
            finally:
                if cluster is not None:
                    cluster.close()


__all__ = ["batch", "score_task", "score_group_task", "correct_task", "default_workers", "group_size", "RunSummary"]

