"""Wiener deconvolution with an estimated anisotropic Gaussian PSF (torch, batched).

For a tile ``y`` with PSF estimate ``Sigma`` (``qc.psf``), noise variance ``N`` and signal power
spectrum ``S(f) = exp(log_c) |f|^-alpha``, the Wiener estimate is

    X(f) = conj(H(f)) Y(f) / (|H(f)|^2 + beta N / S(f)),  H(f) = exp(-2 pi^2 f^T Sigma f)

``beta`` scales the regularisation (1 = the Wiener balance the estimates imply). The DC gain is
1, a delta PSF with no noise gives the input back, and tiles are padded by reflection before the
FFT so the periodic boundary does not ring into the tile.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ...qc.psf import PSFEstimate

#: what a NaN estimate (a flat or pure-noise tile) becomes: no deconvolution
_NO_BLUR = (0.0, 0.0, 0.0)


def psf_params(est: PSFEstimate) -> np.ndarray:
    """``(n, 6)`` float32 rows ``[Sxx, Sxy, Syy, noise_var, log_c, alpha]`` from an estimate,
    NaN-free: a tile without an estimate gets a delta PSF, and the signal model is clamped to a
    sane range (alpha in [1, 4]).
    """
    cov = np.nan_to_num(np.asarray(est.cov, np.float64), nan=0.0)
    nv = np.nan_to_num(np.asarray(est.noise, np.float64), nan=0.0) ** 2
    logc = np.nan_to_num(np.asarray(est.log_c, np.float64), nan=-30.0)
    alpha = np.clip(np.nan_to_num(np.asarray(est.alpha, np.float64), nan=2.0), 1.0, 4.0)
    out = np.stack([cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1], nv, logc, alpha], axis=1)
    return out.astype(np.float32)


def wiener(x: torch.Tensor, params: torch.Tensor, betas: tuple[float, ...], pad: int = 24) -> torch.Tensor:
    """Wiener deconvolutions of ``x`` (B,1,H,W) for every ``beta``: (B, len(betas), H, W).

    ``params``: (B, 6) from :func:`psf_params`.
    """
    b, _, h, w = x.shape
    p = min(pad, h - 1, w - 1)
    xp = F.pad(x, (p, p, p, p), mode="reflect") if p > 0 else x
    hp, wp = xp.shape[-2:]
    mean = xp.mean(dim=(-2, -1), keepdim=True)
    Y = torch.fft.rfft2((xp - mean).float())
    fy = torch.fft.fftfreq(hp, device=x.device, dtype=torch.float32)[:, None]
    fx = torch.fft.rfftfreq(wp, device=x.device, dtype=torch.float32)[None, :]
    q = params.float()
    sxx, sxy, syy = (q[:, k, None, None, None] for k in range(3))
    quad = sxx * fx**2 + 2 * sxy * fx * fy + syy * fy**2
    H = torch.exp(-2 * math.pi**2 * quad.clamp(min=0))  # (B, 1, hp, wr)
    fr = torch.sqrt(fx**2 + fy**2).clamp(min=1e-6)
    nv, logc, alpha = (q[:, k, None, None, None] for k in range(3, 6))
    # N / S(f) = N |f|^alpha / C, in log space to avoid overflow
    nsr = torch.exp((torch.log(nv.clamp(min=1e-12)) - logc + alpha * torch.log(fr)).clamp(max=30.0))
    outs = []
    for beta in betas:
        G = H / (H * H + beta * nsr)
        outs.append(torch.fft.irfft2(Y * G, s=(hp, wp)))
    out = torch.cat(outs, dim=1) + mean.float()
    return out[..., p : p + h, p : p + w].to(x.dtype)
