"""A time-conditioned MLP that predicts eps for 2-D data: the trained counterpart of the analytic lab.

The network sees x_t (B, d) and the network time s (B,) (see ``toy_models.trained.network_time``), and
returns eps_hat (B, d). The time enters through the sinusoidal embedding of the Transformer, as in DDPM
(Ho et al. 2020, arXiv:2006.11239v2, Sec. 4: "diffusion time t is specified by adding the Transformer
sinusoidal position embedding into each residual block"), followed by a small MLP, and is added to every
residual block. Trained by ``toy_models.train`` (kind ``mlp``) on samples of an analytic mixture, so its
eps can be compared with the exact one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["MLPConfig", "MLPDenoiser", "sinusoidal_embedding"]


def sinusoidal_embedding(s: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """The Transformer embedding of positions s (B,): [sin(s w_j), cos(s w_j)], w_j = max_period^(-j / (dim/2)).

    Vaswani et al. 2017 (arXiv:1706.03762v7), Sec. 3.5; s may be fractional (continuous time). Returns (B, dim).
    """
    if dim % 2:
        raise ValueError(f"the embedding dimension must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=s.dtype, device=s.device) / half)
    angles = s[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


@dataclass(frozen=True)
class MLPConfig:
    """Architecture and training recipe of the 2-D eps-MLP; stored in its checkpoint.

    ``mixture`` names a toy of ``toy_models.zoo`` (trained on its samples) under the schedule ``schedule``
    (a key of ``refimpl.schedules.SCHEDULES``). ``n_train`` training samples are drawn once with ``data_seed``,
    ``n_heldout`` held-out ones with ``heldout_seed``.
    """

    mixture: str = "ring"
    schedule: str = "vp_linear"
    dim: int = 2
    hidden: int = 128
    depth: int = 3
    emb_dim: int = 32
    n_train: int = 16_384
    n_heldout: int = 4096
    data_seed: int = 1
    heldout_seed: int = 2
    steps: int = 6000
    batch: int = 512
    lr: float = 2e-3
    ema: float = 0.999
    seed: int = 0
    eval_every: int = 500
    eval_repeats: int = 1
    snapshots: tuple[int, ...] = (100, 300, 1000, 6000)
    n_snapshot: int = 1000


class MLPDenoiser(nn.Module):
    """eps_hat(x_t, s): an input layer, ``depth`` residual SiLU blocks (time embedding added), an output layer."""

    def __init__(self, config: MLPConfig, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        f = {"dtype": dtype}  # float32 weights, whatever the caller's default dtype
        self.emb_dim = config.emb_dim
        h = config.hidden
        self.time_mlp = nn.Sequential(nn.Linear(config.emb_dim, h, **f), nn.SiLU(), nn.Linear(h, h, **f))
        self.inp = nn.Linear(config.dim, h, **f)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(h, **f), nn.Linear(h, h, **f), nn.SiLU(), nn.Linear(h, h, **f))
            for _ in range(config.depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(h, **f), nn.SiLU(), nn.Linear(h, config.dim, **f))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        """x (B, d), s (B,) network times -> eps_hat (B, d)."""
        emb = self.time_mlp(sinusoidal_embedding(s, self.emb_dim))  # (B, hidden)
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h + emb)  # residual block with the time added to its input
        return self.out(h)
