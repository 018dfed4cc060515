"""``emdeblur batch`` on a dask.distributed LocalCluster: same outputs as a serial run, a worker
killed mid-run, re-runs, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import make_tiles, thresholds_for, tiny_weights, visible_files  # noqa: E402

from napari_emdeblur.pipeline.batch import batch  # noqa: E402
from napari_emdeblur.pipeline.config import PipelineConfig  # noqa: E402
from napari_emdeblur.pipeline.journal import Journal  # noqa: E402
from napari_emdeblur.pipeline.session import RunSummary  # noqa: E402

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("batch")
    indir = base / "in"
    kinds = make_tiles(indir, 10, seed=11)
    th = thresholds_for(indir, kinds)
    (indir / "secB" / "zz_corrupt.tif").write_bytes(b"II*\x00" + bytes(200))  # not a readable TIFF
    weights = tiny_weights(base / "tiny.pt")
    cfg = PipelineConfig(correct_threshold=th[0], retake_threshold=th[1], weights=str(weights), device="cpu")
    serial = base / "serial"
    summary = list(batch([indir], serial, cfg, workers=0))[-1]
    assert summary.done == 10 and summary.failed == 1
    return indir, kinds, cfg, serial


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _journal_rows(out: Path):
    j = Journal(out)
    try:
        return j.rows()
    finally:
        j.con.close()


@pytest.mark.slow
def test_local_cluster_gives_the_serial_outputs(data, client, tmp_path):
    indir, kinds, cfg, serial = data
    out = tmp_path / "dask"
    msgs = list(batch([indir], out, cfg, client=client))
    summary = msgs[-1]
    assert isinstance(summary, RunSummary)
    assert (summary.new, summary.done, summary.failed) == (11, 10, 1)
    assert summary.corrected == sum(k == "correct" for k in kinds.values()) > 0
    expected = visible_files(serial)
    got = visible_files(out)
    assert sorted(got) == sorted(expected)
    for k in expected:
        assert got[k] == expected[k], k
    rows = _journal_rows(out)
    assert all(r.attempts == 1 for r in rows)
    bad = [r for r in rows if r.state == "failed"]
    assert len(bad) == 1 and bad[0].name == "zz_corrupt.tif" and "zz_corrupt.tif: " in bad[0].error
    assert "zz_corrupt.tif,failed" in (out / "secB" / "report.csv").read_text()
    # re-running over the finished folder does nothing
    again = list(batch([indir], out, cfg, client=client))
    assert (again[-1].new, again[-1].done, again[-1].failed) == (0, 0, 0)
    assert visible_files(out) == got


@pytest.mark.slow
def test_killed_worker_task_is_rerun_and_journal_stays_right(data, client, tmp_path):
    indir, kinds, cfg, serial = data
    out = tmp_path / "crash"
    killed = []
    stop = threading.Event()

    def killer():
        # SIGKILL the first worker seen running one of our tasks (a correction if possible)
        t_end = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < t_end:
            busy = {w: [str(k) for k in ts] for w, ts in client.processing().items() if ts}
            pick = next((w for w, ts in busy.items() if any("emdeblur-correct" in k for k in ts)), None)
            if pick is None and time.monotonic() > t_end - 55:
                pick = next((w for w, ts in busy.items() if any("emdeblur-" in k for k in ts)), None)
            if pick is not None:
                pid = client.run(os.getpid, workers=[pick])[pick]
                os.kill(pid, signal.SIGKILL)
                killed.append(busy[pick])
                return
            stop.wait(0.01)

    th = threading.Thread(target=killer)
    th.start()
    try:
        msgs = list(batch([indir], out, cfg, client=client, max_inflight=4))
    finally:
        stop.set()
        th.join()
    assert killed, "no task was seen running"
    summary = msgs[-1]
    assert (summary.done, summary.failed) == (10, 1), [getattr(m, "message", m) for m in msgs]
    rows = _journal_rows(out)
    # the task of the killed worker was re-run by distributed: no second claim in the journal
    assert all(r.state in ("done", "failed") and r.attempts == 1 for r in rows)
    assert visible_files(out) == visible_files(serial)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


@pytest.mark.slow
def test_cli_serial_batch_and_rerun(data, tmp_path):
    indir, kinds, cfg, serial = data
    out = tmp_path / "cli"
    args = [sys.executable, "-m", "napari_emdeblur.cli", "batch", str(indir / "secA"), str(indir / "secB" / "tile_001.tif"),
            "--out", str(out), "--workers", "0", "--no-correct", "--correct-threshold", repr(cfg.correct_threshold),
            "--retake-threshold", repr(cfg.retake_threshold), "-q"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "6 new, 6 done" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == [".emdeblur", "index.html", "secA", "secB"]
    assert not (out / "secA" / "corrected").exists()
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "0 new, 0 done" in r.stdout
    # other thresholds into the same OUTDIR are refused (its reports would mix settings)
    args2 = list(args)
    args2[args2.index("--correct-threshold") + 1] = "0.5"
    r = subprocess.run(args2, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "other settings" in r.stderr and "correct_threshold" in r.stderr
    # a folder that is not an output folder (no journal) and holds what a run writes is never written into
    other = tmp_path / "analysis"
    (other / "secA").mkdir(parents=True)
    (other / "secA" / "report.csv").write_text("someone else's report\n")
    args3 = list(args)
    args3[args3.index("--out") + 1] = str(other)
    r = subprocess.run(args3, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "not an output folder" in r.stderr and "secA/report.csv" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in other.rglob("*")) == ["report.csv", "secA"]
    assert (other / "secA" / "report.csv").read_text() == "someone else's report\n"
    # other files (a log the shell created first, hidden files) are no reason to refuse
    logged = tmp_path / "logged"
    logged.mkdir()
    (logged / "batch.log").write_text("")
    (logged / ".DS_Store").write_bytes(b"x")
    args4 = list(args)
    args4[args4.index("--out") + 1] = str(logged)
    r = subprocess.run(args4, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "6 new, 6 done" in r.stdout, r.stderr
