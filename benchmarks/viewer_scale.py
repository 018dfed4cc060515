"""A >= 1 Gpx MultiSEM section in a real napari viewer: open, overview, QC, correction (one command).

    nice -n 5 python benchmarks/viewer_scale.py                  # measure, print, write docs/viewer_scale.md
    python benchmarks/viewer_scale.py --no-doc --out results.json
    python benchmarks/viewer_scale.py --mfovs 2 --variants multiscale --skip-correct   # a quick look

The section (``benchmarks/msem_section.py``): 6 mFOVs x 61 beams = 365 tiles of 1750 x 2000 px in a
hexagonal multi-beam layout with 8 % overlaps, one missing beam, six tiles blurred (sigma 1-3 px),
MultiSEM thumbnails; 1.8 Gpx bounding box, 1.28 Gpx of tiles. It is built from the real EM in
``../shared/data`` into ``--work`` (default ``<tmp>/emdeblur-viewer-scale``) once and reused, with
its reference overview: the exact area mean (factor 16) of the assembled mosaic, from every tile.

Each variant runs in its own process under Xvfb (so peak RSS is per variant), in the same run:

* ``plain``: ``viewer.add_image(dask_array)`` of the same mosaic (``io.load_section(...,
  multiscale=False).data``): what napari does with a big lazy array;
* ``multiscale``: ``viewer.open(folder, plugin="napari-emdeblur")``: the npe2 reader's multiscale
  layer (overview from the thumbnails, pyramid cache cleared first: a cold open);
* ``async``: the same with napari's experimental asynchronous rendering on (Preferences >
  Experimental, ``NAPARI_ASYNC=1``; napari's default and the other variants: off), where napari
  slices layers in a thread pool.

Measured per variant: time until the layer is added; time until the overview is complete and
painted; overview quality: Pearson correlation of the zoomed-out screenshot with the reference
resampled to the same screen pixels, over the tissue (tiles' area, eroded), plain and of the
*detail* (each minus its Gaussian blur of 3 screen px; aliasing shows there); QC with the Focus QC
dock (``QCWidget.run()`` in its worker: per acquisition tile for the reader's layers, the 256 px
grid for the plain one): time, longest UI pause, what was flagged; correction of the flagged
tiles with the correction dock (``CorrectionWidget.run()``, CPU, stopped after
``--correct-budget`` s): time, tiles done, longest UI pause; peak RSS (VmHWM, software-GL textures
included); the load average. A UI pause is the longest gap between Qt event-loop turns (a 10 ms
timer, ``widgets.pauses.PauseProbe``); where each pause over 200 ms was spent comes from the probe's
stack samples of the GUI thread (``PAUSE_KINDS``: napari's layer controls, first drawing of text
glyphs, texture uploads, the layer list's paint, other canvas drawing, Qt's C++); a bare repaint (a
camera nudge on a one-layer canvas) is measured in the same process as the floor under every pause.
A variant whose RSS exceeds
``--rss-limit-mb`` is stopped and reported as such (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "viewer_scale.md"
START, END = "<!-- BENCHMARK:START -->", "<!-- BENCHMARK:END -->"
READABLE = 0.8  # overview correlation at which the overview counts as readable (the bar)
REF_FACTOR = 16
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "src"))  # this checkout's package (also for the child processes, see main)


# ----------------------------------------------------------------------------- helpers
def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return _status("VmRSS")


def peak_rss_mb() -> float:
    return _status("VmHWM")


def tree_rss_mb(root: int | None = None) -> float:
    """RSS of a process and all its descendants (the correction's child process included), from /proc."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def load() -> float:
    return round(os.getloadavg()[0], 2)


def reference_overview(folder: Path, f: int, out: Path) -> np.ndarray:
    """The exact area mean (factor ``f``) of the assembled mosaic (later tile wins), band by band."""
    if out.is_file():
        return np.load(out)
    from napari_emdeblur.io import load_section

    data = load_section(folder, multiscale=False).data
    h, w = data.shape
    hf, wf = -(-h // f), -(-w // f)
    ref = np.zeros((hf, wf), np.float32)
    band = f * 256
    for y0 in range(0, h, band):
        y1 = min(y0 + band, h)
        blk = np.zeros((-(-(y1 - y0) // f) * f, wf * f), np.float32)
        blk[: y1 - y0, :w] = np.asarray(data[y0:y1])
        ref[y0 // f : y0 // f + blk.shape[0] // f] = blk.reshape(blk.shape[0] // f, f, wf, f).mean(axis=(1, 3))
    np.save(out, ref)
    return ref


def tissue_mask(folder: Path, f: int) -> np.ndarray:
    """Where the mosaic has a tile (factor-f raster), eroded by 2 raster px: the section's edge and
    gaps against the black background would otherwise dominate any correlation."""
    from scipy import ndimage

    from napari_emdeblur.io import load_section

    sec = load_section(folder, multiscale=False)
    h, w = sec.shape
    m = np.zeros((-(-h // f), -(-w // f)), bool)
    for t in sec.tiles or ():
        m[-(-t.y0 // f) : (t.y0 + t.height) // f, -(-t.x0 // f) : (t.x0 + t.width) // f] = True
    return ndimage.binary_erosion(m, iterations=2)


def overview_correlation(shot: np.ndarray, camera, ref: np.ndarray, f: int, shape_hw, mask) -> tuple[float, float]:
    """(plain, detail) Pearson correlation between the canvas (grey) and the reference resampled
    (area) to the same screen pixels, over the tissue. Detail: each minus its Gaussian blur (3 px)."""
    from PIL import Image
    from scipy import ndimage

    grey = shot[..., :3].astype(np.float32).mean(-1)
    h, w = grey.shape
    zoom = float(camera.zoom)
    cy, cx = (float(v) for v in camera.center[-2:])
    H, W = shape_hw
    r0, r1 = int(round((-0.5 - cy) * zoom + h / 2)), int(round((H - 0.5 - cy) * zoom + h / 2))
    c0, c1 = int(round((-0.5 - cx) * zoom + w / 2)), int(round((W - 0.5 - cx) * zoom + w / 2))
    r0c, r1c, c0c, c1c = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    crop = grey[r0c:r1c, c0c:c1c]
    # the reference over the layer's extent (a multiscale mosaic is padded with gap on the bottom/right)
    refc = np.zeros((-(-H // f), -(-W // f)), np.float32)
    refc[: min(ref.shape[0], refc.shape[0]), : min(ref.shape[1], refc.shape[1])] = ref[: refc.shape[0], : refc.shape[1]]
    maskc = np.zeros(refc.shape, bool)
    maskc[: min(mask.shape[0], refc.shape[0]), : min(mask.shape[1], refc.shape[1])] = mask[: refc.shape[0], : refc.shape[1]]
    full = np.asarray(Image.fromarray(refc.astype(np.float32), mode="F").resize((c1 - c0, r1 - r0),
                                                                                Image.Resampling.BOX))
    full = full[r0c - r0 : r0c - r0 + crop.shape[0], c0c - c0 : c0c - c0 + crop.shape[1]]
    mk = np.asarray(Image.fromarray(maskc.astype(np.uint8) * 255)
                    .resize((c1 - c0, r1 - r0), Image.Resampling.NEAREST)) > 0
    mk = mk[r0c - r0 : r0c - r0 + crop.shape[0], c0c - c0 : c0c - c0 + crop.shape[1]]

    def pearson(a, b):
        a, b = a[mk].astype(np.float64), b[mk].astype(np.float64)
        return float(np.corrcoef(a, b)[0, 1]) if a.size > 10 and a.std() > 0 and b.std() > 0 else 0.0

    detail = pearson(crop - ndimage.gaussian_filter(crop, 3), full - ndimage.gaussian_filter(full, 3))
    return pearson(crop, full), detail


def _probe_tools():
    """PauseProbe / run_loop_until of the package (``widgets.pauses``): the same probe the tests use."""
    from napari_emdeblur.widgets.pauses import PauseProbe, run_loop_until

    return PauseProbe, run_loop_until


def pause_summary(probe) -> dict:
    """The probe's summary (``PauseProbe.summary``) under this benchmark's names: the 30 longest pauses, and
    where every pause over 200 ms (at least the 30 longest) was spent."""
    s = probe.summary(keep=30, all_over_ms=200.0)
    return {"longest_ms": s["longest_pause_ms"], "p99_ms": s["p99_pause_ms"], "over_200ms": s["pauses_over_200ms"],
            "ticks": s["ticks"], "long_pauses": [list(p) for p in s["long_pauses"]],
            "pause_sites": [[t, ms, [list(x) for x in sites]] for t, ms, sites in s.get("pause_sites", [])]}


# ----------------------------------------------------------------------------- one variant (child process)
def child(args) -> dict:
    import napari

    from napari_emdeblur.io import load_section

    PauseProbe, run_loop_until = _probe_tools()

    def run_for(s: float) -> None:
        run_loop_until(lambda: False, s)

    out: dict = {"variant": args.child, "load_start": load()}
    partial = Path(args.work) / f"partial_{args.child}.json"
    phase = {"name": "start"}

    def checkpoint(name: str) -> None:
        phase["name"] = name
        partial.write_text(json.dumps(out, default=str))

    tree = {"peak": 0.0, "phase_peaks": {}}

    def watchdog() -> None:
        while True:
            r = rss_mb()
            t = tree_rss_mb()  # the GUI process and its children (the correction process)
            tree["peak"] = max(tree["peak"], t)
            pp = tree["phase_peaks"]
            pp[phase["name"]] = round(max(pp.get(phase["name"], 0.0), t))
            out["peak_tree_rss_mb"], out["tree_rss_by_phase_mb"] = round(tree["peak"]), dict(pp)
            if r > args.rss_limit_mb:
                out["aborted"] = f"RSS {r:.0f} MB > limit {args.rss_limit_mb:.0f} MB during {phase['name']}"
                out["peak_rss_mb"] = round(peak_rss_mb())
                partial.write_text(json.dumps(out, default=str))
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watchdog, daemon=True).start()
    man = json.loads((Path(args.section) / "manifest.json").read_text())
    ref = np.load(args.ref)
    mask = tissue_mask(Path(args.section), REF_FACTOR)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    run_for(1.0)
    shots = Path(args.work) / "shots"
    shots.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> np.ndarray:
        from PIL import Image

        a = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
        Image.fromarray(a).save(shots / f"{args.child}_{name}.png")
        return a

    probe = PauseProbe(10, stacks=True)
    # warm-up (napari's first image layer imports a lot) and the bare-repaint floor
    warm = viewer.add_image(np.zeros((64, 64), np.uint8), name="warm-up")
    run_for(0.3)
    viewer.layers.remove(warm)
    cal = viewer.add_image(np.random.default_rng(0).integers(0, 255, (1024, 1024), dtype=np.uint8), name="cal")
    viewer.reset_view()
    run_for(0.3)
    reps = []
    for _ in range(5):
        probe.start()
        viewer.camera.zoom = viewer.camera.zoom * 1.001
        run_for(0.3)
        reps.append(round(probe.stop()))
    out["bare_repaint_ms"] = reps
    viewer.layers.remove(cal)
    run_for(0.3)
    probe.start()  # what adding any layer costs here (vispy visuals and shaders on software GL)
    tiny = viewer.add_image(np.zeros((64, 64), np.float32), name="tiny", blending="translucent", opacity=0.5)
    run_for(1.0)
    out["add_tiny_layer_pause_ms"] = round(probe.stop())
    viewer.layers.remove(tiny)
    run_for(0.3)

    # ------------------------------------------------------------ open
    out["rss_before_open_mb"] = round(rss_mb())
    checkpoint("open")
    probe.start()
    t0 = time.perf_counter()
    if args.child == "plain":
        data = load_section(args.section, multiscale=False).data
        out["t_section_loaded_s"] = round(time.perf_counter() - t0, 3)
        layer = viewer.add_image(data, name=Path(args.section).name, contrast_limits=(0, 255))
        pyr = None
    else:  # what the npe2 reader gives napari (napari's own viewer.open overhead: see the warm reopen)
        from napari_emdeblur._reader import pyramid_of, read_sections, watch_pyramids

        (data, kw, _), = read_sections(args.section)
        out["t_section_loaded_s"] = round(time.perf_counter() - t0, 3)
        layer = viewer.add_image(data, **kw)
        pyr = pyramid_of(layer)
    out["t_layer_added_s"] = round(time.perf_counter() - t0, 3)
    viewer.reset_view()
    if pyr is None:
        run_for(0.5)
    else:
        refresher = watch_pyramids(viewer)
        state = {"seen": -1}

        def painted() -> bool:  # overview complete and one refresh after that
            if not pyr.complete:
                return False
            if state["seen"] < 0:
                state["seen"] = refresher.refreshes
            return refresher.refreshes > state["seen"] or pyr.generation == refresher.seen.get(id(layer))

        run_loop_until(painted, args.overview_timeout)
        run_for(0.2)
    out["t_overview_painted_s"] = round(time.perf_counter() - t0, 2)
    probe.stop()
    out["open_pause"] = pause_summary(probe)
    corr, detail = overview_correlation(shot("overview"), viewer.camera, ref, REF_FACTOR,
                                        tuple(int(v) for v in layer.level_shapes[0][-2:]), mask)
    out["overview_corr"], out["overview_detail_corr"] = round(corr, 3), round(detail, 3)
    out["t_first_readable_overview_s"] = out["t_overview_painted_s"] if corr >= READABLE else None
    out["data_level_shown"] = int(layer.data_level) if layer.multiscale else None
    if pyr is not None:
        out["pyramid"] = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in pyr.stats.items()}
        out["pyramid_levels"] = [list(map(int, s)) for s in layer.level_shapes]
        out["refreshes"] = refresher.refreshes
    out["rss_after_open_mb"] = round(rss_mb())
    out["load_open"] = load()

    # 1:1 on a blurred tile and back (what a proofreader does)
    b = man["blurred"][0]
    th, tw = man["tile_shape"]
    probe.start()
    t1 = time.perf_counter()
    viewer.camera.center = (b["y0"] + th / 2, b["x0"] + tw / 2)
    viewer.camera.zoom = 1.0
    if pyr is not None:
        run_loop_until(pyr.idle, 60)
    run_for(0.5)
    out["t_zoom_1to1_s"] = round(time.perf_counter() - t1, 2)
    out["zoom_pause_ms"] = round(probe.stop(), 1)
    shot("1to1")
    viewer.reset_view()
    run_for(0.5)

    # ------------------------------------------------------------ QC
    checkpoint("qc")
    results: dict = {}
    if not args.skip_qc:
        from napari_emdeblur.widgets.qc import QCWidget

        qc = QCWidget(viewer)
        viewer.window.add_dock_widget(qc, name="Focus QC")
        qc.layer_combo.value = layer.name
        qc.tile_spin.value = 256
        run_for(0.3)
        probe.start()
        t2 = time.perf_counter()
        qc.run()
        out["qc_start_call_ms"] = round((time.perf_counter() - t2) * 1000, 1)  # layers created here
        done = run_loop_until(lambda: qc.idle, args.qc_timeout)
        out["t_qc_s"] = round(time.perf_counter() - t2, 2)
        probe.stop()
        out["qc_pause"] = pause_summary(probe)
        out["qc_finished"] = bool(done)
        r = qc.result
        if done and r is not None:
            nc, nr = qc.flagged_counts
            out["qc_unit"] = r.unit
            out["qc_flagged"] = {"correct": nc, "retake": nr}
            blurred = {Path(x["file"]).name: x["sigma"] for x in man["blurred"]}
            out["qc_blurred_total"] = len(blurred)
            if r.by_file:
                names = [Path(t.path).name for t in r.tiles]
                flagged = {names[i]: r.acquisition.decision_name(i) for i in np.flatnonzero(r.decisions)}
                out["qc_blurred_files_named"] = sum(n in flagged for n in blurred)
                out["qc_false_flags"] = sorted(n for n in flagged if n not in blurred)
                out["qc_blurred_decisions"] = {f"{n} (sigma {s})": r.acquisition.decision_name(names.index(n))
                                               for n, s in blurred.items()}
            else:
                out["qc_blurred_files_named"] = 0  # grid rows name no tile file
            qc.export_csv(Path(args.work) / f"{args.child}_qc.csv")
            results["qc"] = qc
        run_for(0.5)
        shot("qc")
        out["load_qc"] = load()
        out["rss_after_qc_mb"] = round(rss_mb())

    # ------------------------------------------------------------ correction
    checkpoint("correction")
    if not args.skip_correct and "qc" in results:
        import napari_emdeblur.widgets.correct as cw_mod

        cw = cw_mod.CorrectionWidget(viewer)
        viewer.window.add_dock_widget(cw, name="GRAN correction")
        cw.layer_combo.value = layer.name
        cw.tiles_combo.value = cw_mod.TILE_MODES[0]
        cw.device_combo.value = "cpu"
        limit = getattr(cw_mod, "MAX_LAZY_BYTES", None)
        nbytes = (layer.data[0] if layer.multiscale else layer.data).nbytes
        if limit is not None and nbytes > limit:
            cw_mod.MAX_LAZY_BYTES = 1 << 50  # the dock refuses lazy layers above 1 GiB: lifted (stand-in)
            out["correct_note"] = f"the dock's {limit / 2**30:.0f} GiB lazy-layer refusal lifted to run it at all"
        run_for(0.3)
        probe.start()
        t3 = time.perf_counter()
        cw.run()
        out["correct_start_call_ms"] = round((time.perf_counter() - t3) * 1000, 1)
        started = cw.worker is not None
        ok = run_loop_until(lambda: cw.idle, args.correct_budget) if started else True
        if not ok:
            cw.cancel()
            run_loop_until(lambda: cw.idle, 300)
        out["t_correct_s"] = round(time.perf_counter() - t3, 2)
        probe.stop()
        out["correct_pause"] = pause_summary(probe)
        out["correct_started"] = started
        out["correct_stopped_by_budget"] = not ok
        out["correct_tiles_done"] = len(getattr(cw, "reports", {}) or {})
        out["correct_status"] = str(cw.status.value)
        out["load_correct"] = load()
        run_for(0.5)
        shot("corrected")
    if pyr is not None:  # a warm reopen through viewer.open: the overview from the cache
        checkpoint("reopen")
        pyr.close()
        for lyr in list(viewer.layers):
            viewer.layers.remove(lyr)
        run_for(0.5)
        probe.start()
        t4 = time.perf_counter()
        layer2 = viewer.open(args.section, plugin="napari-emdeblur")[0]
        out["warm_viewer_open_s"] = round(time.perf_counter() - t4, 2)
        pyr2 = pyramid_of(layer2)
        run_loop_until(lambda: pyr2.complete, 60)
        run_for(0.5)
        out["warm_overview_s"] = round(time.perf_counter() - t4, 2)
        out["warm_open_pause_ms"] = round(probe.stop(), 1)
        out["warm_pyramid"] = dict(pyr2.stats)
        pyr2.close()
    out["peak_rss_mb"] = round(peak_rss_mb())
    checkpoint("done")
    return out


# ----------------------------------------------------------------------------- table and doc
# where a long pause was spent: its most sampled GUI-thread stack (PauseProbe stacks), by the first
# rule that matches it (substrings of "module:function" names)
PAUSE_KINDS = [
    ("layer controls", ("qt_layer_controls", "layer_controls.widgets", "qt_image_controls")),
    ("text glyphs", ("qt_font:_load_char", "text:render_to_texture", "text:_text_to_vbo", "matplotlib")),
    ("texture upload", ("glTexSubImage2D", "glTexImage2D")),
    ("layer list paint", ("_layer_delegate:paint", "qt_layer_model", "_svg:paint")),
    ("canvas draw", ("draw_visual", "vispy.gloo", "OpenGL.", "_vispy.canvas", "vispy.visuals", "vispy.color")),
    ("layer set-up", ("napari.layers", "napari.components", "napari._vispy", "napari.utils")),
    ("plugin", ("napari_emdeblur.qc", "napari_emdeblur.io", "napari_emdeblur.deblur")),
]


def pause_kind(site: str) -> str:
    """What a long pause's most sampled stack was doing (see PAUSE_KINDS); a stack whose innermost
    frame is the event loop itself was in Qt's C++ (layout, widget paint, buffer swap)."""
    inner = site.split(" < ")[0]
    if "run_loop_until" in inner or "qt_main_window:event" in inner:
        return "Qt (C++)"
    for kind, keys in PAUSE_KINDS:
        if any(k in site for k in keys):
            return kind
    return "other"


def pause_kinds(summary: dict | None, over_ms: float = 200.0) -> str | None:
    """'kind n, ...' for the pauses over ``over_ms`` of a phase (None without stacks): each pause by
    its most sampled stack in Python code, or 'Qt (C++)' when every sample was in the event loop."""
    if not summary or "pause_sites" not in summary:
        return None
    from collections import Counter

    def kind(sites: list) -> str:
        named = [pause_kind(site) for site, _ in sites]
        return next((k for k in named if k != "Qt (C++)"), "Qt (C++)") if named else "not sampled"

    kinds = Counter(kind(sites) for _, ms, sites in summary["pause_sites"] if ms > over_ms)
    text = ", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "none"
    n, total = sum(kinds.values()), summary.get("over_200ms", 0) if over_ms == 200.0 else None
    return text + (f" (the {n} longest of {total})" if total is not None and n < total else "")


ROWS = [
    ("section opened / layer added (s)",
     lambda r: f"{r.get('t_section_loaded_s')} / {r.get('t_layer_added_s')}" if "t_layer_added_s" in r else None),
    ("overview complete and painted (s)", lambda r: r.get("t_overview_painted_s")),
    ("first readable overview (s; correlation >= 0.8)", lambda r: r.get("t_first_readable_overview_s") or "not readable"),
    ("overview correlation with the area-averaged reference", lambda r: r.get("overview_corr")),
    ("overview detail correlation (minus 3 px blur)", lambda r: r.get("overview_detail_corr")),
    ("longest UI pause while opening (ms)", lambda r: (r.get("open_pause") or {}).get("longest_ms")),
    ("zoom to 1:1 on a blurred tile: settled (s) / longest pause (ms)",
     lambda r: f"{r.get('t_zoom_1to1_s')} / {r.get('zoom_pause_ms')}" if "t_zoom_1to1_s" in r else None),
    ("QC: unit", lambda r: r.get("qc_unit")),
    ("QC time (s)", lambda r: r.get("t_qc_s")),
    ("QC: creating the QC layers (ms, GUI thread)", lambda r: r.get("qc_start_call_ms")),
    ("QC longest UI pause (ms) / pauses > 200 ms",
     lambda r: f"{r['qc_pause']['longest_ms']} / {r['qc_pause']['over_200ms']}" if "qc_pause" in r else None),
    ("QC pauses > 200 ms by where they were spent", lambda r: pause_kinds(r.get("qc_pause"))),
    ("QC flagged (correct / retake)",
     lambda r: f"{r['qc_flagged']['correct']} / {r['qc_flagged']['retake']}" if "qc_flagged" in r else None),
    ("blurred files flagged by name / false flags",
     lambda r: f"{r.get('qc_blurred_files_named')} of {r.get('qc_blurred_total')} / {len(r.get('qc_false_flags', []))}"
     if "qc_flagged" in r else None),
    ("correction: tiles done in (s)",
     lambda r: f"{r.get('correct_tiles_done')} in {r.get('t_correct_s')}" + (" (budget)" if r.get("correct_stopped_by_budget") else "")
     if "t_correct_s" in r else None),
    ("correction longest UI pause (ms) / pauses > 200 ms",
     lambda r: f"{r['correct_pause']['longest_ms']} / {r['correct_pause']['over_200ms']}" if "correct_pause" in r else None),
    ("correction pauses > 200 ms by where they were spent", lambda r: pause_kinds(r.get("correct_pause"))),
    ("warm reopen with `viewer.open` (cache): call returned / overview complete (s)",
     lambda r: f"{r.get('warm_viewer_open_s')} / {r.get('warm_overview_s')}" if "warm_overview_s" in r else ""),
    ("bare repaint, same process (ms)", lambda r: r.get("bare_repaint_ms")),
    ("adding a 64 x 64 layer, same process: pause (ms)", lambda r: r.get("add_tiny_layer_pause_ms")),
    ("peak RSS, viewer process (MB)", lambda r: r.get("peak_rss_mb")),
    ("peak RSS, viewer + correction process, whole flow (MB; sampled every 0.2 s)",
     lambda r: r.get("peak_tree_rss_mb")),
    ("stopped", lambda r: r.get("aborted") or r.get("error") or ""),
    ("load average (start / open / QC / correction)",
     lambda r: f"{r.get('load_start')} / {r.get('load_open')} / {r.get('load_qc')} / {r.get('load_correct')}"),
]


def table(results: dict) -> str:
    names = list(results)
    head = {"plain": "plain `viewer.add_image(dask_array)`", "multiscale": "npe2 reader (multiscale)",
            "async": "npe2 reader, napari's asynchronous rendering on"}
    lines = ["| measure | " + " | ".join(head.get(n, n) for n in names) + " |", "|---|" + "---|" * len(names)]
    for label, get in ROWS:
        lines.append(f"| {label} | " + " | ".join(str(get(results[n])) for n in names) + " |")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    from napari_emdeblur.io.atomic import atomic_write_text

    doc = DOC.read_text() if DOC.exists() else f"# Whole sections in the viewer\n\n{START}\n{END}\n"
    if START not in doc:
        doc += f"\n{START}\n{END}\n"
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda m: f"{START}\n{text}\n{END}", doc, flags=re.S)
    atomic_write_text(DOC, new, overwrite=True)


# ----------------------------------------------------------------------------- parent
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "emdeblur-viewer-scale")
    ap.add_argument("--mfovs", type=int, default=6)
    ap.add_argument("--variants", default="plain,multiscale,async")
    ap.add_argument("--skip-qc", action="store_true")
    ap.add_argument("--skip-correct", action="store_true")
    ap.add_argument("--correct-budget", type=float, default=180.0)
    ap.add_argument("--qc-timeout", type=float, default=900.0)
    ap.add_argument("--overview-timeout", type=float, default=300.0)
    ap.add_argument("--rss-limit-mb", type=float, default=10000.0)
    ap.add_argument("--keep-cache", action="store_true", help="keep the pyramid cache (a warm open)")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="only re-write the doc's table from a run's --out JSON (e.g. after a change of presentation)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--section", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ref", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args), default=str), flush=True)
        return 0
    import shutil

    import msem_section

    args.work.mkdir(parents=True, exist_ok=True)
    section = args.work / ("section" if args.mfovs == 6 else f"section_{args.mfovs}")
    if not (section / "manifest.json").is_file():
        t = time.perf_counter()
        msem_section.build(section, args.mfovs, workers=2)
        print(f"section built in {time.perf_counter() - t:.0f} s", flush=True)
    man = json.loads((section / "manifest.json").read_text())
    if args.render is not None:
        return report(args, man, json.loads(args.render.read_text()), when=args.render.stat().st_mtime)
    ref_path = args.work / f"{section.name}_ref{REF_FACTOR}.npy"
    if not ref_path.is_file():
        t = time.perf_counter()
        reference_overview(section, REF_FACTOR, ref_path)
        print(f"reference overview (area mean x{REF_FACTOR} of every tile) in {time.perf_counter() - t:.0f} s", flush=True)
    cache = args.work / "cache"
    results: dict = {}
    for v in args.variants.split(","):
        if v in ("multiscale", "async") and not args.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)  # a cold open, as a new user sees it
        part = args.work / f"partial_{v}.json"
        part.unlink(missing_ok=True)
        env = dict(os.environ, QT_API=os.environ.get("QT_API", "pyqt6"), EMDEBLUR_CACHE=str(cache),
                   NAPARI_ASYNC="1" if v == "async" else "0",  # napari's experimental asynchronous rendering
                   PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", v, "--section", str(section),
               "--ref", str(ref_path), "--work", str(args.work), "--correct-budget", str(args.correct_budget),
               "--qc-timeout", str(args.qc_timeout), "--overview-timeout", str(args.overview_timeout),
               "--rss-limit-mb", str(args.rss_limit_mb)]
        cmd += [f for f, on in (("--skip-qc", args.skip_qc), ("--skip-correct", args.skip_correct)) if on]
        if not os.environ.get("DISPLAY"):
            cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1200x24"] + cmd
        t = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is not None:
            results[v] = json.loads(line[7:])
        else:
            results[v] = json.loads(part.read_text()) if part.is_file() else {}
            if "aborted" not in results[v]:
                results[v]["error"] = f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:] or ''}"
                print(p.stderr[-4000:], file=sys.stderr)
        results[v]["process_s"] = round(time.perf_counter() - t, 1)
        print(f"{v}: {results[v].get('aborted') or results[v].get('error') or 'done'} "
              f"in {results[v]['process_s']} s", flush=True)
    return report(args, man, results)


def report(args, man: dict, results: dict, when: float | None = None) -> int:
    """Print the table of ``results`` and write it into the doc (and the --out JSON)."""
    h, w = man["mosaic_shape"]
    intro = (f"Section: {man['n_tiles']} tiles of {man['tile_shape'][0]} x {man['tile_shape'][1]} px, "
             f"{len(man['missing'])} missing, {len(man['blurred'])} blurred; mosaic {h} x {w} = {h * w / 1e9:.2f} Gpx "
             f"(bounding box), {man['n_tiles'] * man['tile_shape'][0] * man['tile_shape'][1] / 1e9:.2f} Gpx of tiles. "
             f"Measured {time.strftime('%Y-%m-%d', time.localtime(when))} with `python benchmarks/viewer_scale.py` "
             f"(2 shared CPU cores, Xvfb + Mesa llvmpipe, nice 5).")
    text = intro + "\n\n" + table(results)
    print("\n" + text)
    if args.out and args.render is None:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    if not args.no_doc:
        write_doc(text)
        print(f"\nwrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
