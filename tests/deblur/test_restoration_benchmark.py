"""Smoke test of benchmarks/restoration.py on one real crop per domain (oracles, estimated Wiener, models)."""

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
    return {d: bench.sample_windows(1, seed=5, folders=f, data=shared_data) for d, f in bench.DOMAINS.items()}


def test_windows_are_held_out_and_seeded(bench, windows, shared_data):
    assert set(windows) == {"ssTEM", "SBEM", "FIB-SEM"}
    for dom, ((label, win),) in windows.items():
        assert win.shape == (bench.WIN, bench.WIN) and win.dtype == np.float32
        assert any(label.startswith(f.split("*")[0].split("[")[0]) for f in bench.DOMAINS[dom]), label
        assert 0.0 <= win.min() and win.max() <= 1.0 and win.std() > 0.02
    again = bench.sample_windows(1, seed=5, folders=bench.DOMAINS["SBEM"], data=shared_data)
    assert np.array_equal(again[0][1], windows["SBEM"][0][1])
    assert "sbem_rodent_cdeep3m/08" in windows["SBEM"][0][0] or "sbem_rodent_cdeep3m/09" in windows["SBEM"][0][0]


def test_richardson_lucy_matches_skimage(bench, windows):
    from skimage.restoration import richardson_lucy

    cond = bench.conditions()[1]  # Gaussian sigma 2, low noise
    psf = cond.deg.psf().astype(np.float64)
    obs = bench.degrade_window(windows["ssTEM"][0][1], cond, np.random.default_rng(0)).astype(np.float64) / 255.0
    mine = [u for _, u in bench.richardson_lucy_iter(obs, psf, 10)][-1]
    P = 100  # skimage pads with zeros: compare far from its borders
    ref = richardson_lucy(np.pad(obs, P, mode="reflect"), psf, num_iter=10, clip=False)[P:-P, P:-P]
    assert np.abs(bench.centre(mine) - bench.centre(ref)).max() < 1e-5


def test_evaluate_summarise_and_render(bench, windows, tmp_path, shared_data):
    from napari_emdeblur.deblur.shipped import shipped_weights_path

    models = {"sbgran": bench.load(shipped_weights_path()), "blind": bench.load(shipped_weights_path("gran_em_v1")),
              "equal": None, "nograph": None}
    all_conds = bench.conditions()
    conds = [all_conds[1], all_conds[4], all_conds[-2], all_conds[-1]]  # Gaussian 2, astig, sharp, clean
    wins = {d: windows[d] for d in ("ssTEM", "FIB-SEM")}
    records, examples = bench.evaluate(wins, conds, models, seed=3, ensemble=0, log=lambda *_: None)
    get = {(r["domain"], r["cond"], r["method"]): r for r in records}
    for d in wins:
        # the true-PSF oracles and the estimated-PSF Wiener beat the blurred input on a moderate Gaussian blur
        for m in ("wiener", "rl", "wiener_est"):
            assert get[(d, 0, m)]["psnr"] > get[(d, 0, "input")]["psnr"] + 0.3, (d, m)
        assert 1 <= get[(d, 0, "rl")]["param"] <= bench.RL_MAX_ITER
        assert np.isfinite(get[(d, 0, "sbgran")]["psnr"]) and 0 < get[(d, 0, "sbgran")]["ssim"] <= 1
        assert np.isnan(get[(d, 0, "nograph")]["psnr"]) and np.isnan(get[(d, 0, "sbgran_ens")]["psnr"])
        assert get[(d, 3, "input")]["psnr"] == float("inf")  # clean: the input against itself
        assert np.isnan(get[(d, 3, "wiener")]["psnr"])
    S = bench.summarise(records, conds)
    T = S["targets"]
    d = "FIB-SEM"
    expect = np.mean([get[(d, ci, "sbgran")]["psnr"] for ci in (0, 1)]) - np.mean(
        [get[(d, ci, "wiener")]["psnr"] for ci in (0, 1)])
    assert np.isclose(T["domains"][d]["vs_oracle_wiener"], expect)
    assert np.isclose(T["domains"][d]["astig_vs_oracle_wiener"],
                      get[(d, 1, "sbgran")]["psnr"] - get[(d, 1, "wiener")]["psnr"])
    assert np.isclose(T["domains"][d]["clean_out_vs_in"], get[(d, 3, "sbgran")]["psnr"])
    assert np.isnan(T["graph_on_minus_off"])  # no ablation weights given

    fig = tmp_path / "img" / "restoration_examples.png"
    bench.figure_examples(examples, conds, records, fig, show=(0, 1))
    assert fig.stat().st_size > 10_000
    ctx = dict(
        conds=conds, summary=S, records=records, n_crops=1, seed=3, beta=bench.WIENER_BETA, models=models,
        deepfocus=[], throughput=[], tp_size=2048, load=0.0, cuda=False, weights_mb=1.4, cmd="", date="today",
        machine="test", elapsed=1.0, tiling=bench.tiling_check(models["sbgran"]["model"], 640, data=shared_data),
        ref_noise=bench.reference_noise(wins, records, conds),
    )
    rn = ctx["ref_noise"]
    for d in wins:  # the oracle stays below the ceiling the reference's own noise sets, and the +1 dB asks a cut
        r = rn[d]
        assert 0.002 < r["sigma"] < 0.2 and r["sigma_lo"] <= r["sigma"] <= r["sigma_hi"]
        assert r["oracle_db"] < r["ceiling"] and 0 < r["noise_share"] < 1
        assert r["cut_db"] > 1.0
    out = tmp_path / "restoration.md"
    bench.write_atomic(bench.render(ctx), out)
    md = out.read_text()
    assert "### FIB-SEM: per condition" in md and "| Gaussian sigma 2, low noise |" in md
    assert f"{T['domains'][d]['vs_oracle_wiener']:+.2f} dB" in md
    assert "| equal budget, graph on | not available |" in md
    assert "### How far any method can go" in md and f"| FIB-SEM | {255 * rn['FIB-SEM']['sigma']:.1f} (" in md
    assert list(tmp_path.glob(".*.tmp")) == []
    tiling = ctx["tiling"]
    assert [(r["tile"], r["overlap"]) for r in tiling] == [(512, 32), (256, 32)]
    # blended tiles stay close to the whole-image pass (a seam or a misplaced tile would not)
    # the semi-blind model estimates the PSF per window, so windows differ a little more than a blind model's
    # would; a seam would show as large errors along window borders (p999)
    assert all(r["p999"] <= 24 and r["mean"] < 2.5 for r in tiling), tiling


def test_reference_noise_ceiling_and_the_cut_a_target_needs(bench, windows):
    """Exact arithmetic on a hand-made oracle record: the ceiling is the reference noise's PSNR, and a target
    above it needs an infinite cut."""
    from napari_emdeblur.qc.psf import estimate_psf_tiles

    conds = [bench.conditions()[1]]
    wins = {"SBEM": windows["SBEM"]}
    ref = np.rint(windows["SBEM"][0][1].astype(np.float64) * 255.0) / 255.0
    n2 = float(estimate_psf_tiles(ref[None]).noise[0]) ** 2
    ceiling = -10 * np.log10(n2)
    rec = lambda p: [dict(domain="SBEM", cond=0, crop=0, method="wiener", psnr=p, ssim=0.5, param=None)]  # noqa: E731
    r = bench.reference_noise(wins, rec(ceiling - 3.0), conds)["SBEM"]
    assert np.isclose(r["ceiling"], ceiling) and np.isclose(r["oracle_db"], ceiling - 3.0)
    m_o = n2 * 10**0.3
    assert np.isclose(r["noise_share"], n2 / m_o)
    assert np.isclose(r["cut_db"], 10 * np.log10((m_o - n2) / (m_o / 10**0.1 - n2)))
    assert bench.reference_noise(wins, rec(ceiling - 0.5), conds)["SBEM"]["cut_db"] == np.inf


def test_validation_logs_compare_the_runs_at_common_steps(bench, tmp_path):
    """Graph on vs off from two runs' metrics.csv: common validation steps only, a resumed run's repeated
    step counts once (its last row), training rows ignored."""
    on, off = tmp_path / "on", tmp_path / "off"
    for d, rows in ((on, ["500,1,,,22.0,0.5", "1000,2,0.04,1e-4,,", "1000,3,,,22.5,0.5", "1000,4,,,22.3,0.5",
                          "6000,5,,,22.6,0.5", "6500,6,,,22.9,0.5"]),
                    (off, ["500,1,,,22.1,0.5", "1000,2,,,22.2,0.5", "6000,3,,,22.4,0.5"])):
        d.mkdir()
        (d / "metrics.csv").write_text("step,elapsed_s,loss,lr,val_psnr,val_ssim\n" + "\n".join(rows) + "\n")
    v = bench.validation_logs(on, off)
    assert v["steps"] == [500, 1000, 6000]
    assert v["ahead"] == 2 and v["late_n"] == 1 and v["late_ahead"] == 1
    assert np.isclose(v["mean"], (-0.1 + 0.1 + 0.2) / 3) and np.isclose(v["late_mean"], 0.2)
    assert v["last"] == 6000 and v["last_on"] == 22.6 and v["last_off"] == 22.4
    assert bench.validation_logs(on, tmp_path / "missing") is None


def test_deepfocus_section_gate_leaves_beyond_range_images(bench, shared_data, tmp_path):
    """The real DeepFocus defocus series, as the benchmark reports it: the most defocused image is far
    beyond the trained blur, so the shipped gate leaves it unchanged with a warning, while the network
    alone changes it; the least defocused one (inside the range) is corrected. Rendered and drawn."""
    if not (shared_data / "deepfocus_sem_defocus").is_dir():
        pytest.skip("deepfocus_sem_defocus not in the shared data")
    from napari_emdeblur.deblur.gate import BEYOND_FROM_PX, BEYOND_PX
    from napari_emdeblur.deblur.weights import load_model

    model = load_model(device="cpu")[0]
    df = {d["name"]: d for d in bench.deepfocus(model, data=shared_data)}
    assert set(df) == {"pert5000", "base", "pert-5000"}
    worst, least = df["pert-5000"], df["pert5000"]
    assert worst["b_before"]["excess"] > BEYOND_PX and worst["changed_after"] < 0.05
    assert worst["notes_after"] and "re-image" in worst["notes_after"][0]
    assert worst["changed_raw"] > 0.5 and not worst["notes_raw"]
    assert least["b_before"]["excess"] < BEYOND_FROM_PX and least["changed_after"] > 0.5
    assert least["b_after"]["excess"] < least["b_before"]["excess"] - 1.0  # sharper by the QC's own measure
    fig = tmp_path / "df.png"
    bench.figure_deepfocus(list(df.values()), fig)
    assert fig.stat().st_size > 10_000


def test_trained_range_sits_below_the_gates_limit(bench, windows):
    """What the gate's estimator reads at the extremes of the shipped model's training ranges stays below
    its "beyond the trained range" limit, and the benchmark's conditions stay inside the training range
    (on the held-out windows; the full benchmark reports the numbers)."""
    from napari_emdeblur.deblur.weights import load_model

    card = load_model(device="cpu")[1]
    tr = bench.trained_range(windows, bench.conditions(), seed=1,
                             ranges=card["training"]["degradation_ranges"], n_samples=12)
    assert set(tr["extremes"]) == {"Gaussian", "disk", "astigmatic", "Gaussian + smear"}
    assert len(tr["conditions"]) == 10 and tr["samples"]["n"] == 12
    assert max(tr["extremes"].values()) < tr["limit"]
    assert max(tr["conditions"].values()) < max(tr["extremes"].values())
    assert tr["samples"]["max"] < tr["limit"]
