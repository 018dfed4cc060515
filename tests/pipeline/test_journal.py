"""Journal of the acquisition pipeline: state machine, lock, and kill -9 at several points of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_tiles, thresholds_for, tiny_weights, visible_files

from napari_emdeblur.pipeline.journal import Journal, JournalLockedError, open_outdir


# --------------------------------------------------------------------------- unit tests
def _register(j: Journal, path: str, size=10, mtime_ns=1, section="s", name=None):
    name = name or Path(path).name
    return j.register(path, root="/r", rel=f"{section}/{name}", section=section, name=name,
                      out_rel=f"{section}/corrected/{Path(name).stem}.tif", size=size, mtime_ns=mtime_ns)


def test_state_machine_and_retry_rules(tmp_path):
    j = open_outdir(tmp_path / "out", max_failures=2)
    try:
        assert _register(j, "/r/a.tif") == "new"
        assert _register(j, "/r/a.tif") == "same"
        row = j.pending()[0]
        claimed = j.claim(row.id)
        assert claimed.state == "processing" and claimed.attempts == 1
        assert j.claim(row.id) is None  # cannot be claimed twice

        # commit publishes the staged output atomically and marks done
        stage = j.staging_dir(row.id)
        stage.mkdir(parents=True)
        (stage / "a.tif").write_bytes(b"corrected")
        done = j.commit(row.id, {"decision": "correct"}, stage / "a.tif", sha256="x")
        assert done.state == "done" and (tmp_path / "out/s/corrected/a.tif").read_bytes() == b"corrected"
        assert not stage.exists()
        assert _register(j, "/r/a.tif") == "same"  # unchanged: nothing to do
        # the file changes: processed again; the new result has no output -> old one removed
        assert _register(j, "/r/a.tif", size=11) == "changed"
        row = j.claim(j.pending()[0].id)
        j.commit(row.id, {"decision": "ok"}, None)
        assert not (tmp_path / "out/s/corrected/a.tif").exists()

        # permanent failure: retried only when the file changes, at most max_failures times
        assert _register(j, "/r/bad.tif") == "new"
        bad = [r for r in j.pending() if r.path == "/r/bad.tif"][0]
        j.claim(bad.id)
        f = j.fail(bad.id, "EMReadError: truncated", "permanent")
        assert f.state == "failed" and f.failures == 1 and f.error.startswith("EMReadError")
        assert _register(j, "/r/bad.tif") == "same"
        assert _register(j, "/r/bad.tif", size=20) == "changed"
        j.claim(bad.id)
        j.fail(bad.id, "EMReadError: still truncated", "permanent")
        assert _register(j, "/r/bad.tif", size=20, mtime_ns=5) == "same"  # rewritten, not grown: gave up after 2
        assert j.get(bad.id).state == "failed"
        # ... but a file that grew since it failed was still being written: retried however often
        for k in range(3):
            assert _register(j, "/r/bad.tif", size=30 + k) == "changed"
            j.claim(bad.id)
            assert j.fail(bad.id, "EMReadError: truncated", "permanent").failures == 3 + k
        assert _register(j, "/r/bad.tif", size=32) == "same"  # failed at this size: not again

        # transient failure: retried after the back-off without any change of the file
        assert _register(j, "/r/perm.tif") == "new"
        p = [r for r in j.pending() if r.path == "/r/perm.tif"][0]
        j.claim(p.id)
        t = j.fail(p.id, "PermissionError: denied", "transient")
        assert t.retry_after > time.time()
        assert j.requeue_transient() == 0
        assert j.requeue_transient(now=t.retry_after + 1) == 1
        assert j.get(p.id).state == "seen"
        assert j.counts() == {"seen": 1, "processing": 0, "done": 1, "failed": 1}
    finally:
        j.close()


def test_group_claim_and_commit(tmp_path):
    """claim_many / commit_many: one transaction each; outputs are in place before done, and a
    row whose output cannot be published stays processing (recover undoes it)."""
    j = open_outdir(tmp_path / "out")
    try:
        for n in ("a", "b", "c"):
            assert _register(j, f"/r/{n}.tif") == "new"
        ids = [r.id for r in j.pending()]
        rows = j.claim_many(ids + ids[:1])  # an id twice: claimed once
        assert [r.id for r in rows] == ids and all(r.state == "processing" and r.attempts == 1 for r in rows)
        assert j.claim_many(ids) == []
        a, b, c = rows
        for r in (a, b):
            j.staging_dir(r.id).mkdir(parents=True)
            (j.staging_dir(r.id) / "x.tif").write_bytes(r.name.encode())
        missing = j.staging_dir(c.id) / "never-written.tif"
        out = j.commit_many([(a, {"decision": "correct"}, j.staging_dir(a.id) / "x.tif", "sa"),
                             (b, {"decision": "correct"}, j.staging_dir(b.id) / "x.tif", None),
                             (c, {"decision": "correct"}, missing, None)])
        assert out[0].state == "done" and out[0].sha256 == "sa" and out[1].state == "done"
        assert isinstance(out[2], OSError) and j.get(c.id).state == "processing"
        assert (tmp_path / "out/s/corrected/a.tif").read_bytes() == b"a.tif"
        assert (tmp_path / "out/s/corrected/b.tif").read_bytes() == b"b.tif"
        assert not j.staging_dir(a.id).exists() and not j.staging_dir(b.id).exists()
        assert [r.id for r in j.recover()] == [c.id] and j.get(c.id).state == "seen"
    finally:
        j.close()


def test_output_names_stay_unique(tmp_path):
    with open_outdir(tmp_path / "out") as j:
        _register(j, "/r/x.tif", name="x.tif")
        _register(j, "/r/x.png", name="x.png")  # same stem: second output gets a suffix
        outs = sorted(r.out_rel for r in j.rows())
        assert outs == ["s/corrected/x-1.tif", "s/corrected/x.tif"]


@pytest.mark.slow
def test_lock_is_exclusive_and_released_by_kill(tmp_path):
    out = tmp_path / "out"
    j = open_outdir(out)
    with pytest.raises(JournalLockedError):
        open_outdir(out)
    j.close()
    # a process holding the lock dies by SIGKILL: the lock goes with it
    code = (
        "import sys, time; from napari_emdeblur.pipeline.journal import open_outdir; "
        "j = open_outdir(sys.argv[1]); print('locked', flush=True); time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(JournalLockedError):
            open_outdir(out)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    open_outdir(out).close()


def test_recover_resets_interrupted_rows(tmp_path):
    out = tmp_path / "out"
    j = open_outdir(out)
    _register(j, "/r/a.tif")
    row = j.claim(j.pending()[0].id)
    # interrupted after the output was moved into place but before 'done' was recorded
    final = j.final_path(row)
    final.parent.mkdir(parents=True)
    final.write_bytes(b"half-committed")
    j.staging_dir(row.id).mkdir(parents=True)
    (j.staging_dir(row.id) / ".a.tif.tmp").write_bytes(b"partial")
    (final.parent / ".report.csv.abc.tmp").write_bytes(b"partial report")
    j.con.close()  # simulate the crash: no cleanup, the lock goes with the process's files
    os.close(j._lock_fd)
    j2 = open_outdir(out)
    try:
        r = j2.get(row.id)
        assert r.state == "seen" and r.attempts == 1
        assert not final.exists() and not j2.staging_dir(row.id).exists()
        assert not (final.parent / ".report.csv.abc.tmp").exists()
    finally:
        j2.close()


# --------------------------------------------------------------------------- kill -9
def _watch_cmd(indir, out, weights, th):
    return [
        sys.executable, "-m", "napari_emdeblur.cli", "watch", str(indir), "--out", str(out), "--once",
        "--weights", str(weights), "--device", "cpu", "--correct-threshold", repr(th[0]),
        "--retake-threshold", repr(th[1]), "--stable-seconds", "0", "--report-interval", "0.5", "-q",
    ]


def _check_done_rows_have_outputs(out: Path) -> None:
    j = Journal(out)
    try:
        for r in j.rows(state="done"):
            res = r.result_dict
            if res.get("corrected"):
                import tifffile

                a = tifffile.imread(out / res["corrected"])
                assert a.shape == tuple(res["shape"]), r.out_rel
    finally:
        j.con.close()


@pytest.mark.slow
def test_kill9_at_several_points_gives_identical_outputs(tmp_path):
    indir = tmp_path / "in"
    kinds = make_tiles(indir, 10, seed=3)
    th = thresholds_for(indir, kinds)
    weights = tiny_weights(tmp_path / "tiny.pt")
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    ref = tmp_path / "ref"
    r = subprocess.run(_watch_cmd(indir, ref, weights, th), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    expected = visible_files(ref)
    n_corr = sum(1 for k in kinds.values() if k == "correct")
    assert sum(1 for k in expected if "/corrected/" in k) == n_corr
    assert {"secA/report.csv", "secB/report.json", "secA/qc.png"} <= set(expected)

    out = tmp_path / "out"
    interrupted = 0
    for n_lines in (0, 1, 2, 1):
        # kill as soon as the run has reported n_lines finished tiles (0: once it has started):
        # lands in the processing, committing or report writing of the next tiles
        p = subprocess.Popen(_watch_cmd(indir, out, weights, th)[:-1], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = p.stdout.readline()  # "watching ...": the journal is open
        while n_lines > 0 and line:
            line = p.stdout.readline()
            n_lines -= line.startswith("[")
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            interrupted += 1
        p.communicate()
        if (out / ".emdeblur" / "journal.sqlite").exists():
            _check_done_rows_have_outputs(out)
    assert interrupted >= 2, "the kills should land while watch runs"
    r = subprocess.run(_watch_cmd(indir, out, weights, th), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    got = visible_files(out)
    assert sorted(got) == sorted(expected)  # none missing, none extra (no temp files)
    for k in expected:
        assert got[k] == expected[k], f"{k} differs from the uninterrupted run"
    assert not any(Path(k).name.startswith(".") or k.endswith(".tmp") for k in got)
    staging = out / ".emdeblur" / "staging"
    assert not staging.exists() or not any(staging.iterdir())
    j = Journal(out)
    try:
        assert j.counts()["done"] == len(kinds)
        assert all(r.state == "done" for r in j.rows())
    finally:
        j.con.close()
    # and a re-run does nothing
    r = subprocess.run(_watch_cmd(indir, out, weights, th)[:-1], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and " 0 new, 0 done" in r.stdout, r.stdout
    assert visible_files(out) == expected


def test_recorded_hash_is_of_the_bytes_decoded_and_a_changed_tile_is_caught(tmp_path):
    """One read per tile: the journal's sha256 is of exactly the bytes scored; correcting a
    recorded tile whose file changed since is refused as transient (retried), not corrected."""
    import hashlib

    from napari_emdeblur.pipeline.config import PipelineConfig
    from napari_emdeblur.pipeline.process import analyse_tile, correct_recorded

    kinds = make_tiles(tmp_path / "in", 8, seed=2, sections=("s",))
    th = thresholds_for(tmp_path / "in", kinds)
    rel = next(k for k, v in kinds.items() if v == "correct")
    path = tmp_path / "in" / rel
    cfg = PipelineConfig(correct_threshold=th[0], retake_threshold=th[1], device="cpu",
                         weights=str(tiny_weights(tmp_path / "tiny.pt")))
    rec = analyse_tile(path, cfg, thresholds=th, correct=False)
    assert rec.error is None and rec.decision == "correct"
    assert rec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    ok = correct_recorded(path, rec, cfg, out_rel="x.tif", stage_dir=tmp_path / "stage")
    assert ok.error is None and ok.staged and Path(ok.staged).is_file()

    rec2 = analyse_tile(path, cfg, thresholds=th, correct=False)
    other = tmp_path / "in" / next(k for k, v in kinds.items() if k != rel)
    path.write_bytes(other.read_bytes())  # the tile is replaced between scoring and correcting
    bad = correct_recorded(path, rec2, cfg, out_rel="y.tif", stage_dir=tmp_path / "stage2")
    assert bad.error_kind == "transient" and "changed" in bad.error
    assert not (tmp_path / "stage2" / "y.tif").exists()
