"""The excess-blur layer's training script (scripts/train_excess.py): its samples and features follow
the package (degradations of deblur.train.degrade, features of qc.excess), and what it packs loads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_emdeblur.qc import excess

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_excess.py"


@pytest.fixture(scope="module")
def te():
    spec = importlib.util.spec_from_file_location("train_excess", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _texture(n: int = 256, seed: int = 0) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random((n, n)), 1.5)
    return np.clip((x - x.mean()) / x.std() * 40 + 128, 0, 255).astype(np.uint8)


def test_truth_is_the_covariance_of_the_added_psf(te):
    psf = te._psf("gaussian", {"sigma": 2.0})
    np.testing.assert_allclose(te._cov(psf), np.diag([4.0, 4.0]), atol=0.05)
    a = te._cov(te._psf("astigmatic", {"sigma": 3.0, "ratio": 0.5, "angle": 0.0}))
    ev = np.sort(np.linalg.eigvalsh(a))
    np.testing.assert_allclose(np.sqrt(ev), [1.5, 3.0], atol=0.05)
    assert not te._cov(te._psf("none", {})).any()


def test_samples_are_uint8_and_blur_lowers_the_high_frequencies(te):
    rng = np.random.default_rng(1)
    crop = _texture()
    c = {"noise": "none", "photons": 200.0, "read_sigma": 0.0, "corr": 0.0, "gain": 1.0, "offset": 0.0}
    sharp = te.apply(crop, c, te._psf("none", {}), rng)
    soft = te.apply(crop, c, te._psf("gaussian", {"sigma": 2.0}), rng)
    assert sharp.dtype == soft.dtype == np.uint8 and sharp.shape == soft.shape == crop.shape
    np.testing.assert_array_equal(sharp, crop)  # nothing added: the crop itself
    assert np.abs(np.diff(soft.astype(float), axis=1)).mean() < 0.5 * np.abs(np.diff(crop.astype(float), axis=1)).mean()
    with pytest.raises(ValueError, match="unknown noise"):
        te.apply(crop, {**c, "noise": "pink", "photons": 1.0, "read_sigma": 0.0, "corr": 0.0}, te._psf("none", {}), rng)
    for _ in range(20):  # every drawn condition is one of the known kinds, within its ranges
        d = te.draw(rng, severe=False)
        assert d["kind"] in ("none", "gaussian", "disk", "astigmatic") and d["noise"] in te.NOISES
        assert 0.2 <= d["gain"] <= 2.0 and -0.25 <= d["offset"] <= 0.25
        s = te.draw(rng, severe=True)
        assert s["kind"] != "none"


def test_window_positions_and_features(te):
    assert te.window_offsets(256, 256, 128, 9)[0] == (64, 64) and len(te.window_offsets(256, 256, 128, 9)) == 9
    assert te.window_offsets(250, 250, 128, 5)[-1] == (122, 122)
    assert te.window_offsets(256, 256, 256, 9) == [(0, 0)]
    tiles = np.stack([_texture(seed=s) for s in range(3)])
    f = te.features_of(tiles, 128, 5)
    assert f.shape == (5, 3, excess.N_FEATURES) and np.isfinite(f).all()
    from napari_emdeblur.qc.spectral import tile_spectra

    s = tile_spectra(np.ascontiguousarray(tiles[:, 64:192, 64:192]), quant=1 / 255.0, scale=1 / 255.0)
    np.testing.assert_allclose(f[0], excess.features(s, excess.feature_fit(s)), rtol=1e-5, atol=1e-5)


def test_packed_members_load_through_the_package(te, tmp_path):
    rng = np.random.default_rng(0)
    dims = [excess.N_FEATURES, 8, 3]
    members = []
    for seed in range(2):
        arrs = {"mu": np.zeros(excess.N_FEATURES, np.float32), "sd": np.ones(excess.N_FEATURES, np.float32)}
        for i in range(2):
            arrs[f"W{i}"] = rng.normal(0, 0.01, (dims[i], dims[i + 1])).astype(np.float32)
            arrs[f"b{i}"] = np.zeros(dims[i + 1], np.float32)
        members.append({"arrays": arrs, "seed": seed, "val_loss": 0.3, "best_epoch": 1, "n_train": 10, "n_val": 2})
    out = tmp_path / "excess_test.npz"
    te.pack(members, out, 128, 9, [8], 2, {"sstem": ["a/*.png"]}, {"sstem": ["b/*.png"]})
    w = excess.load_weights(out)
    assert len(w.members) == 2 and w.window == 128 and w.card["training"]["ensemble"]["seeds"] == [0, 1]
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically
