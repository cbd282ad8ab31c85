"""A small class-conditional UNet that predicts eps for the 8x8 scikit-learn digits (about 400k parameters).

The design is DDPM's UNet (Ho et al. 2020, arXiv:2006.11239v2, Sec. 4 and App. B: residual blocks with
group normalisation, the time embedding added in every block, skip connections between the two halves)
cut down to 8x8 images: two resolutions (8x8 with C channels, 4x4 with 2C), no attention. Images are
(B, 1, 8, 8) tensors in [-1, 1].

Class conditioning for classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598v1, Algorithm 1):
a learned embedding of the label y in {0, ..., 9} is added to the time embedding; index 10 (``null_label``)
is the "no label" token that training substitutes with probability ``p_uncond``, so one network is both
the conditional and the unconditional model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from toy_models.mlp import sinusoidal_embedding

__all__ = ["UNet", "UNetConfig"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture and training recipe of the digits UNet; stored in its checkpoint.

    The data are the training images of ``toy_models.digits.digits_split`` (held-out rule
    ``heldout_every``); the schedule is a key of ``refimpl.schedules.SCHEDULES`` (discrete).
    """

    schedule: str = "ddpm_linear"
    channels: int = 32
    emb_dim: int = 128
    groups: int = 8
    num_classes: int = 10
    p_uncond: float = 0.1
    heldout_every: int = 5
    steps: int = 3000
    batch: int = 64
    lr: float = 2e-3
    ema: float = 0.999
    seed: int = 0
    eval_every: int = 200
    eval_repeats: int = 4
    snapshots: tuple[int, ...] = (100, 300, 600, 1500, 3000)
    n_snapshot: int = 100
    snapshot_ddim_steps: int = 50


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the (time + class) embedding, GroupNorm-SiLU-conv, and a skip connection."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        f = {"dtype": dtype}  # float32 weights, whatever the caller's default dtype
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in, **f), nn.Conv2d(c_in, c_out, 3, padding=1, **f)
        self.emb = nn.Linear(emb_dim, c_out, **f)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out, **f), nn.Conv2d(c_out, c_out, 3, padding=1, **f)
        self.skip = nn.Conv2d(c_in, c_out, 1, **f) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]  # per-channel shift from the embedding
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """eps_hat(x_t, s, y) for x_t (B, 1, 8, 8), network times s (B,) and labels y (B,) in {0, ..., num_classes}."""

    def __init__(self, config: UNetConfig, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        f = {"dtype": dtype}  # float32 weights, whatever the caller's default dtype
        C, E, G = config.channels, config.emb_dim, config.groups
        self.emb_dim, self.null_label = E, config.num_classes
        self.time_mlp = nn.Sequential(nn.Linear(E, E, **f), nn.SiLU(), nn.Linear(E, E, **f))
        self.label_emb = nn.Embedding(config.num_classes + 1, E, **f)  # the last row is the null label
        self.inp = nn.Conv2d(1, C, 3, padding=1, **f)
        self.down1 = ResBlock(C, C, E, G, **f)  # 8x8
        self.downsample = nn.Conv2d(C, C, 3, stride=2, padding=1, **f)  # 8x8 -> 4x4
        self.down2 = ResBlock(C, 2 * C, E, G, **f)  # 4x4
        self.mid = ResBlock(2 * C, 2 * C, E, G, **f)
        self.up2 = ResBlock(4 * C, 2 * C, E, G, **f)  # concatenated with down2's output
        # 4x4 -> 8x8
        self.upsample = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2 * C, 2 * C, 3, padding=1, **f))
        self.up1 = ResBlock(3 * C, C, E, G, **f)  # concatenated with down1's output, 8x8
        self.out = nn.Sequential(nn.GroupNorm(G, C, **f), nn.SiLU(), nn.Conv2d(C, 1, 3, padding=1, **f))
        nn.init.zeros_(self.out[-1].weight)  # start as eps_hat = 0 (a common DDPM initialisation)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, s: Tensor, y: Tensor) -> Tensor:
        """x (B, 1, 8, 8), s (B,), y (B,) int64 -> eps_hat (B, 1, 8, 8)."""
        emb = self.time_mlp(sinusoidal_embedding(s, self.emb_dim)) + self.label_emb(y)  # (B, E)
        h1 = self.down1(self.inp(x), emb)  # (B, C, 8, 8)
        h2 = self.down2(self.downsample(h1), emb)  # (B, 2C, 4, 4)
        h = self.mid(h2, emb)
        h = self.up2(torch.cat([h, h2], dim=1), emb)  # (B, 2C, 4, 4)
        h = self.up1(torch.cat([self.upsample(h), h1], dim=1), emb)  # (B, C, 8, 8)
        return self.out(h)
