"""Feature caching across sampling steps on the digits UNet (A-SDM's feature inheritance).

A-SDM (Zhu et al. 2024, arXiv:2406.00210v3, "feature inheritance strategy" [unverified section number]) speeds
up sampling by reusing the outputs of a UNet's expensive blocks from one step at the next, because they change
slowly along the trajectory. On the digits UNet (``toy_models.unet``) the expensive part is the low-resolution
branch: downsample -> down2 -> mid -> up2 -> upsample, whose output u_k enters the last block with the
skip feature h1 of the first one. With caching interval N the branch runs at calls 0, N, 2N, ... and its cached
output is reused in between, while the shallow path (input conv, down1, up1, output head) runs at every call:

    eps_hat_k = head(up1([u_{N floor(k / N)}, h1_k], e_k)).

Interval 1 runs every block at every call in the same order as ``UNet.forward``, so it is the uncached model bit
for bit; a sampler with n steps runs the branch ceil(n / N) times.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from refimpl._validation import check_instance
from toy_models.mlp import sinusoidal_embedding
from toy_models.trained import TrainedModel
from toy_models.unet import UNet

__all__ = ["CachedUNet", "cached_model"]


class CachedUNet(UNet):
    """The layers of ``unet`` (shared, not copied) with the low-resolution branch recomputed every ``interval``
    calls; ``deep_calls`` counts its evaluations, ``reset()`` forgets the cache (call it before each run)."""

    def __init__(self, unet: UNet, interval: int):
        nn.Module.__init__(self)
        check_instance(unet, UNet, "unet")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive int, got {interval!r}")
        for name, child in unet.named_children():
            setattr(self, name, child)
        self.emb_dim, self.null_label, self.interval = unet.emb_dim, unet.null_label, interval
        self.reset()

    def reset(self) -> None:
        """Forget the cached branch output and restart the call count."""
        self.calls, self.deep_calls, self._deep = 0, 0, None

    def forward(self, x: Tensor, s: Tensor, y: Tensor) -> Tensor:
        """As ``UNet.forward``, with the branch output u reused between refreshes."""
        emb = self.time_mlp(sinusoidal_embedding(s, self.emb_dim)) + self.label_emb(y)  # (B, E)
        h1 = self.down1(self.inp(x), emb)  # (B, C, 8, 8)
        stale = self._deep is None or self._deep.shape[0] != x.shape[0]
        if self.calls % self.interval == 0 or stale:
            h2 = self.down2(self.downsample(h1), emb)  # (B, 2C, 4, 4)
            h = self.mid(h2, emb)
            h = self.up2(torch.cat([h, h2], dim=1), emb)
            self._deep = self.upsample(h)  # (B, 2C, 8, 8): the cached feature
            self.deep_calls += 1
        self.calls += 1
        h = self.up1(torch.cat([self._deep, h1], dim=1), emb)  # (B, C, 8, 8)
        return self.out(h)


def cached_model(model: TrainedModel, interval: int) -> TrainedModel:
    """``model`` (a digits-UNet ``TrainedModel``) with feature caching every ``interval`` calls; its ``net`` is the
    ``CachedUNet`` (read ``net.deep_calls``, call ``net.reset()`` between sampling runs)."""
    check_instance(model, TrainedModel, "model")
    return TrainedModel(CachedUNet(model.net, interval), model.schedule, model.label, model.prediction)
