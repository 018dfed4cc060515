"""Smoke test of benchmarks/restoration.py on one real crop (classical oracles + GRAN)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    path = REPO / "benchmarks" / "restoration.py"
    spec = importlib.util.spec_from_file_location("restoration_benchmark", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def windows(bench, shared_data):
    return bench.sample_windows(1, seed=5, data=shared_data)


def _gran_path() -> Path | None:
    from napari_emdeblur.deblur.weights import shipped_weights_path

    for p in (shipped_weights_path(), REPO / "runs" / "gran_em_v1" / "model_best.pt"):
        if p.is_file() and p.with_suffix(".json").is_file():
            return p
    return None


def test_windows_are_held_out_and_seeded(bench, windows, shared_data):
    label, win = windows[0]
    assert win.shape == (bench.WIN, bench.WIN) and win.dtype == np.float32
    assert label.startswith(bench.HELD_OUT[0])
    assert 0.0 <= win.min() and win.max() <= 1.0 and win.std() > 0.02
    again = bench.sample_windows(1, seed=5, data=shared_data)
    assert np.array_equal(again[0][1], win)


def test_richardson_lucy_matches_skimage(bench, windows):
    from skimage.restoration import richardson_lucy

    cond = bench.conditions()[1]  # Gaussian sigma 2, low noise
    psf = cond.deg.psf().astype(np.float64)
    obs = bench.degrade_window(windows[0][1], cond, np.random.default_rng(0)).astype(np.float64) / 255.0
    mine = [u for _, u in bench.richardson_lucy_iter(obs, psf, 10)][-1]
    P = 100  # skimage pads with zeros: compare far from its borders
    ref = richardson_lucy(np.pad(obs, P, mode="reflect"), psf, num_iter=10, clip=False)[P:-P, P:-P]
    assert np.abs(bench.centre(mine) - bench.centre(ref)).max() < 1e-5


def test_evaluate_and_render(bench, windows, tmp_path, shared_data):
    from napari_emdeblur.deblur.weights import load_model

    gp = _gran_path()
    if gp is None:
        pytest.skip("no GRAN weights (shipped or runs/gran_em_v1) available")
    model, card = load_model(gp)
    all_conds = bench.conditions()
    conds = [all_conds[1], all_conds[-2], all_conds[-1]]  # Gaussian 2 low noise, sharp low noise, clean
    records, examples = bench.evaluate(windows, conds, {"unet": None, "gran": model}, (1.0, 0.6), seed=3,
                                       log=lambda *_: None)
    get = {(r["cond"], r["method"]): r for r in records}
    # the true-PSF oracles must beat the blurred input on a moderate Gaussian blur
    assert get[(0, "wiener")]["psnr"] > get[(0, "input")]["psnr"] + 0.5
    assert get[(0, "rl")]["psnr"] > get[(0, "input")]["psnr"] + 0.5
    assert 1 <= get[(0, "rl")]["param"] <= bench.RL_MAX_ITER
    assert np.isfinite(get[(0, "gran")]["psnr"]) and 0 < get[(0, "gran")]["ssim"] <= 1
    assert np.isnan(get[(0, "unet")]["psnr"])  # missing model -> not available
    assert get[(2, "input")]["psnr"] == float("inf")  # clean: input is the ground truth
    summary = bench.summarise(records, conds)
    t = summary["targets"]
    assert np.isclose(t["a"], get[(0, "gran")]["psnr"] - max(get[(0, "wiener")]["psnr"], get[(0, "rl")]["psnr"]))
    assert np.isclose(t["c"], get[(1, "gran")]["psnr"] - get[(1, "input")]["psnr"])
    assert np.isnan(t["b"]) and t["b_model"] == "gran"  # no equal-budget GRAN, no U-Net

    fig = tmp_path / "img" / "restoration_examples.png"
    bench.figure_examples(examples, conds, records, fig, show=(0, 1))
    assert fig.stat().st_size > 10_000
    ctx = dict(
        conds=conds, summary=summary, oracle=bench.oracle_params(records, conds), n_crops=1, seed=3, n_tune=0,
        unsharp=(1.0, 0.6), gran_info=dict(path=str(gp), sha="abc", card=card), unet_info=None,
        unet_missing="not found", deepfocus=[], throughput=[], tp_size=2048, load=0.0, cuda=False, cmd="",
        date="today", machine="test", elapsed=1.0,
        tiling=bench.tiling_check(model, 640, data=shared_data),
    )
    text = bench.render(ctx)
    out = tmp_path / "restoration.md"
    bench.write_atomic(text, out)
    md = out.read_text()
    assert "| Gaussian sigma 2, low noise |" in md
    assert "not available (not found)" in md
    assert "∞ / 1.000" in md
    assert f"{t['a']:+.2f} dB" in md
    assert list(tmp_path.glob(".*.tmp")) == []
    tiling = ctx["tiling"]
    assert [(r["tile"], r["overlap"]) for r in tiling] == [(512, 32), (256, 32)]
    # blended tiles stay close to the whole-image pass (a seam or misplaced tile would not)
    assert all(r["max"] <= 12 and r["mean"] < 1.0 for r in tiling), tiling
    assert "## Tiled vs. whole-image output" in md and "| 256 / 32 |" in md


def test_target_b_uses_the_equal_budget_gran_when_given(bench):
    conds = bench.conditions()
    psnrs = {"input": 18.0, "unsharp": 17.5, "wiener": 21.0, "rl": 20.8, "unet": 20.5, "gran_eq": 20.9, "gran": 21.4}
    records = [dict(cond=ci, crop=0, method=m, psnr=v + (0.0 if c.blurred else 8.0), ssim=0.5, param=None)
               for ci, c in enumerate(conds) for m, v in psnrs.items()]
    t = bench.summarise(records, conds)["targets"]
    assert t["b_model"] == "gran_eq"
    assert np.isclose(t["b"], 0.4) and np.isclose(t["b_shipped"], 0.9)
    for r in records:
        if r["method"] == "gran_eq":
            r["psnr"] = np.nan  # not given: (b) falls back to the shipped GRAN
    t = bench.summarise(records, conds)["targets"]
    assert t["b_model"] == "gran" and np.isclose(t["b"], 0.9)
