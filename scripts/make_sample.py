#!/usr/bin/env python
"""Build the bundled sample section from real ssTEM data (drosophila_vnc_sstem, CC BY-NC-SA 3.0).

One 1024 x 1024 section (``stack2/17.tif``, the sharpest of its stack by a high/low-frequency
spectral ratio, 4.6 nm/px) is cut into a 4 x 4 grid of 256 px tiles, as a multi-beam or tiled
acquisition would be. Five tiles are given their own focus error with
``core.degrade.Degradation``: 2 mild (inside the range the model is trained on and meant to be
corrected), 2 medium and 1 severe (beyond the training range: should be flagged for
re-imaging). For each degradation the **whole** image is blurred (reflective borders) and only
the tile's region is pasted, so every blurred tile is a physically consistent piece of a
blurred image with a sharp focus step at its border, like a tile acquired with a different
focus. Mild Poisson noise (300 counts at full intensity) is then added to the whole composite.

Writes ``sample_section.tif`` (blurred + noise, uint8), ``sample_ground_truth.tif`` (the
original section) - both ImageJ TIFFs with 4.6 nm pixels - and ``sample_tiles.json``.

    python scripts/make_sample.py [--data ../shared/data] [--out src/napari_emdeblur/data/sample]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from napari_emdeblur.deblur.train.degrade import Degradation, add_noise, psf_sigma
from napari_emdeblur.io import load_section, save_image
from napari_emdeblur.qc.tiling import TileGrid

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "drosophila_vnc_sstem/stack2/17.tif"
PIXEL_NM = 4.6
TILE = 256
SEED = 2023
PHOTONS = 300.0

# (row, col, severity, degradation)
BLURRED = [
    (0, 1, "mild", Degradation(kind="gaussian", sigma=1.2)),
    (2, 3, "mild", Degradation(kind="defocus", radius=1.5, probe_sigma=0.5)),
    (1, 2, "medium", Degradation(kind="astigmatic", sigma=2.6, ratio=0.4, angle=35.0)),
    (3, 1, "medium", Degradation(kind="defocus", radius=3.0, probe_sigma=0.6)),
    (2, 0, "severe", Degradation(kind="gaussian", sigma=5.0)),
]


def build(data_root: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    src = data_root / SOURCE
    sec = load_section(src)
    sharp = np.asarray(sec.data)
    if sharp.shape != (1024, 1024) or sharp.dtype != np.uint8:
        raise SystemExit(f"{src}: expected a 1024x1024 uint8 section, got {sharp.shape} {sharp.dtype}")
    img01 = sharp.astype(np.float32) / 255.0
    grid = TileGrid(sharp.shape, TILE)
    comp = img01.copy()
    tiles = []
    for row, col, severity, deg in BLURRED:
        full = deg.apply(img01)  # blur only: the degradations carry no noise themselves
        ys, xs = grid.slices(row, col)
        comp[ys, xs] = full[ys, xs]
        y0, x0, h, w = grid.bounds(row, col)
        tiles.append({
            "row": row, "col": col, "y0": y0, "x0": x0, "height": h, "width": w,
            "severity": severity,
            "degradation": deg.to_dict(),
            "psf_sigma_px": round(psf_sigma(deg.psf()), 3),
        })
    rng = np.random.default_rng(SEED)
    noisy = add_noise(comp, rng, photons=PHOTONS)
    soft = np.clip(np.round(noisy * 255.0), 0, 255).astype(np.uint8)
    blurred_rc = {(t["row"], t["col"]) for t in tiles}
    info = {
        "description": "Sample EM section: a 4x4 grid of 256 px tiles, 5 tiles defocused at known "
                       "strengths; the other tiles are the original (sharp) data plus the same noise.",
        "source": {
            "dataset": "Segmented anisotropic ssTEM dataset of neural tissue (Drosophila VNC)",
            "file": SOURCE,
            "doi": "10.6084/m9.figshare.856713",
            "license": "CC BY-NC-SA 3.0",
        },
        "shape": list(sharp.shape),
        "dtype": "uint8",
        "pixel_size_nm": [PIXEL_NM, PIXEL_NM],
        "tile": TILE,
        "grid": [grid.rows, grid.cols],
        "blend": "each degradation applied to the whole image, tile region pasted (hard border)",
        "noise": {"kind": "poisson", "photons": PHOTONS, "applied_to": "whole section", "seed": SEED},
        "blurred_tiles": tiles,
        "sharp_tiles": [[i, j] for i, j in grid if (i, j) not in blurred_rc],
        "files": {"section": "sample_section.tif", "ground_truth": "sample_ground_truth.tif"},
        "generator": "scripts/make_sample.py",
    }
    return soft, sharp, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("EMDEBLUR_SHARED_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "napari_emdeblur" / "data" / "sample")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    soft, sharp, info = build(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    md = {"sample": "napari-emdeblur", "license": "CC BY-NC-SA 3.0", "doi": info["source"]["doi"]}
    save_image(args.out / "sample_section.tif", soft, (PIXEL_NM, PIXEL_NM),
               dict(md, role="blurred section"), overwrite=args.overwrite)
    save_image(args.out / "sample_ground_truth.tif", sharp, (PIXEL_NM, PIXEL_NM),
               dict(md, role="ground truth"), overwrite=args.overwrite)
    target = args.out / "sample_tiles.json"
    if target.exists() and not args.overwrite:
        raise SystemExit(f"{target} exists (use --overwrite)")
    fd, tmp = tempfile.mkstemp(prefix=".sample_tiles.", suffix=".tmp", dir=args.out)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    um = os.umask(0)
    os.umask(um)
    os.chmod(tmp, 0o666 & ~um)
    os.replace(tmp, target)
    total = sum((args.out / n).stat().st_size for n in os.listdir(args.out))
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
