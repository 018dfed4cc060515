"""A synthetic Zeiss-MultiSEM-style section folder made from real, sharp EM (benchmark and test data).

    nice -n 5 python benchmarks/msem_section.py OUT [--mfovs 6] [--tile 1750 2000] [--rings 4]
                                                    [--workers 2] [--ext bmp] [--no-thumbnails]

Layout (what a 61-beam MultiSEM writes, reproduced from public descriptions):

* the beams of one multi-beam field of view (mFOV) sit on a hexagonal lattice: beam 1 in the
  centre, then rings 1..R (6, 12, 18, 24 beams for R = 4: 61 beams). A beam's image (a
  *single-beam FOV*, one file) is a rectangle of ``tile`` px; neighbours in a row are
  ``pitch_x`` apart, rows ``pitch_y`` apart and shifted by half a pitch, so that every tile
  overlaps its six neighbours (``overlap``, 8 %);
* mFOVs tile the plane as "hexagons of hexagons": in axial beam coordinates the mFOV centres are
  the lattice spanned by ``(2R+1, -R)`` and ``(R, R+1)``; the ``mfovs`` lattice points nearest to
  the origin are imaged; every mFOV gets a small stage error (+-25 px), every beam +-3 px;
* files: ``<mfov:06d>/<scan:03d>_<mfov:06d>_<beam:03d>_<timestamp>.<ext>`` and, as MultiSEM
  writes them, ``thumbnail_<same name>`` beside each tile (area-averaged, 1/``thumb_factor``
  per axis); ``full_image_coordinates.txt`` / ``full_thumbnail_coordinates.txt`` at the section
  level (``mfov\\file<TAB>x<TAB>y<TAB>z``, Windows separators, stage coordinates with an
  arbitrary negative origin; the thumbnail file in thumbnail pixels) and per-mFOV
  ``image_coordinates.txt`` / ``thumbnail_coordinates.txt``.

Content: the specimen is one continuous image, so overlapping tiles show the same structure:
1024-px cells of real EM (``drosophila_vnc_sstem`` stacks, ``sbem_rodent_cdeep3m``; each
normalised to zero mean / unit std, flipped / rotated by a hash of the cell; an EM-like
synthetic texture when the data set is absent) on top of a smooth large-scale field (blobs of
300-3000 px, +-55 grey levels) so that the zoomed-out overview has structure to recognise.
Every tile adds its own detector noise and a per-beam brightness offset. A few tiles are
Gaussian-blurred with a known sigma; some beams are missing (gaps inside the mosaic).
``manifest.json`` (written last: its presence means the folder is complete) records all of it.
Deterministic for a given set of options.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EMDEBLUR_SHARED_DATA", ROOT.parent / "shared" / "data"))
SEED = 20260810
TIMESTAMP = "2026-08-10T1200000000000"

__all__ = ["build", "hex_cells", "layout", "main", "mfov_lattice"]


# ----------------------------------------------------------------------------- layout
def hex_cells(radius: int) -> list[tuple[int, int]]:
    """Axial ``(q, r)`` cells of a hexagon of ``radius`` rings: the centre, then ring by ring."""
    out = [(0, 0)]
    for k in range(1, radius + 1):
        q, r = k, -k
        for dq, dr in [(0, 1), (-1, 1), (-1, 0), (0, -1), (1, -1), (1, 0)]:
            for _ in range(k):
                out.append((q, r))
                q, r = q + dq, r + dr
    return out


def mfov_lattice(n: int, radius: int) -> list[tuple[int, int]]:
    """Axial offsets of the first ``n`` mFOV centres (nearest to the origin first)."""
    a = np.array([2 * radius + 1, -radius])
    b = np.array([radius, radius + 1])
    pts = []
    for i in range(-4, 5):
        for j in range(-4, 5):
            q, r = i * a + j * b
            x, y = q + r / 2.0, r * np.sqrt(3) / 2
            pts.append((round(float(np.hypot(x, y)), 6), float(np.arctan2(y, x)), int(q), int(r)))
    pts.sort()
    return [(q, r) for _, _, q, r in pts[:n]]


def layout(n_mfovs: int, tile: tuple[int, int], radius: int = 4, overlap: float = 0.08,
           seed: int = SEED) -> list[dict]:
    """Top-left corners (floats, px) of every beam image: ``{"mfov", "beam", "x", "y"}``."""
    th, tw = tile
    pitch_x, pitch_y = tw * (1 - overlap), th * (1 - overlap)
    rng = np.random.default_rng(seed)
    cells = hex_cells(radius)
    tiles = []
    for m, (mq, mr) in enumerate(mfov_lattice(n_mfovs, radius), start=1):
        stage = rng.uniform(-25, 25, 2)
        for b, (q, r) in enumerate(cells, start=1):
            qq, rr = mq + q, mr + r
            cx = pitch_x * (qq + rr / 2.0) + stage[0] + rng.uniform(-3, 3)
            cy = pitch_y * rr + stage[1] + rng.uniform(-3, 3)
            tiles.append({"mfov": m, "beam": b, "x": cx - tw / 2.0, "y": cy - th / 2.0})
    return tiles


# ----------------------------------------------------------------------------- content
def _source_cells(data: Path) -> np.ndarray:
    """Normalised 1024 x 1024 float16 cells of real EM (EM-like texture without the data set)."""
    files = sorted((data / "drosophila_vnc_sstem").glob("stack*/*.tif"))
    files += sorted((data / "sbem_rodent_cdeep3m").glob("*.png"))
    out = []
    if files:
        import imageio.v3 as iio

        for f in files:
            a = np.asarray(iio.imread(f), np.float32)
            a = a[..., 0] if a.ndim == 3 else a
            a = a[:1024, :1024]
            if a.shape == (1024, 1024):
                out.append(((a - a.mean()) / max(float(a.std()), 1e-3)).astype(np.float16))
    if not out:
        from scipy import ndimage

        rng = np.random.default_rng(SEED)
        for _ in range(8):
            x = ndimage.gaussian_filter(rng.normal(size=(1024, 1024)), 3.0)
            x = np.abs(ndimage.sobel(x, 0)) + np.abs(ndimage.sobel(x, 1))
            x = -(x - x.mean()) / x.std()
            out.append(x.astype(np.float16))
    return np.stack(out)


def _cell_hash(i: int, j: int, seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{i}:{j}".encode(), digest_size=8).digest(), "little")


def _big_field(shape_coarse: tuple[int, int], step: int, seed: int) -> np.ndarray:
    """Large-scale structure on a coarse grid (one value per ``step`` px): a sum of blobs."""
    rng = np.random.default_rng(seed + 1)
    hc, wc = shape_coarse
    yy, xx = np.mgrid[0:hc, 0:wc].astype(np.float32)
    f = np.zeros(shape_coarse, np.float32)
    for _ in range(int(hc * wc * step * step / 4e6) + 20):
        cy, cx = rng.uniform(0, hc), rng.uniform(0, wc)
        rad = rng.uniform(300, 3000) / step
        amp = rng.choice([-1, 1]) * rng.uniform(15, 55)
        ecc = rng.uniform(0.6, 1.6)
        f += amp * np.exp(-(((yy - cy) / rad) ** 2 + ((xx - cx) / (rad * ecc)) ** 2))
    return f


class Specimen:
    """A continuous synthetic section: the value at any global pixel, rendered tile by tile."""

    def __init__(self, shape: tuple[int, int], seed: int, data: Path, step: int = 32):
        self.seed, self.step = seed, step
        self.src = _source_cells(data)
        self.field = _big_field((-(-shape[0] // step) + 2, -(-shape[1] // step) + 2), step, seed)

    def cell(self, i: int, j: int) -> np.ndarray:
        h = _cell_hash(i, j, self.seed)
        a = self.src[h % len(self.src)]
        k = (h >> 16) % 8
        return np.rot90(a.T if k & 4 else a, k & 3)

    def render(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """float32 image of rows ``y0 .. y0+h`` and columns ``x0 .. x0+w``."""
        c = 1024
        tex = np.empty((h, w), np.float32)
        for i in range(y0 // c, (y0 + h - 1) // c + 1):
            for j in range(x0 // c, (x0 + w - 1) // c + 1):
                ya, yb = max(y0, i * c), min(y0 + h, (i + 1) * c)
                xa, xb = max(x0, j * c), min(x0 + w, (j + 1) * c)
                tex[ya - y0 : yb - y0, xa - x0 : xb - x0] = self.cell(i, j)[ya - i * c : yb - i * c,
                                                                             xa - j * c : xb - j * c]
        s = self.step  # bilinear sample of the coarse field at every pixel centre
        ys = (np.arange(y0, y0 + h, dtype=np.float32) + 0.5) / s - 0.5
        xs = (np.arange(x0, x0 + w, dtype=np.float32) + 0.5) / s - 0.5
        r0, q0 = max(int(np.floor(ys[0])), 0), max(int(np.floor(xs[0])), 0)
        sub = self.field[r0 : int(np.floor(ys[-1])) + 3, q0 : int(np.floor(xs[-1])) + 3]
        fy = np.clip(ys - r0, 0, sub.shape[0] - 1)
        fx = np.clip(xs - q0, 0, sub.shape[1] - 1)
        iy = np.minimum(fy.astype(np.int32), sub.shape[0] - 2)
        ix = np.minimum(fx.astype(np.int32), sub.shape[1] - 2)
        wy, wx = (fy - iy)[:, None], (fx - ix)[None, :]
        top = sub[iy][:, ix] * (1 - wx) + sub[iy][:, ix + 1] * wx
        bot = sub[iy + 1][:, ix] * (1 - wx) + sub[iy + 1][:, ix + 1] * wx
        big = top * (1 - wy) + bot * wy
        return 128.0 + big + tex * (34.0 - 0.15 * big)


def area_resize(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Area-average (box filter) resize of a uint8 image (PIL's BOX filter)."""
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size_hw[1], size_hw[0]), Image.Resampling.BOX))


_SPEC: Specimen | None = None


def _init_worker(shape: tuple[int, int], seed: int, data: str) -> None:
    global _SPEC
    _SPEC = Specimen(shape, seed, Path(data))


def _save(a: np.ndarray, path: Path) -> None:
    from PIL import Image

    tmp = path.with_name("." + path.name + ".tmp")
    Image.fromarray(a).save(tmp, format="BMP" if path.suffix.lower() == ".bmp" else "TIFF")
    os.replace(tmp, path)


def _write_tile(job: dict) -> str:
    from scipy import ndimage

    assert _SPEC is not None
    th, tw = job["tile"]
    img = _SPEC.render(job["gy"], job["gx"], th, tw) + job["offset"]
    if job["sigma"] > 0:
        img = ndimage.gaussian_filter(img, job["sigma"], mode="reflect")
    img += np.random.default_rng(job["seed"]).standard_normal(img.shape, dtype=np.float32) * 6.0
    u8 = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    out = Path(job["path"])
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(u8, out)
    if job.get("thumb"):
        _save(area_resize(u8, job["thumb_hw"]), Path(job["thumb"]))
    return job["path"]


def build(out: Path, n_mfovs: int = 6, tile: tuple[int, int] = (1750, 2000), *, radius: int = 4,
          workers: int = 2, ext: str = "bmp", thumbnails: bool = True, thumb_factor: int = 8,
          seed: int = SEED, blur: list[tuple[int, int, float]] | None = None,
          missing: list[tuple[int, int]] | None = None, data: Path = DATA, log=print) -> dict:
    """Write a section folder into ``out`` (see the module docstring); returns the manifest.

    Parameters
    ----------
    out : Path
        Target folder (created; existing files of the same names are replaced).
    n_mfovs, tile, radius : int, (int, int), int
        Number of mFOVs, beam image shape (h, w) and rings per mFOV (4: 61 beams).
    workers : int
        Processes rendering tiles.
    ext : {"bmp", "tif"}
        Tile file format.
    thumbnails, thumb_factor : bool, int
        Write ``thumbnail_*`` files, area-averaged 1/``thumb_factor`` per axis.
    blur : list of (mfov, beam, sigma), optional
        Tiles to blur (default: six tiles, sigma 1-3 px, interior, mFOV edge and mosaic edge).
    missing : list of (mfov, beam), optional
        Beams left out (gaps; default: beam 10 of mFOV 2, or of mFOV 1 for one mFOV).
    data : Path
        The shared real-EM data folder.
    """
    t_start = time.perf_counter()
    th, tw = tile
    tiles = layout(n_mfovs, tile, radius, seed=seed)
    gx0 = min(t["x"] for t in tiles)
    gy0 = min(t["y"] for t in tiles)
    height = int(round(max(t["y"] for t in tiles) - gy0)) + th
    width = int(round(max(t["x"] for t in tiles) - gx0)) + tw
    stage_x0, stage_y0 = -123456.25, -65432.5  # an arbitrary negative stage origin
    beams = len(hex_cells(radius))
    gone = set(missing if missing is not None else [(min(2, n_mfovs), min(10, beams))])
    if blur is None:
        blur = [(1, 1, 1.0), (1, 20, 1.5), (2, 30, 2.0), (3, 45, 3.0), (min(n_mfovs, 4), 50, 1.2),
                (n_mfovs, beams - 3, 2.5)]
    by_key = {(t["mfov"], t["beam"]): t for t in tiles}
    sigmas = {(m, b): s for m, b, s in blur if (m, b) in by_key and (m, b) not in gone}
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    thumb_hw = (int(round(th / thumb_factor)), int(round(tw / thumb_factor)))
    jobs, rows, trows = [], [], []
    for k, t in enumerate(tiles):
        if (t["mfov"], t["beam"]) in gone:
            continue
        name = f"001_{t['mfov']:06d}_{t['beam']:03d}_{TIMESTAMP}.{ext}"
        folder = f"{t['mfov']:06d}"
        sx, sy = stage_x0 + (t["x"] - gx0), stage_y0 + (t["y"] - gy0)
        t.update(file=f"{folder}/{name}", gx=int(round(t["x"] - gx0)), gy=int(round(t["y"] - gy0)),
                 stage_x=sx, stage_y=sy, sigma=sigmas.get((t["mfov"], t["beam"]), 0.0))
        rows.append(f"{folder}\\{name}\t{sx:.3f}\t{sy:.3f}\t0")
        job = {"tile": tile, "gy": t["gy"], "gx": t["gx"], "seed": seed * 1000 + k,
               "path": str(out / folder / name), "sigma": t["sigma"],
               "offset": float(np.random.default_rng(seed + 7 + t["beam"]).uniform(-6, 6))}
        if thumbnails:
            t["thumbnail"] = f"{folder}/thumbnail_{name}"
            job.update(thumb=str(out / t["thumbnail"]), thumb_hw=thumb_hw)
            fy, fx = thumb_hw[0] / th, thumb_hw[1] / tw
            trows.append(f"{folder}\\thumbnail_{name}\t{sx * fx:.3f}\t{sy * fy:.3f}\t0")
        jobs.append(job)
    present = [t for t in tiles if "file" in t]
    log(f"{len(present)} tiles of {th} x {tw} ({len(gone)} missing), mosaic {height} x {width} = "
        f"{height * width / 1e9:.2f} Gpx bbox, {len(present) * th * tw / 1e9:.2f} Gpx of tiles")
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                 initargs=((height, width), seed, str(data))) as pool:
            for done, _ in enumerate(pool.map(_write_tile, jobs, chunksize=4), 1):
                if done % 25 == 0 or done == len(jobs):
                    log(f"  {done}/{len(jobs)} tiles, {time.perf_counter() - t0:.0f} s")
    else:
        _init_worker((height, width), seed, str(data))
        for job in jobs:
            _write_tile(job)
    (out / "full_image_coordinates.txt").write_text("\r\n".join(rows) + "\r\n")
    if thumbnails:
        (out / "full_thumbnail_coordinates.txt").write_text("\r\n".join(trows) + "\r\n")
    for m in sorted({t["mfov"] for t in present}):
        mt = [t for t in present if t["mfov"] == m]
        folder = out / f"{m:06d}"
        folder.joinpath("image_coordinates.txt").write_text(
            "\r\n".join(f"{Path(t['file']).name}\t{t['stage_x']:.3f}\t{t['stage_y']:.3f}\t0" for t in mt) + "\r\n")
    manifest = {
        "generator": "benchmarks/msem_section.py", "seed": seed, "tile_shape": [th, tw],
        "mosaic_shape": [height, width], "n_tiles": len(present), "n_mfovs": n_mfovs,
        "beams_per_mfov": beams, "overlap": 0.08, "ext": ext,
        "thumbnail_shape": list(thumb_hw) if thumbnails else None,
        "missing": [list(m) for m in sorted(gone)],
        "blurred": [{"file": t["file"], "mfov": t["mfov"], "beam": t["beam"], "sigma": t["sigma"],
                     "y0": t["gy"], "x0": t["gx"]} for t in present if t["sigma"] > 0],
        "tiles": [{k: t[k] for k in ("file", "mfov", "beam", "gy", "gx", "sigma")} for t in present],
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--mfovs", type=int, default=6, help="number of mFOVs (6 x 61 beams -> 365 tiles)")
    ap.add_argument("--tile", type=int, nargs=2, default=(1750, 2000), metavar=("H", "W"))
    ap.add_argument("--rings", type=int, default=4, help="beam rings per mFOV (4: 61 beams)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ext", choices=("bmp", "tif"), default="bmp")
    ap.add_argument("--no-thumbnails", action="store_true")
    ap.add_argument("--thumb-factor", type=int, default=8)
    ap.add_argument("--seed", type=int, default=SEED)
    a = ap.parse_args(argv)
    if (a.out / "manifest.json").is_file():
        print(f"{a.out} already holds a complete section (manifest.json); remove it first", file=sys.stderr)
        return 2
    m = build(a.out, a.mfovs, tuple(a.tile), radius=a.rings, workers=a.workers, ext=a.ext,
              thumbnails=not a.no_thumbnails, thumb_factor=a.thumb_factor, seed=a.seed)
    print(f"wrote {a.out} in {m['seconds']} s: {m['n_tiles']} tiles, mosaic {m['mosaic_shape']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
