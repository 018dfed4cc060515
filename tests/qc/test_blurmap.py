"""The QC blur map on real EM crops of the held-out folders: known anisotropic blur recovered (excess
major / minor / angle), sharp below soft on every modality, empty tiles never "ok" nor corrected,
invariance to contrast, offset and the scan axis, the DeepFocus series, px thresholds and the CSV
columns, the one PSF estimator, and the checks of the shipped weights."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from napari_emdeblur.deblur.train import degrade
from napari_emdeblur.io import load_section
from napari_emdeblur.qc import blurmap, content, excess, focus, psf, spectral, thresholds
from napari_emdeblur.qc import decisions as dec
from napari_emdeblur.qc.messages import SectionScores
from napari_emdeblur.qc.scoring import ScoreParams, iter_score_stack
from napari_emdeblur.qc.tiling import TileGrid

# held-out folders of each modality (the excess-blur layer never saw them: see its card)
HELD_OUT = {
    "sstem": "drosophila_vnc_sstem/stack2/*.tif",
    "sbem": "sbem_rodent_cdeep3m/08[0-9].png",
    "fibsem": "neuroproof_fibsem/validation_sample/*.png",
}
MODALITIES = tuple(HELD_OUT)


def _crops(root: Path, modality: str, n: int, tile: int = 256) -> np.ndarray:
    """``n`` uint8 ``tile`` px crops spread over the held-out files of a modality."""
    files = sorted(root.glob(HELD_OUT[modality]))
    out = []
    for f in files[:: max(1, len(files) // 4)][:4]:
        img = np.asarray(load_section(f).data)
        h, w = img.shape
        out += [img[y : y + tile, x : x + tile] for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]
    idx = np.linspace(0, len(out) - 1, n).astype(int)
    return np.stack([out[i] for i in idx])


def _degrade(tiles: np.ndarray, psf_: np.ndarray | None, noise: float, rng, corr: float = 0.0) -> np.ndarray:
    """Blur (reflect) + Gaussian noise (correlated along x when ``corr``), uint8."""
    out = []
    for t in tiles:
        x = t.astype(np.float32) / 255.0
        if psf_ is not None:
            x = degrade.blur(x, psf_)
        if noise:
            x = degrade.add_noise(x, rng, photons=None, read_sigma=noise, fast_scan_corr=corr)
        out.append(np.clip(np.round(x * 255), 0, 255).astype(np.uint8))
    return np.stack(out)


def _corr_noise(shape, rng, a: float, axis: int) -> np.ndarray:
    return signal.lfilter([np.sqrt(1 - a * a)], [1, -a], rng.standard_normal(shape), axis=axis)


EMPTY_CASES = ("blank_white", "blank_poisson", "blank_xcorr", "blank_ycorr", "blank_shaded", "noise_white",
               "noise_xcorr", "noise_ycorr", "noise_uniform", "flat_mid", "flat_zero", "flat_full",
               "saturated_white", "saturated_black", "clipped_em")


def _empty_tile(case: str, rng, em: np.ndarray, size: int = 256) -> np.ndarray:
    """A tile without usable tissue signal: blank resin with detector noise (white, Poisson, or
    correlated along x or y; with a shading gradient), pure noise, flat, saturated, clipped EM."""
    shape = (size, size)
    lvl = rng.uniform(0.15, 0.85)
    s = rng.uniform(0.01, 0.08)
    if case == "blank_white":
        img = lvl + s * rng.standard_normal(shape)
    elif case == "blank_poisson":
        ph = np.exp(rng.uniform(np.log(20), np.log(500)))
        img = rng.poisson(lvl * ph, shape) / ph
    elif case in ("blank_xcorr", "blank_ycorr"):
        img = lvl + s * _corr_noise(shape, rng, rng.uniform(0.5, 0.9), 1 if case == "blank_xcorr" else 0)
    elif case == "blank_shaded":
        yy, xx = np.mgrid[:size, :size] / size
        g = rng.uniform(-0.15, 0.15, 3)
        img = lvl + g[0] * xx + g[1] * yy + g[2] * (xx - 0.5) * (yy - 0.5) + s * rng.standard_normal(shape)
    elif case == "noise_white":
        img = 0.5 + rng.uniform(0.05, 0.25) * rng.standard_normal(shape)
    elif case in ("noise_xcorr", "noise_ycorr"):
        img = 0.5 + rng.uniform(0.05, 0.25) * _corr_noise(shape, rng, rng.uniform(0.5, 0.95),
                                                          1 if case == "noise_xcorr" else 0)
    elif case == "noise_uniform":
        return rng.integers(0, 256, shape).astype(np.uint8)
    elif case.startswith("flat"):
        img = np.full(shape, {"flat_mid": lvl, "flat_zero": 0.0, "flat_full": 1.0}[case])
    elif case == "saturated_white":
        img = 1.02 + 0.02 * rng.standard_normal(shape)
    elif case == "saturated_black":
        img = -0.02 + 0.02 * rng.standard_normal(shape)
    else:  # clipped_em: a real tile at a gain so high that >= 80 % of it clips
        x = em.astype(np.float64) / 255.0
        img = (x - np.quantile(x, rng.uniform(0.1, 0.2))) * 30.0 + 1.0
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _angle_err(a, b):
    return np.abs((np.asarray(a) - np.asarray(b) + 90.0) % 180.0 - 90.0)


# --------------------------------------------------------------------------- blur estimate
@pytest.mark.parametrize("modality", MODALITIES)
def test_recovers_known_anisotropic_blur(shared_data, modality):
    rng = np.random.default_rng(0)
    tiles = _degrade(_crops(shared_data, modality, 12), degrade.elliptical_gaussian_psf(2.5, 1.25, 30.0), 0.02, rng)
    for window in (None, 128):
        r = blurmap.qc_tiles(tiles, window=window)
        assert not r.empty.any()
        assert abs(np.median(r.excess_major) - 2.5) < 0.4, (window, r.excess_major)
        assert abs(np.median(r.excess_minor) - 1.25) < 0.4, (window, r.excess_minor)
        assert np.median(_angle_err(r.excess_angle, 30.0)) < 10, (window, r.excess_angle)
        # the excess equals sqrt((major^2 + minor^2) / 2) and the score is 1 / (1 + excess)
        np.testing.assert_allclose(r.excess, np.sqrt((r.excess_major**2 + r.excess_minor**2) / 2), rtol=1e-4)
        np.testing.assert_allclose(r.score, 1 / (1 + r.excess), rtol=1e-5)


@pytest.mark.parametrize("modality", MODALITIES)
def test_sharp_below_soft_and_isotropic_blur(shared_data, modality):
    rng = np.random.default_rng(1)
    tiles = _crops(shared_data, modality, 8)
    sharp = blurmap.qc_tiles(_degrade(tiles, None, 0.02, rng))
    soft = blurmap.qc_tiles(_degrade(tiles, degrade.gaussian_psf(1.5), 0.02, rng))
    assert np.nanmax(sharp.excess) < np.nanmin(soft.excess), (sharp.excess, soft.excess)
    assert np.median(sharp.excess) < 0.5
    assert abs(np.median(soft.excess) - 1.5) < 0.35


def test_one_estimator_total_blur_is_qc_psf(shared_data):
    """The blur map's total blur on whole tiles is ``qc.psf.estimate_psf_grid`` (the same spectra)."""
    img = np.asarray(load_section(shared_data / "sbem_rodent_cdeep3m" / "085.png").data)[:512, :700]
    bm = blurmap.qc_grid(img, 256, window=None)
    est = psf.estimate_psf_grid(img, 256)
    ok = ~bm.empty
    np.testing.assert_allclose(bm.total_major[ok], est.sigma_major[ok], atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(bm.total_minor[ok], est.sigma_minor[ok], atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(bm.noise, est.noise, rtol=1e-4, equal_nan=True)
    # and estimate_psf_tiles is the shared front end + the fit
    t = np.stack([img[:256, :256], img[:256, 256:512]]).astype(np.float32) / 255
    a = psf.estimate_psf_tiles(t)
    b = psf.fit_spectra(spectral.tile_spectra(t))
    np.testing.assert_allclose(a.sigma_major, b.sigma_major, atol=1e-5)


def test_qc_grid_matches_qc_tiles_and_edges(shared_data):
    img = np.asarray(load_section(shared_data / "sbem_rodent_cdeep3m" / "085.png").data)[:600, :700]
    win = blurmap.DEFAULT_WINDOW
    r = blurmap.qc_grid(img, tile=256, window=win, workers=2)
    assert r.shape == (3, 3) and r.reason.dtype == np.uint8
    t = np.stack([img[:256, :256], img[:256, 256:512]])
    rt = blurmap.qc_tiles(t, window=win)
    np.testing.assert_allclose(r.excess[0, :2], rt.excess, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(blurmap.qc_grid(img, 256, window=win, workers=1).excess, r.excess)
    assert np.isfinite(r.excess[2, 2])  # 88 x 188 corner tile: analysed at its own size
    small = blurmap.qc_grid(img[:300, :300], tile=256)  # 44 px edges: too small, not empty
    assert np.isnan(small.excess[0, 1]) and not small.empty[0, 1]
    assert content.REASONS[small.reason[0, 1]] == "too_small"
    # the focus registry's blur metric is this map's score
    np.testing.assert_array_equal(focus.score_tiles(img, 256, "blur"), r.score)


@pytest.mark.parametrize("window", [None, 128, 160])
def test_deepfocus_series_ordered_and_not_empty(shared_data, window):
    folder = shared_data / "deepfocus_sem_defocus"
    ex = []
    for name in ("pert5000", "base", "pert-5000"):  # least -> most defocused
        r = blurmap.qc_grid(np.asarray(load_section(next(folder.glob(f"*_{name}.png"))).data), 256, window=window)
        assert not r.empty.any()
        ex.append(float(np.nanmedian(r.excess)))
    assert ex[0] < ex[1] < ex[2], ex
    assert ex[0] > 3.0  # none of the series is in focus


# --------------------------------------------------------------------------- invariance
@pytest.mark.parametrize("window", [None, 128])
def test_invariant_to_contrast_offset_and_scan_axis(shared_data, window):
    rng = np.random.default_rng(3)
    x = _degrade(_crops(shared_data, "sstem", 8), degrade.gaussian_psf(1.5), 0.0, rng).astype(np.float64)
    # noise correlated along x (the fast-scan axis) ...
    xc = np.clip(np.round(x + 4.0 * _corr_noise(x.shape, rng, 0.8, axis=2)), 0, 255).astype(np.uint8)
    a = blurmap.qc_tiles(xc, window=window)
    # ... and the same tiles transposed: now the noise is correlated along y
    b = blurmap.qc_tiles(np.ascontiguousarray(xc.transpose(0, 2, 1)), window=window)
    g = np.clip(np.round((xc.astype(float) - 128) * 0.6 + 150), 0, 255).astype(np.uint8)
    c = blurmap.qc_tiles(g, window=window)
    assert np.median(np.abs(a.excess - b.excess)) < 0.1
    assert np.median(np.abs(a.excess - c.excess)) < 0.1
    f = blurmap.qc_tiles(xc.astype(np.float32) * 3.7 - 20.0, window=window)  # float: gain and offset cancel
    np.testing.assert_allclose(f.excess, a.excess, atol=2e-3)


def test_features_follow_flips_and_transposes(shared_data):
    t = _crops(shared_data, "fibsem", 4)
    f = excess.features(spectral.tile_spectra(t, scale=1 / 255))
    ft = excess.features(spectral.tile_spectra(np.ascontiguousarray(t.transpose(0, 2, 1)), scale=1 / 255))
    fx = excess.features(spectral.tile_spectra(np.ascontiguousarray(t[:, :, ::-1]), scale=1 / 255))
    sl = slice(0, spectral.NR * spectral.NA)  # the spectral sectors permute exactly
    np.testing.assert_allclose(excess.transform(f, "transpose")[:, sl], ft[:, sl], atol=2e-3)
    np.testing.assert_allclose(excess.transform(f, "flipx")[:, sl], fx[:, sl], atol=2e-3)
    with pytest.raises(ValueError, match="transform"):
        excess.transform(f, "rotate")


# --------------------------------------------------------------------------- content check
@pytest.mark.parametrize("case", EMPTY_CASES)
def test_empty_is_never_ok_nor_corrected(shared_data, case):
    rng = np.random.default_rng(2)
    em = _crops(shared_data, "sbem", 2)
    tiles = np.stack([_empty_tile(case, rng, em[i % 2]) for i in range(6)])
    for window in (None, 128):
        r = blurmap.qc_tiles(tiles, window=window)
        assert r.empty.all(), (case, window, r.snr, r.reason)
        assert np.isnan(r.score).all() and np.isnan(r.excess).all()
        d = dec.classify(r.score, *thresholds.px_thresholds(), empty=r.empty)
        assert (d == dec.EMPTY).all()
        assert not (d == dec.OK).any() and not (d == dec.CORRECT).any()


def test_real_em_is_not_empty(shared_data):
    tiles = np.concatenate([_crops(shared_data, m, 16) for m in MODALITIES])
    for window in (None, 128):
        r = blurmap.qc_tiles(tiles, window=window)
        assert not r.empty.any(), (window, r.snr.min())


def test_reasons():
    t = np.zeros((3, 64, 64), np.uint8)
    t[1] = 255
    t[1, :8] = 100  # 7/8 saturated
    t[2] = np.random.default_rng(5).integers(0, 255, (64, 64))
    r = blurmap.qc_tiles(t)
    assert [content.REASONS[i] for i in r.reason] == ["flat", "saturated", "no_signal"]
    assert list(r.reason_names()) == ["flat", "saturated", "no_signal"]
    assert blurmap.qc_tiles(np.zeros((2, 40, 40), np.uint8)).reason.tolist() == [content.TOO_SMALL] * 2


# --------------------------------------------------------------------------- decisions in px, CSV
def _mosaic(shared_data) -> tuple[np.ndarray, dict[tuple[int, int], str]]:
    """A 3 x 3 mosaic of 256 px SBEM tiles: sharp, 1.8 px and 4.5 px of added blur, and an empty tile."""
    rng = np.random.default_rng(7)
    crops = _crops(shared_data, "sbem", 9)
    plan = {(0, 0): 0.0, (0, 1): 1.8, (0, 2): 0.0, (1, 0): 4.5, (1, 1): 0.0, (1, 2): 1.8, (2, 0): 0.0, (2, 1): -1,
            (2, 2): 0.0}
    img = np.zeros((768, 768), np.uint8)
    want = {}
    for k, ((i, j), sigma) in enumerate(plan.items()):
        if sigma < 0:
            tile = _empty_tile("blank_white", rng, crops[0])
            want[(i, j)] = "empty"
        else:
            tile = _degrade(crops[k : k + 1], degrade.gaussian_psf(sigma) if sigma else None, 0.01, rng)[0]
            want[(i, j)] = "ok" if sigma == 0 else "correct" if sigma < 3 else "retake"
        img[i * 256 : (i + 1) * 256, j * 256 : (j + 1) * 256] = tile
    return img, want


def test_px_thresholds_decide_and_csv_has_blur_columns(shared_data, tmp_path):
    img, want = _mosaic(shared_data)
    for window in (None, 128):
        params = ScoreParams(tile=256, correct_px=1.0, retake_px=3.0, window=window)
        msg = next(m for m in iter_score_stack(img, params) if isinstance(m, SectionScores))
        d = msg.extras["decisions"]
        got = {(i, j): dec.DECISION_NAMES[int(d[i, j])] for i in range(3) for j in range(3)}
        assert got == want, (window, got, msg.extras["blurmap"].excess)
        assert msg.extras["n_empty"] == 1
        assert msg.extras["correct_threshold"] == pytest.approx(0.5) and msg.extras["retake_threshold"] == 0.25
    # defaults: the blur metric's absolute px defaults, no section-relative statistics
    msg = next(m for m in iter_score_stack(img, ScoreParams(tile=256)) if isinstance(m, SectionScores))
    assert (msg.extras["correct_threshold"], msg.extras["retake_threshold"]) == thresholds.px_thresholds()
    # a stricter correct threshold in px flags more; in a bigger px fewer tiles are retakes
    msg2 = next(m for m in iter_score_stack(img, ScoreParams(tile=256, correct_px=0.05, retake_px=10))
                if isinstance(m, SectionScores))
    assert dec.count_flagged(msg2.scores, msg2.extras["correct_threshold"], msg2.extras["retake_threshold"])[1] == 0
    # the CSV carries the blur columns
    grid = TileGrid(img.shape, 256)
    rows = dec.tile_rows("mosaic.tif", 0, grid, msg.scores, msg.extras["decisions"], blur=msg.extras["blurmap"])
    path = dec.write_tile_csv(tmp_path / "r.csv", rows)
    with open(path, newline="") as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == list(dec.CSV_COLUMNS)
    assert set(dec.BLUR_COLUMNS) <= set(back[0])
    by = {(int(r["row"]), int(r["col"])): r for r in back}
    assert by[(2, 1)]["decision"] == "empty" and by[(2, 1)]["empty_reason"] == "no_signal"
    assert by[(2, 1)]["score"] == "" and by[(2, 1)]["blur_px"] == ""
    r10 = by[(1, 0)]
    assert r10["decision"] == "retake" and float(r10["blur_px"]) > 3.0
    assert float(r10["blur_major_px"]) >= float(r10["blur_minor_px"]) > 0
    assert 0 <= float(r10["blur_angle_deg"]) < 180 and float(r10["total_blur_major_px"]) > 0
    assert float(by[(0, 0)]["noise"]) > 0 and by[(0, 0)]["empty_reason"] == ""


def test_px_threshold_policy_and_bad_values():
    assert thresholds.score_from_px(1.0) == 0.5 and thresholds.px_from_score(0.25) == pytest.approx(3.0)
    np.testing.assert_allclose(thresholds.px_from_score(thresholds.score_from_px(np.array([0.0, 2.5]))), [0, 2.5])
    assert thresholds.px_thresholds() == (0.5, 0.25)
    assert thresholds.px_thresholds(correct_px=4.0) == (0.2, 0.2)  # retake moved up to 4 px
    assert thresholds.px_thresholds(retake_px=0.5) == (pytest.approx(1 / 1.5), pytest.approx(1 / 1.5))
    assert thresholds.absolute_thresholds("blur") == (0.5, 0.25)
    for bad in (float("nan"), float("inf"), -0.5, "abc"):
        with pytest.raises(ValueError, match="px"):
            thresholds.px_thresholds(correct_px=bad)
    with pytest.raises(ValueError, match="must not be below"):
        thresholds.px_thresholds(2.0, 1.0)
    with pytest.raises(ValueError, match="blur metric"):
        ScoreParams(metric="autocorr", correct_px=1.0).validate()
    with pytest.raises(ValueError, match="either as a score or in px"):
        ScoreParams(correct_px=1.0, correct_threshold=0.5).validate()
    with pytest.raises(ValueError, match="finite"):
        ScoreParams(correct_threshold=float("nan")).validate()
    with pytest.raises(ValueError, match="window"):
        ScoreParams(window=16).validate()
    with pytest.raises(ValueError, match="window must be 128, 160 px or None"):  # no weights for 100 px windows
        ScoreParams(window=100).validate()
    for w in (128, 160, None):
        ScoreParams(window=w).validate()
    # NaN scores without an empty mask stay OK ("unscored"); with the mask they are EMPTY
    s = np.array([0.6, 0.4, 0.1, np.nan, np.nan], np.float32)
    e = np.array([False, False, False, True, False])
    assert dec.classify(s, 0.5, 0.25, empty=e).tolist() == [dec.OK, dec.CORRECT, dec.RETAKE, dec.EMPTY, dec.OK]
    assert dec.count_empty(dec.classify(s, 0.5, 0.25, empty=e)) == 1
    with pytest.raises(ValueError, match="empty mask"):
        dec.classify(s, 0.5, 0.25, empty=e[:3])


# --------------------------------------------------------------------------- shipped weights
def test_shipped_weights_and_cards_are_checked(tmp_path):
    for side, name in excess.SHIPPED_WEIGHTS.items():
        w = excess.load_weights(excess.WEIGHTS_DIR / name)
        assert w.window == (None if side == 256 else side)
        assert len(w.members) == w.card["members"] and w.card["n_features"] == excess.N_FEATURES
        held = w.card["training_data"]["held_out_never_used"]
        assert set(held) == set(HELD_OUT) and not any(str(p).startswith("/") for v in held.values() for p in v)
    assert excess.weights_for(128).name == "excess_w128.npz" and excess.weights_for(250).name == "excess_full.npz"
    src = excess.WEIGHTS_DIR / "excess_full.npz"

    def copy(tag: str, card_edit=None, arrays=None) -> Path:
        p = tmp_path / f"{tag}.npz"
        card = json.loads(src.with_suffix(".json").read_text())
        if arrays is None:
            shutil.copy(src, p)
        else:
            np.savez(p, **arrays)
            card["weights_sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
        if card_edit:
            card_edit(card)
        p.with_suffix(".json").write_text(json.dumps(card))
        return p

    good = dict(np.load(src))
    bad_sha = copy("sha", lambda c: c.update(weights_sha256="0" * 64))
    nan = dict(good, W1=np.full_like(good["W1"], np.nan))
    missing = {k: v for k, v in good.items() if k != "b2"}
    cases = {
        "checksum": bad_sha,
        "NaN": copy("nan", arrays=nan),
        "inconsistent": copy("missing", arrays=missing),
        "format": copy("format", lambda c: c.update(format="something else")),
        "features": copy("feat", lambda c: c.update(n_features=100)),
    }
    for why, path in cases.items():
        with pytest.raises(ValueError, match=why) as e:
            excess.load_weights(path)
        assert path.name in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cannot read"):
        excess.load_weights(tmp_path / "absent.npz")
    ok = copy("ok")
    assert excess.load_weights(ok).card["members"] == 1
