"""Throughput of the acquisition pipeline against a plain single-threaded loop (one command).

    python benchmarks/pipeline.py                 # measure, print, write the table into docs/pipeline.md
    python benchmarks/pipeline.py --no-doc        # measure and print only
    python benchmarks/pipeline.py --thresholds    # the score table behind qc.thresholds.DEFAULT_THRESHOLDS

Workloads (real sSEM frames of ``../shared/data/drosophila_vnc_sstem`` (or ``$EMDEBLUR_SHARED_DATA``); EM-like synthetic
texture if the data set is absent), written as TIFF into a scratch folder:

* ``--tiles`` (100) tiles of 1024 x 1024 uint8 (flipped/rotated copies of the frames), 2 % of them
  blurred (Gaussian sigma 1.3 px) so that they fall between the thresholds and get corrected;
* ``--big-tiles`` (48) tiles of ``--big-side`` (2880: 8.3 Mpx, a MultiSEM beam image is ~8-13
  Mpx) assembled from 3 x 3 frames, scored only (the issue's target: scoring keeps up with a
  61-beam scope, >= 25 tiles/s of ~8 Mpx on 2 cores).

Modes, each timed from start to last output (model loading included), on the same files:

* ``plain loop``: ``load_section`` -> ``score_tiles(workers=1)`` -> decide -> (``correct_image``
  with ``torch.set_num_threads(1)`` -> ``save_image``), one tile after the other: the reference.
* ``watch --once``: the pipeline generator in this process (journal, exactly-once commits, input
  sha256, reports), default threading (one tile thread per core, each single-threaded), and
  ``--threads 1`` (one tile thread: the pipeline's overhead against the same single core); on
  the large tiles also ``--no-hash`` (no sha256 of the inputs).
* ``batch LocalCluster``: :func:`~napari_emdeblur.pipeline.batch.batch` on a LocalCluster of
  ``--workers`` processes x 1 thread (cluster started before the clock; each worker imports
  torch and loads the model on its first correction, inside the timing).

Each mode runs ``--repeat`` (3) times and the fastest run is reported (a shared machine disturbs
single runs a lot). Ratios are throughput / plain-loop throughput of the same workload in the
same run. The load average is recorded: on a shared machine the numbers move with it.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA = Path(os.environ.get("EMDEBLUR_SHARED_DATA", SHARED)) / "drosophila_vnc_sstem"
DOC = ROOT / "docs" / "pipeline.md"
START, END = "<!-- BENCHMARK:START -->", "<!-- BENCHMARK:END -->"


def source_frames() -> tuple[list[np.ndarray], str]:
    from napari_emdeblur.io import load_section

    files = sorted(DATA.glob("stack*/*.tif"))
    if files:
        return [np.asarray(load_section(f).data) for f in files], f"{len(files)} real sSEM frames ({DATA.name})"
    from scipy import ndimage

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(8):
        x = ndimage.gaussian_filter(rng.normal(size=(1024, 1024)), 3.0)
        x = np.abs(ndimage.sobel(x, 0)) + np.abs(ndimage.sobel(x, 1))
        frames.append(np.clip(200 - 150 * x / x.max() + rng.normal(0, 6, x.shape), 0, 255).astype(np.uint8))
    return frames, "synthetic EM-like texture (data set absent)"


def _mosaic(frames: list[np.ndarray], k: int, side: int) -> np.ndarray:
    """A ``side`` x ``side`` tile assembled from real frames (3 x 3 of 1024 px for 2880)."""
    f0 = frames[0]
    ny, nx = -(-side // f0.shape[0]), -(-side // f0.shape[1])
    rows = []
    for i in range(ny):
        rows.append(np.concatenate(
            [np.rot90(frames[(k * ny * nx + i * nx + j) % len(frames)], k % 4) for j in range(nx)], axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:side, :side])


def make_workload(folder: Path, n: int, side: int = 1024) -> tuple[list[Path], list[Path], str]:
    from scipy import ndimage

    from napari_emdeblur.io import save_image

    frames, what = source_frames()
    n_blur = max(1, round(0.02 * n))
    blur_idx = set(np.linspace(0, n - 1, n_blur + 2).round().astype(int)[1:-1])
    files, blurred = [], []
    for k in range(n):
        if side == 1024:
            f = frames[k % len(frames)]
            v = k // len(frames)
            f = np.rot90(f, v % 4) if v % 8 < 4 else np.rot90(f[:, ::-1], v % 4)
        else:
            f = _mosaic(frames, k, side)
        if k in blur_idx:
            f = np.clip(np.round(ndimage.gaussian_filter(f.astype(np.float32), 1.3)), 0, 255).astype(np.uint8)
        p = folder / f"acq{side}" / f"tile_{k:04d}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        save_image(p, np.ascontiguousarray(f))
        files.append(p)
        if k in blur_idx:
            blurred.append(p)
    return files, blurred, what


def thresholds_between(files, blurred) -> tuple[float, float]:
    from napari_emdeblur.io import load_section
    from napari_emdeblur.qc.focus import score_tiles

    sc = {f: float(np.nanmedian(score_tiles(load_section(f).data, 256))) for f in files}
    sharp = min(v for f, v in sc.items() if f not in blurred)
    soft = max(sc[f] for f in blurred)
    assert sharp > soft, (sharp, soft)
    return (sharp + soft) / 2, min(sc[f] for f in blurred) / 3


def get_weights(tmp: Path) -> tuple[str, str]:
    from napari_emdeblur.deblur.weights import load_model, save_model, shipped_weights_path

    try:
        _, card = load_model(None)
        return str(shipped_weights_path()), f"shipped weights ({card.get('weights_file', 'gran_em_v1.pt')})"
    except ValueError:
        import torch

        from napari_emdeblur.deblur.nets.gran import GRAN, GRANConfig

        torch.manual_seed(0)
        p = tmp / "gran_fresh.pt"
        save_model(GRAN(GRANConfig()), p)
        return str(p), "a freshly initialised GRAN (default architecture; shipped weights not trained yet)"


# --------------------------------------------------------------------------- the modes
def plain_loop(files, out: Path, th, weights: str | None) -> int:
    from napari_emdeblur.io import load_section, save_image
    from napari_emdeblur.qc import decisions
    from napari_emdeblur.qc.focus import score_tiles

    model = None
    n_corr = 0
    for f in files:
        sec = load_section(f)
        img = np.asarray(sec.data)
        s = score_tiles(img, 256, workers=1)
        score = float(np.nanmedian(s))
        d = int(decisions.classify(np.array([score]), th[0], th[1])[0])
        if d == decisions.CORRECT and weights:
            import torch

            from napari_emdeblur.deblur.infer import InferenceParams, correct_image
            from napari_emdeblur.deblur.weights import load_model

            if model is None:
                torch.set_num_threads(1)
                model, _ = load_model(weights, device="cpu")
            c = correct_image(img, model, InferenceParams(device="cpu"))
            out.mkdir(parents=True, exist_ok=True)
            save_image(out / (f.stem + ".tif"), c, overwrite=True)
            n_corr += 1
    return n_corr


def run_watch(acq: Path, out: Path, cfg) -> object:
    from napari_emdeblur.pipeline.watch import watch

    return list(watch(acq, out, cfg, once=True))[-1]


def run_batch(acq: Path, out: Path, cfg, client) -> object:
    from napari_emdeblur.pipeline.batch import batch

    return list(batch([acq], out, cfg, client=client))[-1]


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


_RUN = [0]


def best_of(n: int, fn):
    """Fastest of ``n`` runs of ``fn(k)`` (k = a fresh run number, e.g. for a fresh OUTDIR):
    on a shared machine the minimum is the least disturbed measurement."""
    best = None
    for _ in range(max(1, n)):
        _RUN[0] += 1
        s, r = timed(lambda: fn(_RUN[0]))
        if best is None or s < best[0]:
            best = (s, r)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=100, help="1 Mpx tiles (default 100)")
    ap.add_argument("--big-tiles", type=int, default=48, help="large tiles, scored only (default 48; 0 = none)")
    ap.add_argument("--big-side", type=int, default=2880, help="side of the large tiles (default 2880: 8.3 Mpx)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="runs per mode, the fastest is reported (default 3)")
    ap.add_argument("--no-doc", action="store_true", help="do not write the table into docs/pipeline.md")
    ap.add_argument("--thresholds", action="store_true", help="print the score table behind DEFAULT_THRESHOLDS")
    args = ap.parse_args(argv)
    if args.thresholds:
        return threshold_table()

    import torch

    from napari_emdeblur.pipeline.config import PipelineConfig

    tmp = Path(tempfile.mkdtemp(prefix="emdeblur-bench-"))
    loads = []
    try:
        workloads = [(args.tiles, 1024, True)]
        if args.big_tiles:
            workloads.append((args.big_tiles, args.big_side, False))
        weights, wdesc = get_weights(tmp)
        results = []
        torch_threads = torch.get_num_threads()
        descr = []
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        try:
            for n_req, side, with_correct in workloads:
                files, blurred, what = make_workload(tmp, n_req, side)
                th = thresholds_between(files, blurred)
                n = len(files)
                mpx = n * side * side / 1e6
                size = f"{side}²"
                descr.append(f"{n} tiles of {side} x {side} uint8 ({mpx:.0f} Mpx)" + (
                    f", {len(blurred)} of them ({100 * len(blurred) / n:.0f} %) blurred and corrected"
                    if with_correct else ", scored only"))
                print(f"{n} tiles of {side}² ({mpx:.0f} Mpx) from {what}; {len(blurred)} blurred")
                works = [("score", False)] + ([("score+correct", True)] if with_correct else [])

                def add(mode, work, secs, note=""):
                    results.append((size, mode, work, secs, n, mpx))
                    loads.append(os.getloadavg()[0])
                    print(f"  {size:<6} {mode:<28} {work:<14} {secs:7.2f} s  {n / secs:7.1f} tiles/s  "
                          f"{mpx / secs:7.1f} Mpx/s {note}")

                for work, corr in works:
                    s, nc = best_of(args.repeat, lambda k: plain_loop(files, tmp / f"plain{k}", th,
                                                                       weights if corr else None))
                    torch.set_num_threads(torch_threads)
                    add("plain loop (1 thread)", work, s, f"({nc} corrected)" if corr else "")
                base = dict(correct_threshold=th[0], retake_threshold=th[1], weights=weights, device="cpu",
                            stable_seconds=0.0)
                acq = files[0].parent
                from napari_emdeblur.pipeline.session import tile_workers

                auto = tile_workers(PipelineConfig(**base))
                modes = [(f"watch --once ({auto} tile threads)", 0, True), ("watch --once --threads 1", 1, True)]
                if not with_correct:
                    modes.append((f"watch --once --no-hash ({auto} tile threads)", 0, False))
                for label, thr, hsh in modes:
                    for work, corr in works:
                        s, summ = best_of(args.repeat, lambda k: run_watch(
                            acq, tmp / f"w{k}", PipelineConfig(correct=corr, threads=thr, hash_inputs=hsh, **base)))
                        torch.set_num_threads(torch_threads)
                        assert summ.done == n, summ.line()
                        add(label, work, s, f"({summ.corrected} corrected)" if corr else "")
                for work, corr in works:
                    s, summ = best_of(args.repeat, lambda k: run_batch(
                        acq, tmp / f"b{k}", PipelineConfig(correct=corr, **base), client))
                    assert summ.done == n, summ.line()
                    add(f"batch LocalCluster {args.workers}x1", work, s, f"({summ.corrected} corrected)" if corr else "")
                shutil.rmtree(acq, ignore_errors=True)
        finally:
            client.close()
            cluster.close()

        table = format_table(results, what, wdesc, descr, loads, args.repeat)
        print()
        print(table)
        if not args.no_doc:
            write_doc(table)
            print(f"\nwritten into {DOC.relative_to(ROOT)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def format_table(results, what, wdesc, descr, loads, repeat) -> str:
    ref = {(size, work): secs for size, mode, work, secs, _, _ in results if mode.startswith("plain")}
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} with {os.cpu_count()} CPU cores, "
        f"CPU only, load average (1 min) {min(loads):.1f}-{max(loads):.1f} during the run "
        f"(the machine was shared with other jobs); tiles from {what}: {'; '.join(descr)}; "
        f"corrections by {wdesc}. Each row is the fastest of {repeat} runs (so one-time costs such as "
        f"imports and the model load mostly drop out); ratios are against the plain loop on the same "
        f"files in the same run.",
        "",
        "| tiles | mode | work | seconds | tiles/s | Mpx/s | x plain loop |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for size, mode, work, secs, n, mpx in results:
        lines.append(
            f"| {size} | {mode} | {work} | {secs:.2f} | {n / secs:.1f} | {mpx / secs:.1f} | "
            f"{ref[(size, work)] / secs:.2f} |"
        )
    return "\n".join(lines)


def write_doc(table: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Pipeline\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda m: f"{START}\n{table}\n{END}", text, flags=re.S)
    tmp = DOC.with_name(f".{DOC.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, DOC)


def threshold_table() -> int:
    """Subtile-median autocorr scores of the real frames, sharp and Gaussian-blurred (+ read noise)."""
    from scipy import ndimage

    from napari_emdeblur.qc.focus import score_tiles

    frames, what = source_frames()
    rng = np.random.default_rng(0)
    print(f"autocorr, median of 256-px subtiles, over {what}")
    print("| blur sigma (px) | min | median | max |\n| ---: | ---: | ---: | ---: |")
    for s in (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0):
        vals = []
        for f in frames:
            b = f
            if s:
                b = ndimage.gaussian_filter(f.astype(np.float32), s) + rng.normal(0, 4, f.shape)
                b = np.clip(np.round(b), 0, 255).astype(np.uint8)
            vals.append(float(np.nanmedian(score_tiles(b, 256))))
        print(f"| {s:g} | {min(vals):.4f} | {np.median(vals):.4f} | {max(vals):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
