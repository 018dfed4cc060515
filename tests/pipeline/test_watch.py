"""``emdeblur watch``: tiles arriving while it runs, files being written, MultiSEM sections,
corrupt tiles, permission errors and a full disk, re-runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiles, thresholds_for, tiny_weights, visible_files  # noqa: E402

from napari_emdeblur.pipeline.config import PipelineConfig  # noqa: E402
from napari_emdeblur.pipeline.discover import Scanner  # noqa: E402
from napari_emdeblur.pipeline.journal import Journal  # noqa: E402
from napari_emdeblur.pipeline.session import RunSummary  # noqa: E402
from napari_emdeblur.pipeline.watch import watch  # noqa: E402
from napari_emdeblur.qc.messages import Progress  # noqa: E402

WRITER = r"""
import os, sys, time
src, dst = sys.argv[1], sys.argv[2]
names = sorted(n for n in os.listdir(src) if not n.startswith("."))
for k, name in enumerate(names):
    data = open(os.path.join(src, name), "rb").read()
    path = os.path.join(dst, name)
    mode = k % 4
    if mode == 0:  # written slowly in place, in chunks
        with open(path, "wb") as f:
            for i in range(4):
                f.write(data[i * len(data) // 4:(i + 1) * len(data) // 4]); f.flush(); time.sleep(0.1)
    elif mode == 1:  # written under a temporary name, then renamed
        open(path + ".part", "wb").write(data); os.replace(path + ".part", path)
    elif mode == 2:  # hidden temporary file (rsync style), then renamed
        tmp = os.path.join(dst, "." + name + ".XyZ"); open(tmp, "wb").write(data); os.replace(tmp, path)
    else:  # written, then a completion marker
        open(path, "wb").write(data); open(path + ".done", "wb").close()
    time.sleep(0.15)
print("writer done", flush=True)
"""


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiles")
    kinds = make_tiles(base, 12, seed=5, sections=("flat",))
    th = thresholds_for(base, kinds)
    weights = tiny_weights(base / "tiny.pt")
    return base / "flat", {Path(k).name: v for k, v in kinds.items()}, th, weights


def _drain(gen, sink: list) -> None:
    for msg in gen:
        sink.append(msg)


def _acq(tmp_path: Path, src: Path, names) -> Path:
    """A watched folder ``tmp_path/acq`` holding copies of the tiles ``names`` of ``src``."""
    acq = tmp_path / "acq"
    acq.mkdir()
    for n in names:
        shutil.copy(src / n, acq / n)
    return acq


@pytest.mark.slow
def test_tiles_arriving_during_watch_are_processed_exactly_once(tiles, tmp_path, monkeypatch):
    scans: list[float] = []
    real_scan = Scanner.scan

    def counting_scan(self, now=None):
        scans.append(time.monotonic())
        return real_scan(self, now)

    monkeypatch.setattr(Scanner, "scan", counting_scan)
    src, kinds, th, weights = tiles
    acq = tmp_path / "acq" / "sec01"
    acq.mkdir(parents=True)
    out = tmp_path / "out"
    cfg = PipelineConfig(correct_threshold=th[0], retake_threshold=th[1], weights=str(weights), device="cpu",
                         stable_seconds=1.0, report_interval=0.5)
    stop = threading.Event()
    msgs: list = []
    t = threading.Thread(target=_drain, args=(watch(acq.parent, out, cfg, poll=0.2, stop=stop), msgs))
    t.start()
    try:
        w = subprocess.run([sys.executable, "-c", WRITER, str(src), str(acq)], capture_output=True, text=True,
                           timeout=120)
        assert w.returncode == 0 and "writer done" in w.stdout, w.stderr
        deadline = time.monotonic() + 90
        while sum(isinstance(m, Progress) for m in msgs) < len(kinds) and time.monotonic() < deadline:
            time.sleep(0.2)
        # a few more scans of the folder: nothing may be processed twice
        seen = len(scans)
        while len(scans) < seen + 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive()
    assert isinstance(msgs[-1], RunSummary)
    lines = [m.message for m in msgs if isinstance(m, Progress)]
    assert len(lines) == len(kinds), lines
    assert sorted(line.split(":")[0] for line in lines) == sorted(f"sec01/{n}" for n in kinds)
    assert not any("FAILED" in line for line in lines), lines  # no half-written file was read

    j = Journal(out)
    try:
        rows = j.rows()
        assert len(rows) == len(kinds)
        assert all(r.state == "done" and r.attempts == 1 for r in rows)
        dec = {Path(r.path).name: r.result_dict["decision"] for r in rows}
    finally:
        j.con.close()
    assert dec == kinds
    files = visible_files(out)
    corrected = sorted(k for k in files if "/corrected/" in k)
    assert corrected == sorted(f"sec01/corrected/{Path(n).stem}.tif" for n, k in kinds.items() if k == "correct")
    csv_lines = files["sec01/report.csv"].decode().splitlines()
    assert len(csv_lines) == 1 + len(kinds) and all(",done," in line for line in csv_lines[1:])
    assert (out / "index.html").read_text().count("sec01") >= 1


@pytest.mark.slow
def test_once_waits_for_partial_files_and_handles_corrupt_ones(tiles, tmp_path):
    src, kinds, th, weights = tiles
    acq = tmp_path / "acq"
    acq.mkdir()
    names = sorted(kinds)[:3]
    for n in names[:2]:
        shutil.copy(src / n, acq / n)
    # an abandoned, truncated tile (old mtime) and a tile still being written when watch starts
    data = (src / names[2]).read_bytes()
    (acq / "broken.tif").write_bytes(data[: len(data) // 3])
    os.utime(acq / "broken.tif", (time.time() - 100, time.time() - 100))
    slow = subprocess.Popen([sys.executable, "-c",
                             "import sys,time\nd=open(sys.argv[1],'rb').read()\nf=open(sys.argv[2],'wb')\n"
                             "for i in range(5):\n f.write(d[i*len(d)//5:(i+1)*len(d)//5]); f.flush(); time.sleep(0.3)\n",
                             str(src / names[2]), str(acq / "late.tif")])
    deadline = time.monotonic() + 30
    while not (acq / "late.tif").exists() and time.monotonic() < deadline:  # the writer has begun
        time.sleep(0.01)
    out = tmp_path / "out"
    cfg = PipelineConfig(correct_threshold=th[0], retake_threshold=th[1], correct=False, stable_seconds=1.0,
                         max_failures=2)
    msgs = list(watch(acq, out, cfg, once=True, poll=0.2))
    slow.wait()
    summary = msgs[-1]
    assert isinstance(summary, RunSummary)
    assert summary.new == 4 and summary.done == 3 and summary.failed == 1 and summary.waiting == 0
    j = Journal(out)
    try:
        late = j.get_path(str((acq / "late.tif").resolve()))
        assert late.state == "done" and late.attempts == 1 and late.size == len(data)
        broken = j.get_path(str((acq / "broken.tif").resolve()))
        assert broken.state == "failed" and broken.error_kind == "permanent" and "truncated" in broken.error
    finally:
        j.con.close()
    report = (out / "acq" / "report.csv").read_text()
    assert "broken.tif,failed" in report and "truncated" in report

    # nothing changed: a re-run does nothing (the bad file is not retried)
    again = list(watch(acq, out, cfg, once=True, poll=0.2))[-1]
    assert (again.new, again.done, again.failed) == (0, 0, 0)
    # the bad file is rewritten complete: retried and processed
    shutil.copy(src / names[2], acq / "broken.tif")
    os.utime(acq / "broken.tif", (time.time() - 100, time.time() - 100))
    fixed = list(watch(acq, out, cfg, once=True, poll=0.2))[-1]
    assert (fixed.new, fixed.done, fixed.failed) == (1, 1, 0)
    assert "broken.tif,done" in (out / "acq" / "report.csv").read_text()


def _write_bmp(path: Path, a: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(a).save(path, format="BMP")


def test_multisem_section_coordinates_and_markers(tiles, tmp_path):
    src, kinds, th, _ = tiles
    from napari_emdeblur.io import load_section

    sec = tmp_path / "scan" / "001_S1R1"
    mfov = sec / "000001"
    mfov.mkdir(parents=True)
    names = sorted(kinds)[:4]
    lines = []
    for k, n in enumerate(names):
        a = np.asarray(load_section(src / n).data)
        fn = f"000001_{k + 1:03d}_tile.bmp"
        _write_bmp(mfov / fn, a)
        lines.append(f"000001\\{fn}\t{k * 230.0:.1f}\t{(k % 2) * 200.0:.1f}\t0")
    (sec / "full_image_coordinates.txt").write_text("\r\n".join(lines) + "\r\n")
    # a tile the coordinates do not list, freshly written, without marker: not complete yet
    _write_bmp(mfov / "000001_099_tile.bmp", np.asarray(load_section(src / names[0]).data))
    out = tmp_path / "out"
    cfg = PipelineConfig(correct_threshold=th[0], retake_threshold=th[1], correct=False, stable_seconds=600)
    summary = list(watch(tmp_path / "scan", out, cfg, once=True, poll=0.1, max_seconds=1.0))[-1]
    assert summary.done == 4 and summary.waiting == 1
    import json

    rep = json.loads((out / "001_S1R1" / "report.json").read_text())
    assert [t["name"] for t in rep["tiles"]] == [f"000001/000001_{k + 1:03d}_tile.bmp" for k in range(4)]
    assert [t["position"] for t in rep["tiles"]] == [[k * 230.0, (k % 2) * 200.0] for k in range(4)]
    assert rep["summary"]["done"] == 4
    assert [t["decision"] for t in rep["tiles"]] == [kinds[n] for n in names]
    assert (out / "001_S1R1" / "qc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # its marker arrives: the waiting tile is complete now
    (mfov / "000001_099_tile.bmp.done").touch()
    summary = list(watch(tmp_path / "scan", out, cfg, once=True, poll=0.1, max_seconds=5.0))[-1]
    assert (summary.new, summary.done, summary.waiting) == (1, 1, 0)


def test_scanner_sections():
    root = Path("/does/not/matter")
    sc = Scanner(root, 1.0)
    assert sc.section_name(root) == "matter"
    assert sc.section_name(root / "a" / "b") == "a/b"


# --------------------------------------------------------------------------- environment faults
def _cli(args, unprivileged=False, timeout=300):
    cmd = [sys.executable, "-m", "napari_emdeblur.cli", *map(str, args)]
    if unprivileged and os.geteuid() == 0:  # root ignores file modes: drop the override capabilities
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs non-root or setpriv")
def test_permission_error_is_reported_and_retried_later(tiles, tmp_path):
    src, kinds, th, _ = tiles
    acq = tmp_path / "acq"
    acq.mkdir()
    names = sorted(kinds)[:3]
    for n in names:
        shutil.copy(src / n, acq / n)
    os.chmod(acq / names[1], 0)
    out = tmp_path / "out"
    args = ["watch", acq, "--out", out, "--once", "--no-correct", "--stable-seconds", "0",
            "--correct-threshold", th[0], "--retake-threshold", th[1]]
    r = _cli(args, unprivileged=True)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "permission denied" in r.stdout and "2 done" in r.stdout
    assert f"{names[1]},failed" in (out / "acq" / "report.csv").read_text()
    os.chmod(acq / names[1], 0o644)  # fixed: the next run retries it although the file did not change
    r = _cli(args, unprivileged=True)
    assert r.returncode == 0 and "0 new, 1 done" in r.stdout, r.stdout + r.stderr
    assert f"{names[1]},done" in (out / "acq" / "report.csv").read_text()


@pytest.mark.slow
def test_full_disk_is_reported_and_retried_later(tiles, tmp_path):
    src, kinds, th, weights = tiles
    acq = tmp_path / "acq"
    acq.mkdir()
    names = [n for n in sorted(kinds) if kinds[n] == "correct"][:1] + [n for n in sorted(kinds) if kinds[n] == "ok"][:1]
    for n in names:
        shutil.copy(src / n, acq / n)
    out = tmp_path / "out"
    staging = out / ".emdeblur" / "staging"
    staging.mkdir(parents=True)
    # a 16 kB file system where the corrected tile is staged: writing it fails with ENOSPC
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(staging)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    args = ["watch", acq, "--out", out, "--once", "--stable-seconds", "0", "--weights", weights,
            "--device", "cpu", "--correct-threshold", th[0], "--retake-threshold", th[1]]
    try:
        r = _cli(args)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "disk full" in r.stdout and "transient" in r.stdout
        rep = (out / "acq" / "report.csv").read_text()
        assert f"{names[0]},failed" in rep and "disk full" in rep and f"{names[1]},done" in rep
    finally:
        subprocess.run(["umount", str(staging)], check=True)
    r = _cli(args)  # space again: retried without any change of the input
    assert r.returncode == 0 and "0 new, 1 done" in r.stdout and "1 corrected" in r.stdout, r.stdout + r.stderr
    assert (out / "acq" / "corrected" / f"{Path(names[0]).stem}.tif").is_file()


def test_calibrated_thresholds_are_fixed_for_the_outdir(tiles, tmp_path):
    src, kinds, th, _ = tiles
    acq = tmp_path / "acq"
    acq.mkdir()
    names = sorted(kinds)
    for n in names[:6]:
        shutil.copy(src / n, acq / n)
    out = tmp_path / "out"
    cfg = PipelineConfig(calibrate=4, correct=False, stable_seconds=0)
    msgs = list(watch(acq, out, cfg, once=True, poll=0.1))
    s1 = msgs[-1]
    assert s1.done == 6
    told = [m.message for m in msgs if "thresholds calibrated" in getattr(m, "message", "")]
    assert len(told) == 1 and told[0].startswith("thresholds calibrated on 4 tile(s): correct above ")
    j = Journal(out)
    try:
        settings = j.get_meta("settings")
    finally:
        j.con.close()
    from napari_emdeblur.io import load_section
    from napari_emdeblur.qc.focus import score_tiles
    from napari_emdeblur.qc.thresholds import auto_thresholds

    scores = np.concatenate([score_tiles(load_section(acq / n).data, 256).ravel() for n in names[:4]])
    assert (settings["correct_threshold"], settings["retake_threshold"]) == pytest.approx(auto_thresholds(scores))
    assert settings["calibrated_from"] == 4
    # later tiles are judged with the stored thresholds, whatever they look like
    for n in names[6:]:
        shutil.copy(src / n, acq / n)
    s2 = list(watch(acq, out, cfg, once=True, poll=0.1))[-1]
    assert s2.new == len(names) - 6 and s2.done == len(names) - 6
    j = Journal(out)
    try:
        assert j.get_meta("settings") == settings
        assert all(r.result_dict["correct_threshold"] == settings["correct_threshold"] for r in j.rows())
    finally:
        j.con.close()


def test_unloadable_model_refuses_the_run_before_any_output(tiles, tmp_path):
    src, kinds, th, weights = tiles
    acq = tmp_path / "acq"
    acq.mkdir()
    name = next(n for n in sorted(kinds) if kinds[n] == "correct")
    shutil.copy(src / name, acq / name)
    bad = tmp_path / "bad.pt"
    shutil.copy(weights, bad)
    shutil.copy(weights.with_suffix(".json"), bad.with_suffix(".json"))
    with open(bad, "ab") as f:  # the weights no longer match their card's sha256
        f.write(b"x")
    out = tmp_path / "out"
    r = _cli(["watch", acq, "--out", out, "--once", "--stable-seconds", "0", "--weights", bad, "--device", "cpu",
              "--correct-threshold", th[0], "--retake-threshold", th[1]])
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.pt: weights file does not match its card" in r.stderr
    assert not out.exists()  # refused before the output folder (and its journal) exist: nothing failed


def test_thread_count_does_not_change_the_outputs(tiles, tmp_path):
    """Tiles run on a pool of tile threads, committed in groups: the outputs (corrected tiles,
    reports, QC heatmap) are the same bytes whatever the number of threads."""
    src, kinds, th, weights = tiles
    got = {}
    for n in (1, 3):
        cfg = PipelineConfig(correct_threshold=th[0], retake_threshold=th[1], weights=str(weights), device="cpu",
                             stable_seconds=0.0, threads=n)
        msgs = list(watch(src, tmp_path / f"out{n}", cfg, once=True))
        assert (msgs[-1].done, msgs[-1].failed) == (len(kinds), 0)
        lines = [m.message.split(":")[0] for m in msgs if isinstance(m, Progress)]
        assert lines == sorted(lines)  # reported in the journal's order
        got[n] = visible_files(tmp_path / f"out{n}")
    assert got[1].keys() == got[3].keys() and "flat/qc.png" in got[1]
    for k in got[1]:
        assert got[1][k] == got[3][k], k
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(got[3]["flat/qc.png"]))
    assert im.format == "PNG" and im.size[0] > 300 and len(set(im.convert("RGB").getdata())) > 20


def test_other_px_thresholds_into_an_outdir_are_refused(tiles, tmp_path):
    """Thresholds in px are part of an OUTDIR's settings like thresholds given as scores (they were
    silently replaced by the stored ones)."""
    src, kinds, _, _ = tiles
    acq = _acq(tmp_path, src, sorted(kinds)[:2])
    out = tmp_path / "out"
    cfg = PipelineConfig(correct=False, stable_seconds=0)
    assert list(watch(acq, out, cfg, once=True, poll=0.1))[-1].done == 2
    assert list(watch(acq, out, cfg, once=True, poll=0.1))[-1].done == 0  # the same settings: nothing to do
    with pytest.raises(ValueError, match="other settings .*correct_threshold"):
        list(watch(acq, out, PipelineConfig(correct=False, stable_seconds=0, correct_px=2.5), once=True, poll=0.1))


def test_reports_are_rebuilt_when_a_watch_is_interrupted(tiles, tmp_path):
    """Ctrl-C (the generator closed mid-run) still rebuilds the reports from the journal (they are
    throttled to every few seconds while tiles arrive, and were left out)."""
    src, kinds, _, _ = tiles
    acq = _acq(tmp_path, src, sorted(kinds)[:6])
    out = tmp_path / "out"
    gen = watch(acq, out, PipelineConfig(correct=False, stable_seconds=0, threads=1), poll=0.1)
    for msg in gen:
        if isinstance(msg, Progress):
            break
    gen.close()  # what KeyboardInterrupt in the CLI's loop does
    rows = (out / "acq" / "report.csv").read_text().splitlines()
    j = Journal(out)
    try:
        done = [r.name for r in j.rows(state="done")]
        assert not j.rows(state="processing")  # the interrupted tiles are back in the queue
    finally:
        j.con.close()
    assert done and all(any(line.startswith(f"{n},") for line in rows) for n in done)
    assert (out / "index.html").is_file()


def test_a_failed_recovery_is_tried_again_at_the_next_turn(tiles, tmp_path, monkeypatch):
    """When the output folder fails (a full disk) and putting the claimed tile back fails too, the
    watch tries that again at its next turn (the tile stayed 'processing' until a restart)."""
    import sqlite3
    import threading

    from napari_emdeblur.pipeline.session import Session

    src, kinds, _, _ = tiles
    acq = _acq(tmp_path, src, sorted(kinds)[:1])
    calls = {"positions": 0, "recover": 0}
    real_positions, real_recover = Session.update_positions, Journal.recover

    def positions(self, *a, **k):
        calls["positions"] += 1
        if calls["positions"] == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real_positions(self, *a, **k)

    def recover(self, *a, **k):
        if calls["positions"] == 1:  # in the turn that failed: the recovery fails too
            calls["recover"] += 1
            if calls["recover"] == 1:
                raise sqlite3.OperationalError("database or disk is full")
        elif calls["positions"] >= 1:
            calls["recover"] += 1
        return real_recover(self, *a, **k)

    monkeypatch.setattr(Session, "update_positions", positions)
    monkeypatch.setattr(Journal, "recover", recover)
    stop = threading.Event()
    msgs = []
    for msg in watch(acq, tmp_path / "out", PipelineConfig(correct=False, stable_seconds=0), poll=0.05, stop=stop):
        msgs.append(msg)
        if isinstance(msg, Progress):
            stop.set()
    said = [getattr(m, "message", "") for m in msgs]
    assert calls["recover"] >= 2 and sum("output folder problem" in m for m in said) == 1
    assert any("works again" in m for m in said) and msgs[-1].done == 1


def test_process_tile_writes_only_what_a_tile_needs(tiles, tmp_path):
    """One tile without a journal: a tile that needs nothing leaves no corrected/ folder (a later
    watch into that folder refused it as someone else's output), a soft one its corrected tile; no
    staging folder is left behind."""
    from napari_emdeblur.pipeline.process import process_tile

    src, kinds, th, weights = tiles
    ok = next(n for n in sorted(kinds) if kinds[n] == "ok")
    soft = next(n for n in sorted(kinds) if kinds[n] == "correct")
    cfg = PipelineConfig(correct_threshold=th[0], retake_threshold=th[1], weights=str(weights), device="cpu")
    out = tmp_path / "one"
    assert process_tile(src / ok, cfg, outdir=out).decision == "ok"
    assert list(out.iterdir()) == []
    rec = process_tile(src / soft, cfg, outdir=out)
    assert rec.decision == "correct" and rec.corrected and (out / rec.corrected).is_file()
    assert [p.name for p in out.iterdir()] == [src.name]  # the section folder only (no staging left)


def test_batch_refuses_two_inputs_that_are_the_same_section(tiles, tmp_path):
    """Two input folders of the same name would be one section whose rows cannot be told apart: refused
    with one line naming both, before any output exists; the same folder given twice is one input."""
    from napari_emdeblur.pipeline.discover import candidates_for_inputs

    src, kinds, _, _ = tiles
    for k, name in enumerate(sorted(kinds)[:2]):
        (tmp_path / f"w{k}" / "sec").mkdir(parents=True)
        shutil.copy(src / name, tmp_path / f"w{k}" / "sec" / "tile_000.tif")
    a, b = tmp_path / "w0" / "sec", tmp_path / "w1" / "sec"
    with pytest.raises(ValueError, match=r"inputs .*w0/sec and .*w1/sec are both section 'sec'"):
        candidates_for_inputs([a, b])
    with pytest.raises(ValueError, match="both section 'sec'"):
        candidates_for_inputs([a / "tile_000.tif", b / "tile_000.tif"])
    assert len(candidates_for_inputs([a, a / "tile_000.tif"]).complete) == 1


def test_batch_says_when_gpu_workers_have_no_gpu(tiles, tmp_path):
    import torch

    from napari_emdeblur.pipeline.batch import batch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    src, kinds, th, weights = tiles
    acq = _acq(tmp_path, src, sorted(kinds)[:1])
    cfg = PipelineConfig(correct_threshold=th[0], retake_threshold=th[1], weights=str(weights), device="cpu")
    msgs = list(batch([acq], tmp_path / "out", cfg, workers=0, gpu_workers=True))
    assert any("--gpu-workers, but this machine has no GPU" in getattr(m, "message", "") for m in msgs)
    assert msgs[-1].done == 1


def test_a_vanished_watched_folder_is_named_by_its_path(tmp_path):
    from napari_emdeblur.pipeline.discover import Scanner

    root = tmp_path / "acq"
    root.mkdir()
    sc = Scanner(root, 0.0)
    root.rmdir()
    msgs = list(sc.scan().bad.values())
    assert msgs and msgs[0].startswith(f"{root}: cannot read the folder"), msgs  # it said ".: cannot read ..."


def test_files_skipped_by_a_run_are_in_its_index(tiles, tmp_path):
    """A file a run cannot take as a tile (here an empty one) counts as failed on the console and is
    listed in index.html too (it was in no report); the next run lists only its own."""
    src, kinds, _, _ = tiles
    acq = _acq(tmp_path, src, sorted(kinds)[:1])
    (acq / "tile_zero.tif").write_bytes(b"")
    out = tmp_path / "out"
    cfg = PipelineConfig(correct=False, stable_seconds=0)
    s = list(watch(acq, out, cfg, once=True, poll=0.1))[-1]
    assert s.failed == 1 and s.done == 1
    index = (out / "index.html").read_text()
    assert "1 skipped in the last run" in index and "tile_zero.tif: empty file (0 bytes), skipped" in index
    assert "correct above 1 px, retake above 3 px" in index  # thresholds as they are given
    (acq / "tile_zero.tif").unlink()
    assert list(watch(acq, out, cfg, once=True, poll=0.1))[-1].failed == 0
    assert "skipped in the last run" not in (out / "index.html").read_text().lower()


def test_a_tile_too_small_to_score_is_said_to_be_unjudged(tiles, tmp_path):
    import tifffile

    src, kinds, _, _ = tiles
    acq = tmp_path / "acq"
    acq.mkdir()
    tile = tifffile.imread(src / sorted(kinds)[0])
    tifffile.imwrite(acq / "tiny.tif", np.ascontiguousarray(tile[:40, :40]))
    msgs = list(watch(acq, tmp_path / "out", PipelineConfig(correct=False, stable_seconds=0), once=True, poll=0.1))
    said = [m.message for m in msgs if "could be scored" in getattr(m, "message", "")]
    assert said == ["warning: tiny.tif: no part of this 40 x 40 px tile could be scored with the blur metric "
                    "(too small?): it is reported ok but was not judged; check it by eye"]
