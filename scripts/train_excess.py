"""Train the excess-blur layer of the focus QC (``qc.excess``): synthetic blur of the training folders,
the package's own spectral features, a small torch MLP per seed, packed as numpy weights with a card.

    .venv/bin/python scripts/train_excess.py --window 128 [--positions 9] [--members 3] [--jobs 2]
                                             [--work DIR] [--out src/napari_emdeblur/qc/weights/excess_w128.npz]

Steps (each cached under ``--work``, default ``<tmp>/emdeblur-excess``):

1. **Samples**: 256 px crops of the TRAINING folders named in the shipped card (FIB-SEM slices of 250 px
   whole), each drawn several times with a random added blur (none / Gaussian 0-4 px / disk radius 0.3-7 /
   astigmatic major 0.3-4.5 ratio 0.1-1; plus a "severe" set: Gaussian 3-10, disk 5-16, astigmatic 3-10),
   noise none / white / Poisson / AR(1) along x / along y (``deblur.train.degrade``, the benchmark's
   models, wider ranges), gain 0.2-2, offset +-0.25, uint8; half the sources transposed. Truth: the
   covariance of the added PSF.
2. **Features** (``qc.excess.features`` on ``qc.spectral.tile_spectra``) of ``--positions`` windows of
   ``--window`` px per crop (centre, corners, edge midpoints: the blur is the same over the crop, so every
   window is one more noisy look at it), augmented by flips and transposes (``qc.excess.transform``).
3. **Members**: MLP 208-128-128-3 (SiLU), Huber loss on (e, d1, d2), AdamW + one-cycle, 60 epochs;
   model selection on a validation split INSIDE the training folders (by source file); the held-out
   folders of the card are never read.
4. **Pack**: the members' mean is the layer (``--out``, with its JSON card and checksum).

Torch is used here only; the package runs the layer with numpy. Check the result with
``python benchmarks/focus_metrics.py`` (held-out folders) before shipping it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_emdeblur.deblur.train import degrade  # noqa: E402
from napari_emdeblur.io import load_section  # noqa: E402
from napari_emdeblur.io.atomic import atomic_write, atomic_write_text  # noqa: E402
from napari_emdeblur.qc import excess  # noqa: E402
from napari_emdeblur.qc.spectral import tile_spectra  # noqa: E402

TILE = 256
NOISES = degrade.NOISE_KINDS
DRAWS = {"train": {"sstem": 12, "sbem": 8, "fibsem": 50}, "severe": {"sstem": 3, "sbem": 2, "fibsem": 12}}
SEEDS = {"train": 99, "severe": 98}
VAL_RULES = {  # the validation split, inside the training folders, by source file
    "sstem": lambda s: any(s.endswith(f"/{k}.png") for k in range(25, 30)) or any(s.endswith(f"/{k}.tif") for k in range(16, 20)),
    "sbem": lambda s: s[-7:-4] >= "055",
    "fibsem": lambda s: "training_sample2" in s and int(s.split(".")[-2]) >= 3000,
}
VALIDATION_NOTE = ("inside the training folders, by source file: ssTEM ISBI train slices 25-29 and Drosophila stack 1 "
                   "sections 16-19; SBEM files 055-059; FIB-SEM training_sample2 slices >= 3000")


def data_root() -> Path:
    env = os.environ.get("EMDEBLUR_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def shipped_card() -> dict:
    return excess.load_weights(excess.weights_for(128)).card


# --------------------------------------------------------------------------- 1. samples
def _psf(kind: str, p: dict) -> np.ndarray:
    if kind == "gaussian":
        return degrade.gaussian_psf(p["sigma"])
    if kind == "disk":
        return degrade.disk_psf(p["radius"])
    if kind == "astigmatic":
        return degrade.elliptical_gaussian_psf(p["sigma"], p["sigma"] * p["ratio"], p["angle"])
    return np.ones((1, 1), np.float32)


def _cov(psf: np.ndarray) -> np.ndarray:
    if psf.size == 1:
        return np.zeros((2, 2))
    h, w = psf.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    p = psf / psf.sum()
    dx, dy = xx - (p * xx).sum(), yy - (p * yy).sum()
    return np.array([[(p * dx * dx).sum(), (p * dx * dy).sum()], [(p * dx * dy).sum(), (p * dy * dy).sum()]])


def draw(rng: np.random.Generator, severe: bool) -> dict:
    if severe:
        kind = str(rng.choice(["gaussian", "disk", "astigmatic"]))
        p = ({"sigma": float(rng.uniform(3.0, 10.0))} if kind == "gaussian" else
             {"radius": float(rng.uniform(5.0, 16.0))} if kind == "disk" else
             {"sigma": float(rng.uniform(3.0, 10.0)), "ratio": float(rng.uniform(0.2, 1.0)),
              "angle": float(rng.uniform(0, 180))})
    else:
        kind = str(rng.choice(["none", "gaussian", "disk", "astigmatic", "astigmatic"], p=[0.1, 0.35, 0.2, 0.2, 0.15]))
        p = ({"sigma": float(rng.uniform(0.0, 4.0))} if kind == "gaussian" else
             {"radius": float(rng.uniform(0.3, 7.0))} if kind == "disk" else
             {"sigma": float(rng.uniform(0.3, 4.5)), "ratio": float(rng.uniform(0.1, 1.0)),
              "angle": float(rng.uniform(0, 180))} if kind == "astigmatic" else {})
        if kind == "gaussian" and p["sigma"] < 0.05:
            kind, p = "none", {}
    return {"kind": kind, "params": p, "noise": str(rng.choice(NOISES)),
            "photons": float(np.exp(rng.uniform(np.log(20), np.log(1000)))),
            "read_sigma": float(np.exp(rng.uniform(np.log(0.005), np.log(0.08)))),
            "corr": float(rng.uniform(0.3, 0.9)), "gain": float(np.exp(rng.uniform(np.log(0.2), np.log(2.0)))),
            "offset": float(rng.uniform(-0.25, 0.25))}


def apply(crop: np.ndarray, c: dict, psf: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur (reflective boundaries) + noise + gain / offset + uint8, as the focus benchmark does."""
    return degrade.degrade_u8(crop, psf, rng, c["noise"], c["photons"], c["read_sigma"], c["corr"], c["gain"], c["offset"])


def crops_of(img: np.ndarray) -> list[np.ndarray]:
    h, w = img.shape
    if min(h, w) < TILE:  # FIB-SEM training slices are 250 px: one centred square
        s = min(h, w)
        return [img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]]
    return [img[y : y + TILE, x : x + TILE] for y in range(0, h - TILE + 1, TILE) for x in range(0, w - TILE + 1, TILE)]


def make_set(name: str, splits: dict, work: Path) -> None:
    """Samples of set ``name`` ("train" / "severe") per modality -> work/<name>_<mod>.npz (+ .json)."""
    rng = np.random.default_rng(SEEDS[name])
    root = data_root()
    for mod, globs in splits.items():
        f = work / f"{name}_{mod}.npz"
        if f.exists():
            continue
        t0 = time.time()
        tiles, meta = [], []
        for g in globs:
            for path in sorted(root.glob(g)):
                img = np.ascontiguousarray(np.asarray(load_section(path).data))
                for crop in crops_of(img):
                    for _ in range(DRAWS[name][mod]):
                        c = draw(rng, severe=name == "severe")
                        psf = _psf(c["kind"], c["params"])
                        t = crop.T if rng.random() < 0.5 else crop  # scan axis: transposed sources too
                        tiles.append(apply(np.ascontiguousarray(t), c, psf, rng))
                        meta.append({**c, "cov": _cov(psf).tolist(), "src": path.relative_to(root).as_posix()})
        # the .npz last and atomically: its presence means the set is complete (a killed run redoes it)
        atomic_write_text(f.with_suffix(".json"), json.dumps(meta), overwrite=True)
        atomic_write(f, lambda fh: np.savez(fh, tiles=np.stack(tiles)), overwrite=True)
        print(f"samples {name} {mod}: {len(tiles)} in {time.time() - t0:.0f} s", flush=True)


# --------------------------------------------------------------------------- 2. features
def window_offsets(h: int, w: int, window: int, positions: int) -> list[tuple[int, int]]:
    if window >= min(h, w):
        return [(0, 0)]
    cy, cx, by, bx = (h - window) // 2, (w - window) // 2, h - window, w - window
    pos = [(cy, cx), (0, 0), (0, bx), (by, 0), (by, bx), (0, cx), (cy, 0), (cy, bx), (by, cx)]
    return pos[:positions]


def features_of(tiles: np.ndarray, window: int | None, positions: int) -> np.ndarray:
    """(P, n, N_FEATURES) features of P windows per tile (the whole tile when ``window`` is None)."""
    h, w = tiles.shape[1:]
    side = window or min(h, w)
    out = []
    for y0, x0 in window_offsets(h, w, side, positions if window else 1):
        per = []
        for i in range(0, len(tiles), 256):
            t = np.ascontiguousarray(tiles[i : i + 256, y0 : y0 + side, x0 : x0 + side])
            s = tile_spectra(t, quant=1 / 255.0, scale=1 / 255.0, workers=1)
            per.append(excess.features(s, excess.feature_fit(s)))
        out.append(np.concatenate(per))
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------- 3. members
def _cov_transform(c: np.ndarray, kind: str) -> np.ndarray:
    d = c.copy()
    if kind == "flipx":
        d[:, 1] = -c[:, 1]
    else:
        d[:, 0], d[:, 2] = c[:, 2], c[:, 0]
    return d


def dataset(work: Path, splits: dict, window: int | None, positions: int):
    ftr, ttr, fva, tva = [], [], [], []
    for mod in splits:
        for name in ("train", "severe"):
            f = work / f"feat_{name}_{mod}_{window or 'full'}_p{positions}.npz"
            feats = np.load(f)["F"]
            meta = json.loads((work / f"{name}_{mod}.json").read_text())
            cov = np.array([m["cov"] for m in meta])
            t = np.stack([cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]], 1)
            val = np.array([VAL_RULES[mod](m["src"]) for m in meta])
            ftr.append(feats[:, ~val].reshape(-1, feats.shape[-1]))
            ttr.append(np.tile(t[~val], (feats.shape[0], 1)))
            fva.append(feats[0, val])  # validation: the centre window, as the QC analyses it
            tva.append(t[val])
    fs, ts = [np.concatenate(ftr)], [np.concatenate(ttr)]
    for kind in ("flipx", "transpose"):  # the grid symmetries: the layer does not depend on the scan axis
        fs += [excess.transform(f, kind) for f in fs]
        ts += [_cov_transform(t, kind) for t in ts]
    return np.concatenate(fs), np.concatenate(ts), np.concatenate(fva), np.concatenate(tva)


def _outputs(t: np.ndarray) -> np.ndarray:
    """(Sxx, Sxy, Syy) -> (e, d1, d2), the layer's outputs."""
    e = np.sqrt(np.clip((t[:, 0] + t[:, 2]) / 2, 0, None))
    return np.stack([e, (t[:, 0] - t[:, 2]) / 2, t[:, 1]], 1)


def train_member(args: tuple) -> dict:
    work, splits, window, positions, seed, hidden, epochs = args
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    ftr, ttr, fva, tva = dataset(work, splits, window, positions)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-3
    dims = [ftr.shape[1], *hidden, 3]
    layers: list = []
    for i in range(len(dims) - 1):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(torch.nn.SiLU())
    net = torch.nn.Sequential(*layers)
    xt = torch.tensor((ftr - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(_outputs(ttr), dtype=torch.float32)
    xv = torch.tensor((fva - mu) / sd, dtype=torch.float32)
    yv = torch.tensor(_outputs(tva), dtype=torch.float32)
    bs, lr = 512, 2e-3
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * (len(xt) // bs + 1))
    wts = torch.tensor([1.0, 0.5, 0.5])

    def loss_fn(p, y):
        return (torch.nn.functional.huber_loss(p, y, reduction="none", delta=0.5) * wts).sum(1).mean()

    best, best_state, best_ep = float("inf"), None, -1
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), bs):
            idx = perm[i : i + bs]
            opt.zero_grad()
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            lv = float(loss_fn(net(xv), yv))
        if lv < best:
            best, best_ep = lv, ep
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    arrs = {"mu": mu.astype(np.float32), "sd": sd.astype(np.float32)}
    for i, m in enumerate(x for x in net if isinstance(x, torch.nn.Linear)):
        arrs[f"W{i}"] = m.weight.detach().numpy().T.astype(np.float32)
        arrs[f"b{i}"] = m.bias.detach().numpy().astype(np.float32)
    print(f"member seed {seed}: validation loss {best:.4f} (epoch {best_ep})", flush=True)
    return {"arrays": arrs, "seed": seed, "val_loss": best, "best_epoch": best_ep,
            "n_train": int(len(xt)), "n_val": int(len(xv))}


# --------------------------------------------------------------------------- 4. pack
def pack(members: list[dict], out: Path, window: int | None, positions: int, hidden: list[int], epochs: int,
         splits: dict, held_out: dict) -> None:
    arrs: dict = {"n_members": np.array(len(members))}
    for i, m in enumerate(members):
        arrs.update({f"m{i}_{k}": v for k, v in m["arrays"].items()})
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrs)
    card = {
        "format": "napari-emdeblur excess-blur MLP v1",
        "model": "excess-blur MLP (numpy inference: napari_emdeblur.qc.excess)",
        "inputs": f"napari_emdeblur.qc.excess.features: {excess.N_FEATURES} gain- and offset-invariant spectral features",
        "n_features": excess.N_FEATURES,
        "window": window,
        "outputs": "e = equivalent sigma of the added blur (px), d1 = (Axx-Ayy)/2, d2 = Axy (px^2)",
        "architecture": {"hidden": hidden, "activation": "SiLU",
                         "params": int(sum(v.size for k, v in members[0]["arrays"].items() if k[0] in "Wb"))},
        "members": len(members),
        "training_data": {
            "data_root": "the shared EM data folder ($EMDEBLUR_SHARED_DATA, or <repo>/../shared/data)",
            "splits": splits, "validation": VALIDATION_NOTE, "held_out_never_used": held_out,
        },
        "synthesis": ("scripts/train_excess.py: synthetic blur of 256 px crops of the training folders (FIB-SEM: "
                      "whole 250 px slices), per crop ssTEM 12 / SBEM 8 / FIB-SEM 50 draws: added blur none / Gaussian "
                      "0-4 px / disk radius 0.3-7 px / astigmatic major 0.3-4.5 px, ratio 0.1-1, plus a 'severe' set "
                      "(3 / 2 / 12 draws: Gaussian 3-10 px, disk radius 5-16 px, astigmatic major 3-10 px); noise none / "
                      "white / Poisson / AR(1)-correlated along x / along y (deblur.train.degrade); gain 0.2-2, offset "
                      "+-0.25; uint8; half the sources transposed; features of "
                      + (f"{positions} windows of {window} px per crop (centre, corners, edge midpoints)"
                         if window else "the whole crop")
                      + ", augmented by flips and transposes (napari_emdeblur.qc.excess.transform)"),
        "training": {
            "script": "scripts/train_excess.py", "epochs": epochs, "batch": 512, "lr": 2e-3, "weight_decay": 1e-4,
            "loss": "Huber (delta 0.5) on (e, d1, d2), weights 1 / 0.5 / 0.5", "n_train": members[0]["n_train"],
            "n_val": members[0]["n_val"],
            "ensemble": {"members": len(members), "seeds": [m["seed"] for m in members],
                         "val_loss": [m["val_loss"] for m in members], "best_epoch": [m["best_epoch"] for m in members],
                         "combination": "mean of the members' outputs (e, d1, d2)"},
        },
        "weights_sha256": hashlib.sha256(tmp.read_bytes()).hexdigest(),
        "tile": TILE,
    }
    ctmp = out.with_suffix(".json.tmp")
    ctmp.write_text(json.dumps(card, indent=1))
    os.replace(tmp, out)
    os.replace(ctmp, out.with_suffix(".json"))
    excess.load_weights.cache_clear()
    excess.load_weights(out)  # the package's own checks
    print(f"wrote {out} and its card", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", default="128", help="analysis window in px, or 'full' (whole 256 px tiles)")
    ap.add_argument("--positions", type=int, default=9, help="windows per crop (1, 5 or 9)")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "emdeblur-excess")
    ap.add_argument("--out", type=Path, default=None, help="weights to write (default: the shipped file for the window)")
    a = ap.parse_args(argv)
    window = None if a.window == "full" else int(a.window)
    card = shipped_card()
    splits = card["training_data"]["splits"]
    held_out = card["training_data"]["held_out_never_used"]
    a.work.mkdir(parents=True, exist_ok=True)
    for name in ("train", "severe"):
        make_set(name, splits, a.work)
        for mod in splits:
            f = a.work / f"feat_{name}_{mod}_{window or 'full'}_p{a.positions}.npz"
            if not f.exists():
                t0 = time.time()
                feats = features_of(np.load(a.work / f"{name}_{mod}.npz")["tiles"], window, a.positions)
                atomic_write(f, lambda fh: np.savez(fh, F=feats), overwrite=True)
                print(f"features {name} {mod}: {time.time() - t0:.0f} s", flush=True)
    jobs = [(a.work, splits, window, a.positions, seed, list(a.hidden), a.epochs) for seed in range(a.members)]
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        members = list(pool.map(train_member, jobs))
    out = a.out or excess.WEIGHTS_DIR / excess.SHIPPED_WEIGHTS[window or 256]
    pack(members, out, window, a.positions, list(a.hidden), a.epochs, splits, held_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
