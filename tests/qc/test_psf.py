"""PSF + noise estimate (qc.psf) on real EM crops with known synthetic blur."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emdeblur.deblur.train.degrade import Degradation
from napari_emdeblur.qc.psf import estimate_psf_tiles


def _crops(shared_data, n: int = 4) -> np.ndarray:
    from napari_emdeblur.io import load_section

    files = sorted((shared_data / "isbi2012_sstem" / "test").glob("*.png"))[:n]
    out = []
    for f in files:
        img = np.asarray(load_section(f).data, np.float32) / 255.0
        out += [img[:256, :256], img[256:, 256:]]
    return np.stack(out)


def _degrade(crops: np.ndarray, d: Degradation, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = [np.clip(np.round(d.apply(c, rng) * 255), 0, 255) / 255.0 for c in crops]
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_isotropic_blur_recovered(shared_data, sigma):
    crops = _crops(shared_data)
    est = estimate_psf_tiles(_degrade(crops, Degradation(kind="gaussian", sigma=sigma, photons=300, read_sigma=0.01)))
    # total blur = the section's own (~0.4 px) in quadrature with the added blur
    assert abs(np.median(est.sigma_major) - sigma) < 0.35
    # the minor axis reads low at strong blur (few bins above the noise along the major one)
    assert abs(np.median(est.sigma_minor) - sigma) < (0.45 if sigma < 3 else 0.6)
    assert np.all(est.sigma_minor <= est.sigma_major + 1e-6)


def test_anisotropic_blur_and_angle(shared_data):
    crops = _crops(shared_data)
    d = Degradation(kind="astigmatic", sigma=2.5, ratio=0.4, angle=30.0, photons=300, read_sigma=0.01)
    est = estimate_psf_tiles(_degrade(crops, d))
    assert abs(np.median(est.sigma_major) - 2.5) < 0.5
    assert abs(np.median(est.sigma_minor) - 1.0) < 0.35
    err = np.abs((est.angle - 30.0 + 90.0) % 180.0 - 90.0)
    assert np.median(err) < 8.0
    # the same blur rotated by 90 degrees turns the angle by 90 degrees
    est90 = estimate_psf_tiles(_degrade(crops, Degradation(**{**d.to_dict(), "angle": 120.0})))
    err90 = np.abs((est90.angle - 120.0 + 90.0) % 180.0 - 90.0)
    assert np.median(err90) < 8.0


def test_sharp_reads_less_than_blurred(shared_data):
    crops = _crops(shared_data)
    sharp = estimate_psf_tiles(_degrade(crops, Degradation(kind="none", photons=300, read_sigma=0.01)))
    soft = estimate_psf_tiles(_degrade(crops, Degradation(kind="gaussian", sigma=1.5, photons=300, read_sigma=0.01)))
    assert np.all(soft.sigma_major > sharp.sigma_major)


def test_noise_level_and_scan_axis(shared_data):
    crops = _crops(shared_data)
    base = Degradation(kind="gaussian", sigma=2.0, photons=None, read_sigma=0.03)
    white = estimate_psf_tiles(_degrade(crops, base))
    assert 0.02 < np.median(white.noise) < 0.045
    # noise correlated along x or along y: the blur estimate does not follow the scan axis much
    xcorr = estimate_psf_tiles(_degrade(crops, Degradation(**{**base.to_dict(), "fast_scan_corr": 0.7})))
    ycorr = estimate_psf_tiles(_degrade(crops.transpose(0, 2, 1), Degradation(**{**base.to_dict(), "fast_scan_corr": 0.7})))
    assert abs(np.median(xcorr.sigma_major) - np.median(ycorr.sigma_major)) < 0.2
    assert abs(np.median(xcorr.sigma_major) - 2.0) < 0.4


def test_contrast_and_offset_do_not_matter(shared_data):
    crops = _degrade(_crops(shared_data), Degradation(kind="gaussian", sigma=2.0, photons=300, read_sigma=0.01))
    a = estimate_psf_tiles(crops)
    b = estimate_psf_tiles(0.6 * crops + 0.2)
    np.testing.assert_allclose(a.sigma_major, b.sigma_major, atol=0.15)
    np.testing.assert_allclose(b.noise, 0.6 * a.noise, rtol=0.2)


def test_flat_and_tiny_tiles_are_nan():
    rng = np.random.default_rng(0)
    flat = np.full((2, 256, 256), 0.5, np.float32)
    noise = rng.normal(0.5, 0.05, (8, 256, 256)).astype(np.float32)
    for t in (flat, noise):
        est = estimate_psf_tiles(t)
        assert np.all(np.isnan(est.sigma_major)), est.sigma_major
    assert np.isnan(estimate_psf_tiles(np.zeros((1, 64, 64), np.float32)).sigma_major).all()
    with pytest.raises(ValueError):
        estimate_psf_tiles(np.zeros((16, 16), np.float32))
