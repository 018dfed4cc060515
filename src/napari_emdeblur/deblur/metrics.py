"""The one PSNR / SSIM of the package (scikit-image; numpy only, so widgets may import it)."""

from __future__ import annotations

import numpy as np

__all__ = ["psnr", "psnr_ssim", "ssim"]


def psnr(ref: np.ndarray, img: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of ``img`` against ``ref`` (inf when identical).

    Parameters
    ----------
    ref, img : ndarray
        Images of the same shape (any real dtype; compared in float64).
    data_range : float
        The peak: the width of the value range both images are on.
    """
    from skimage.metrics import peak_signal_noise_ratio

    ref, img = np.asarray(ref, np.float64), np.asarray(img, np.float64)
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(ref, img, data_range=data_range))


def ssim(ref: np.ndarray, img: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity of ``img`` against ``ref`` (7-px window, smaller for tiny images).

    Parameters
    ----------
    ref, img : ndarray
        Images of the same 2-D shape.
    data_range : float
        The width of the value range.
    """
    from skimage.metrics import structural_similarity

    ref, img = np.asarray(ref, np.float64), np.asarray(img, np.float64)
    win = min(7, min(ref.shape) - (1 - min(ref.shape) % 2))
    return float(structural_similarity(ref, img, data_range=data_range, win_size=max(3, win)))


def psnr_ssim(ref: np.ndarray, img: np.ndarray, data_range: float) -> tuple[float, float]:
    """``(psnr(ref, img), ssim(ref, img))`` with the same ``data_range``."""
    return psnr(ref, img, data_range), ssim(ref, img, data_range)
