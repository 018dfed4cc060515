"""Shared pytest fixtures and helpers (the pipeline tests' tiles and tiny weights). Keep them generic:
several test modules use them; test modules import the helpers with ``from conftest import ...``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The real-EM data folder: env ``EMDEBLUR_SHARED_DATA`` or ``<repo>/../shared/data``;
    None when absent."""
    env = os.environ.get("EMDEBLUR_SHARED_DATA")
    cand = Path(env) if env else (REPO / ".." / "shared" / "data")
    cand = cand.resolve()
    return cand if cand.is_dir() else None


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Pyramid sidecars and other caches go to a temporary folder, never the user's cache."""
    old = os.environ.get("EMDEBLUR_CACHE")
    os.environ["EMDEBLUR_CACHE"] = str(tmp_path_factory.mktemp("emdeblur-cache"))
    yield
    if old is None:
        os.environ.pop("EMDEBLUR_CACHE", None)
    else:
        os.environ["EMDEBLUR_CACHE"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared real-EM data folder; skips the test when it is not available."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("shared EM data folder not available (set EMDEBLUR_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def sample_files() -> dict[str, Path]:
    """Paths of the bundled sample section (section, ground_truth, tiles json, license)."""
    from napari_emdeblur._sample_data import sample_paths

    return sample_paths()


# --------------------------------------------------------------------------- MultiSEM test data
def msem_generator():
    """``benchmarks/msem_section.py`` as a module (the synthetic MultiSEM section generator)."""
    import importlib.util
    import sys

    name = "emdeblur_msem_section"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "msem_section.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def make_msem(folder: Path, **kw) -> dict:
    """A small MultiSEM section folder from real EM (EM-like texture without the data set):
    2 mFOVs of 19 beams, tiles of 512 x 576 overlapping by 8 %, thumbnails (1/8), the centre beam
    of mFOV 1 missing (a gap inside the mosaic) and beam 3 of mFOV 1 (next to the gap) blurred
    (sigma 2 px). Keyword arguments go to ``build``. Returns the manifest."""
    gen = msem_generator()
    data = shared_data_dir()
    opts = dict(n_mfovs=2, tile=(512, 576), radius=2, workers=1, blur=[(1, 3, 2.0)], missing=[(1, 1)],
                log=lambda *a: None)
    if data is not None:
        opts["data"] = data
    opts.update(kw)
    return gen.build(folder, **opts)


@pytest.fixture(scope="session")
def msem_section(tmp_path_factory) -> tuple[Path, dict]:
    """A small MultiSEM section folder (see :func:`make_msem`), made once per test session; read only."""
    folder = tmp_path_factory.mktemp("msem") / "section"
    return folder, make_msem(folder)


# --------------------------------------------------------------------------- pipeline test data


# --------------------------------------------------------------------------- test data
def _em_image(seed: int = 0) -> np.ndarray:
    """A 1024x1024 uint8 real sSEM frame when the data set is there, else EM-like texture."""
    data = shared_data_dir()
    source = data / "drosophila_vnc_sstem" / "stack1" / "00.tif" if data is not None else None
    if source is not None and source.is_file():
        from napari_emdeblur.io import load_section

        return np.asarray(load_section(source).data)
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.normal(size=(1024, 1024)), 3.0)
    x = np.abs(ndimage.sobel(x, 0)) + np.abs(ndimage.sobel(x, 1))
    x = 200 - 150 * x / x.max() + rng.normal(0, 6, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def synthetic_section(shape=(512, 768), seed=0, soft=(), retake=(), tile=128) -> np.ndarray:
    """uint8 EM-like texture with noise; tiles in ``soft`` blurred 1.5 px, in ``retake`` 4 px."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.standard_normal(shape), 5.0)
    cells = blobs > 0
    mem = cells ^ ndimage.binary_erosion(cells)
    img = 0.55 + 0.15 * cells - 0.3 * ndimage.binary_dilation(mem) + 0.05 * ndimage.gaussian_filter(
        rng.standard_normal(shape), 1.0)
    img = img.astype(np.float32)
    for tiles, sigma in ((soft, 1.5), (retake, 4.0)):
        b = ndimage.gaussian_filter(img, sigma)
        for i, j in tiles:
            sl = (slice(i * tile, (i + 1) * tile), slice(j * tile, (j + 1) * tile))
            img[sl] = b[sl]
    img = img + 0.02 * rng.standard_normal(shape).astype(np.float32)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def make_tiles(folder: Path, n: int, seed: int = 0, sections=("secA", "secB")) -> dict[str, str]:
    """Write ``n`` 256x256 tiles (sharp / mildly blurred / very blurred) into section folders.

    Returns ``{relative path: category}`` with category ok | correct | retake.
    """
    from scipy import ndimage

    from napari_emdeblur.io import save_image

    img = _em_image(seed)
    rng = np.random.default_rng(seed)
    kinds = ["ok", "correct", "ok", "retake", "ok", "ok", "correct", "ok"]
    out = {}
    for k in range(n):
        y, x = rng.integers(0, img.shape[0] - 256), rng.integers(0, img.shape[1] - 256)
        crop = img[y : y + 256, x : x + 256]
        kind = kinds[k % len(kinds)]
        sigma = {"ok": 0.0, "correct": 1.3, "retake": 4.0}[kind]
        if sigma:
            crop = np.clip(np.round(ndimage.gaussian_filter(crop.astype(np.float32), sigma)), 0, 255).astype(np.uint8)
        rel = f"{sections[k % len(sections)]}/tile_{k:03d}.tif"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        save_image(folder / rel, crop)
        out[rel] = kind
    return out


def thresholds_for(folder: Path, kinds: dict[str, str]) -> tuple[float, float]:
    """Absolute thresholds halfway between the measured score groups of the test tiles."""
    from napari_emdeblur.io import load_section
    from napari_emdeblur.qc.focus import score_tiles

    s = {k: [] for k in ("ok", "correct", "retake")}
    for rel, kind in kinds.items():
        s[kind].append(float(np.nanmedian(score_tiles(load_section(folder / rel).data, 256))))
    assert min(s["ok"]) > max(s["correct"]) > 0 and min(s["correct"]) > max(s["retake"]), s
    return (min(s["ok"]) + max(s["correct"])) / 2, (min(s["correct"]) + max(s["retake"])) / 2


def tiny_weights(path: Path) -> Path:
    """A freshly initialised small GRAN saved with its card (the bookkeeping needs a model, not a good one)."""
    import torch

    from napari_emdeblur.deblur.nets.gran import GRAN, GRANConfig
    from napari_emdeblur.deblur.weights import save_model

    torch.manual_seed(0)
    save_model(GRAN(GRANConfig(width=8, n_groups=1, n_grabs=1)), path)
    return path


def visible_files(outdir: Path) -> dict[str, bytes]:
    """Every file under OUTDIR except the control folder and the (timing-bearing) index.html."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(outdir):
        dirnames[:] = [d for d in dirnames if d != ".emdeblur"]
        for fn in filenames:
            p = Path(dirpath) / fn
            rel = p.relative_to(outdir).as_posix()
            if rel != "index.html":
                out[rel] = p.read_bytes()
    return out
