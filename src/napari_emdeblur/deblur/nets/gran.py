"""GRAN: graph reasoning attention network for EM deblurring (after Zhang et al., ISBI 2023).

Layout (written from the paper's description as refined for this project)::

    x (N,1,H,W) in [0,1]
      -> pad to a multiple of ``cfg.pad_multiple`` (reflect), centre (x - 0.5)
      -> pixel-unshuffle by ``scale`` (H/s x W/s, s*s channels)  -- all work at low resolution
      -> head 3x3 conv -> F0
      -> ``n_groups`` residual attention groups; each = ``n_grabs`` GRABs + 3x3 conv + group skip
      -> 3x3 conv + F0 (long skip)
      -> 3x3 conv to s*s channels -> pixel-shuffle -> + x (global residual) -> crop

    GRAB(x) = trunk(x) * mask(x) + x
        trunk = ``n_trunk`` residual blocks
        mask  = strided 3x3 conv (x2 per ``mask_down`` step)
                -> graph reasoning over the low-res feature vectors (nodes of a fully
                   connected graph): R = theta(V)^T phi(V) / N, V' = W(R g(V)) + V,
                   W zero-initialised (so every graph unit starts as the identity)
                -> ``n_mask`` residual blocks -> transposed conv upscale -> 1x1 conv -> sigmoid

Because ``R`` has no softmax, ``R g(V) = theta^T (phi g^T) / N`` is evaluated right-to-left:
cost and memory are linear in the number of nodes, so the graph stays global over a tile of
any size. The consequence for tiled inference: the output of a tile depends (weakly) on the
whole tile through the graph units, so tiles overlap and are blended (see ``infer.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import nn

MAX_GRABS = 64  # attention blocks (n_groups x n_grabs) a card may declare


@dataclass
class CardConfig:
    """Base of the architecture dataclasses (no fields of its own): ``to_dict``/``from_dict``
    round-trip through the model card, and unknown keys (a card of another architecture) are
    refused by name.

    ``from_dict`` checks every given field against its default's type (whole numbers, true/false,
    lists of positive numbers) and the class's ``LIMITS`` (``{name: (low, high)}``, inclusive;
    whole numbers without an entry must lie in ``[0, 1024]``), so that a damaged card is refused
    with the field named before a model is built.
    """

    KIND: ClassVar[str] = "model"
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        if not isinstance(d, dict):
            raise ValueError(f"{cls.KIND} config must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.KIND} config keys: {sorted(unknown)}")
        defaults = cls()
        for key, value in d.items():
            _check_field(key, value, getattr(defaults, key), cls.LIMITS.get(key))
        cfg = cls(**d)
        blocks = getattr(cfg, "n_groups", 1) * getattr(cfg, "n_grabs", 1)
        if blocks > MAX_GRABS:
            raise ValueError(f"n_groups x n_grabs = {blocks} attention blocks, more than the {MAX_GRABS} allowed")
        return cfg


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_field(key: str, value, default, limits: tuple[float, float] | None) -> None:
    """Raise ValueError naming ``key`` when ``value`` does not fit the field (see CardConfig)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"field {key!r} must be true or false, got {value!r}"[:200])
        return
    if isinstance(default, int):
        lo, hi = limits or (0, 1024)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"field {key!r} must be a whole number, got {value!r}"[:200])
        if not lo <= value <= hi:
            raise ValueError(f"field {key!r} must be between {lo:g} and {hi:g}, got {value}")
        return
    if isinstance(default, float):
        lo, hi = limits or (0.0, 1e6)
        if not _is_number(value) or not lo <= value <= hi:
            raise ValueError(f"field {key!r} must be a number between {lo:g} and {hi:g}, got {value!r}"[:200])
        return
    if isinstance(default, list):
        lo, hi = limits or (1e-6, 1e6)
        if not (isinstance(value, list) and 1 <= len(value) <= 16 and all(_is_number(v) and lo <= v <= hi
                                                                           for v in value)):
            raise ValueError(f"field {key!r} must be a list of 1 to 16 numbers between {lo:g} and {hi:g}, "
                             f"got {value!r}"[:200])


@dataclass
class GRANConfig(CardConfig):
    """Architecture of a GRAN. ``to_dict``/``from_dict`` round-trip through the model card."""

    KIND: ClassVar[str] = "GRAN"
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "in_channels": (1, 1), "scale": (1, 8), "width": (1, 512), "n_groups": (0, 32), "n_grabs": (0, 32),
        "n_trunk": (0, 16), "n_mask": (0, 16), "mask_down": (0, 6), "graph_dim": (0, 512),
    }

    in_channels: int = 1
    scale: int = 4  # pixel-unshuffle factor of the body
    width: int = 32  # feature channels in the body
    n_groups: int = 2  # residual attention groups
    n_grabs: int = 2  # GRABs per group
    n_trunk: int = 1  # residual blocks in each GRAB trunk
    n_mask: int = 1  # residual blocks in each mask branch (after the graph unit)
    mask_down: int = 1  # stride-2 steps in the mask branch
    graph: bool = True  # graph reasoning unit in the mask branch
    graph_dim: int = 0  # node embedding channels (0 = width // 2)

    @property
    def pad_multiple(self) -> int:
        return self.scale * (2**self.mask_down)



def conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.c1 = conv3(c, c)
        self.c2 = conv3(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.relu(self.c1(x), inplace=True))


class GraphReasoning(nn.Module):
    """Global graph reasoning over all spatial positions (nodes) of a feature map.

    Nodes ``V`` (C x N); affinity ``R = theta(V)^T phi(V) / N`` (N x N, fully connected);
    update ``W(R g(V)) + V`` with ``W`` a zero-initialised 1x1 conv.
    """

    def __init__(self, c: int, inner: int):
        super().__init__()
        self.theta = nn.Conv2d(c, inner, 1)
        self.phi = nn.Conv2d(c, inner, 1)
        self.g = nn.Conv2d(c, inner, 1)
        self.W = nn.Conv2d(inner, c, 1)
        nn.init.zeros_(self.W.weight)
        nn.init.zeros_(self.W.bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        b, _, h, w = v.shape
        n = h * w
        t = self.theta(v).flatten(2)  # (B, I, N)
        p = self.phi(v).flatten(2)
        g = self.g(v).flatten(2)
        # (R g)[n] = sum_m (t_n . p_m) g_m / N  ==  t^T (p g^T) / N, linear in N
        pg = torch.bmm(p, g.transpose(1, 2)) / n  # (B, I, I)
        out = torch.bmm(pg.transpose(1, 2), t)  # (B, I, N): out[:, j, n] = sum_i pg[i, j] t[i, n]
        out = out.reshape(b, -1, h, w)
        return v + self.W(out)


class GRAB(nn.Module):
    """Graph reasoning attention block: ``trunk(x) * mask(x) + x``."""

    def __init__(self, cfg: GRANConfig):
        super().__init__()
        c = cfg.width
        self.trunk = nn.Sequential(*[ResBlock(c) for _ in range(cfg.n_trunk)])
        down = []
        for _ in range(cfg.mask_down):
            down += [conv3(c, c, stride=2), nn.ReLU(inplace=True)]
        self.down = nn.Sequential(*down)
        inner = cfg.graph_dim or max(1, c // 2)
        self.graph = GraphReasoning(c, inner) if cfg.graph else nn.Identity()
        self.mask_body = nn.Sequential(*[ResBlock(c) for _ in range(cfg.n_mask)])
        up = []
        for k in range(cfg.mask_down):
            up.append(nn.ConvTranspose2d(c, c, 4, stride=2, padding=1))
            if k < cfg.mask_down - 1:
                up.append(nn.ReLU(inplace=True))
        self.up = nn.Sequential(*up)
        self.mask_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.up(self.mask_body(self.graph(self.down(x))))
        m = torch.sigmoid(self.mask_out(m))
        return self.trunk(x) * m + x


class ResidualGroup(nn.Module):
    def __init__(self, cfg: GRANConfig):
        super().__init__()
        self.blocks = nn.Sequential(*[GRAB(cfg) for _ in range(cfg.n_grabs)])
        self.tail = conv3(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.blocks(x))


def pad_to_multiple(x: torch.Tensor, m: int) -> tuple[torch.Tensor, int, int]:
    """Pad bottom/right to a multiple of ``m`` (reflect where possible, else replicate)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


class GRAN(nn.Module):
    """Graph reasoning attention network; (N,C,H,W) float in [0,1] -> same shape."""

    model_type = "gran"

    def __init__(self, cfg: GRANConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GRANConfig()
        s2 = cfg.in_channels * cfg.scale**2
        self.head = conv3(s2, cfg.width)
        self.groups = nn.Sequential(*[ResidualGroup(cfg) for _ in range(cfg.n_groups)])
        self.body_tail = conv3(cfg.width, cfg.width)
        self.tail = conv3(cfg.width, s2)
        with torch.no_grad():  # start close to the identity (global residual dominates)
            self.tail.weight.mul_(0.1)
            self.tail.bias.zero_()

    @property
    def pad_multiple(self) -> int:
        return self.cfg.pad_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, h, w = pad_to_multiple(x, self.cfg.pad_multiple)
        f0 = self.head(F.pixel_unshuffle(xp - 0.5, self.cfg.scale))
        f = self.body_tail(self.groups(f0)) + f0
        out = F.pixel_shuffle(self.tail(f), self.cfg.scale) + xp
        return out[..., :h, :w]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def grow_gran(model: GRAN, width: int | None = None, n_groups: int | None = None, seed: int = 0) -> GRAN:
    """A wider and/or deeper GRAN that computes exactly what ``model`` computes.

    Used to grow a trained model and keep training it instead of starting again (on a CPU the
    extra capacity is worth more than the steps a fresh start would need). Deeper: residual
    groups appended after the trained ones, each closed by a zero-initialised 3x3 conv, so a new
    group starts as the identity. On 2 CPU cores depth costs time linearly and width more than
    linearly (a one-off timing: width 40 ran at 0.44x the speed of width 32, 3 groups at 0.71x
    of 2). Wider: see :func:`widen_gran`.
    """
    old = model.cfg
    if n_groups is not None and n_groups < old.n_groups:
        raise ValueError(f"cannot shrink a {old.n_groups}-group GRAN to {n_groups} groups")
    if width is not None and width != old.width:
        model = widen_gran(model, width, seed)
    if n_groups is None or n_groups == old.n_groups:
        return model
    torch.manual_seed(seed + 1)
    cfg = GRANConfig(**{**model.cfg.to_dict(), "n_groups": int(n_groups)})
    new = GRAN(cfg).to(next(model.parameters()).device)
    state = new.state_dict()
    state.update(model.state_dict())  # same names for the head, the old groups and the tails
    new.load_state_dict(state)
    with torch.no_grad():
        for g in list(new.groups)[old.n_groups :]:
            g.tail.weight.zero_()
            g.tail.bias.zero_()
    return new


def widen_gran(model: GRAN, width: int, seed: int = 0) -> GRAN:
    """A wider GRAN that computes exactly what ``model`` computes (function-preserving).

    Every convolution keeps its trained weights for the old channels; the new output channels get a
    fresh (seeded) initialisation, and every weight from a new channel into an old one is zero,
    so the old channels, and with them the output, are unchanged until training moves those
    zeros. In the graph units the new ``theta`` embeddings start at zero for the same reason
    (``R g(V)`` mixes the embedding channels). ``graph_dim`` follows the width when it was
    automatic (``width // 2``).
    """
    old = model.cfg
    if width < old.width:
        raise ValueError(f"cannot widen a width-{old.width} GRAN to {width}")
    cfg = GRANConfig(**{**old.to_dict(), "width": int(width)})
    torch.manual_seed(seed)
    new = GRAN(cfg).to(next(model.parameters()).device)
    old_mods = dict(model.named_modules())
    with torch.no_grad():
        for name, m in new.named_modules():
            if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                continue
            src = old_mods[name]
            w, ow = m.weight, src.weight
            if isinstance(m, nn.ConvTranspose2d):  # weight (in, out, kh, kw)
                i, o = ow.shape[0], ow.shape[1]
                w[i:, :o] = 0.0
                w[:i, :o] = ow
            else:  # weight (out, in, kh, kw)
                o, i = ow.shape[0], ow.shape[1]
                w[:o, i:] = 0.0
                w[:o, :i] = ow
            if m.bias is not None:
                m.bias[:o] = src.bias
            if name.endswith("graph.theta"):
                w[o:] = 0.0
                m.bias[o:] = 0.0
    return new
