"""A plain U-Net deblurring baseline (same interface and global residual as GRAN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .gran import CardConfig, pad_to_multiple


@dataclass
class UNetConfig(CardConfig):
    KIND: ClassVar[str] = "U-Net"
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"in_channels": (1, 1), "base": (1, 256), "depth": (1, 8)}
    in_channels: int = 1
    base: int = 14  # channels at full resolution; doubled at each level
    depth: int = 3  # number of 2x down-samplings

    @property
    def pad_multiple(self) -> int:
        return 2**self.depth



def _double(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder-decoder with skip connections; (N,C,H,W) in [0,1] -> same shape (x + residual)."""

    model_type = "unet"

    def __init__(self, cfg: UNetConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or UNetConfig()
        ch = [cfg.base * 2**k for k in range(cfg.depth + 1)]
        self.enc = nn.ModuleList([_double(cfg.in_channels, ch[0])])
        self.enc.extend(_double(ch[k], ch[k + 1]) for k in range(cfg.depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(ch[k + 1], ch[k], 2, stride=2) for k in range(cfg.depth)
        )
        self.dec = nn.ModuleList(_double(2 * ch[k], ch[k]) for k in range(cfg.depth))
        self.out = nn.Conv2d(ch[0], cfg.in_channels, 1)

    @property
    def pad_multiple(self) -> int:
        return self.cfg.pad_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, h, w = pad_to_multiple(x, self.cfg.pad_multiple)
        f = self.enc[0](xp - 0.5)
        skips = [f]
        for k in range(1, self.cfg.depth + 1):
            f = self.enc[k](F.max_pool2d(f, 2))
            skips.append(f)
        for k in reversed(range(self.cfg.depth)):
            f = self.dec[k](torch.cat([self.up[k](f), skips[k]], dim=1))
        return (self.out(f) + xp)[..., :h, :w]
