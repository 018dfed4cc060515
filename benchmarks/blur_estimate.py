"""Error of the per-tile blur estimate (``core.blur_estimate.estimate_blur_tiles``) on held-out EM.

Held-out sections (ISBI 2012 test, Drosophila VNC stack 2), blurred with a known PSF and Poisson
noise; every 256-px tile's estimate is compared with the true Gaussian sigma (or, for defocus
disks, the PSF's RMS-equivalent sigma). Prints a Markdown table.
Usage: python benchmarks/blur_estimate.py [--sections N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_emdeblur.deblur.train import degrade  # noqa: E402
from napari_emdeblur.io import load_section  # noqa: E402
from napari_emdeblur.qc.blur import estimate_blur_tiles  # noqa: E402

DATA = Path(os.environ.get("EMDEBLUR_SHARED_DATA", ROOT.parent / "shared" / "data"))
HELD_OUT = {"ISBI test": ("isbi2012_sstem/test", "*.png"),
            "Drosophila VNC stack2": ("drosophila_vnc_sstem/stack2", "*.tif")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", type=int, default=5, help="sections per held-out folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print("| held-out data | blur | tiles | MAE (px) | bias (px) | RMSE (px) |\n|---|---|---|---|---|---|")
    for label, (sub, pattern) in HELD_OUT.items():
        files = sorted((DATA / sub).glob(pattern))[: args.sections]
        if not files:
            sys.exit(f"no data under {DATA / sub}")
        imgs = [np.asarray(load_section(f).data, np.float32) / 255.0 for f in files]
        for kind, levels in (("Gaussian", np.arange(1.0, 3.51, 0.5)), ("defocus disk", (2.0, 3.0, 4.0))):
            err = []
            for img in imgs:
                for v in levels:
                    d = degrade.Degradation("gaussian", sigma=float(v)) if kind == "Gaussian" else \
                        degrade.Degradation("defocus", radius=float(v), probe_sigma=0.5)
                    d.photons = float(rng.uniform(50, 500))
                    truth = float(v) if kind == "Gaussian" else degrade.psf_sigma(d.psf())
                    soft = np.clip(d.apply(img, rng), 0, 1)
                    est = estimate_blur_tiles((soft * 255).round().astype(np.uint8), 256)
                    err.extend((est[np.isfinite(est)] - truth).ravel())
            e = np.asarray(err)
            print(f"| {label} ({len(files)} sections) | {kind} | {e.size} | {np.abs(e).mean():.2f} | "
                  f"{e.mean():+.2f} | {np.sqrt((e ** 2).mean()):.2f} |")


if __name__ == "__main__":
    main()
