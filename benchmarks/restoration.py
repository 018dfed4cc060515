"""Restoration benchmark: GRAN against classical deconvolution and a U-Net on held-out real EM.

    python benchmarks/restoration.py [--quick] [--out docs/restoration.md]
                                     [--gran PATH] [--unet PATH] [--crops N] [--seed S]

Data: ``--crops`` (default 12, ``--quick`` 4) windows of 320 x 320 px cut at seeded random
positions from the *held-out* real EM (Drosophila VNC ssTEM stack 2 and ISBI 2012 ssTEM test,
alternately; neither is in the training data of the models). Each window is degraded with
``core.degrade.Degradation`` (blur with reflective boundaries, then Poisson-Gaussian noise),
clipped to [0, 1] and quantised to uint8 like real data. Every method gets the same degraded
uint8 window and the metrics (PSNR, SSIM; ``skimage.metrics`` on [0, 1] floats, data_range 1)
are computed on its central 256 x 256 px against the sharp crop, so the 32 px of context on
every side keep window-edge effects out of the score for all methods alike.

Conditions: Gaussian blur sigma 1, 2, 3 px; defocus (disk radius 3 px with a Gaussian probe of
sigma 0.5 px); astigmatism (elliptical Gaussian, major sigma 2.5 px, minor/major 0.4, 30 deg);
each at two noise levels (*low*: Poisson 300 counts at full scale + Gaussian read noise 0.01;
*high*: Poisson 60 + read 0.02). Plus *sharp* (no blur, low noise) and *sharp, clean* (no blur,
no added noise: the input is the ground truth itself, so its PSNR is infinite; the row shows how
much each method changes a perfect tile).

Methods:

* input: the degraded window itself;
* unsharp masking (``skimage.filters.unsharp_mask``): one fixed (radius, amount) for all
  conditions, the best mean PSNR over the blurred conditions of a small grid evaluated on
  separate tuning crops from the ISBI *train* set (never on the test crops);
* Wiener, oracle: ``skimage.restoration.wiener`` with the TRUE PSF, balance chosen per image
  from a log grid by the best PSNR against the ground truth;
* Richardson-Lucy, oracle: the RL update (Richardson 1972, Lucy 1974) with the TRUE PSF,
  written here with FFT convolutions so one run of 60 iterations scores every iteration count;
  the best count in 1..60 per image by PSNR (it matches ``skimage.restoration.richardson_lucy``
  away from the borders, see ``tests/test_restoration_benchmark.py``);
* U-Net baseline and GRAN (blind: no PSF), through ``model.infer.correct_image`` (uint8 in,
  uint8 out) with one 320 px window.

The two classical oracles are deconvolved on the window reflect-padded by the PSF radius + 8 px
(their FFTs are circular). It also corrects the three real defocused SEM images of
``deepfocus_sem_defocus`` with GRAN (no ground truth: the focus score ``core.focus.score_tiles``
median before/after) and times ``correct_image`` on a 2048 x 2048 uint8 image (2 torch threads;
fp32 and bf16 on CUDA when there is one), and measures how far tiled output is from a whole-image
pass (``tiling_check``). Writes ``--out`` and two figures in ``docs/img``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_emdeblur.deblur import metrics  # noqa: E402
from napari_emdeblur.deblur.train.degrade import Degradation  # noqa: E402
from napari_emdeblur.io.atomic import atomic_write, atomic_write_text  # noqa: E402

DATA = Path(os.environ.get("EMDEBLUR_SHARED_DATA", ROOT.parent / "shared" / "data"))

CROP = 256  # evaluated size
MARGIN = 32  # context on every side of the evaluated crop
WIN = CROP + 2 * MARGIN
HELD_OUT = ("drosophila_vnc_sstem/stack2", "isbi2012_sstem/test")
TUNING = "isbi2012_sstem/train"  # unsharp-mask tuning crops only
RL_MAX_ITER = 60
WIENER_BALANCES = np.logspace(-4, 1, 21)
UNSHARP_GRID = [(r, a) for r in (0.5, 1.0, 2.0, 3.0) for a in (0.3, 0.6, 1.0, 1.5, 2.5)]
METHODS = ("input", "unsharp", "wiener", "rl", "unet", "gran_eq", "gran")
METHOD_NAMES = {
    "input": "input",
    "unsharp": "unsharp mask",
    "wiener": "Wiener (oracle)",
    "rl": "RL (oracle)",
    "unet": "U-Net",
    "gran_eq": "GRAN, U-Net's budget",
    "gran": "GRAN",
}
NOISES = {"low": (300.0, 0.01), "high": (60.0, 0.02)}


@dataclass
class Condition:
    name: str
    deg: Degradation
    noise: str  # "low" | "high" | "clean"

    @property
    def blurred(self) -> bool:
        return self.deg.kind != "none"


def conditions() -> list[Condition]:
    blurs = [
        ("Gaussian sigma 1", Degradation(kind="gaussian", sigma=1.0)),
        ("Gaussian sigma 2", Degradation(kind="gaussian", sigma=2.0)),
        ("Gaussian sigma 3", Degradation(kind="gaussian", sigma=3.0)),
        ("defocus r 3, probe 0.5", Degradation(kind="defocus", radius=3.0, probe_sigma=0.5)),
        ("astigmatic 2.5 / 0.4 / 30 deg", Degradation(kind="astigmatic", sigma=2.5, ratio=0.4, angle=30.0)),
    ]
    out = []
    for noise, (ph, rd) in NOISES.items():
        for name, d in blurs:
            out.append(Condition(f"{name}, {noise} noise", replace(d, photons=ph, read_sigma=rd), noise))
    ph, rd = NOISES["low"]
    out.append(Condition("sharp, low noise", Degradation(kind="none", photons=ph, read_sigma=rd), "low"))
    out.append(Condition("sharp, clean", Degradation(kind="none", photons=None, read_sigma=0.0), "clean"))
    return out


# --------------------------------------------------------------------------- data
def _read(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from skimage import io

    return io.imread(path)


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} not found (set EMDEBLUR_SHARED_DATA)")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff"))


def sample_windows(n: int, seed: int, folders=HELD_OUT, data: Path | None = None) -> list[tuple[str, np.ndarray]]:
    """``n`` seeded (label, WIN x WIN float32 [0,1]) windows, alternating over ``folders``."""
    data = data or DATA
    rng = np.random.default_rng(seed)
    lists = [_files(data / f) for f in folders]
    order = [rng.permutation(len(fl)) for fl in lists]
    out = []
    for k in range(n):
        s = k % len(folders)
        fl = lists[s]
        f = fl[order[s][(k // len(folders)) % len(fl)]]
        img = _read(f)
        if img.ndim == 3:
            img = img[0]
        H, W = img.shape
        y = int(rng.integers(0, H - WIN + 1))
        x = int(rng.integers(0, W - WIN + 1))
        win = img[y : y + WIN, x : x + WIN].astype(np.float32) / 255.0
        out.append((f"{folders[s]}/{f.name} @ y{y} x{x}", win))
    return out


def degrade_window(win: np.ndarray, cond: Condition, rng: np.random.Generator) -> np.ndarray:
    """Blur + noise on the whole window, clip, quantise to uint8 (what a microscope writes)."""
    d = cond.deg.apply(win, rng)
    return np.rint(np.clip(d, 0.0, 1.0) * 255.0).astype(np.uint8)


def centre(a: np.ndarray) -> np.ndarray:
    return a[MARGIN : MARGIN + CROP, MARGIN : MARGIN + CROP]


# --------------------------------------------------------------------------- metrics
def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    """PSNR of images in [0, 1] (the package's one implementation, ``deblur.metrics``)."""
    return metrics.psnr(ref, x, 1.0)


def ssim(x: np.ndarray, ref: np.ndarray) -> float:
    """SSIM of images in [0, 1] (``deblur.metrics``)."""
    return metrics.ssim(ref, x, 1.0)


# --------------------------------------------------------------------------- classical methods
def _pad_for(psf: np.ndarray) -> int:
    return max(psf.shape) // 2 + 8


def unsharp(obs: np.ndarray, radius: float, amount: float) -> np.ndarray:
    from skimage.filters import unsharp_mask

    return np.clip(unsharp_mask(obs.astype(np.float64), radius=radius, amount=amount, preserve_range=True), 0, 1)


def wiener_oracle(obs: np.ndarray, psf: np.ndarray, ref: np.ndarray, balances=WIENER_BALANCES):
    """Best-PSNR ``skimage.restoration.wiener`` over ``balances``: (centre output, balance)."""
    from skimage.restoration import wiener

    p = _pad_for(psf)
    padded = np.pad(obs.astype(np.float64), p, mode="reflect")
    best, best_out, best_b = -np.inf, None, None
    for b in balances:
        out = np.clip(wiener(padded, psf.astype(np.float64), float(b), clip=False), 0, 1)
        c = centre(out[p:-p, p:-p])
        v = psnr(c, ref)
        if v > best:
            best, best_out, best_b = v, c, float(b)
    return best_out, best_b


def richardson_lucy_iter(obs: np.ndarray, psf: np.ndarray, n_iter: int, pad: int | None = None):
    """Yield ``(k, estimate)`` for k = 1..n_iter of Richardson-Lucy on ``obs`` (float, >= 0).

    u_{k+1} = u_k * (psf^T conv (obs / (psf conv u_k))), u_0 = 0.5 (as skimage), with
    circular FFT convolutions on ``obs`` reflect-padded by ``pad`` (default PSF radius + 8);
    the yielded estimates are cropped back to ``obs``'s shape."""
    from scipy import fft

    p = _pad_for(psf) if pad is None else pad
    d = np.pad(np.asarray(obs, np.float64), p, mode="reflect")
    shape = d.shape
    fshape = [fft.next_fast_len(s, real=True) for s in shape]
    # embed the PSF with its centre at the origin (circular), so convolution does not shift
    k = np.zeros(fshape, np.float64)
    kh, kw = psf.shape
    k[:kh, :kw] = psf
    k = np.roll(k, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    K = fft.rfft2(k)
    Kc = np.conj(K)  # the flipped PSF
    dp = np.zeros(fshape, np.float64)
    dp[: shape[0], : shape[1]] = d
    # pad the extra FFT rows/cols by edge values so the circular wrap stays smooth-ish
    if fshape[0] > shape[0]:
        dp[shape[0] :, : shape[1]] = d[-1:, :]
    if fshape[1] > shape[1]:
        dp[:, shape[1] :] = dp[:, shape[1] - 1 : shape[1]]
    u = np.full(fshape, 0.5, np.float64)
    eps = 1e-12
    for it in range(1, n_iter + 1):
        conv = fft.irfft2(fft.rfft2(u) * K, s=fshape) + eps
        u = u * fft.irfft2(fft.rfft2(dp / conv) * Kc, s=fshape)
        yield it, u[p : p + obs.shape[0], p : p + obs.shape[1]]


def rl_oracle(obs: np.ndarray, psf: np.ndarray, ref: np.ndarray, n_iter: int = RL_MAX_ITER):
    """Best-PSNR Richardson-Lucy iterate in 1..n_iter: (centre output, iteration count)."""
    if psf.size == 1:  # identity PSF: RL returns the observation after one step
        return centre(obs.astype(np.float64)), 1
    best, best_out, best_k = -np.inf, None, None
    for k, u in richardson_lucy_iter(obs, psf, n_iter):
        c = np.clip(centre(u), 0, 1)
        v = psnr(c, ref)
        if v > best:
            best, best_out, best_k = v, c.copy(), k
    return best_out, best_k


# --------------------------------------------------------------------------- models
def load(path) -> tuple[object, dict, str, str]:
    """(model, card, path, sha256 prefix) via ``model.weights.load_model`` on the CPU."""
    from napari_emdeblur.deblur.weights import load_model, sha256_file

    model, card = load_model(path, device="cpu")
    return model, card, str(path), sha256_file(path)[:12]


def run_model(model, win_u8: np.ndarray) -> np.ndarray:
    """Model output for a uint8 window via ``correct_image`` (one window), as float [0, 1]."""
    from napari_emdeblur.deblur.infer import InferenceParams, correct_image

    params = InferenceParams(tile=max(512, max(win_u8.shape)), overlap=32, batch=1, device="cpu")
    return correct_image(win_u8, model, params).astype(np.float64) / 255.0


# --------------------------------------------------------------------------- evaluation
def choose_unsharp(windows, conds, seed: int) -> tuple[tuple[float, float], dict]:
    """Best (radius, amount) by mean PSNR over the blurred conditions on tuning windows."""
    scores = {rp: [] for rp in UNSHARP_GRID}
    for k, (_, win) in enumerate(windows):
        ref = centre(win)
        for ci, cond in enumerate(conds):
            if not cond.blurred:
                continue
            obs = degrade_window(win, cond, np.random.default_rng([seed, 7, ci, k])).astype(np.float64) / 255.0
            for rp in UNSHARP_GRID:
                scores[rp].append(psnr(centre(unsharp(obs, *rp)), ref))
    means = {rp: float(np.mean(v)) for rp, v in scores.items()}
    return max(means, key=means.get), means


def evaluate(windows, conds, models: dict, unsharp_rp, seed: int, keep: int = 1, log=print):
    """Per-image records ``{cond, crop, method, psnr, ssim, param}`` and kept example outputs.

    ``models``: {"unet", "gran_eq", "gran"}: model or None (None: its records are NaN). ``keep``: number of crops per
    condition whose outputs are returned in ``examples[(cond index, crop index)]``."""
    records, examples = [], {}
    for ci, cond in enumerate(conds):
        t0 = time.perf_counter()
        psf = cond.deg.psf()
        for k, (_, win) in enumerate(windows):
            ref = np.rint(centre(win).astype(np.float64) * 255.0) / 255.0  # the exact uint8 values
            obs_u8 = degrade_window(win, cond, np.random.default_rng([seed, ci, k]))
            obs = obs_u8.astype(np.float64) / 255.0
            outs: dict[str, tuple[np.ndarray | None, object]] = {"input": (centre(obs), None)}
            outs["unsharp"] = (centre(unsharp(obs, *unsharp_rp)), None)
            if cond.noise == "clean":  # PSF = identity and no noise: deconvolution is moot
                outs["wiener"] = (None, None)
                outs["rl"] = (None, None)
            else:
                outs["wiener"] = wiener_oracle(obs, psf, ref)
                outs["rl"] = rl_oracle(obs, psf, ref)
            for name in ("unet", "gran_eq", "gran"):
                m = models.get(name)
                outs[name] = (centre(run_model(m, obs_u8)), None) if m is not None else (None, None)
            for meth in METHODS:
                out, param = outs[meth]
                if out is None:
                    records.append(dict(cond=ci, crop=k, method=meth, psnr=np.nan, ssim=np.nan, param=None))
                    continue
                records.append(dict(cond=ci, crop=k, method=meth, psnr=psnr(out, ref), ssim=ssim(out, ref), param=param))
            if k < keep:
                examples[(ci, k)] = {"sharp": ref, **{m: o for m, (o, _) in outs.items()}}
        sel = [r for r in records if r["cond"] == ci]
        msg = "  ".join(
            f"{m} {np.mean([r['psnr'] for r in sel if r['method'] == m]):.2f}" for m in METHODS
        )
        log(f"[{ci + 1}/{len(conds)}] {cond.name}: {msg}  ({time.perf_counter() - t0:.0f} s)")
    return records, examples


def summarise(records, conds) -> dict:
    """Mean PSNR/SSIM per (condition, method) plus the blurred-condition means and targets."""
    table = {}
    for ci in range(len(conds)):
        for m in METHODS:
            sel = [r for r in records if r["cond"] == ci and r["method"] == m]
            table[(ci, m)] = (
                float(np.mean([r["psnr"] for r in sel])) if sel else np.nan,
                float(np.mean([r["ssim"] for r in sel])) if sel else np.nan,
            )
    blurred = [ci for ci, c in enumerate(conds) if c.blurred]
    groups = {
        "all blurred": blurred,
        "blurred, low noise": [ci for ci in blurred if conds[ci].noise == "low"],
        "blurred, high noise": [ci for ci in blurred if conds[ci].noise == "high"],
    }
    means = {}
    for g, cis in groups.items():
        for m in METHODS:
            sel = [r for r in records if r["cond"] in cis and r["method"] == m]
            means[(g, m)] = (
                float(np.mean([r["psnr"] for r in sel])) if sel else np.nan,
                float(np.mean([r["ssim"] for r in sel])) if sel else np.nan,
            )
    allb = {m: means[("all blurred", m)] for m in METHODS}
    oracle = max(allb["wiener"][0], allb["rl"][0])
    # per-image version of (a): GRAN minus the better oracle on that very image
    per_img = []
    for ci in blurred:
        for k in sorted({r["crop"] for r in records}):
            get = {r["method"]: r["psnr"] for r in records if r["cond"] == ci and r["crop"] == k}
            if get:
                per_img.append(get["gran"] - max(get["wiener"], get["rl"]))
    sharp = [ci for ci, c in enumerate(conds) if not c.blurred and c.noise == "low"]
    clean = [ci for ci, c in enumerate(conds) if c.noise == "clean"]
    targets = {
        "a": allb["gran"][0] - oracle,
        "a_per_image": float(np.mean(per_img)) if per_img else np.nan,
        "a_oracle": "Wiener" if allb["wiener"][0] >= allb["rl"][0] else "RL",
        # (b) is about architecture at an equal budget: the GRAN trained with the U-Net's data, wall time and
        # size when that model is given, else the shipped GRAN (then the budgets may differ; said in the report)
        "b_model": "gran_eq" if np.isfinite(allb["gran_eq"][0]) else "gran",
        "b": allb["gran_eq" if np.isfinite(allb["gran_eq"][0]) else "gran"][0] - allb["unet"][0],
        "b_ssim": allb["gran_eq" if np.isfinite(allb["gran_eq"][0]) else "gran"][1] - allb["unet"][1],
        "b_shipped": allb["gran"][0] - allb["unet"][0],
        "c": (table[(sharp[0], "gran")][0] - table[(sharp[0], "input")][0]) if sharp else np.nan,
        "c_unet": (table[(sharp[0], "unet")][0] - table[(sharp[0], "input")][0]) if sharp else np.nan,
        "clean_gran": table[(clean[0], "gran")] if clean else (np.nan, np.nan),
        "clean_unet": table[(clean[0], "unet")] if clean else (np.nan, np.nan),
    }
    return {"table": table, "means": means, "groups": list(groups), "targets": targets}


def oracle_params(records, conds) -> dict[int, tuple[float, float]]:
    """Median chosen Wiener balance and RL iteration count per condition."""
    out = {}
    for ci in range(len(conds)):
        b = [r["param"] for r in records if r["cond"] == ci and r["method"] == "wiener" and r["param"] is not None]
        n = [r["param"] for r in records if r["cond"] == ci and r["method"] == "rl" and r["param"] is not None]
        out[ci] = (float(np.median(b)) if b else np.nan, float(np.median(n)) if n else np.nan)
    return out


# --------------------------------------------------------------------------- real defocus + speed
def deepfocus(model, data: Path | None = None) -> list[dict]:
    """GRAN on the three DeepFocus SEM images: focus score median before/after + images."""
    from napari_emdeblur.deblur.infer import InferenceParams, correct_image
    from napari_emdeblur.qc import focus

    folder = (data or DATA) / "deepfocus_sem_defocus"
    names = ["pert5000", "base", "pert-5000"]  # least -> most defocused (PROVENANCE.md)
    out = []
    for n in names:
        f = next(folder.glob(f"*_{n}.png"), None)
        if f is None:
            continue
        img = _read(f)
        t0 = time.perf_counter()
        corr = correct_image(img, model, InferenceParams(device="cpu"))
        dt = time.perf_counter() - t0
        s0 = float(np.nanmedian(focus.score_tiles(img, 256)))
        s1 = float(np.nanmedian(focus.score_tiles(corr, 256)))
        out.append(dict(name=n, file=f.name, before=img, after=corr, score_before=s0, score_after=s1, seconds=dt))
    return out


def throughput(models: dict, size: int, data: Path | None = None) -> list[dict]:
    """Mpx/s of ``correct_image`` (default InferenceParams, tiling included) on a uint8 image."""
    import torch

    from napari_emdeblur.deblur.infer import InferenceParams, correct_image

    base = _read(_files((data or DATA) / HELD_OUT[0])[0])
    img = np.tile(base, (size // base.shape[0] + 1, size // base.shape[1] + 1))[:size, :size].copy()
    rows = []
    for name, model in models.items():
        if model is None:
            continue
        torch.set_num_threads(2)
        p = InferenceParams(device="cpu")
        correct_image(img[:512, :512], model, p)  # warm-up
        t0 = time.perf_counter()
        correct_image(img, model, p)
        dt = time.perf_counter() - t0
        rows.append(dict(model=name, device="cpu (2 threads)", precision="fp32", mpx_s=img.size / 1e6 / dt, seconds=dt))
        if torch.cuda.is_available():
            for prec in ("fp32", "bf16"):
                p = InferenceParams(device="cuda", precision=prec, batch=8)
                correct_image(img[:1024, :1024], model, p)
                torch.cuda.synchronize()
                best = np.inf
                for _ in range(3):
                    t0 = time.perf_counter()
                    correct_image(img, model, p)
                    torch.cuda.synchronize()
                    best = min(best, time.perf_counter() - t0)
                rows.append(dict(model=name, device=torch.cuda.get_device_name(0), precision=prec,
                                 mpx_s=img.size / 1e6 / best, seconds=best))
            model.to("cpu")
    return rows


def tiling_check(model, size: int = 1024, data: Path | None = None) -> list[dict]:
    """How far tiled output is from one whole-image pass (grey levels of 255) on a held-out section.

    The graph units make a window's output depend (weakly) on the whole window, so blended tiles
    are close to, not equal to, the whole-image result."""
    from napari_emdeblur.deblur.infer import InferenceParams, correct_image
    from napari_emdeblur.deblur.train.degrade import Degradation

    sharp8 = _read(_files((data or DATA) / HELD_OUT[0])[0])[:size, :size]
    sharp = sharp8.astype(np.float32) / 255.0  # the held-out data are 8-bit
    blurred = Degradation("gaussian", sigma=2.0, photons=300.0, read_sigma=0.01).apply(
        sharp, np.random.default_rng(0))
    img = np.rint(np.clip(blurred, 0, 1) * 255).astype(np.uint8)
    whole = correct_image(img, model, InferenceParams(tile=max(img.shape), overlap=0, batch=1, device="cpu"))
    rows = []
    for tile, overlap in ((512, 32), (256, 32)):
        t = correct_image(img, model, InferenceParams(tile=tile, overlap=overlap, batch=4, device="cpu"))
        d = np.abs(t.astype(np.int16) - whole.astype(np.int16))
        rows.append(dict(tile=tile, overlap=overlap, max=int(d.max()), mean=float(d.mean()),
                         frac_changed=float(np.count_nonzero(d) / d.size), shape=img.shape))
    return rows


# --------------------------------------------------------------------------- figures + report
def _atomic_savefig(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90, bbox_inches="tight"), overwrite=True)


def figure_examples(examples, conds, records, path: Path, show=(1, 3, 9), view: int = 160) -> None:
    """Rows = conditions ``show`` (crop 0), columns = methods; the central ``view`` px shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["sharp", "input", "wiener", "rl", "unet", "gran"]
    show = [ci for ci in show if (ci, 0) in examples]
    fig, axes = plt.subplots(len(show), len(cols), figsize=(2.2 * len(cols), 2.45 * len(show)), squeeze=False)
    for r, ci in enumerate(show):
        ex = examples[(ci, 0)]
        for c, m in enumerate(cols):
            ax = axes[r, c]
            ax.set_axis_off()
            img = ex.get(m)
            if img is None:
                ax.set_title(f"{METHOD_NAMES.get(m, m)}\nnot available", fontsize=7)
                continue
            o = (img.shape[0] - view) // 2
            ax.imshow(img[o : o + view, o : o + view], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if m == "sharp":
                title = "sharp (ground truth)"
            else:
                v = [x["psnr"] for x in records if x["cond"] == ci and x["crop"] == 0 and x["method"] == m][0]
                title = f"{METHOD_NAMES[m]}\n{v:.2f} dB"
            ax.set_title(title, fontsize=7)
        axes[r, 0].text(-0.08, 0.5, conds[ci].name, transform=axes[r, 0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=7)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)


def figure_deepfocus(df, path: Path, crop: int = 200) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(df), figsize=(3.0 * len(df), 6.3), squeeze=False)
    for c, d in enumerate(df):
        H, W = d["before"].shape
        y0, x0 = (H - crop) // 2, (W - crop) // 2
        for r, (key, sc) in enumerate((("before", "score_before"), ("after", "score_after"))):
            ax = axes[r, c]
            ax.imshow(d[key][y0 : y0 + crop, x0 : x0 + crop], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_axis_off()
            label = "real SEM" if key == "before" else "GRAN"
            ax.set_title(f"{d['name']}: {label}\nfocus score (image median) {d[sc]:.3f}", fontsize=8)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)


def _f(v, nd=2) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if np.isinf(v):
        return "∞"
    return f"{v:.{nd}f}"


def _cell(ps) -> str:
    p, s = ps
    if np.isnan(p):
        return "—"
    return f"{_f(p)} / {_f(s, 3)}"


def _weights_line(label: str, info: dict | None, missing: str) -> str:
    if info is None:
        return f"| {label} | not available ({missing}) | | | | |"
    card = info["card"]
    steps = (card.get("training") or {}).get("steps", "?")
    val = card.get("validation") or {}
    v = f"{val['psnr']:.2f} dB" if "psnr" in val else "?"
    return f"| {label} | `{info['path']}` | `{info['sha']}` | {steps} | {v} | {card.get('n_parameters', '?')} |"


def render(ctx: dict) -> str:
    conds, S, T = ctx["conds"], ctx["summary"], ctx["summary"]["targets"]
    L = []
    a = L.append
    a("# Restoration benchmark: GRAN vs. classical deconvolution and a U-Net")
    a("")
    a(f"Generated by `python benchmarks/restoration.py{ctx['cmd']}` on {ctx['date']} "
      f"({ctx['elapsed']:.0f} s, {ctx['machine']}). Every number below is this script's own output; "
      "nothing was tuned on the test crops.")
    a("")
    a("## Protocol")
    a("")
    a(f"* **Data**: {ctx['n_crops']} windows of {WIN} x {WIN} px at seeded random positions (seed {ctx['seed']}) in the "
      "held-out real EM, alternately Drosophila VNC ssTEM stack 2 and ISBI 2012 ssTEM test (not in the models' "
      "training data, see *Weights*). Metrics on the central 256 x 256 px of each window; the 32 px of context around it "
      "are given to every method, so window-edge effects stay out of the score.")
    a("* **Degradation** (`core.degrade.Degradation`, blur with reflective boundaries, then noise): Gaussian sigma 1/2/3 px; "
      "defocus = disk radius 3 px convolved with a Gaussian probe sigma 0.5 px; astigmatic = elliptical Gaussian, major "
      "sigma 2.5 px, minor/major 0.4, major axis at 30 deg. Noise *low* = Poisson 300 counts at full scale + Gaussian "
      "read noise 0.01; *high* = Poisson 60 + read 0.02. Clipped to [0, 1] and quantised to uint8. *Sharp, low noise*: "
      "no blur, low noise. *Sharp, clean*: the untouched crop (input = ground truth, PSNR infinite).")
    a(f"* **Unsharp mask** (`skimage.filters.unsharp_mask`): one fixed setting for all conditions, radius "
      f"{ctx['unsharp'][0]:g} px, amount {ctx['unsharp'][1]:g}, the best mean PSNR over the blurred conditions of a "
      f"{len(UNSHARP_GRID)}-point grid (radius 0.5-3, amount 0.3-2.5) on {ctx['n_tune']} separate tuning crops from "
      "ISBI *train* (not the test crops)."
      + (" It is the weakest amount of the grid: on these noisy inputs sharpening costs PSNR."
         if ctx["unsharp"][1] == min(a_ for _, a_ in UNSHARP_GRID) else ""))
    a(f"* **Wiener (oracle)**: `skimage.restoration.wiener` with the **true PSF**, balance chosen **per image by the "
      f"best PSNR against the ground truth** from {len(WIENER_BALANCES)} values log-spaced in 1e-4..10.")
    a(f"* **Richardson-Lucy (oracle)**: the RL update with the **true PSF** (FFT convolutions, u0 = 0.5 as in "
      f"skimage; it matches `skimage.restoration.richardson_lucy` away from the borders), the **best iteration count "
      f"per image** in 1..{RL_MAX_ITER} by PSNR against the ground truth. Both oracles run on the window reflect-padded "
      "by the PSF radius + 8 px.")
    a("* **U-Net** and **GRAN** are **blind** (no PSF): `model.infer.correct_image`, uint8 in, "
      "uint8 out. PSNR and SSIM: `skimage.metrics` conventions, [0, 1] floats, data_range 1."
      + (" *GRAN, U-Net's budget* is a GRAN of about the U-Net's size trained side by side with it (same data, "
         "degradations, batch, crop, learning rate and wall time): the architecture comparison of target (b). "
         "*GRAN* is the shipped model, trained longer." if ctx.get("gran_eq_info") else ""))
    a("")
    a("## Weights")
    a("")
    a("| model | path | sha256 (prefix) | training steps (card) | card validation PSNR | parameters |")
    a("|---|---|---|---|---|---|")
    a(_weights_line("GRAN", ctx["gran_info"], ""))
    if ctx.get("gran_eq_info"):
        a(_weights_line("GRAN, U-Net's budget", ctx["gran_eq_info"], ""))
    a(_weights_line("U-Net", ctx["unet_info"], ctx["unet_missing"]))
    a("")
    for label, info in (("GRAN", ctx["gran_info"]), ("GRAN, U-Net's budget", ctx.get("gran_eq_info")),
                        ("U-Net", ctx["unet_info"])):
        if info is None:
            continue
        tr = info["card"].get("training") or {}
        data = [os.path.relpath(d, DATA) if str(d).startswith(str(DATA)) else str(d) for d in tr.get("data", [])]
        overlap = [d for d in data if any(d.rstrip("/").endswith(h) for h in HELD_OUT)]
        a(f"{label} training data (card): {', '.join(f'`{d}`' for d in data) or 'not recorded'}"
          + (f" — **overlaps the test folders: {overlap}**" if overlap else " (disjoint from the test folders).")
          + "  ")
    a("")
    a("## Results (mean PSNR dB / SSIM per condition)")
    a("")
    shown = [m for m in METHODS if m != "gran_eq" or ctx.get("gran_eq_info")]
    a("| condition | " + " | ".join(METHOD_NAMES[m] for m in shown) + " |")
    a("|---|" + "---|" * len(shown))
    for ci, c in enumerate(conds):
        a(f"| {c.name} | " + " | ".join(_cell(S["table"][(ci, m)]) for m in shown) + " |")
    for g in S["groups"]:
        a(f"| **mean, {g}** | " + " | ".join(f"**{_cell(S['means'][(g, m)])}**" for m in shown) + " |")
    a("")
    a("*Sharp, clean*: the input is the ground truth itself (∞); the other columns show how far each method moves a "
      "perfect tile (higher = less change). Deconvolution with the identity PSF is not run there (—).")
    a("")
    a("Oracle choices (median over the crops of each condition):")
    a("")
    a("| condition | Wiener balance | RL iterations |")
    a("|---|---|---|")
    for ci, c in enumerate(conds):
        b, n = ctx["oracle"][ci]
        a(f"| {c.name} | {_f(b, 4) if not np.isnan(b) else '—'} | {_f(n, 0) if not np.isnan(n) else '—'} |")
    a("")
    a("## Target checks")
    a("")

    def ok(v, thr):
        if np.isnan(v):
            return "n/a"
        return "**met**" if v >= thr else "**not met**"

    a("| check | value | target | status |")
    a("|---|---|---|---|")
    a(f"| (a) GRAN − max(oracle Wiener, oracle RL), mean PSNR over all blurred conditions (better oracle: "
      f"{T['a_oracle']}) | {T['a']:+.2f} dB | ≥ +2 dB | {ok(T['a'], 2.0)} |")
    a(f"| (a') same, per image (GRAN − the better oracle on that image), mean | {T['a_per_image']:+.2f} dB | "
      "(information) | |")
    for g in S["groups"][1:]:
        gm = {m: S["means"][(g, m)][0] for m in METHODS}
        a(f"| (a'') GRAN − max(oracles), {g} | {gm['gran'] - max(gm['wiener'], gm['rl']):+.2f} dB | (information) | |")
    bval = f"{T['b']:+.2f} dB (SSIM {T['b_ssim']:+.3f})" if not np.isnan(T["b"]) else "U-Net not available"
    if T["b_model"] == "gran_eq":
        a(f"| (b) GRAN − U-Net at an equal budget (same data, degradations, batch, crop, wall time; about the same "
          f"size), mean PSNR over all blurred conditions | {bval} | > 0 | {ok(T['b'], 1e-9)} |")
        if not np.isnan(T["b_shipped"]):
            a(f"| (b') shipped GRAN − U-Net (the shipped GRAN had more training, see *Weights*) | "
              f"{T['b_shipped']:+.2f} dB | (information) | |")
    else:
        a(f"| (b) GRAN − U-Net, mean PSNR over all blurred conditions (no equal-budget GRAN given: the shipped one) "
          f"| {bval} | > 0 | {ok(T['b'], 1e-9)} |")
    a(f"| (c) GRAN − input on sharp, low-noise crops | {T['c']:+.2f} dB | ≥ −0.3 dB | {ok(T['c'], -0.3)} |")
    cg, cu = T["clean_gran"], T["clean_unet"]
    a(f"| (c') GRAN output vs. clean sharp input (PSNR / SSIM of the change) | {_f(cg[0])} dB / {_f(cg[1], 3)} | "
      f"(information; U-Net {_f(cu[0])} dB / {_f(cu[1], 3)}) | |")
    a("")
    a("## Real defocused SEM (DeepFocus, no ground truth)")
    a("")
    if ctx["deepfocus"]:
        a("The three real SEM images of one field of view at three working-distance offsets "
          "(`deepfocus_sem_defocus`, Schubert et al. 2024; none is in focus, `pert5000` is the least and `pert-5000` "
          "the most defocused) corrected whole with GRAN (`correct_image`, default tiling). Focus score = median over "
          "the 256 px tiles of `core.focus.score_tiles` (metric `autocorr`, higher = sharper). A higher score after "
          "correction means more high-frequency structure along y; it does not prove fidelity (noise or "
          "hallucinated texture would also raise it). Look at the figure.")
        a("")
        a("| image | score before | score after | ratio | GRAN time (s) |")
        a("|---|---|---|---|---|")
        for d in ctx["deepfocus"]:
            a(f"| {d['file']} | {d['score_before']:.4f} | {d['score_after']:.4f} | "
              f"{d['score_after'] / d['score_before']:.2f}x | {d['seconds']:.1f} |")
        a("")
        a("Central 200 px of each image, before (top) and after GRAN (bottom):")
        a("")
        a("![DeepFocus before/after](img/restoration_deepfocus.png)")
    else:
        a("deepfocus_sem_defocus not found: skipped.")
    a("")
    a("## Examples")
    a("")
    a("Central 160 px of crop 0 for three conditions; columns: sharp ground truth, degraded input, oracle Wiener, oracle RL, U-Net, GRAN "
      "(PSNR of that crop in the title).")
    a("")
    a("![examples](img/restoration_examples.png)")
    a("")
    a("## Inference throughput")
    a("")
    a(f"`correct_image` on a {ctx['tp_size']} x {ctx['tp_size']} uint8 image (default `InferenceParams`: tile 512, "
      "overlap 32, batch 4), tiling and blending included, one timed run after a warm-up. CPU: "
      f"`torch.set_num_threads(2)`. Load average at the start of the timing: {ctx['load']:.1f} on "
      f"{os.cpu_count()} cores"
      + (" (the machine was busy with other jobs, so the CPU numbers are pessimistic)." if ctx["load"] > 0.75 * (os.cpu_count() or 1) else "."))
    a("")
    a("| model | device | precision | Mpx/s | seconds |")
    a("|---|---|---|---|---|")
    if not ctx["throughput"]:
        a("| (not measured in this run) | | | | |")
    for r in ctx["throughput"]:
        a(f"| {r['model']} | {r['device']} | {r['precision']} | {r['mpx_s']:.3f} | {r['seconds']:.1f} |")
    if not ctx["cuda"]:
        a("")
        a("No GPU in this run (fp32/bf16 CUDA timings not measured).")
    if ctx.get("tiling"):
        a("")
        a("## Tiled vs. whole-image output")
        a("")
        sh = ctx["tiling"][0]["shape"]
        a(f"GRAN on a {sh[0]} x {sh[1]} crop of the first held-out Drosophila section (Gaussian sigma 2, Poisson 300, "
          "uint8), tiled with blending vs. one whole-image window. The graph units see the whole window, so tiles "
          "are close to, not identical with, the whole pass:")
        a("")
        a("| tile / overlap (px) | max abs difference (grey levels of 255) | mean | pixels that differ |")
        a("|---|---|---|---|")
        for r in ctx["tiling"]:
            a(f"| {r['tile']} / {r['overlap']} | {r['max']} | {r['mean']:.3f} | {100 * r['frac_changed']:.1f} % |")
    a("")
    a("## Caveats")
    a("")
    a("* The oracles are given the true PSF and pick their parameter with the ground truth per image: an upper bound "
      "for what Wiener / RL can do, not something reachable on real data, where the PSF is unknown.")
    a("* The degradations are of the same families as the models' training degradations (`DegradationRanges`), so "
      "this is an in-distribution test for U-Net and GRAN; real aberrations (DeepFocus) are only scored by a "
      "no-reference focus metric.")
    a("* The held-out sections were also the training runs' validation set (16 fixed crops with random "
      "degradations), which chose the saved `model_best` checkpoint: a mild selection bias in favour of both "
      "networks (the same for both).")
    a(f"* {ctx['n_crops']} crops per condition: differences below ~0.2 dB between methods are within noise.")
    a("")
    return "\n".join(L)


def write_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text, overwrite=True)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {np.__version__}")


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    from napari_emdeblur.deblur.weights import WeightsError, shipped_weights_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 crops, 1024 px throughput image (a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "restoration.md"), help="markdown report to write")
    ap.add_argument("--img-dir", default=None, help="folder for the figures (default: <out folder>/img)")
    ap.add_argument("--gran", default=None, help="GRAN weights .pt (default: the shipped weights)")
    ap.add_argument("--unet", default=str(ROOT / "benchmarks" / "weights" / "unet_baseline.pt"),
                    help="U-Net baseline weights .pt (missing: the U-Net column says not available)")
    ap.add_argument("--gran-equal", default=str(ROOT / "benchmarks" / "weights" / "gran_equal_budget.pt"),
                    help="GRAN trained with the U-Net's data and wall time, for target (b) (missing: (b) uses --gran)")
    ap.add_argument("--crops", type=int, default=None, help="test crops (default 12, --quick 4)")
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--no-deepfocus", action="store_true", help="skip the real DeepFocus images")
    ap.add_argument("--no-throughput", action="store_true", help="skip the throughput timing")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    t_start = time.perf_counter()
    gran_path = Path(args.gran) if args.gran else shipped_weights_path()
    try:
        gran, gcard, gp, gsha = load(gran_path)
    except WeightsError as e:
        print(f"error: GRAN weights: {e} (pass --gran runs/gran_em_v1/model_best.pt to use a training run)",
              file=sys.stderr)
        return 2
    gran_info = dict(path=os.path.relpath(gp, ROOT) if gp.startswith(str(ROOT)) else gp, sha=gsha, card=gcard)
    unet, unet_info, unet_missing = None, None, ""
    try:
        unet, ucard, up, usha = load(Path(args.unet))
        unet_info = dict(path=os.path.relpath(up, ROOT) if up.startswith(str(ROOT)) else up, sha=usha, card=ucard)
    except WeightsError as e:
        unet_missing = str(e)
        print(f"U-Net not available: {e}")
    gran_eq, gran_eq_info = None, None
    try:
        gran_eq, ecard, ep, esha = load(Path(args.gran_equal))
        gran_eq_info = dict(path=os.path.relpath(ep, ROOT) if ep.startswith(str(ROOT)) else ep, sha=esha, card=ecard)
    except WeightsError as e:
        print(f"equal-budget GRAN not available: {e} ((b) compares the shipped GRAN)")
    if not DATA.exists():
        print(f"error: data folder {DATA} not found (set EMDEBLUR_SHARED_DATA)", file=sys.stderr)
        return 2

    n = args.crops or (4 if args.quick else 12)
    conds = conditions()
    tune = sample_windows(2, args.seed + 1, folders=(TUNING,))
    rp, _ = choose_unsharp(tune, conds, args.seed)
    print(f"unsharp mask: radius {rp[0]}, amount {rp[1]} (chosen on {len(tune)} ISBI-train crops)")
    windows = sample_windows(n, args.seed)
    records, examples = evaluate(windows, conds, {"unet": unet, "gran_eq": gran_eq, "gran": gran}, rp, args.seed)
    summary = summarise(records, conds)
    T = summary["targets"]
    print(f"(a) GRAN - best oracle: {T['a']:+.2f} dB (per image {T['a_per_image']:+.2f}); "
          f"(b) GRAN - U-Net: {T['b']:+.2f} dB; (c) sharp: {T['c']:+.2f} dB")

    out = Path(args.out)
    img_dir = Path(args.img_dir) if args.img_dir else out.parent / "img"
    figure_examples(examples, conds, records, img_dir / "restoration_examples.png")
    df = [] if args.no_deepfocus else deepfocus(gran)
    for d in df:
        print(f"deepfocus {d['name']}: focus {d['score_before']:.4f} -> {d['score_after']:.4f}")
    if df:
        figure_deepfocus(df, img_dir / "restoration_deepfocus.png")
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    tp_size = 1024 if args.quick else 2048
    tp = [] if args.no_throughput else throughput({"GRAN": gran, "U-Net": unet}, tp_size)
    tiling = tiling_check(gran, 512 if args.quick else 1024)
    for r in tiling:
        print(f"tiled {r['tile']}/{r['overlap']} vs whole: max {r['max']} mean {r['mean']:.3f} grey levels")
    for r in tp:
        print(f"throughput {r['model']} {r['device']} {r['precision']}: {r['mpx_s']:.3f} Mpx/s")
    if not torch.cuda.is_available():
        print("no GPU in this run")
    cmd = "".join([" --quick" if args.quick else "", f" --crops {n}" if args.crops else "",
                   f" --gran {args.gran}" if args.gran else ""])
    ctx = dict(
        conds=conds, summary=summary, oracle=oracle_params(records, conds), n_crops=n, seed=args.seed,
        n_tune=len(tune), unsharp=rp, gran_info=gran_info, gran_eq_info=gran_eq_info, unet_info=unet_info, unet_missing=unet_missing,
        deepfocus=df, throughput=tp, tp_size=tp_size, tiling=tiling, load=load_avg, cuda=torch.cuda.is_available(),
        cmd=cmd, date=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), machine=machine(),
        elapsed=time.perf_counter() - t_start,
    )
    write_atomic(render(ctx), out)
    print(f"wrote {out} ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
