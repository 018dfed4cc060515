"""Focus QC benchmark: the blur map (excess blur in px, content check) and every focus metric, on the
held-out real EM of three modalities with synthetic blur, noise and contrast.

    python benchmarks/focus_metrics.py [--quick] [--out docs/focus_metrics.md] [--json PATH] [--repeats N]

Data: 256 px crops of the folders the excess-blur layer never saw, read from the card of the shipped weights
(``qc.excess``: ``training_data.held_out_never_used``): ssTEM (ISBI 2012 test, Drosophila VNC stack 2), SBEM
(rodent slices 080-090), FIB-SEM (NeuroProof validation sample). Degradations come from
``deblur.train.degrade`` (Gaussian, disk and elliptical PSFs, ``psf_sigma``, Poisson-Gaussian noise with the
fast-scan correlation; noise correlated along y = the same on the transposed image), applied with reflective
boundaries, then contrast gain / offset and uint8 quantisation. Sets (all from fixed seeds):

* **AUC set**: every crop x (4 ssTEM / 9 SBEM / 4 FIB-SEM) draws, half *sharp* (added equivalent blur <= 0.5 px:
  none / Gaussian 0.2-0.5 / disk radius 0.4-1 / astigmatic major 0.4-0.65 px ratio 0.2-0.7) and half *soft*
  (>= 1 px: Gaussian 1-3, disk radius 2-6, astigmatic major 1.3-4 ratio 0.2-0.8); noise none / white
  (0.01-0.05) / Poisson (50-500 counts at full scale) / Gaussian AR(1) 0.5-0.85 along x / along y; gain 0.3-1.5,
  offset -0.2-0.2. AUC = P(a sharp tile scores above a soft one) with ONE threshold pooled over everything
  (rank / Mann-Whitney, NaN scores lowest), and within each modality / noise / blur kind / gain band.
* **MAE set**: every other crop with Gaussian blur 1-3 px and astigmatic blur (major 1.5-3.5 px, ratio
  0.3-0.7, any angle), same noises and gains: MAE of the excess major / minor axis, angle error.
* **Empty set**: 15 kinds x 40 tiles without tissue (blank resin with white / Poisson / x- / y-correlated noise
  or a shading gradient, pure noise, flat, saturated, a clipped real tile): how many are called empty and how
  many would be "ok"; false-empty rate on the real EM of the AUC set and on unmodified crops.
* **DeepFocus**: the real defocus series (three working distances): median per image, ordered?
* **Invariance**: excess blur of 300 tiles vs their transposes (the scan axis swapped) and vs gain 0.6 + offset.
* **Throughput**: a 4096 x 4096 uint8 image (a Drosophila section tiled 4 x 4), tile 256: the blur map (score +
  excess / total blur + content check) at the 128 px window, 160 px and whole tiles, the other metrics,
  against ``skimage.filters.laplace`` + a per-tile variance in the same run (wall time: best of the runs; CPU
  time of that call; the 1-min load average is reported: the machine is shared).

It writes ``--out`` (markdown, from these numbers only) and optionally ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import signal, stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_emdeblur.deblur.train import degrade  # noqa: E402
from napari_emdeblur.io import load_section  # noqa: E402
from napari_emdeblur.io.atomic import atomic_write_text  # noqa: E402
from napari_emdeblur.qc import blurmap, content, excess, focus, psf, thresholds  # noqa: E402
from napari_emdeblur.qc import decisions as dec  # noqa: E402

DATA = Path(os.environ.get("EMDEBLUR_SHARED_DATA", ROOT.parent / "shared" / "data"))
TILE = 256
MODALITIES = ("sstem", "sbem", "fibsem")
LABEL = {"sstem": "ssTEM", "sbem": "SBEM", "fibsem": "FIB-SEM"}
NOISES = degrade.NOISE_KINDS
SOFT_KINDS = ("gaussian", "disk", "astigmatic")
SHARP_KINDS = ("none", "gaussian", "disk", "astigmatic")
SHARP_RANGES = {"gaussian": (0.2, 0.5), "disk": (0.4, 1.0), "astig": ((0.4, 0.65), (0.2, 0.7))}
SOFT_RANGES = {"gaussian": (1.0, 3.0), "disk": (2.0, 6.0), "astig": ((1.3, 4.0), (0.2, 0.8))}
AUC_DRAWS = {"sstem": 4, "sbem": 9, "fibsem": 4}  # ~1500-1800 tiles per modality
WINDOWS = tuple((("whole tile" if w is None else f"window {w}") + (" (default)" if w == blurmap.DEFAULT_WINDOW else ""), w)
                for w in (128, 160, None))
PX_CUTS = (0.5, 0.75, 1.0)
SECOND_DRAW_SEED = 101  # the MAE set drawn again on the crops it does not use (a check of the first draw)
DEEPFOCUS = ("pert5000", "base", "pert-5000")  # least -> most defocused
EMPTY_CASES = ("blank_white", "blank_poisson", "blank_xcorr", "blank_ycorr", "blank_shaded", "noise_white",
               "noise_xcorr", "noise_ycorr", "noise_uniform", "flat_mid", "flat_zero", "flat_full",
               "saturated_white", "saturated_black", "clipped_em")


# --------------------------------------------------------------------------- data
def held_out() -> dict[str, tuple[str, ...]]:
    """The held-out globs per modality, from the card of the shipped excess-blur weights."""
    card = excess.load_weights().card
    return {m: tuple(v) for m, v in card["training_data"]["held_out_never_used"].items()}


def read(path: Path) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(load_section(path).data))


def crops_of(img: np.ndarray) -> list[np.ndarray]:
    h, w = img.shape
    return [img[y : y + TILE, x : x + TILE] for y in range(0, h - TILE + 1, TILE) for x in range(0, w - TILE + 1, TILE)]


def load_crops(every: int) -> dict[str, list[np.ndarray]]:
    """uint8 256 px crops of every ``every``-th held-out file of each modality."""
    out: dict[str, list[np.ndarray]] = {}
    for m, globs in held_out().items():
        files = [f for g in globs for f in sorted(DATA.glob(g))]
        out[m] = [c for f in files[::every] for c in crops_of(read(f))]
    return out


# --------------------------------------------------------------------------- degradations (deblur.train.degrade)
def psf_cov(p: np.ndarray) -> np.ndarray:
    """2 x 2 covariance (px^2, (x, y) order) of a PSF."""
    h, w = p.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    p = p / p.sum()
    dx, dy = xx - (p * xx).sum(), yy - (p * yy).sum()
    return np.array([[(p * dx * dx).sum(), (p * dx * dy).sum()], [(p * dx * dy).sum(), (p * dy * dy).sum()]])


def _blur_psf(kind: str, ranges: dict, rng) -> tuple[dict, np.ndarray]:
    if kind == "gaussian":
        p = {"sigma": float(rng.uniform(*ranges["gaussian"]))}
        return p, degrade.gaussian_psf(p["sigma"])
    if kind == "disk":
        p = {"radius": float(rng.uniform(*ranges["disk"]))}
        return p, degrade.disk_psf(p["radius"])
    sig, ratio = ranges["astig"]
    p = {"sigma": float(rng.uniform(*sig)), "ratio": float(rng.uniform(*ratio)), "angle": float(rng.uniform(0, 180))}
    return p, degrade.elliptical_gaussian_psf(p["sigma"], p["sigma"] * p["ratio"], p["angle"])


def _noise(rng) -> dict:
    return {"noise": str(rng.choice(NOISES)), "photons": float(np.exp(rng.uniform(np.log(50), np.log(500)))),
            "read_sigma": float(rng.uniform(0.01, 0.05)), "corr": float(rng.uniform(0.5, 0.85)),
            "gain": float(rng.uniform(0.3, 1.5)), "offset": float(rng.uniform(-0.2, 0.2))}


def _finish(kind: str, p: dict, psf_: np.ndarray, **kw) -> dict:
    cov = np.zeros((2, 2)) if psf_.size == 1 else psf_cov(psf_)
    ev, evec = np.linalg.eigh(cov)
    ev = np.clip(ev, 0, None)
    angle = float(np.degrees(np.arctan2(evec[1, 1], evec[0, 1])) % 180.0)
    return {"kind": kind, "params": p, "psf": psf_, "equiv": float(np.sqrt(np.trace(cov) / 2)),
            "major": float(np.sqrt(ev[1])), "minor": float(np.sqrt(ev[0])), "angle": angle, **kw}


def draw(rng, sharp: bool) -> dict:
    """One benchmark condition of the sharp or the soft class (checked against its band)."""
    while True:
        kind = str(rng.choice(SHARP_KINDS if sharp else SOFT_KINDS))
        if kind == "none":
            c = _finish(kind, {}, np.ones((1, 1), np.float32), sharp=True)
        else:
            p, k = _blur_psf(kind, SHARP_RANGES if sharp else SOFT_RANGES, rng)
            c = _finish(kind, p, k, sharp=sharp)
        if (sharp and c["equiv"] <= 0.5) or (not sharp and c["equiv"] >= 1.0):
            return {**c, **_noise(rng)}


def apply(crop: np.ndarray, c: dict, rng) -> np.ndarray:
    """Blur (reflective boundaries, FFT convolution) + noise + gain / offset + uint8 of a uint8 crop."""
    return degrade.degrade_u8(crop, c["psf"], rng, c["noise"], c["photons"], c["read_sigma"], c["corr"],
                              c["gain"], c["offset"])


def _meta(c: dict, **kw) -> dict:
    return {**{k: v for k, v in c.items() if k != "psf"}, **kw}


def auc_set(crops: dict[str, list[np.ndarray]], seed: int = 2024) -> tuple[np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    tiles, meta = [], []
    for m in MODALITIES:
        for crop in crops[m]:
            for _ in range(AUC_DRAWS[m]):
                c = draw(rng, sharp=bool(rng.random() < 0.5))
                tiles.append(apply(crop, c, rng))
                meta.append(_meta(c, modality=m))
    return np.stack(tiles), meta


def mae_set(crops: dict[str, list[np.ndarray]], seed: int = 7, first: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Every other crop from ``first`` (0: the MAE set; 1: the second draw, on the other crops)."""
    rng = np.random.default_rng(seed)
    tiles, meta = [], []
    for m in MODALITIES:
        for crop in crops[m][first::2]:
            s = float(rng.uniform(1.0, 3.0))
            c = {**_finish("gaussian", {"sigma": s}, degrade.gaussian_psf(s), sharp=False), **_noise(rng)}
            tiles.append(apply(crop, c, rng))
            meta.append(_meta(c, modality=m, set="gaussian"))
            s, r, a = float(rng.uniform(1.5, 3.5)), float(rng.uniform(0.3, 0.7)), float(rng.uniform(0, 180))
            c = {**_finish("astigmatic", {"sigma": s, "ratio": r, "angle": a},
                           degrade.elliptical_gaussian_psf(s, s * r, a), sharp=False), **_noise(rng)}
            tiles.append(apply(crop, c, rng))
            meta.append(_meta(c, modality=m, set="astig"))
    return np.stack(tiles), meta


def _corr(shape, rng, a: float, axis: int) -> np.ndarray:
    return signal.lfilter([np.sqrt(1 - a * a)], [1, -a], rng.standard_normal(shape), axis=axis)


def empty_tile(case: str, rng, em: np.ndarray) -> np.ndarray:
    """A tile without usable tissue signal (see the module docstring)."""
    shape = (TILE, TILE)
    lvl = rng.uniform(0.15, 0.85)
    if case.startswith("blank"):
        kind = case.split("_")[1]
        img = np.full(shape, lvl)
        if kind == "shaded":  # resin with a slow charging / illumination gradient, plus noise
            yy, xx = np.mgrid[:TILE, :TILE] / TILE
            g = rng.uniform(-0.15, 0.15, 3)
            img = img + g[0] * xx + g[1] * yy + g[2] * (xx - 0.5) * (yy - 0.5)
            kind = str(rng.choice(["white", "poisson", "xcorr"]))
        s = rng.uniform(0.01, 0.08)
        if kind == "white":
            img = img + s * rng.standard_normal(shape)
        elif kind == "poisson":
            ph = np.exp(rng.uniform(np.log(20), np.log(500)))
            img = rng.poisson(np.clip(img, 0, None) * ph) / ph
        else:
            img = img + s * _corr(shape, rng, rng.uniform(0.5, 0.9), 1 if kind == "xcorr" else 0)
    elif case == "noise_white":
        img = 0.5 + rng.uniform(0.05, 0.25) * rng.standard_normal(shape)
    elif case in ("noise_xcorr", "noise_ycorr"):
        img = 0.5 + rng.uniform(0.05, 0.25) * _corr(shape, rng, rng.uniform(0.5, 0.95), 1 if case == "noise_xcorr" else 0)
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


def empty_set(crops: dict[str, list[np.ndarray]], reps: int, seed: int = 11) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    em = crops["sstem"][::10] + crops["sbem"][::5]
    tiles, cases = [], []
    for case in EMPTY_CASES:
        for _ in range(reps):
            tiles.append(empty_tile(case, rng, em[int(rng.integers(len(em)))]))
            cases.append(case)
    return np.stack(tiles), cases


# --------------------------------------------------------------------------- evaluation
def auc(pos, neg) -> float:
    """P(score of a sharp tile > score of a soft tile), ties 1/2; NaN scores rank lowest."""
    pos = np.where(np.isfinite(pos), pos, -np.inf)
    neg = np.where(np.isfinite(neg), neg, -np.inf)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    r = stats.rankdata(np.concatenate([pos, neg]))
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def angle_err(a, b) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + 90.0) % 180.0 - 90.0)


def run_qc(tiles: np.ndarray, window, chunk: int = 256) -> blurmap.BlurMap:
    return blurmap.BlurMap.concat([blurmap.qc_tiles(tiles[i : i + chunk], window=window)
                                   for i in range(0, len(tiles), chunk)])


def _mosaics(tiles: np.ndarray, side: int = 8):
    """Chunks of up to side*side tiles laid out as one mosaic (zero-filled)."""
    per = side * side
    for i in range(0, len(tiles), per):
        chunk = tiles[i : i + per]
        full = np.zeros((per, TILE, TILE), chunk.dtype)
        full[: len(chunk)] = chunk
        yield len(chunk), full.reshape(side, side, TILE, TILE).transpose(0, 2, 1, 3).reshape(side * TILE, side * TILE)


def registry_scores(tiles: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of the focus registry except ``blur`` (measured above per window), and minus the
    total blur of ``qc.psf`` (sqrt of the mean of its axes squared)."""
    names = [m for m in focus.METRICS if m != "blur"]
    out: dict[str, list] = {m: [] for m in names}
    for n, mosaic in _mosaics(tiles):
        for m in names:
            out[m].append(focus.score_tiles(mosaic, TILE, m).ravel()[:n].astype(np.float64))
    res = {m: np.concatenate(v) for m, v in out.items()}
    tb = []
    for i in range(0, len(tiles), 256):
        e = psf.estimate_psf_tiles(tiles[i : i + 256].astype(np.float32) / 255.0)
        tb.append(-np.sqrt((e.sigma_major.astype(float) ** 2 + e.sigma_minor.astype(float) ** 2) / 2))
    res["-total blur (qc.psf)"] = np.concatenate(tb)
    return res


def auc_section(meta: list[dict], scores: dict[str, np.ndarray], excess_px: dict[str, np.ndarray]) -> dict:
    sharp = np.array([m["sharp"] for m in meta])
    col = {k: np.array([m[k] for m in meta]) for k in ("modality", "noise", "kind", "gain")}
    res = {}
    for name, s in scores.items():
        r = {"pooled": auc(s[sharp], s[~sharp])}
        for md in MODALITIES:
            sel = col["modality"] == md
            r[md] = auc(s[sharp & sel], s[~sharp & sel])
        for nz in NOISES:
            sel = col["noise"] == nz
            r["noise_" + nz] = auc(s[sharp & sel], s[~sharp & sel])
        for k in SOFT_KINDS:
            r["soft_" + k] = auc(s[sharp], s[~sharp & (col["kind"] == k)])
        for lo, hi in ((0.3, 0.7), (0.7, 1.5)):
            sel = (col["gain"] >= lo) & (col["gain"] < hi)
            r[f"gain_{lo}-{hi}"] = auc(s[sharp & sel], s[~sharp & sel])
        if name in excess_px:  # one decision threshold in px of excess blur, the same for every modality
            e = excess_px[name]
            for t in PX_CUTS:
                for md in MODALITIES + ("all",):
                    sel = np.ones(len(s), bool) if md == "all" else col["modality"] == md
                    # an empty-flagged (NaN) sharp tile counts as called soft
                    r[f"px{t}_{md}"] = (float(np.mean(~(e[sharp & sel] < t))), float(np.mean(e[~sharp & sel] < t)))
        res[name] = r
    return res


def mae_section(meta: list[dict], q: blurmap.BlurMap) -> dict:
    col = {k: np.array([m[k] for m in meta]) for k in ("modality", "set", "major", "minor", "angle")}
    sig = np.array([m["params"]["sigma"] for m in meta])
    res = {}
    for md in MODALITIES:
        g = (col["modality"] == md) & (col["set"] == "gaussian")
        a = (col["modality"] == md) & (col["set"] == "astig")
        r = {
            "n_gauss": int(g.sum()), "n_astig": int(a.sum()), "gauss_empty": int(q.empty[g].sum()),
            "gauss_mae_major": float(np.nanmean(np.abs(q.excess_major[g] - sig[g]))),
            "gauss_mae_minor": float(np.nanmean(np.abs(q.excess_minor[g] - sig[g]))),
            "gauss_mae_equiv": float(np.nanmean(np.abs(q.excess[g] - sig[g]))),
            "gauss_bias_equiv": float(np.nanmean(q.excess[g] - sig[g])),
            "gauss_p90_major": float(np.nanpercentile(np.abs(q.excess_major[g] - sig[g]), 90)),
            "astig_mae_major": float(np.nanmean(np.abs(q.excess_major[a] - col["major"][a]))),
            "astig_mae_minor": float(np.nanmean(np.abs(q.excess_minor[a] - col["minor"][a]))),
        }
        ae = angle_err(q.excess_angle[a], col["angle"][a])
        r.update(angle_median=float(np.nanmedian(ae)), angle_mean=float(np.nanmean(ae)),
                 angle_p90=float(np.nanpercentile(ae, 90)),
                 total_angle_median=float(np.nanmedian(angle_err(q.total_angle[a], col["angle"][a]))))
        for lo, hi in ((1.0, 1.67), (1.67, 2.33), (2.33, 3.0)):
            b = g & (sig >= lo) & (sig < hi)
            r[f"total_{lo}-{hi}"] = float(np.nanmedian(q.total_major[b]))
            r[f"excess_{lo}-{hi}"] = float(np.nanmedian(q.excess_major[b]))
        res[md] = r
    return res


def empty_section(cases: list[str], q_empty: blurmap.BlurMap, q_auc: blurmap.BlurMap, q_clean: blurmap.BlurMap,
                  window) -> dict:
    cases_a = np.array(cases)
    ct, rt = thresholds.px_thresholds()
    res: dict = {"cases": {}}
    d_all = dec.classify(q_empty.score, ct, rt, empty=q_empty.empty)
    for c in dict.fromkeys(cases):
        s = cases_a == c
        counts = np.bincount(q_empty.reason[s], minlength=len(content.REASONS))
        res["cases"][c] = {"n": int(s.sum()), "recall": float(q_empty.empty[s].mean()),
                           "ok": int((d_all[s] == dec.OK).sum()),
                           "reasons": {content.REASONS[i] or "tissue": int(v) for i, v in enumerate(counts) if v},
                           "snr_max": float(np.max(q_empty.snr[s]))}
    res.update(
        false_empty_auc=int(q_auc.empty.sum()), n_auc=int(q_auc.empty.size),
        false_empty_clean=int(q_clean.empty.sum()), n_clean=int(q_clean.empty.size),
        snr_min_real=float(np.nanmin(q_auc.snr)), snr_p01_real=float(np.nanpercentile(q_auc.snr, 0.1)),
        threshold=float(content.snr_min(window or TILE)),
    )
    return res


def deepfocus_section(window) -> dict:
    folder = DATA / "deepfocus_sem_defocus"
    out: dict = {}
    for n in DEEPFOCUS:
        img = read(next(folder.glob(f"*_{n}.png")))
        r = blurmap.qc_grid(img, TILE, window=window)
        out[n] = {k: float(np.nanmedian(getattr(r, k))) for k in
                  ("excess", "excess_major", "excess_minor", "score", "total_major", "total_minor")}
        out[n]["empty"] = int(r.empty.sum())
        for m in focus.METRICS:
            if m != "blur":
                out[n][m] = float(np.nanmedian(focus.score_tiles(img, TILE, m)))
    v = [out[n]["excess"] for n in DEEPFOCUS]
    out["ordered"] = bool(v[0] < v[1] < v[2])
    return out


def invariance_section(tiles: np.ndarray, window, n: int = 300) -> dict:
    t = tiles[np.linspace(0, len(tiles) - 1, n).astype(int)]
    a = run_qc(t, window)
    b = run_qc(np.ascontiguousarray(t.transpose(0, 2, 1)), window)
    c = run_qc(np.clip(np.round((t.astype(np.float64) - 128) * 0.6 + 148), 0, 255).astype(np.uint8), window)
    ok = ~(a.empty | b.empty | c.empty)
    d_t, d_g = np.abs(a.excess - b.excess)[ok], np.abs(a.excess - c.excess)[ok]
    aniso = ok & (a.excess_minor < 0.7 * a.excess_major)
    ang = angle_err(a.excess_angle, 90.0 - b.excess_angle)[aniso]
    return {"n": int(ok.sum()), "transpose_median": float(np.median(d_t)), "transpose_p95": float(np.percentile(d_t, 95)),
            "transpose_angle_median": float(np.median(ang)) if ang.size else float("nan"),
            "gain_median": float(np.median(d_g)), "gain_p95": float(np.percentile(d_g, 95))}


def throughput_section(repeats: int) -> dict:
    from skimage import filters

    base = read(DATA / "drosophila_vnc_sstem" / "stack1" / "00.tif")
    big = np.tile(base, (4, 4))[:4096, :4096].copy()
    mpx = big.size / 1e6
    nt = 4096 // TILE

    def best(f) -> tuple[float, float]:
        f()
        ws, cs = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            ws.append(time.perf_counter() - t0)
            cs.append(time.process_time() - c0)
        i = int(np.argmin(ws))
        return ws[i], cs[i]

    def lap_var():
        return filters.laplace(big).reshape(nt, TILE, nt, TILE).var(axis=(1, 3))

    runs = {"skimage laplace + tile variance (baseline)": lap_var}
    for name, w in WINDOWS:
        runs[f"blur map, {name}"] = lambda w=w: blurmap.qc_grid(big, TILE, window=w)
        runs[f"blur map, {name}, 1 thread"] = lambda w=w: blurmap.qc_grid(big, TILE, window=w, workers=1)
    for m in focus.METRICS:
        if m != "blur":
            runs[f"metric {m}"] = lambda m=m: focus.score_tiles(big, TILE, m)
    res: dict = {"load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
                 "cpus": os.cpu_count(), "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset"), "runs": {}}
    for k, f in runs.items():
        w, c = best(f)
        res["runs"][k] = {"wall_mpx_s": mpx / w, "cpu_ms": c * 1e3, "cpu_mpx_s": mpx / max(c, 1e-9), "wall_ms": w * 1e3}
    res["load_avg_1min_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return res


# --------------------------------------------------------------------------- report
def fmt(v, nd: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def targets(R: dict) -> list[str]:
    """The issue's targets against this run's numbers, per blur-map window."""
    T = R["throughput"]
    base = T["runs"]["skimage laplace + tile variance (baseline)"]
    L = ["## Targets", "",
         "| target | " + " | ".join(w for w, _ in WINDOWS) + " |", "|---|" + "---|" * len(WINDOWS)]

    def row(name: str, cells: list[tuple[str, bool]]) -> None:
        L.append(f"| {name} | " + " | ".join(f"{t} ({'met' if ok else 'NOT met'})" for t, ok in cells) + " |")

    aucs = [R["auc"][f"`blur`, {w}"] for w, _ in WINDOWS]
    row("pooled AUC >= 0.995", [(f"{a['pooled']:.4f}", a["pooled"] >= 0.995) for a in aucs])
    row("AUC >= 0.99 within each modality", [(f"min {min(a[m] for m in MODALITIES):.4f}",
                                             min(a[m] for m in MODALITIES) >= 0.99) for a in aucs])
    maes = [max(max(r["gauss_mae_major"], r["gauss_mae_minor"]) for r in R["mae"][w].values()) for w, _ in WINDOWS]
    worst = [max(R["mae"][w], key=lambda m: max(R["mae"][w][m]["gauss_mae_major"], R["mae"][w][m]["gauss_mae_minor"]))
             for w, _ in WINDOWS]
    row("blur MAE <= 0.25 px, Gaussian 1-3 px, both axes, every modality",
        [(f"max {v:.3f} ({LABEL[m]})", v <= 0.25) for v, m in zip(maes, worst)])
    oks = [sum(c["ok"] for c in R["empty"][w]["cases"].values()) for w, _ in WINDOWS]
    n_e = [sum(c["n"] for c in R["empty"][w]["cases"].values()) for w, _ in WINDOWS]
    row("no blank / noise-only / flat / saturated tile reported ok", [(f"{o} of {n}", o == 0) for o, n in zip(oks, n_e)])
    fe = [R["empty"][w] for w, _ in WINDOWS]
    row("< 1 % of real EM tiles called empty",
        [(f"{e['false_empty_auc'] + e['false_empty_clean']} of {e['n_auc'] + e['n_clean']}",
          (e["false_empty_auc"] + e["false_empty_clean"]) < 0.01 * (e["n_auc"] + e["n_clean"])) for e in fe])
    row("DeepFocus series ordered", [("yes" if R["deepfocus"][w]["ordered"] else "no", R["deepfocus"][w]["ordered"])
                                     for w, _ in WINDOWS])
    cells = []
    for w, _ in WINDOWS:
        r = T["runs"][f"blur map, {w}"]
        est = r["cpu_mpx_s"] * 2  # two free cores, perfect scaling (what the CPU time allows at best)
        cells.append((f"{r['wall_mpx_s']:.0f} wall ({r['wall_mpx_s'] / base['wall_mpx_s']:.1f}x Laplacian), "
                      f"<= {est:.0f} from CPU time", r["wall_mpx_s"] >= 300))
    row(">= 300 Mpx/s on 2 cores (score + blur map + content check)", cells)
    L += ["", f"The throughput row is wall time on this machine's 2 cores (1-min load average {T['load_avg_1min']:.1f} "
          "when measured; other jobs slow it down); the bound from CPU time (2 x Mpx per CPU-second) is what 2 free "
          "cores could give at best."]
    return L


def report(R: dict, quick: bool) -> str:
    meta = R["meta"]
    L = ["# Focus QC: benchmark", "",
         f"Generated by `python benchmarks/focus_metrics.py{' --quick' if quick else ''}` (every number below is this "
         f"script's output; {meta['elapsed_s']:.0f} s on {os.cpu_count()} CPU cores, "
         f"{platform.processor() or platform.machine()}, numpy {np.__version__}); the sets and degradations are "
         "described in the script's docstring. All tiles come from the held-out folders of the excess-blur layer's card: "
         + ", ".join(f"{LABEL[m]} `{'`, `'.join(g)}`" for m, g in meta["held_out"].items()) + ".", "",
         "**Blur in px** is the *excess* blur: the Gaussian-equivalent blur added on top of what the modality looks "
         "like in focus (`qc.excess`; its ground truth here is the covariance of the synthetic PSF), which the "
         "decisions use. The *total* blur of `qc.psf` (the correction's estimate, the acquisition's own resolution "
         "included) is diagnostic. The `blur` metric's score is `1 / (1 + excess px)`.", "",
         *targets(R), "",
         "## Sharp (<= 0.5 px added) vs soft (>= 1 px added): AUC with one global threshold", "",
         "| score | pooled | ssTEM | SBEM | FIB-SEM | no noise | white | Poisson | x-corr | y-corr | soft Gauss | "
         "soft disk | soft astig | gain 0.3-0.7 | gain 0.7-1.5 |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in R["auc"].items():
        L.append(f"| {name} | **{fmt(r['pooled'])}** | {fmt(r['sstem'])} | {fmt(r['sbem'])} | {fmt(r['fibsem'])} | "
                 + " | ".join(fmt(r["noise_" + n], 3) for n in NOISES) + " | "
                 + " | ".join(fmt(r["soft_" + k], 3) for k in SOFT_KINDS) + " | "
                 + f"{fmt(r['gain_0.3-0.7'], 3)} | {fmt(r['gain_0.7-1.5'], 3)} |")
    L += ["", f"Tiles: {meta['n_auc']} ({', '.join(f'{LABEL[m]} {n}' for m, n in meta['n_auc_by_mod'].items())}), "
          f"{meta['n_sharp']} sharp and {meta['n_auc'] - meta['n_sharp']} soft.", "",
          "### One threshold in px for every modality", "",
          "Fraction of sharp tiles called soft / of soft tiles called sharp at a `correct` threshold in px of excess "
          "blur (an empty-flagged sharp tile counts as called soft). The default is "
          f"{thresholds.DEFAULT_BLUR_PX[0]:g} px (`qc.thresholds.DEFAULT_BLUR_PX`).", "",
          "| blur map | threshold | all | ssTEM | SBEM | FIB-SEM |", "|---|---|---|---|---|---|"]
    for name, r in R["auc"].items():
        for t in PX_CUTS:
            if f"px{t}_all" in r:
                L.append(f"| {name} | {t:g} px | " + " | ".join("{:.3f} / {:.3f}".format(*r[f"px{t}_{md}"])
                                                             for md in ("all",) + MODALITIES) + " |")
    for wname, mae in R["mae"].items():
        L += ["", f"## Blur estimate, {wname}: MAE (px) of the excess blur", "",
              "Gaussian blur 1-3 px (truth: major = minor = sigma) and astigmatic blur (major 1.5-3.5 px, ratio 0.3-0.7; "
              "the angle error is of its major axis).", "",
              "| modality | n | Gauss MAE major | Gauss MAE minor | MAE equiv | bias equiv | p90 major | astig MAE major "
              "| astig MAE minor | angle err median / mean / p90 (deg) | total-blur angle err median |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for md, r in mae.items():
            L.append(f"| {LABEL[md]} | {r['n_gauss']} | **{fmt(r['gauss_mae_major'], 3)}** | **{fmt(r['gauss_mae_minor'], 3)}** "
                     f"| {fmt(r['gauss_mae_equiv'], 3)} | {fmt(r['gauss_bias_equiv'], 3)} | {fmt(r['gauss_p90_major'], 3)} | "
                     f"{fmt(r['astig_mae_major'], 3)} | {fmt(r['astig_mae_minor'], 3)} | {fmt(r['angle_median'], 1)} / "
                     f"{fmt(r['angle_mean'], 1)} / {fmt(r['angle_p90'], 1)} | {fmt(r['total_angle_median'], 1)} |")
        L += ["", "Median total blur (`qc.psf`, major axis) vs median excess major axis, by added Gaussian sigma:", "",
              "| modality | total 1-1.67 | total 1.67-2.33 | total 2.33-3 | excess 1-1.67 | excess 1.67-2.33 | excess 2.33-3 |",
              "|---|---|---|---|---|---|---|"]
        for md, r in mae.items():
            bands = ("1.0-1.67", "1.67-2.33", "2.33-3.0")
            L.append(f"| {LABEL[md]} | " + " | ".join(fmt(r[f"total_{b}"], 2) for b in bands) + " | "
                     + " | ".join(fmt(r[f"excess_{b}"], 2) for b in bands) + " |")
    L += ["", "## Blur estimate on a second draw", "",
          "The MAE set drawn again on the held-out crops the first draw does not use (the odd ones), with other blur, "
          f"noise and contrast draws (seed {SECOND_DRAW_SEED}): Gaussian 1-3 px, MAE (px) major / minor. A check that "
          "the numbers above are not one lucky (or unlucky) sample.", "",
          "| blur map | " + " | ".join(LABEL[m] for m in MODALITIES) + " | worst |", "|---|---|---|---|---|"]
    for wname, mae in R["mae_second"].items():
        worst = max(max(r["gauss_mae_major"], r["gauss_mae_minor"]) for r in mae.values())
        L.append(f"| {wname} | " + " | ".join(f"{fmt(mae[m]['gauss_mae_major'], 3)} / {fmt(mae[m]['gauss_mae_minor'], 3)}"
                                           for m in MODALITIES) + f" | {fmt(worst, 3)} |")
    for wname, E in R["empty"].items():
        L += ["", f"## Content check, {wname}", "",
              "Decisions at the default px thresholds: an empty tile is `empty`, never `ok`.", "",
              "| case | n | called empty | decided ok | reasons | max band SNR |", "|---|---|---|---|---|---|"]
        for c, r in E["cases"].items():
            L.append(f"| {c} | {r['n']} | {r['recall']:.3f} | {r['ok']} | {r['reasons']} | {r['snr_max']:.2f} |")
        L += ["", f"False-empty on real EM: {E['false_empty_auc']} of {E['n_auc']} tiles of the AUC set (sharp and soft), "
              f"{E['false_empty_clean']} of {E['n_clean']} unmodified held-out crops. Band SNR on real EM: min "
              f"{E['snr_min_real']:.2f}, 0.1th percentile {E['snr_p01_real']:.2f} (no-signal threshold {E['threshold']:.2f})."]
    L += ["", "## Real defocus series (DeepFocus SEM, one field of view; median over 256 px tiles)", "",
          "Working-distance offsets of about -8.3, -13.3 and -18.3 um (least to most defocused; none is in focus, all "
          "share a stigmator error). The blur should grow left to right, the other scores fall.", "",
          "| blur map | " + " | ".join(DEEPFOCUS) + " | ordered | empty tiles |", "|---|---|---|---|---|---|"]
    for wname, D in R["deepfocus"].items():
        L.append(f"| {wname}: excess px (major / minor) | "
                 + " | ".join(f"{D[n]['excess']:.2f} ({D[n]['excess_major']:.2f} / {D[n]['excess_minor']:.2f})" for n in DEEPFOCUS)
                 + f" | {'yes' if D['ordered'] else 'NO'} | {sum(D[n]['empty'] for n in DEEPFOCUS)} |")
    D = next(iter(R["deepfocus"].values()))
    tm = [D[n]["total_major"] for n in DEEPFOCUS]
    L.append("| total blur major (qc.psf, window 128) | " + " | ".join(f"{v:.2f}" for v in tm)
             + f" | {'yes' if tm[0] < tm[1] < tm[2] else 'no'} | |")
    for m in focus.METRICS:
        if m != "blur":
            v = [D[n][m] for n in DEEPFOCUS]
            L.append(f"| `{m}` score | " + " | ".join(f"{x:.4g}" for x in v) + f" | {'yes' if v[0] > v[1] > v[2] else 'no'} | |")
    L += ["", "## Invariance (excess blur, px)", "",
          "The same tiles transposed (the fast-scan axis swapped, correlated noise along the other axis), and at gain "
          "0.6 with an offset.", "",
          "| blur map | n | transpose: median / p95 abs diff | transposed angle err median (minor/major < 0.7) | "
          "gain 0.6 + offset: median / p95 |", "|---|---|---|---|---|"]
    for wname, inv in R["invariance"].items():
        L.append(f"| {wname} | {inv['n']} | {inv['transpose_median']:.3f} / {inv['transpose_p95']:.3f} | "
                 f"{fmt(inv['transpose_angle_median'], 1)} | {inv['gain_median']:.3f} / {inv['gain_p95']:.3f} |")
    T = R["throughput"]
    base = T["runs"]["skimage laplace + tile variance (baseline)"]["wall_mpx_s"]
    L += ["", "## Throughput: 4096 x 4096 uint8, tile 256", "",
          f"Score + blur map (excess and total blur, noise) + content check in one call. {T['cpus']} cores shared with "
          f"other jobs: 1-min load average {T['load_avg_1min']:.1f} at the start, {T['load_avg_1min_end']:.1f} at the "
          f"end; OPENBLAS_NUM_THREADS {T['openblas_threads']} (the hot path calls no BLAS). Wall: best of "
          f"{meta['repeats']} runs; CPU: process time of that run (all threads); default workers = up to 4 threads "
          "over bands of tile rows.", "",
          "| what | wall Mpx/s | x Laplacian (wall) | CPU ms | Mpx per CPU-second |", "|---|---|---|---|---|"]
    for k, v in T["runs"].items():
        L.append(f"| {k} | {v['wall_mpx_s']:.0f} | {v['wall_mpx_s'] / base:.1f} | {v['cpu_ms']:.0f} | {v['cpu_mpx_s']:.0f} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every 4th file, 10 empty tiles per case (a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "focus_metrics.md"), help="markdown report to write")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats (default 5, quick 2)")
    a = ap.parse_args(argv)
    if not DATA.exists():
        print(f"data folder {DATA} not found", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    repeats = a.repeats or (2 if a.quick else 5)
    crops = load_crops(every=4 if a.quick else 1)
    X, M = auc_set(crops)
    X2, M2 = mae_set(crops)
    X3, M3 = mae_set(crops, seed=SECOND_DRAW_SEED, first=1)
    E, EC = empty_set(crops, reps=10 if a.quick else 40)
    clean = np.stack([c for m in MODALITIES for c in crops[m][::2]])
    print(f"sets: auc {len(X)}, mae {len(X2)}, empty {len(E)}, clean {len(clean)} ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    R: dict = {"meta": {"held_out": held_out(), "n_auc": len(X), "n_sharp": int(sum(m["sharp"] for m in M)),
                        "n_auc_by_mod": {md: int(sum(m["modality"] == md for m in M)) for md in MODALITIES},
                        "repeats": repeats, "weights": {k: str(v) for k, v in excess.SHIPPED_WEIGHTS.items()}},
               "mae": {}, "mae_second": {}, "empty": {}, "deepfocus": {}, "invariance": {}}
    scores, excess_px = {}, {}
    for wname, win in WINDOWS:
        q = run_qc(X, win)
        name = f"`blur`, {wname}"
        scores[name] = np.where(q.empty, np.nan, q.score)
        excess_px[name] = q.excess
        R["mae"][wname] = mae_section(M2, run_qc(X2, win))
        R["mae_second"][wname] = mae_section(M3, run_qc(X3, win))
        R["empty"][wname] = empty_section(EC, run_qc(E, win), q, run_qc(clean, win), win)
        R["deepfocus"][wname] = deepfocus_section(win)
        R["invariance"][wname] = invariance_section(X, win)
        print(f"{wname} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    scores.update({(f"`{k}`" if not k.startswith("-") else k): v for k, v in registry_scores(X).items()})
    R["auc"] = auc_section(M, scores, excess_px)
    for k, r in R["auc"].items():
        print(f"{k:36s} pooled {r['pooled']:.4f} " + " ".join(f"{md} {r[md]:.4f}" for md in MODALITIES), flush=True)
    R["throughput"] = throughput_section(repeats)
    for k, v in R["throughput"]["runs"].items():
        print(f"throughput {k:45s} {v['wall_mpx_s']:7.1f} Mpx/s  cpu {v['cpu_ms']:6.0f} ms", flush=True)
    R["meta"]["elapsed_s"] = time.perf_counter() - t0
    out = Path(a.out)
    atomic_write_text(out, report(R, a.quick), overwrite=True)
    if a.json:
        atomic_write_text(Path(a.json), json.dumps(R, indent=1, default=float), overwrite=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
