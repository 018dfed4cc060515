"""Degradation models: PSF shapes, noise model, sampling ranges and blur calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_emdeblur.deblur.train import degrade as dg


@pytest.mark.parametrize(
    "psf",
    [dg.gaussian_psf(1.5), dg.elliptical_gaussian_psf(3, 1, 30), dg.disk_psf(2.5), dg.defocus_psf(3, 0.5),
     dg.smear_psf(2.5), dg.combine_psfs(dg.gaussian_psf(1), dg.smear_psf(3))],
)
def test_psfs_are_normalised_nonnegative_and_centred(psf):
    assert psf.sum() == pytest.approx(1.0, abs=1e-5)
    assert (psf >= 0).all()
    h, w = psf.shape
    assert h % 2 == 1 and w % 2 == 1
    yy, xx = np.mgrid[:h, :w]
    assert (psf * yy).sum() == pytest.approx(h // 2, abs=1e-3)
    assert (psf * xx).sum() == pytest.approx(w // 2, abs=1e-3)


def test_psf_sigma_and_orientation():
    for s in (0.8, 1.5, 3.0):
        assert dg.psf_sigma(dg.gaussian_psf(s)) == pytest.approx(s, rel=0.03)
    assert dg.psf_sigma(dg.defocus_psf(4, 0.5)) > dg.psf_sigma(dg.defocus_psf(2, 0.5))
    # astigmatic PSF elongated along its angle: at 90 deg the spread is along y
    k = dg.elliptical_gaussian_psf(3.0, 1.0, 90.0)
    h, w = k.shape
    yy, xx = np.mgrid[:h, :w] - h // 2
    assert (k * yy**2).sum() > 5 * (k * xx**2).sum()
    # fast-scan smear acts along x only
    sm = dg.smear_psf(3.0)
    assert sm.shape[0] == 1 and sm.shape[1] == 3


def test_noise_is_added_after_blur_and_fast_scan_correlated():
    rng = np.random.default_rng(0)
    flat = np.full((256, 256), 0.5, np.float32)
    n = dg.add_noise(flat, rng, photons=None, read_sigma=0.05, fast_scan_corr=0.8) - flat
    cx = np.corrcoef(n[:, :-1].ravel(), n[:, 1:].ravel())[0, 1]
    cy = np.corrcoef(n[:-1].ravel(), n[1:].ravel())[0, 1]
    assert cx > 0.6 and abs(cy) < 0.05  # correlated along x (fast scan), not along y
    assert n.std() == pytest.approx(0.05, rel=0.1)  # variance preserved by the AR(1) filter
    shot = dg.add_noise(flat, rng, photons=100.0) - flat
    assert shot.std() == pytest.approx(np.sqrt(0.5 / 100), rel=0.1)
    # Degradation.apply: blur then noise -> a noisy image whose smoothed version is the blurred one
    img = ndimage.gaussian_filter(np.random.default_rng(1).random((128, 128)), 1).astype(np.float32)
    d = dg.Degradation("gaussian", sigma=2.0, photons=2000.0)
    out = d.apply(img, np.random.default_rng(2))
    assert np.abs(out - dg.blur(img, d.psf())).mean() < 0.02


def test_ranges_sample_every_kind_within_bounds():
    r = dg.DegradationRanges()
    rng = np.random.default_rng(0)
    samples = [r.sample(rng) for _ in range(400)]
    kinds = {s.kind for s in samples}
    assert {"gaussian", "defocus", "astigmatic"} <= kinds
    for s in samples:
        if s.kind == "gaussian":
            assert r.sigma[0] <= s.sigma <= r.sigma[1]
        if s.kind == "astigmatic":
            assert r.astig_ratio[0] <= s.ratio <= r.astig_ratio[1]
        assert r.photons[0] - 1e-6 <= s.photons <= r.photons[1] + 1e-6
        assert s.psf().sum() == pytest.approx(1.0, abs=1e-5)


def _em_tiles(shared_data, n=6, size=256):
    from napari_emdeblur.io import load_section

    files = sorted((shared_data / "drosophila_vnc_sstem" / "stack2").glob("*.tif"))[:n]
    tiles = []
    for f in files:
        a = np.asarray(load_section(f).data, np.float32) / 255.0
        tiles.append(a[:size, :size])
        tiles.append(a[-size:, -size:])
    return tiles


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_calibration_recovers_gaussian_blur_on_real_em(shared_data, sigma):
    tiles = _em_tiles(shared_data)
    sharp, rest = tiles[::2], tiles[1::2]
    rng = np.random.default_rng(3)
    soft = [dg.Degradation("gaussian", sigma=sigma, photons=400.0).apply(t, rng) for t in rest]
    est = dg.calibrate_gaussian_sigma(soft, sharp)
    assert est == pytest.approx(sigma, abs=0.35 + 0.1 * sigma)


def test_calibration_needs_tiles():
    with pytest.raises(ValueError):
        dg.calibrate_gaussian_sigma([], [np.zeros((32, 32))])
