"""Semi-blind GRAN: estimate the PSF, deconvolve, let the graph reasoning network finish.

Layout::

    x (N,1,H,W) in [0,1]
      -> PSF + noise estimate of each input window (``qc.psf``, numpy; or given)
      -> Wiener deconvolutions with that PSF at ``betas`` regularisation strengths (``wiener.py``)
      -> inputs [x, W_1..W_k] (centred) + constant maps of the estimate (blur major/minor px,
         noise), pixel-unshuffle 2 -> half resolution
      -> head conv + ``n_half`` residual blocks at half resolution (fine detail of mild blur)
      -> stride-2 conv -> quarter resolution -> ``n_groups`` residual groups of GRABs (graph
         reasoning attention blocks, as in the blind GRAN) -> 1x1 conv + pixel-shuffle back to half
         resolution, added to the half-resolution features
      -> ``n_half`` residual blocks -> conv -> pixel-shuffle 2 -> per pixel: a residual ``r`` and
         softmax weights over the candidates ``[x, W_1..W_k]``
      out = sum_k softmax_k * candidate_k + r

The output is a residual over a per-pixel mixture of the input and its deconvolutions: a tile that
needs nothing can be passed through (weight on ``x``), a blurred one takes the deconvolution whose
balance fits its noise, and the network corrects what the Gaussian PSF model gets wrong (disk
defocus, estimate errors, noise amplification). ``graph=False`` removes the graph units (the
ablation). Old blind GRAN cards keep loading: this is another ``model_type``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...qc.psf import estimate_psf_tiles
from .gran import GRAB, CardConfig, GRANConfig, ResBlock, ResidualGroup, conv3, pad_to_multiple
from .wiener import psf_params, wiener


@dataclass
class SBGRANConfig(CardConfig):
    """Architecture of a semi-blind GRAN (round-trips through the model card)."""

    KIND: ClassVar[str] = "semi-blind GRAN"
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "betas": (1e-3, 1e4), "half_width": (1, 512), "n_half": (0, 16), "width": (1, 512), "n_groups": (0, 32),
        "n_grabs": (0, 32), "n_trunk": (0, 16), "n_mask": (0, 16), "mask_down": (0, 6), "graph_dim": (0, 512),
        "wiener_pad": (0, 256),
    }

    betas: list[float] = field(default_factory=lambda: [1.0, 3.0, 10.0])  # Wiener strengths
    half_width: int = 24  # channels at half resolution
    n_half: int = 1  # residual blocks before and after the quarter-resolution body
    width: int = 32  # channels of the GRAB body (quarter resolution)
    n_groups: int = 2
    n_grabs: int = 2
    n_trunk: int = 1
    n_mask: int = 1
    mask_down: int = 1
    graph: bool = True
    graph_dim: int = 0
    wiener_pad: int = 24

    @property
    def pad_multiple(self) -> int:
        return 4 * (2**self.mask_down)

    def body_config(self) -> GRANConfig:
        return GRANConfig(
            width=self.width, n_groups=self.n_groups, n_grabs=self.n_grabs, n_trunk=self.n_trunk,
            n_mask=self.n_mask, mask_down=self.mask_down, graph=self.graph, graph_dim=self.graph_dim,
        )


N_EST = 3  # constant maps: blur major, blur minor (px / 4), noise (x 10)


def estimate_params(x: np.ndarray) -> np.ndarray:
    """``(n, 6)`` PSF/noise parameters of a batch ``(n, 1, h, w)`` of [0, 1] windows."""
    return psf_params(estimate_psf_tiles(np.asarray(x, np.float32)[:, 0]))


class SBGRAN(nn.Module):
    """Semi-blind GRAN; ``forward(x, params=None)``: (N,1,H,W) in [0,1] -> same shape.

    ``params`` (N, 6) are the PSF/noise estimates (:func:`estimate_params`); when omitted they are
    estimated from ``x`` itself (on the CPU, with numpy).
    """

    model_type = "sbgran"

    def __init__(self, cfg: SBGRANConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or SBGRANConfig()
        body = cfg.body_config()
        k = 1 + len(cfg.betas)
        self.n_cand = k
        c1, c2 = cfg.half_width, cfg.width
        self.head = conv3(4 * (k + N_EST), c1)
        self.half_in = nn.Sequential(*[ResBlock(c1) for _ in range(cfg.n_half)])
        self.down = conv3(c1, c2, stride=2)
        self.groups = nn.Sequential(*[ResidualGroup(body) for _ in range(cfg.n_groups)])
        self.body_tail = conv3(c2, c2)
        self.up = nn.Conv2d(c2, 4 * c1, 1)
        self.half_out = nn.Sequential(*[ResBlock(c1) for _ in range(cfg.n_half)])
        self.tail = conv3(c1, 4 * (1 + k))
        with torch.no_grad():
            self.tail.weight.mul_(0.1)
            self.tail.bias.zero_()
            # start as "output = input": the mixture logit of x first
            self.tail.bias.view(1 + k, 4)[1].fill_(2.0)

    @property
    def pad_multiple(self) -> int:
        return self.cfg.pad_multiple

    def candidates(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``[x, W_1..W_k]`` (N, 1 + len(betas), H, W)."""
        w = wiener(x, params, tuple(self.cfg.betas), self.cfg.wiener_pad)
        return torch.cat([x, w], dim=1)

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        if params is None:
            params = torch.from_numpy(estimate_params(x.detach().float().cpu().numpy()))
        params = params.to(device=x.device, dtype=torch.float32)
        xp, h, w = pad_to_multiple(x, self.cfg.pad_multiple)
        cand = self.candidates(xp, params)
        n = x.shape[0]
        sxx, sxy, syy, nv = params[:, 0], params[:, 1], params[:, 2], params[:, 3]
        tr, det = sxx + syy, (sxx * syy - sxy * sxy)
        disc = torch.sqrt(((tr * tr) / 4 - det).clamp(min=0))
        major = torch.sqrt((tr / 2 + disc).clamp(min=0))
        minor = torch.sqrt((tr / 2 - disc).clamp(min=0))
        est = torch.stack([major / 4, minor / 4, 10 * torch.sqrt(nv.clamp(min=0))], dim=1).clamp(max=4.0)
        est = est.to(xp.dtype)[:, :, None, None].expand(n, N_EST, *xp.shape[-2:])
        inp = torch.cat([cand.to(xp.dtype) - 0.5, est], dim=1)
        f0 = self.head(F.pixel_unshuffle(inp, 2))
        f = self.half_in(f0)
        g = self.down(f)
        g = self.body_tail(self.groups(g)) + g
        f = f + F.pixel_shuffle(self.up(g), 2)
        out = F.pixel_shuffle(self.tail(self.half_out(f)), 2)  # (N, 1 + k, H, W)
        r, logits = out[:, :1], out[:, 1:]
        mix = (torch.softmax(logits.float(), dim=1) * cand.float()).sum(dim=1, keepdim=True)
        y = mix.to(x.dtype) + r
        return y[..., :h, :w]


def grow_sbgran(model: SBGRAN, n_groups: int | None = None, n_half: int | None = None, seed: int = 0) -> SBGRAN:
    """A deeper semi-blind GRAN that computes exactly what ``model`` computes.

    ``n_groups``: residual groups of GRABs appended to the quarter-resolution body; ``n_half``:
    residual blocks appended to both half-resolution stages. Every new group or block is closed
    by a zero-initialised conv, so it starts as the identity (as :func:`.gran.grow_gran` does for
    the blind GRAN) and only training moves it.
    """
    old = model.cfg
    for name, new_n, old_n in (("groups", n_groups, old.n_groups), ("half-resolution blocks", n_half, old.n_half)):
        if new_n is not None and new_n < old_n:
            raise ValueError(f"cannot shrink a semi-blind GRAN from {old_n} to {new_n} {name}")
    n_groups = old.n_groups if n_groups is None else int(n_groups)
    n_half = old.n_half if n_half is None else int(n_half)
    if (n_groups, n_half) == (old.n_groups, old.n_half):
        return model
    torch.manual_seed(seed + 1)
    cfg = SBGRANConfig(**{**old.to_dict(), "n_groups": n_groups, "n_half": n_half})
    new = SBGRAN(cfg).to(next(model.parameters()).device)
    state = new.state_dict()
    state.update(model.state_dict())  # same names for everything the old model has
    new.load_state_dict(state)
    with torch.no_grad():
        for g in list(new.groups)[old.n_groups :]:
            g.tail.weight.zero_()
            g.tail.bias.zero_()
        for stage in (new.half_in, new.half_out):
            for b in list(stage)[old.n_half :]:
                b.c2.weight.zero_()
                b.c2.bias.zero_()
    return new


__all__ = ["SBGRAN", "SBGRANConfig", "estimate_params", "grow_sbgran", "GRAB"]
