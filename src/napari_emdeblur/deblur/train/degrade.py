"""Degradation models for SEM/TEM defocus, used for training, evaluation and the sample data.

All PSFs are normalised to sum 1, odd-sized and centred. Blur is applied with reflective
boundaries in float32 on images scaled to [0, 1]; noise is added *after* the blur.

Parameter ranges used for the shipped model (see ``DegradationRanges``):

==================  =========================================================
class               parameters
==================  =========================================================
gaussian            sigma 0.5 - 3.5 px
defocus             disk radius 1 - 5 px convolved with a Gaussian probe
                    sigma 0.3 - 1.0 px
astigmatic          rotated elliptical Gaussian, sigma_major 1.0 - 4.0 px,
                    ratio minor/major 0.2 - 0.8, angle 0 - 180 deg
fast-scan smear     box of 1 - 3 px along x (the fast-scan axis), optional
noise               Poisson (photon count 20 - 500 per unit intensity) plus
                    Gaussian read noise sigma 0 - 0.03, optionally correlated
                    along x (fast-scan)
==================  =========================================================
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage, signal


# --------------------------------------------------------------------------- PSFs
def _grid(radius: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(-radius, radius + 1, dtype=np.float64)
    return np.meshgrid(r, r, indexing="ij")


def gaussian_psf(sigma: float, size: int | None = None) -> np.ndarray:
    """Isotropic Gaussian PSF of standard deviation ``sigma`` px."""
    return elliptical_gaussian_psf(sigma, sigma, 0.0, size)


def elliptical_gaussian_psf(
    sigma_major: float, sigma_minor: float, angle_deg: float = 0.0, size: int | None = None
) -> np.ndarray:
    """Rotated elliptical Gaussian (astigmatism). ``angle_deg`` is the major axis from +x."""
    sigma_major = max(float(sigma_major), 1e-3)
    sigma_minor = max(float(sigma_minor), 1e-3)
    radius = size // 2 if size else max(1, int(np.ceil(3.5 * max(sigma_major, sigma_minor))))
    yy, xx = _grid(radius)
    t = np.deg2rad(angle_deg)
    u = xx * np.cos(t) + yy * np.sin(t)  # along the major axis
    v = -xx * np.sin(t) + yy * np.cos(t)
    k = np.exp(-0.5 * ((u / sigma_major) ** 2 + (v / sigma_minor) ** 2))
    return (k / k.sum()).astype(np.float32)


def disk_psf(radius: float, supersample: int = 8) -> np.ndarray:
    """Uniform defocus disk of ``radius`` px, anti-aliased by supersampling."""
    radius = max(float(radius), 1e-3)
    R = int(np.ceil(radius))
    n = 2 * R + 1
    s = supersample
    fine = (np.arange(n * s) + 0.5) / s - (R + 0.5)
    yy, xx = np.meshgrid(fine, fine, indexing="ij")
    inside = (yy**2 + xx**2 <= radius**2).astype(np.float64)
    k = inside.reshape(n, s, n, s).mean(axis=(1, 3))
    if k.sum() == 0:
        k[R, R] = 1.0
    return (k / k.sum()).astype(np.float32)


def defocus_psf(radius: float, probe_sigma: float = 0.5) -> np.ndarray:
    """Defocus disk convolved with a Gaussian probe (finite beam size)."""
    d = disk_psf(radius)
    g = gaussian_psf(probe_sigma)
    k = signal.fftconvolve(d, g, mode="full")
    k = np.clip(k, 0, None)
    return (k / k.sum()).astype(np.float32)


def smear_psf(length: float) -> np.ndarray:
    """Small box smear along x (the fast-scan axis); ``length`` px, fractional ends allowed."""
    length = max(float(length), 1.0)
    R = int(np.ceil((length - 1) / 2))
    n = 2 * R + 1
    k = np.zeros((1, n), np.float64)
    x = np.arange(n) - R
    k[0] = np.clip(length / 2 - np.abs(x) + 0.5, 0, 1)
    return (k / k.sum()).astype(np.float32)


def combine_psfs(*psfs: np.ndarray) -> np.ndarray:
    out = np.ones((1, 1), np.float32)
    for p in psfs:
        out = signal.fftconvolve(out, p, mode="full")
    out = np.clip(out, 0, None)
    return (out / out.sum()).astype(np.float32)


def psf_sigma(psf: np.ndarray) -> float:
    """Equivalent Gaussian sigma of a PSF (RMS radius / sqrt(2)), in px."""
    h, w = psf.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    p = psf / psf.sum()
    cy, cx = (p * yy).sum(), (p * xx).sum()
    var = (p * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum()
    return float(np.sqrt(var / 2.0))


# --------------------------------------------------------------------------- application
def blur(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Convolve a 2-D float image with ``psf`` (reflective boundaries), returns float32."""
    img = np.asarray(image, dtype=np.float32)
    if psf.size == 1:
        return img.copy()
    return ndimage.convolve(img, psf.astype(np.float32), mode="reflect")


def add_noise(
    image: np.ndarray,
    rng: np.random.Generator,
    photons: float | None = 200.0,
    read_sigma: float = 0.0,
    fast_scan_corr: float = 0.0,
) -> np.ndarray:
    """Poisson-Gaussian noise on a [0, 1] image.

    ``photons``: expected counts at intensity 1 (None disables shot noise). ``read_sigma``:
    additive Gaussian noise. ``fast_scan_corr`` in [0, 1): the Gaussian part is low-pass
    filtered along x (AR(1) with this coefficient, variance preserved), mimicking SEM detector
    bandwidth which correlates noise along the fast-scan axis.
    """
    img = np.clip(np.asarray(image, np.float32), 0, None)
    out = img
    if photons:
        out = rng.poisson(img * photons).astype(np.float32) / photons
    if read_sigma > 0:
        n = rng.standard_normal(img.shape).astype(np.float32)
        if fast_scan_corr > 0:
            a = float(fast_scan_corr)
            n = signal.lfilter([np.sqrt(1 - a * a)], [1, -a], n, axis=-1).astype(np.float32)
        out = out + read_sigma * n
    return out


#: the noise models of the focus-QC benchmark and of the excess-blur layer's training samples
NOISE_KINDS = ("none", "white", "poisson", "xcorr", "ycorr")


def degrade_u8(crop: np.ndarray, psf: np.ndarray, rng: np.random.Generator, noise: str = "none",
               photons: float = 200.0, read_sigma: float = 0.0, corr: float = 0.0, gain: float = 1.0,
               offset: float = 0.0) -> np.ndarray:
    """A uint8 crop blurred by ``psf`` (FFT, reflective boundaries), with one noise model of
    :data:`NOISE_KINDS` (white Gaussian, Poisson shot noise, Gaussian AR(1)-correlated along x or
    along y), then contrast ``gain`` about the crop's mean plus ``offset`` (in [0, 1] units), as uint8.
    The focus-QC benchmark and ``scripts/train_excess.py`` make their samples with it.
    """
    if noise not in NOISE_KINDS:
        raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISE_KINDS)}")
    x = np.asarray(crop, np.float32) / 255.0
    img = x
    if psf.size > 1:
        r0, r1 = psf.shape[0] // 2, psf.shape[1] // 2
        img = signal.fftconvolve(np.pad(x, ((r0, r0), (r1, r1)), mode="reflect"), psf, mode="valid").astype(np.float32)
    if noise == "white":
        img = add_noise(img, rng, photons=None, read_sigma=read_sigma)
    elif noise == "poisson":
        img = add_noise(img, rng, photons=photons)
    elif noise == "xcorr":
        img = add_noise(img, rng, photons=None, read_sigma=read_sigma, fast_scan_corr=corr)
    elif noise == "ycorr":
        img = add_noise(img.T, rng, photons=None, read_sigma=read_sigma, fast_scan_corr=corr).T
    m = float(x.mean())
    img = (img - m) * gain + m + offset
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


@dataclass
class Degradation:
    """One concrete degradation: a PSF and a noise model."""

    kind: str = "gaussian"  # gaussian | defocus | astigmatic | none
    sigma: float = 1.0  # gaussian sigma, or astig major sigma
    radius: float = 0.0  # defocus disk radius
    probe_sigma: float = 0.5
    ratio: float = 1.0  # astig minor/major
    angle: float = 0.0
    smear: float = 0.0  # fast-scan smear length px (0 = none)
    photons: float | None = None
    read_sigma: float = 0.0
    fast_scan_corr: float = 0.0

    def psf(self) -> np.ndarray:
        if self.kind == "none":
            base = np.ones((1, 1), np.float32)
        elif self.kind == "gaussian":
            base = gaussian_psf(self.sigma)
        elif self.kind == "defocus":
            base = defocus_psf(self.radius, self.probe_sigma)
        elif self.kind == "astigmatic":
            base = elliptical_gaussian_psf(self.sigma, self.sigma * self.ratio, self.angle)
        else:
            raise ValueError(f"unknown degradation kind {self.kind!r}")
        if self.smear and self.smear > 1.0:
            base = combine_psfs(base, smear_psf(self.smear))
        return base

    def apply(self, image01: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Blur then add noise to a [0, 1] float image; returns float32 (not clipped)."""
        rng = rng or np.random.default_rng(0)
        out = blur(image01, self.psf())
        if self.photons or self.read_sigma > 0:
            out = add_noise(out, rng, self.photons, self.read_sigma, self.fast_scan_corr)
        return out

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DegradationRanges:
    """Ranges from which training degradations are drawn (documented in the model card)."""

    kinds: tuple[str, ...] = ("gaussian", "defocus", "astigmatic")
    kind_weights: tuple[float, ...] = (0.4, 0.3, 0.3)
    sigma: tuple[float, float] = (0.5, 3.5)
    radius: tuple[float, float] = (1.0, 5.0)
    probe_sigma: tuple[float, float] = (0.3, 1.0)
    astig_sigma: tuple[float, float] = (1.0, 4.0)
    astig_ratio: tuple[float, float] = (0.2, 0.8)
    smear_prob: float = 0.3
    smear: tuple[float, float] = (1.0, 3.0)
    photons: tuple[float, float] = (20.0, 500.0)
    read_sigma: tuple[float, float] = (0.0, 0.03)
    fast_scan_corr_prob: float = 0.5
    fast_scan_corr: tuple[float, float] = (0.3, 0.8)
    sharp_prob: float = 0.05  # fraction of samples left unblurred (identity must be learnt)
    clean_prob: float = 0.0  # fraction of samples with no added noise (a clean tile must pass)

    def sample(self, rng: np.random.Generator) -> Degradation:
        u = lambda lo_hi: float(rng.uniform(*lo_hi))  # noqa: E731
        if rng.random() < self.sharp_prob:
            kind = "none"
        else:
            w = np.asarray(self.kind_weights, float)
            kind = str(rng.choice(self.kinds, p=w / w.sum()))
        d = Degradation(kind=kind)
        if kind == "gaussian":
            d.sigma = u(self.sigma)
        elif kind == "defocus":
            d.radius, d.probe_sigma = u(self.radius), u(self.probe_sigma)
        elif kind == "astigmatic":
            d.sigma, d.ratio, d.angle = u(self.astig_sigma), u(self.astig_ratio), u((0, 180))
        if rng.random() < self.smear_prob:
            d.smear = u(self.smear)
        if self.clean_prob and rng.random() < self.clean_prob:
            return d
        d.photons = float(np.exp(rng.uniform(*np.log(self.photons))))
        d.read_sigma = u(self.read_sigma)
        if rng.random() < self.fast_scan_corr_prob:
            d.fast_scan_corr = u(self.fast_scan_corr)
        return d

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def with_overrides(cls, overrides: dict | None) -> "DegradationRanges":
        """The default ranges with ``overrides`` applied, each checked (``ValueError`` names the key)."""
        base = cls()
        if not overrides:
            return base
        if not isinstance(overrides, dict):
            raise ValueError("degradation ranges must be a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown degradation range key(s) {unknown} (known: {', '.join(sorted(names))})")
        out: dict[str, Any] = {}
        for key, value in overrides.items():
            default = getattr(base, key)
            if key == "kinds":
                ok_kinds = ("gaussian", "defocus", "astigmatic")
                if not (isinstance(value, (list, tuple)) and value and all(v in ok_kinds for v in value)):
                    raise ValueError(f"'kinds' must be a list of {', '.join(ok_kinds)}, got {value!r}")
                out[key] = tuple(value)
                continue
            if isinstance(default, tuple):
                n = len(overrides.get("kinds") or base.kinds) if key == "kind_weights" else len(default)
                nums = list(value) if isinstance(value, (list, tuple)) else None
                good = nums is not None and len(nums) == n and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in nums
                )
                if key != "kind_weights" and good and nums is not None and len(nums) == 2:
                    good = nums[0] <= nums[1]
                if not good:
                    raise ValueError(f"'{key}' must be {n} finite non-negative numbers"
                                     f"{' (low, high)' if key != 'kind_weights' and n == 2 else ''}, got {value!r}")
                out[key] = tuple(float(v) for v in value)
            else:
                if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                        and 0.0 <= value <= 1.0):
                    raise ValueError(f"'{key}' must be a probability between 0 and 1, got {value!r}")
                out[key] = float(value)
        if "kinds" in out and "kind_weights" not in out and len(out["kinds"]) != len(base.kind_weights):
            raise ValueError("'kinds' needs matching 'kind_weights' (one weight per kind)")
        return replace(base, **out)


# --------------------------------------------------------------------------- calibration
def radial_power_spectrum(image: np.ndarray, nbins: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged, Hann-windowed power spectrum (frequencies in cycles/px, power)."""
    img = np.asarray(image, np.float64)
    img = img - img.mean()
    h, w = img.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    F = np.abs(np.fft.fft2(img * win)) ** 2
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    fr = np.sqrt(fy**2 + fx**2)
    bins = np.linspace(0, 0.5, nbins + 1)
    idx = np.clip(np.digitize(fr.ravel(), bins) - 1, 0, nbins)
    power = np.bincount(idx, F.ravel(), minlength=nbins + 1)[:nbins]
    count = np.bincount(idx, minlength=nbins + 1)[:nbins]
    freq = 0.5 * (bins[:-1] + bins[1:])
    return freq, power / np.maximum(count, 1)


def calibrate_gaussian_sigma(
    soft_tiles: list[np.ndarray], sharp_tiles: list[np.ndarray], max_sigma: float = 6.0
) -> float:
    """Fit the Gaussian blur sigma (px) that maps the sharp tiles' power spectrum onto the soft
    tiles' one. Matches log power over the band where the soft spectrum is above its noise
    floor; returns the best sigma on a fine grid.
    """
    if not soft_tiles or not sharp_tiles:
        raise ValueError("calibration needs at least one soft and one sharp tile")

    def mean_spec(tiles):
        specs = []
        for t in tiles:
            t = np.asarray(t, np.float64)
            s = t.std() or 1.0
            specs.append(radial_power_spectrum((t - t.mean()) / s)[1])
        return np.mean(specs, axis=0)

    freq = radial_power_spectrum(np.asarray(soft_tiles[0], np.float64))[0]
    soft, sharp = mean_spec(soft_tiles), mean_spec(sharp_tiles)
    floor = np.median(soft[-8:])
    band = (freq > 0.02) & (soft > 4 * floor)
    if band.sum() < 3:
        band = freq > 0.02
    best, best_err = 0.0, np.inf
    for sigma in np.linspace(0.0, max_sigma, 241):
        model = sharp * np.exp(-((2 * np.pi * freq * sigma) ** 2))
        # compare shapes only: the normalisation per tile removes overall gain
        diff = np.log(model[band] + 1e-12) - np.log(soft[band] + 1e-12)
        err = np.var(diff)
        if err < best_err:
            best, best_err = float(sigma), err
    return best
