"""Losses through a few DDIM steps: a differentiable network model, SDEdit-style partial chains, finite differences.

REFace (Baliah et al. 2025, arXiv:2409.07269v1, Sec. 3.3) trains with losses on the x0 reached by a few DDIM steps
inside training, so gradients flow through the sampler; InstructVideo (Yuan et al. 2024, arXiv:2312.12490v1,
Sec. 3.2) fine-tunes on a reward by noising a sample to t_s and running only the partial DDIM chain back ("reward
fine-tuning as editing", the SDEdit construction of Meng et al. 2022, arXiv:2108.01073v2, Sec. 3):

    x_{t_s} = alpha_{t_s} x_0 + sigma_{t_s} eps,   x_0' = DDIM_{t_s -> t_min}(x_{t_s}),   loss = -r(x_0').

``sample_ddim`` is already a differentiable function of its input and of the model's parameters when the model is;
``DifferentiableNetwork`` is the trained MLP or UNet called *with* gradients (``toy_models.trained.TrainedModel``
calls its network under ``torch.no_grad``), in float64 so that central finite differences can check the gradients.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from refimpl import grids
from refimpl._validation import as_float_tensor, check_finite
from refimpl.differentiable._optim import Adam
from refimpl.models import DiffusionModel, check_model
from refimpl.samplers import sample_ddim
from refimpl.schedules import NoiseSchedule
from toy_models.trained import Checkpoint, network_time
from toy_models.unet import UNet

__all__ = ["DifferentiableNetwork", "central_difference", "finetune_reward", "partial_chain"]


@dataclass(eq=False)
class DifferentiableNetwork:
    """An eps-predicting network as a model, with gradients, in the network's dtype (float64 by default).

    ``label`` (int or None) binds a class-conditional UNet; the MLP takes none.
    """

    net: nn.Module
    schedule: NoiseSchedule
    label: int | None = None
    prediction: str = "eps"

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, dtype: torch.dtype = torch.float64, label: int | None = None):
        """A copy of the checkpoint's network in ``dtype`` (its parameters require grad), under its schedule."""
        net = copy.deepcopy(checkpoint.net).to(dtype)
        net.eval()
        return cls(net, checkpoint.model().schedule, label)

    def parameters(self) -> list[Tensor]:
        return list(self.net.parameters())

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        dtype = next(self.net.parameters()).dtype
        s = network_time(self.schedule, torch.as_tensor(t)).to(dtype).expand(x.shape[0]).contiguous()
        if isinstance(self.net, UNet):
            null = self.net.null_label
            y = torch.full((x.shape[0],), null if self.label is None else self.label, dtype=torch.long)
            return self.net(x.reshape(-1, 1, 8, 8).to(dtype), s, y).reshape(x.shape)
        return self.net(x.to(dtype), s)


def partial_chain(
    model: DiffusionModel, x0: Tensor, t_start: float, n_steps: int, noise: Tensor, t_end: float | None = None
) -> Tensor:
    """Noise x0 to t_start with ``noise`` and run ``n_steps`` DDIM steps (uniform in lambda) back to t_end
    (default the schedule's t_min). Differentiable in x0 and in the model's parameters."""
    check_model(model)
    check_finite(as_float_tensor(x0, "x0"), "x0")
    schedule = model.schedule
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    ts = grids.uniform_lambda(schedule, n_steps, t_start, t_end)
    v = schedule(ts[0])
    return sample_ddim(model, v.alpha * x0 + v.sigma * noise, ts)


def central_difference(fn: Callable[[Tensor], Tensor], x: Tensor, direction: Tensor, delta: float = 1e-5) -> float:
    """(fn(x + delta u) - fn(x - delta u)) / (2 delta): the derivative of the scalar fn along u, error O(delta^2)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    check_finite(as_float_tensor(x, "x"), "x")
    check_finite(as_float_tensor(direction, "direction"), "direction")
    if not isinstance(delta, int | float) or not delta > 0:
        raise ValueError(f"delta must be a positive number, got {delta!r}")
    with torch.no_grad():
        return float((fn(x + delta * direction) - fn(x - delta * direction)) / (2 * delta))


def finetune_reward(
    model: DiffusionModel,
    params: list[Tensor],
    data: Tensor,
    reward: Callable[[Tensor], Tensor],
    *,
    t_start: float,
    n_steps: int,
    steps: int,
    lr: float,
    batch: int,
    generator: torch.Generator,
) -> list[float]:
    """InstructVideo's reward loop (Yuan et al. 2024, arXiv:2312.12490v1, Sec. 3.2, "reward fine-tuning as editing"):
    per Adam step, draw a data batch x_0, edit it by ``partial_chain`` (noise to t_start, ``n_steps`` DDIM steps back,
    with gradients) and maximise the mean ``reward`` (per sample, (B,)) of the edits over ``params``. Returns the mean
    reward of each step. The paper's segmental sparse and temporally attenuated rewards are video-specific: left out."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if not callable(reward):
        raise TypeError(f"reward must be callable, got {type(reward).__name__}")
    opt = Adam(params, lr=lr)
    history = []
    for _ in range(steps):
        x0 = data[torch.randint(0, data.shape[0], (batch,), generator=generator)]
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        r = reward(partial_chain(model, x0, t_start, n_steps, noise)).mean()
        opt.zero_grad()
        (-r).backward()
        opt.step()
        history.append(float(r.detach()))
    return history
