"""Throughput of the acquisition pipeline against a plain single-threaded loop (one command).

    python benchmarks/pipeline.py                 # measure, print, write the table into docs/pipeline.md
    python benchmarks/pipeline.py --no-doc        # measure and print only
    python benchmarks/pipeline.py --thresholds    # the score table behind process.DEFAULT_THRESHOLDS

Workload: ``--tiles`` acquisition tiles of 1024 x 1024 uint8 (the real sSEM frames of
``/work/shared/data/drosophila_vnc_sstem``, flipped/rotated copies to make up the number; EM-like
synthetic texture if the data set is absent), written as TIFF into a scratch folder. 2 % of them
are blurred (Gaussian sigma 1.3 px) so that they fall between the thresholds and get corrected.

Modes, each timed from start to last output (model loading included), on the same files:

* ``plain loop``: ``load_section`` -> ``score_tiles(workers=1)`` -> decide -> (``correct_image``
  with ``torch.set_num_threads(1)`` -> ``save_image``), one tile after the other: the reference.
* ``watch --once``: the pipeline generator in this process (journal, exactly-once commits, input
  sha256, reports), default threading (scoring threads and torch threads over all cores), and
  the same with ``--threads 1``.
* ``batch LocalCluster``: :func:`~napari_emdeblur.pipeline.batch.batch` on a LocalCluster of
  ``--workers`` processes x 1 thread (cluster started before the clock; each worker imports
  torch and loads the model on its first correction, inside the timing).

Each mode runs twice: scoring only (``correct=False``) and score + correct. Ratios are
throughput / plain-loop throughput of the same workload in the same run.
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
DATA = Path("/work/shared/data/drosophila_vnc_sstem")
DOC = ROOT / "docs" / "pipeline.md"
START, END = "<!-- BENCHMARK:START -->", "<!-- BENCHMARK:END -->"


def source_frames() -> tuple[list[np.ndarray], str]:
    from napari_emdeblur.core.io import load_section

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


def make_workload(folder: Path, n: int) -> tuple[list[Path], list[Path], str]:
    from scipy import ndimage

    from napari_emdeblur.core.io import save_image

    frames, what = source_frames()
    n_blur = max(1, round(0.02 * n))
    blur_idx = set(np.linspace(0, n - 1, n_blur + 2).round().astype(int)[1:-1])
    files, blurred = [], []
    for k in range(n):
        f = frames[k % len(frames)]
        v = k // len(frames)
        f = np.rot90(f, v % 4) if v % 8 < 4 else np.rot90(f[:, ::-1], v % 4)
        if k in blur_idx:
            f = np.clip(np.round(ndimage.gaussian_filter(f.astype(np.float32), 1.3)), 0, 255).astype(np.uint8)
        p = folder / "acq" / f"tile_{k:04d}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        save_image(p, np.ascontiguousarray(f))
        files.append(p)
        if k in blur_idx:
            blurred.append(p)
    return files, blurred, what


def thresholds_between(files, blurred) -> tuple[float, float]:
    from napari_emdeblur.core.focus import score_tiles
    from napari_emdeblur.core.io import load_section

    sc = {f: float(np.nanmedian(score_tiles(load_section(f).data, 256))) for f in files}
    sharp = min(v for f, v in sc.items() if f not in blurred)
    soft = max(sc[f] for f in blurred)
    assert sharp > soft, (sharp, soft)
    return (sharp + soft) / 2, min(sc[f] for f in blurred) / 3


def get_weights(tmp: Path) -> tuple[str, str]:
    from napari_emdeblur.model.weights import load_model, save_model, shipped_weights_path

    try:
        _, card = load_model(None)
        return str(shipped_weights_path()), f"shipped weights ({card.get('weights_file', 'gran_em_v1.pt')})"
    except ValueError:
        import torch

        from napari_emdeblur.model.gran import GRAN, GRANConfig

        torch.manual_seed(0)
        p = tmp / "gran_fresh.pt"
        save_model(GRAN(GRANConfig()), p)
        return str(p), "a freshly initialised GRAN (default architecture; shipped weights not trained yet)"


# --------------------------------------------------------------------------- the modes
def plain_loop(files, out: Path, th, weights: str | None) -> int:
    from napari_emdeblur.core import decisions
    from napari_emdeblur.core.focus import score_tiles
    from napari_emdeblur.core.io import load_section, save_image

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

            from napari_emdeblur.model.infer import InferenceParams, correct_image
            from napari_emdeblur.model.weights import load_model

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-doc", action="store_true", help="do not write the table into docs/pipeline.md")
    ap.add_argument("--thresholds", action="store_true", help="print the score table behind DEFAULT_THRESHOLDS")
    args = ap.parse_args(argv)
    if args.thresholds:
        return threshold_table()

    import torch

    from napari_emdeblur.pipeline.process import PipelineConfig

    tmp = Path(tempfile.mkdtemp(prefix="emdeblur-bench-"))
    try:
        files, blurred, what = make_workload(tmp, args.tiles)
        th = thresholds_between(files, blurred)
        weights, wdesc = get_weights(tmp)
        mpx = sum(1024 * 1024 for _ in files) / 1e6
        n = len(files)
        print(f"{n} tiles ({mpx:.0f} Mpx) from {what}; {len(blurred)} to correct; model: {wdesc}")
        results = []
        torch_threads = torch.get_num_threads()

        def add(mode, work, secs, note=""):
            results.append((mode, work, secs, note))
            print(f"  {mode:<28} {work:<16} {secs:7.2f} s  {n / secs:7.1f} tiles/s  {mpx / secs:7.1f} Mpx/s {note}")

        # plain single-threaded loop
        s, _ = timed(lambda: plain_loop(files, tmp / "plain0", th, None))
        add("plain loop (1 thread)", "score", s)
        s, nc = timed(lambda: plain_loop(files, tmp / "plain1", th, weights))
        torch.set_num_threads(torch_threads)
        add("plain loop (1 thread)", "score+correct", s, f"({nc} corrected)")

        base = dict(correct_threshold=th[0], retake_threshold=th[1], weights=weights, device="cpu",
                    stable_seconds=0.0)
        acq = files[0].parent
        s, summ = timed(lambda: run_watch(acq, tmp / "w0", PipelineConfig(correct=False, **base)))
        add("watch --once", "score", s)
        s, summ = timed(lambda: run_watch(acq, tmp / "w1", PipelineConfig(**base)))
        add("watch --once", "score+correct", s, f"({summ.corrected} corrected)")
        s, summ = timed(lambda: run_watch(acq, tmp / "w2", PipelineConfig(correct=False, threads=1, **base)))
        add("watch --once --threads 1", "score", s)
        s, summ = timed(lambda: run_watch(acq, tmp / "w3", PipelineConfig(threads=1, **base)))
        torch.set_num_threads(torch_threads)
        add("watch --once --threads 1", "score+correct", s, f"({summ.corrected} corrected)")

        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            s, summ = timed(lambda: run_batch(acq, tmp / "b0", PipelineConfig(correct=False, **base), client))
            add(f"batch LocalCluster {args.workers}x1", "score", s)
            s, summ = timed(lambda: run_batch(acq, tmp / "b1", PipelineConfig(**base), client))
            add(f"batch LocalCluster {args.workers}x1", "score+correct", s, f"({summ.corrected} corrected)")

        table = format_table(results, n, mpx, what, wdesc, len(blurred))
        print()
        print(table)
        if not args.no_doc:
            write_doc(table)
            print(f"\nwritten into {DOC.relative_to(ROOT)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def format_table(results, n, mpx, what, wdesc, n_blur) -> str:
    ref = {work: secs for mode, work, secs, _ in results if mode.startswith("plain")}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {os.cpu_count()} CPU cores "
        f"(load average {load:.1f} at the end: the machine was shared), CPU only; "
        f"{n} tiles of 1024 x 1024 uint8 ({mpx:.0f} Mpx) from {what}, {n_blur} of them ({100 * n_blur / n:.0f} %) "
        f"blurred and corrected by {wdesc}.",
        "",
        "| mode | work | seconds | tiles/s | Mpx/s | x plain loop |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for mode, work, secs, _ in results:
        lines.append(
            f"| {mode} | {work} | {secs:.2f} | {n / secs:.1f} | {mpx / secs:.1f} | {ref[work] / secs:.2f} |"
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

    from napari_emdeblur.core.focus import score_tiles

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
