"""The correction service run in a spawned child process: same messages, stop, errors, cleanup."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_emdeblur.deblur.remote import ProcessCorrection, share_array  # noqa: E402
from napari_emdeblur.deblur.reports import CorrectionReport  # noqa: E402
from napari_emdeblur.deblur.selection import Selection  # noqa: E402
from napari_emdeblur.deblur.service import CorrectionParams, iter_correct  # noqa: E402
from napari_emdeblur.qc.messages import Progress, TileResult, drain  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def section():
    from napari_emdeblur._sample_data import make_sample_data

    (data, _, _), (gt, _, _) = make_sample_data()[:2]
    return np.asarray(data)[:512, :512], np.asarray(gt)[:512, :512]


def test_share_array_kinds():
    da = pytest.importorskip("dask.array")
    a = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    h, path = share_array(a)
    try:
        assert h.kind == "file" and os.path.isfile(path)
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(h)).open(), a)
    finally:
        os.unlink(path)
    lazy = da.from_array(a, chunks=16)
    h, path = share_array(lazy)
    assert h.kind == "pickle" and path is None  # a small graph: the child reads it itself
    np.testing.assert_array_equal(np.asarray(h.open()), a)
    local = []
    unpicklable = lazy.map_blocks(lambda b: (local.append(1), b)[1], dtype=a.dtype)
    h, path = share_array(unpicklable)
    try:
        assert h.kind == "file"  # materialised band by band instead
        np.testing.assert_array_equal(h.open(), a)
    finally:
        os.unlink(path)


def test_same_messages_as_in_process(section):
    img, gt = section
    sel = Selection.of_tiles([(0, 0, 0), (0, 1, 1)])
    params = CorrectionParams(device="cpu", qc_tile=256)
    here = [m for m in iter_correct(img, sel, params, ground_truth=gt)]
    job = ProcessCorrection(img, sel, params, ground_truth=gt)
    got: list = []
    report = drain(job.messages(), got.append)
    assert [type(m) for m in got] == [type(m) for m in here]
    tiles_here = [m for m in here if isinstance(m, TileResult)]
    tiles_got = [m for m in got if isinstance(m, TileResult)]
    for a, b in zip(tiles_here, tiles_got):
        assert (a.z, a.row, a.col, a.y0, a.x0) == (b.z, b.row, b.col, b.y0, b.x0)
        assert np.abs(a.data.astype(int) - b.data.astype(int)).max() <= 1
    assert isinstance(report, CorrectionReport) and len(report.tiles) == 2
    assert np.isfinite(report.tiles[0].psnr_after)
    assert job.finished.wait(60) and job.process.exitcode == 0
    assert len(job.scratch) == 2 and not any(os.path.exists(f) for f in job.scratch)  # image + truth, gone



def test_stop_ends_the_child_and_frees_memory(section):
    img, _ = section
    job = ProcessCorrection(img, Selection.whole_image(), CorrectionParams(device="cpu", qc_tile=128, batch=1))
    gen = job.messages()
    first = next(gen)  # the child is up once its first message arrives
    assert first is not None
    job.stop()
    rest = list(gen)  # ends after the child's current step, without the whole image
    assert not any(isinstance(m, CorrectionReport) for m in rest)
    assert sum(isinstance(m, Progress) for m in rest) < 20
    assert job.finished.wait(60) and not job.process.is_alive()


def test_closing_the_generator_ends_the_child(section):
    img, _ = section
    job = ProcessCorrection(img, Selection.whole_image(), CorrectionParams(device="cpu", qc_tile=128, batch=1))
    gen = job.messages()
    next(gen)
    gen.close()  # what the worker runner does after a cancel or when the dock closes
    assert job.finished.wait(60) and not job.process.is_alive()
    assert job.scratch and not any(os.path.exists(f) for f in job.scratch)


def test_errors_come_back_as_the_same_exception(section, tmp_path, caplog):
    import logging

    from napari_emdeblur.deblur.weights import WeightsError

    img, _ = section
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    job = ProcessCorrection(img, Selection.whole_image(), CorrectionParams(device="cpu", weights=str(bad)))
    with caplog.at_level(logging.DEBUG, logger="napari_emdeblur.deblur.remote"), pytest.raises(WeightsError):
        drain(job.messages())
    assert job.finished.wait(60)
    # the child's traceback is in the log (a usage error: at debug level), not lost
    rec = [r for r in caplog.records if r.name == "napari_emdeblur.deblur.remote"]
    assert rec and rec[-1].levelno == logging.DEBUG and "Traceback" in rec[-1].getMessage()
    assert "bad.json: model card not found" in rec[-1].getMessage()


_ORPHAN = """
import multiprocessing as mp, os, sys, time
from napari_emdeblur.deblur.remote import _exit_with_parent

def child(parent):
    _exit_with_parent(parent, poll_s=0.1)
    time.sleep(120)

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child, args=(os.getpid(),), daemon=True)
    p.start()
    print(p.pid, flush=True)
    os._exit(3)  # the viewer dies without stopping its correction process
"""


def test_correction_process_ends_when_its_parent_dies(tmp_path):
    import subprocess
    import sys
    import time

    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    pid = int(proc.stdout.readline())
    assert proc.wait(timeout=60) == 3

    def alive() -> bool:
        try:
            return "zombie" not in open(f"/proc/{pid}/status").read().lower()
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(), "the correction process outlived its parent"


class _Reads:
    """A lazy 2-D array that records the size of every read."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim, self.reads = a, a.shape, a.dtype, a.ndim, []

    def __getitem__(self, key):
        out = np.asarray(self.a[key])
        self.reads.append(out.size)
        return out


def test_tiles_of_a_lazy_section_read_only_their_windows(section):
    """A mosaic is never read whole for a few tiles: the same tiles and scores as in memory."""
    data, _ = section
    sel = Selection.of_tiles([(0, 0, 1), (0, 1, 0)])
    params = CorrectionParams(device="cpu", qc_tile=128, fidelity=False)
    lazy = _Reads(data)
    got = [m for m in iter_correct(lazy, sel, params) if isinstance(m, TileResult)]
    want = [m for m in iter_correct(data, sel, params) if isinstance(m, TileResult)]
    assert [(m.y0, m.x0) for m in got] == [(m.y0, m.x0) for m in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.data, w.data)
        assert g.info["score_before"] == pytest.approx(w.info["score_before"])
    assert lazy.reads and max(lazy.reads) < data.size // 2 and sum(lazy.reads) < data.size
