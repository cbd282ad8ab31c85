"""What every sampler loop shares: input checks, injected noise, and the trajectory callback.

The common signature (k-diffusion's, with the schedule carried by the model)::

    sample_<method>(model, x, timesteps, *, [noise=None, generator=None,] callback=None, **options)

``timesteps`` is a strictly decreasing 1-D tensor inside the model's schedule (see ``refimpl.grids``);
stochastic samplers take ``noise`` of shape (n_steps, *x.shape) -- so that two implementations can
be compared with identical noise -- or draw it from ``generator``. ``callback`` receives a
``StepInfo`` after every step; ``Trajectory`` is a ready-made callback that records them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from refimpl._validation import as_float_tensor, check_finite, check_resolvable_steps, check_strictly_decreasing
from refimpl.models import DiffusionModel, check_model

__all__ = ["Callback", "NoiseSource", "StepInfo", "Trajectory", "check_orders", "check_sampler_inputs"]


@dataclass(frozen=True)
class StepInfo:
    """One step from t to t_next: the state before (x) and after (x_next), and the model's x0 at (x, t)."""

    i: int
    t: Tensor
    t_next: Tensor
    x: Tensor
    x_next: Tensor
    x0: Tensor


Callback = Callable[[StepInfo], None]


@dataclass
class Trajectory:
    """A callback that records every step; ``xs`` stacks the states, x at t_0 first."""

    steps: list[StepInfo] = field(default_factory=list)

    def __call__(self, info: StepInfo) -> None:
        self.steps.append(info)

    @property
    def xs(self) -> Tensor:
        """States (n_steps + 1, *x.shape), the input first."""
        return torch.stack([self.steps[0].x] + [s.x_next for s in self.steps])

    @property
    def x0s(self) -> Tensor:
        """The model's x0 prediction at each step (n_steps, *x.shape)."""
        return torch.stack([s.x0 for s in self.steps])

    @property
    def times(self) -> Tensor:
        """The times of ``xs`` (n_steps + 1,)."""
        return torch.stack([self.steps[0].t] + [s.t_next for s in self.steps])


def check_sampler_inputs(model: DiffusionModel, x: Tensor, timesteps: object) -> Tensor:
    """Validate (model, x, timesteps) and return the timesteps as a float64 tensor."""
    check_model(model)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError("x must have a batch dimension: shape (B, ...)")
    check_finite(x, "x")
    ts = model.schedule.check_t(
        check_strictly_decreasing(as_float_tensor(timesteps, "timesteps", torch.float64)), "timesteps"
    )
    check_resolvable_steps(model.schedule.lambda_t(ts), "timesteps")
    return ts


class NoiseSource:
    """The Gaussian noise of step i: ``noise[i]`` if noise was injected, else a fresh draw from ``generator``."""

    def __init__(self, noise: Tensor | None, generator: torch.Generator | None, n_steps: int, x: Tensor):
        if noise is not None:
            if not isinstance(noise, Tensor):
                raise TypeError(f"noise must be a tensor of shape {(n_steps, *x.shape)}, got {type(noise).__name__}")
            if tuple(noise.shape) != (n_steps, *x.shape):
                raise ValueError(f"noise must have shape {(n_steps, *x.shape)}, got {tuple(noise.shape)}")
            check_finite(noise, "noise")
        self.noise, self.generator, self.like = noise, generator, x

    def __call__(self, i: int) -> Tensor:
        if self.noise is not None:
            return self.noise[i].to(self.like.dtype)
        return torch.randn(self.like.shape, generator=self.generator, dtype=self.like.dtype)


def check_orders(orders: Sequence[int], n_steps: int, max_order: int) -> list[int]:
    """Validate per-step orders of a multistep sampler: one integer in 1..max_order per step, and order k at
    step i only once k points are known (k <= i + 1). Returns them as a list."""
    orders = list(orders)
    if len(orders) != n_steps or any(isinstance(k, bool) or not isinstance(k, int) for k in orders):
        raise ValueError(f"orders must list one integer order per step ({n_steps} steps), got {orders}")
    bad = [i for i, k in enumerate(orders) if not 1 <= k <= min(max_order, i + 1)]
    if bad:
        raise ValueError(
            f"orders[{bad[0]}] = {orders[bad[0]]}: step {bad[0]} can use order 1..{min(max_order, bad[0] + 1)}"
        )
    return orders
