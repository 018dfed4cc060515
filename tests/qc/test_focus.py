"""Per-tile focus metrics: blur monotonicity (synthetic and real EM), vectorised == per-tile,
contrast/brightness invariance, noise robustness, anisotropy, NaN tiles and input errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_emdeblur.deblur.train import degrade
from napari_emdeblur.qc import focus
from napari_emdeblur.qc.tiling import TileGrid

METRICS = list(focus.METRICS)


def _texture(shape=(512, 512), seed=0) -> np.ndarray:
    """EM-like synthetic texture in [0, 1]: membranes (thresholded smooth noise edges) + grain."""
    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.standard_normal(shape), 6.0)
    cells = (blobs > 0).astype(np.float64)
    membranes = ndimage.binary_dilation(cells.astype(bool) ^ ndimage.binary_erosion(cells.astype(bool)))
    img = 0.55 + 0.15 * cells - 0.35 * membranes + 0.08 * ndimage.gaussian_filter(rng.standard_normal(shape), 0.7)
    return np.clip(img, 0, 1).astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(img.astype(np.float32), sigma) if sigma > 0 else img.astype(np.float32)


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def _assert_decreasing(means, metric):
    """Strictly decreasing from 0.5 px on; the unblurred image beats 1 px. (``autocorr`` is flat
    below ~0.5 px on sharp-edged content: it cannot rank sub-half-pixel blur, by design the
    'sharp' class of the benchmark.)"""
    assert all(a > b for a, b in zip(means[1:], means[2:])), (metric, means)
    assert means[0] > 1.2 * means[2], (metric, means)


@pytest.mark.parametrize("metric", ["autocorr", "varlap", "fft_ratio"])
def test_monotone_in_blur_synthetic(metric):
    img = _texture()
    means = [np.nanmean(focus.score_tiles(_blur(img, s), 128, metric)) for s in SIGMAS]
    _assert_decreasing(means, metric)


def test_autocorr_monotone_with_noise_synthetic():
    """``autocorr`` keeps its order when SEM-like noise (shot + x-correlated) follows the blur. (The
    default ``blur`` metric is a layer trained on real EM; a cartoon texture is outside what it
    knows: its real-EM tests are in tests/qc/test_blurmap.py.)"""
    img = _texture()
    rng = np.random.default_rng(1)
    means = []
    for s in SIGMAS:
        noisy = degrade.add_noise(_blur(img, s), rng, photons=150, read_sigma=0.03, fast_scan_corr=0.7)
        means.append(np.nanmean(focus.score_tiles(_to_u8(noisy), 128, "autocorr")))
    _assert_decreasing(means, "autocorr")


def _real_crop(shared_data):
    import tifffile

    img = tifffile.imread(shared_data / "drosophila_vnc_sstem" / "stack1" / "00.tif")
    return img[:512, :512].astype(np.float32) / 255.0


@pytest.mark.parametrize("metric", ["autocorr", "varlap", "fft_ratio"])
def test_monotone_in_blur_real_em(shared_data, metric):
    img = _real_crop(shared_data)  # float: uint8 rounding would floor fft_ratio beyond 2 px
    means = [np.nanmean(focus.score_tiles(_blur(img, s), 256, metric)) for s in SIGMAS]
    assert all(a > b for a, b in zip(means, means[1:])), (metric, means)
    # and in uint8, as acquired, up to 2 px
    means8 = [np.nanmean(focus.score_tiles(_to_u8(_blur(img, s)), 256, metric)) for s in SIGMAS[:-1]]
    assert all(a > b for a, b in zip(means8, means8[1:])), (metric, means8)


def test_default_metric_separates_noisy_sharp_from_clean_soft_real_em(shared_data):
    """A sharp tile with strong noise must still outscore a noise-free soft one (one threshold)."""
    img = _real_crop(shared_data)
    rng = np.random.default_rng(3)
    sharp_noisy = _to_u8(degrade.add_noise(img, rng, photons=60, read_sigma=0.04, fast_scan_corr=0.8))
    soft_clean = _to_u8(_blur(img, 1.0))
    a = focus.score_tiles(sharp_noisy, 256)
    b = focus.score_tiles(soft_clean, 256)
    assert np.nanmin(a) > np.nanmax(b), (a, b)


def test_real_defocus_series_ordered(shared_data):
    """DeepFocus SEM: same field at three working distances; pert5000 is the least defocused."""
    from skimage import io

    folder = shared_data / "deepfocus_sem_defocus"
    med = []
    for tag in ("pert5000", "base", "pert-5000"):
        path = next(folder.glob(f"*_{tag}.png"))
        med.append(float(np.nanmedian(focus.score_tiles(io.imread(path), 256, focus.DEFAULT_METRIC))))
    assert med[0] > med[1] > med[2], med
    wm = [float(np.nanmedian(focus.score_tiles(io.imread(next(folder.glob(f"*_{t}.png"))), 256, "wafermapper")))
          for t in ("pert5000", "base", "pert-5000")]
    assert wm[0] > wm[1] > wm[2], wm


@pytest.mark.parametrize("metric", METRICS)
def test_vectorised_equals_per_tile_loop(metric):
    img = _to_u8(_texture((600, 700), seed=2))  # partial last row (88 px) and column (60 px)
    tile = 128
    grid = TileGrid(img.shape, tile)
    vec = focus.score_tiles(img, tile, metric)
    assert vec.shape == grid.grid_shape and vec.dtype == np.float32
    loop = np.array([[focus.score_tile(img[grid.slices(i, j)], metric) for j in range(grid.cols)]
                     for i in range(grid.rows)])
    np.testing.assert_allclose(vec, loop, rtol=2e-4, atol=1e-6)
    # threads over bands change nothing
    np.testing.assert_allclose(focus.score_tiles(img, tile, metric, workers=1), vec, rtol=1e-6)
    np.testing.assert_allclose(focus.score_tiles(img, tile, metric, workers=3), vec, rtol=1e-6)


def test_anisotropy_vectorised_equals_loop():
    img = _to_u8(_texture((400, 520), seed=4))
    grid = TileGrid(img.shape, 128)
    ratio, angle = focus.anisotropy_tiles(img, 128)
    for i, j in grid:
        if min(grid.bounds(i, j)[2:]) < 16:
            continue
        r1, a1 = focus.anisotropy_tiles(img[grid.slices(i, j)], max(img[grid.slices(i, j)].shape))
        np.testing.assert_allclose(ratio[i, j], r1[0, 0], rtol=1e-4)
        np.testing.assert_allclose(angle[i, j], a1[0, 0], atol=1e-3)


@pytest.mark.parametrize("metric", METRICS)
def test_contrast_brightness_invariance(metric):
    img = _blur(_texture(seed=5), 0.7)
    base = focus.score_tiles(img, 128, metric)
    for gain, offset in ((0.3, 0.2), (4.0, -1.0), (250.0, 3000.0)):
        np.testing.assert_allclose(focus.score_tiles(img * gain + offset, 128, metric), base, rtol=2e-3, atol=1e-5)
    # uint8 quantisation at a lower contrast: close, not exact
    u8 = _to_u8(img)
    low = _to_u8((img - 0.5) * 0.6 + 0.6)
    a, b = focus.score_tiles(u8, 128, metric), focus.score_tiles(low, 128, metric)
    np.testing.assert_allclose(b, a, rtol=0.15, atol=0.02 * np.nanmax(np.abs(a)))
    # uint16 at the same contrast as uint8 * 257 gives the same scores (the blur metric's noise floor
    # is the quantisation step, 257x finer in uint16 than these data really have: within 1 %)
    rtol = 1e-2 if metric == "blur" else 2e-3
    np.testing.assert_allclose(focus.score_tiles(u8.astype(np.uint16) * 257, 128, metric), a, rtol=rtol, atol=1e-5)


def test_autocorr_ignores_white_and_fast_scan_noise():
    img = _blur(_texture(seed=6), 1.0)
    rng = np.random.default_rng(0)
    clean = focus.score_tiles(img, 256)
    white = focus.score_tiles(img + 0.05 * rng.standard_normal(img.shape), 256)
    xcorr = focus.score_tiles(degrade.add_noise(img, rng, None, 0.05, fast_scan_corr=0.8), 256)
    np.testing.assert_allclose(white, clean, rtol=0.25)
    np.testing.assert_allclose(xcorr, clean, rtol=0.25)
    # the Laplacian, by contrast, is dominated by the noise
    assert np.all(focus.score_tiles(img + 0.05 * rng.standard_normal(img.shape), 256, "varlap")
                  > 5 * focus.score_tiles(img, 256, "varlap"))


def test_wafermapper_scores_pure_noise_near_zero():
    rng = np.random.default_rng(0)
    s = focus.score_tiles(rng.standard_normal((512, 512)).astype(np.float32), 256, "wafermapper")
    assert np.all(np.abs(s) < 25), s  # sampling error of ~200 top points per tile
    sharp = focus.score_tiles(_texture() + 0.02 * rng.standard_normal((512, 512)), 256, "wafermapper")
    assert np.all(sharp > 100), sharp


@pytest.mark.parametrize("angle", [30.0, 120.0])
def test_anisotropy_finds_astigmatic_blur_direction(angle):
    rng = np.random.default_rng(7)
    iso = ndimage.gaussian_filter(rng.standard_normal((512, 512)), 0.8).astype(np.float32)
    r0, _ = focus.anisotropy_tiles(iso, 256)
    assert np.all(r0 < 1.15), r0
    psf = degrade.elliptical_gaussian_psf(3.0, 0.8, angle)
    astig = degrade.blur(iso, psf)
    ratio, ang = focus.anisotropy_tiles(astig, 256)
    assert np.all(ratio > 2.0), ratio
    diff = np.abs((ang - angle + 90.0) % 180.0 - 90.0)
    assert np.all(diff < 6.0), ang


def test_unscorable_tiles_are_nan():
    img = _to_u8(_texture((512, 512), seed=8))
    img[:256, :256] = 77  # constant tile
    img[256:, 256:] = 0  # zero padding
    img[256:, :256][:, :200] = 0  # mostly padding (78 %)
    for m in METRICS:
        s = focus.score_tiles(img, 256, m)
        assert np.isnan(s[0, 0]) and np.isnan(s[1, 1]) and np.isnan(s[1, 0]), (m, s)
        assert np.isfinite(s[0, 1]), (m, s)
    r, a = focus.anisotropy_tiles(img, 256)
    assert np.isnan(r[0, 0]) and np.isnan(a[1, 1]) and np.isfinite(r[0, 1])
    assert np.isnan(focus.score_tile(np.full((64, 64), 3.0)))


def test_thin_edge_tiles_are_nan_not_errors():
    img = _to_u8(_texture((260, 300), seed=9))  # last row 4 px, last column 44 px
    s = focus.score_tiles(img, 256, "autocorr")
    assert s.shape == (2, 2)
    assert np.isfinite(s[0, 0]) and np.isfinite(s[0, 1])
    assert np.isnan(s[1, 0]) and np.isnan(s[1, 1])
    b = focus.score_tiles(img, 256, "blur")  # the blur map needs 64 px: the 44 px column is NaN too
    assert b.shape == (2, 2) and np.isfinite(b[0, 0]) and np.isnan(b[0, 1]) and np.isnan(b[1]).all()


def test_bad_input_raises():
    with pytest.raises(ValueError, match="2-D"):
        focus.score_tiles(np.zeros((2, 64, 64)))
    with pytest.raises(ValueError, match="too small"):
        focus.score_tiles(np.zeros((15, 64)))
    bad = _texture((64, 64))
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        focus.score_tiles(bad)
    with pytest.raises(ValueError, match="unknown focus metric"):
        focus.score_tiles(_texture((64, 64)), metric="nope")
    with pytest.raises(ValueError, match="tile size"):
        focus.score_tiles(_texture((64, 64)), tile=4)
    with pytest.raises(ValueError, match="dtype"):
        focus.score_tiles(np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="2-D"):
        focus.anisotropy_tiles(np.zeros(64))


def test_default_metric_is_listed_and_scores_a_large_image():
    assert focus.DEFAULT_METRIC in focus.METRICS
    img = np.tile(_to_u8(_texture((512, 512))), (4, 4))  # 2048 x 2048
    s = focus.score_tiles(img)  # speed is measured by benchmarks/focus_metrics.py, not here
    assert s.shape == (8, 8) and np.isfinite(s).all()
