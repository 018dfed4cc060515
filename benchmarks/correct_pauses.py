"""UI pauses while the GRAN correction dock corrects the flagged tiles of a 0.5 Gpx section.

One command, in a real napari window (under Xvfb when headless):

    QT_API=pyqt6 xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python benchmarks/correct_pauses.py

Builds a 0.5 Gpx section (22,400 x 22,400 uint8) from the real EM in ``../shared/data`` (tiles of
1024 x 1024 frames, flipped), blurs ``--soft`` QC tiles of 256 px, and shows it as a multiscale layer
(area-averaged levels). Then, each measured with :class:`napari_emdeblur.widgets.pauses.PauseProbe`
(the longest gap between Qt event-loop turns):

* the bare-repaint baseline: a 0.1 % camera zoom on the same canvas, same run, also while the
  correction process computes (the same CPU load as during a correction);
* Focus QC scoring in the dock's worker, then the ``--soft`` weakest tiles flagged;
* the correction dock correcting the flagged tiles (the service in its child process, the
  corrected layer a store over the original, throttled refresh), once with the whole section in
  view and once at 1:1 over a flagged tile: longest pause, pauses over 200 ms, refreshes and their
  cost, time to the first tile, the time-left estimate against the time the rest really took;
* the old way, for scale: copying the section on the GUI thread (how the corrected layer used to
  be made) and one refresh of a 0.5 Gpx single-level layer (what every tile used to cost).

Prints one JSON object (also written to ``--out``). Pauses are wall-clock on a shared machine:
report them next to the bare repaint and the load average printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    env = os.environ.get("EMDEBLUR_SHARED_DATA")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


def make_section(side: int, n_soft: int, tile: int = 256, seed: int = 0) -> tuple[np.ndarray, list]:
    """``side`` x ``side`` uint8 from 1024-px real EM frames; ``n_soft`` QC tiles blurred (sigma 2)."""
    import imageio.v3 as iio
    from scipy import ndimage

    frames = sorted((data_dir() / "drosophila_vnc_sstem" / "stack1").glob("*.tif"))
    if not frames:
        raise SystemExit(f"no EM frames under {data_dir()} (set EMDEBLUR_SHARED_DATA)")
    imgs = [np.asarray(iio.imread(f))[:1024, :1024].astype(np.uint8) for f in frames[:8]]
    rng = np.random.default_rng(seed)
    out = np.empty((side, side), np.uint8)
    for y in range(0, side, 1024):
        for x in range(0, side, 1024):
            a = imgs[rng.integers(len(imgs))]
            a = a[:: rng.choice([-1, 1]), :: rng.choice([-1, 1])]
            out[y : y + 1024, x : x + 1024] = a[: side - y, : side - x]
    rows = cols = side // tile
    soft = []
    for k in rng.choice(rows * cols, n_soft, replace=False):
        i, j = divmod(int(k), cols)
        sl = (slice(i * tile, (i + 1) * tile), slice(j * tile, (j + 1) * tile))
        out[sl] = ndimage.gaussian_filter(out[sl].astype(np.float32), 2.0).round().astype(np.uint8)
        soft.append((i, j))
    return out, soft


def pyramid(img: np.ndarray, min_side: int = 512) -> list[np.ndarray]:
    """Area-averaged levels, factor 2 each, down to about ``min_side`` px."""
    levels = [img]
    while min(levels[-1].shape) > min_side:
        a = levels[-1]
        h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
        levels.append(a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3), dtype=np.float32).round().astype(np.uint8))
    return levels


def _timed_callbacks(cw) -> dict:
    """Time the dock's GUI-thread handlers (per message type) without changing what they do."""
    spent: dict = {}
    runner = cw._runner

    def wrap(name, fn):
        def inner(*args):
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                key = type(args[0]).__name__ if args and name == "yield" else name
                spent.setdefault(key, []).append(round((time.perf_counter() - t) * 1000, 1))
        return inner

    runner._on_yield = wrap("yield", runner._on_yield)
    runner._on_finished = wrap("finished", runner._on_finished)
    return spent


def correct_once(viewer, cw, probe, label: str) -> dict:
    from napari_emdeblur.widgets.pauses import run_loop_until

    cw._refresh.count = 0
    cw._refresh.costs_ms = []
    spent = _timed_callbacks(cw)
    run_start = cw.run
    t_click = {}

    def timed_run():
        t = time.perf_counter()
        run_start()
        t_click["ms"] = round((time.perf_counter() - t) * 1000, 1)

    t0 = time.perf_counter()
    probe.start()
    timed_run()
    run_loop_until(lambda: cw.idle, 3600)
    longest = probe.stop()
    cw._runner._on_yield = cw._on_yield
    cw._runner._on_finished = cw._on_finished
    total = time.perf_counter() - t0
    summ = probe.summary()
    log = [(t - t0, d, n, e) for t, d, n, e in cw.eta_log if d > 0]
    t_end = log[-1][0] if log else total
    eta = [{"done": d, "eta_s": round(e, 1), "true_s": round(t_end - t, 1)}
           for t, d, n, e in log if e is not None and d < n]
    return {
        "view": label, "tiles": len(cw.reports), "total_s": round(total, 1),
        "first_tile_s": round(log[0][0], 1) if log else None,
        "longest_pause_ms": round(longest, 1), "p99_pause_ms": summ["p99_pause_ms"],
        "pauses_over_200ms": summ["pauses_over_200ms"], "pauses_over_100ms": summ["pauses_over_100ms"],
        "long_pauses_s_ms": summ["long_pauses"],
        "tile_arrivals_s": [round(t, 2) for t, d, n, e in log],
        "refreshes": cw._refresh.count, "refresh_cost_ms": cw._refresh.costs_ms,
        "eta": eta[:3] + eta[len(eta) // 2 : len(eta) // 2 + 1],
        "store_mb": round(cw._store.nbytes / 2**20, 1),
        "gui_ms_click": t_click.get("ms"),
        "gui_ms_per_message": {k: {"n": len(v), "max": max(v), "median": float(np.median(v))}
                               for k, v in spent.items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpx", type=float, default=0.5, help="section size in gigapixels")
    ap.add_argument("--soft", type=int, default=16, help="QC tiles blurred and flagged")
    ap.add_argument("--no-old", action="store_true", help="skip the old-way measurements")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    a = ap.parse_args(argv)
    import napari

    from napari_emdeblur.qc import decisions as dec
    from napari_emdeblur.widgets.correct import CorrectionWidget
    from napari_emdeblur.widgets.pauses import PauseProbe, bare_repaint_ms, run_loop_for, run_loop_until
    from napari_emdeblur.widgets.qc import QCWidget

    res: dict = {"load_avg_start": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count()}
    side = int(round((a.gpx * 1e9) ** 0.5 / 256)) * 256
    t = time.perf_counter()
    img, soft = make_section(side, a.soft)
    levels = pyramid(img)
    res.update(section=[side, side], gpx=round(side * side / 1e9, 3), levels=[list(x.shape) for x in levels],
               build_s=round(time.perf_counter() - t, 1))

    viewer = napari.Viewer(show=True, title="correct_pauses")
    viewer.window.resize(1600, 1000)
    run_loop_for(1.0)
    layer = viewer.add_image(levels, multiscale=True, name="section", contrast_limits=(0, 255))
    qc, cw = QCWidget(viewer), CorrectionWidget(viewer)
    viewer.window.add_dock_widget(qc, name="Focus QC")
    viewer.window.add_dock_widget(cw, name="GRAN correction", tabify=True)
    viewer.reset_view()
    run_loop_for(2.0)
    res["bare_repaint_pause_ms"] = bare_repaint_ms(viewer)
    probe = PauseProbe()

    # Focus QC in its worker, then the weakest --soft tiles flagged
    qc.layer_combo.value = layer.name
    qc.tile_spin.value = 256
    t = time.perf_counter()
    probe.start()
    qc.run()
    run_loop_until(lambda: qc.idle, 3600)
    res["qc"] = {"s": round(time.perf_counter() - t, 1), "longest_pause_ms": round(probe.stop(), 1),
                 "pauses_over_200ms": probe.over(200)}
    s = np.sort(qc.result.scores[np.isfinite(qc.result.scores)])
    qc.set_thresholds(correct=float(s[a.soft - 1]) + 1e-9, retake=float(s[0]) - 1.0)
    run_loop_for(3.0)  # let the QC dock redraw its histogram before the correction is measured
    flagged = {(int(i), int(j)) for _, i, j in np.argwhere(qc.result.decisions == dec.CORRECT)}
    res["qc"]["flagged"] = len(flagged)
    res["qc"]["blurred_found"] = len(flagged & set(soft))

    cw.layer_combo.value = layer.name
    cw.tiles_combo.value = "flagged (QC)"
    cw.device_combo.value = "auto"
    res["load_avg_before_correction"] = [round(v, 2) for v in os.getloadavg()]
    res["correction"] = [correct_once(viewer, cw, probe, "whole section in view")]
    i, j = sorted(flagged)[0]
    viewer.scene.camera.center = (i * 256 + 128, j * 256 + 128)
    viewer.scene.camera.zoom = 1.0
    run_loop_for(2.0)
    res["bare_repaint_pause_ms_1to1"] = bare_repaint_ms(viewer)
    res["correction"].append(correct_once(viewer, cw, probe, "1:1 over a flagged tile"))
    # the baseline under the same load: bare repaints while the correction process computes
    cw.run()
    run_loop_until(lambda: len(cw.reports) >= 1 or cw.worker is None, 3600)
    res["bare_repaint_pause_ms_1to1_during_correction"] = bare_repaint_ms(viewer, repeat=5, settle_s=0.8)
    cw.cancel()
    run_loop_until(lambda: cw.idle, 3600)
    res["load_avg_after_correction"] = [round(v, 2) for v in os.getloadavg()]

    if not a.no_old:
        old: dict = {}
        probe.start()
        copy = np.array(img, copy=True)  # how the corrected layer used to be made, on the GUI thread
        old["copy_section_on_gui_thread_ms"] = round(probe.stop(), 1)
        viewer.layers.clear()
        plain = viewer.add_image(copy, name="single level", contrast_limits=(0, 255))
        viewer.reset_view()
        run_loop_for(2.0)
        pauses = []
        for r in range(3):
            probe.start()
            copy[1000 + 300 * r : 1256 + 300 * r, 1000:1256] = 255
            plain.refresh()  # what every corrected tile used to cost
            run_loop_for(0.5)
            pauses.append(round(probe.stop(), 1))
        old["single_level_refresh_pause_ms"] = pauses
        res["old_way"] = old
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
