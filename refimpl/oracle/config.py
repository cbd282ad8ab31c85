"""The oracle's configurations: what is run, on which exact toy, on which grid (validated when made).

A ``Config`` names a refimpl method, a step count, a schedule, a toy, the model's parameterisation, the state's
dtype, the grid family and the method's options; ``config_grid`` is its continuous-time grid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from refimpl import grids
from refimpl.grids import GRIDS
from refimpl.oracle.methods import get_method
from refimpl.schedules import SCHEDULES

__all__ = ["DTYPES", "PREDICTIONS", "SPACINGS", "TOYS", "Config", "config_grid", "make_toy", "with_options"]

TOYS = ("ring", "labelled_pair", "mixture16", "gaussian")


def make_toy(name: str) -> Any:
    """A named exact toy data law (toy_models.zoo)."""
    from toy_models import zoo

    toys = {
        "ring": zoo.ring,
        "labelled_pair": zoo.labelled_pair,
        "mixture16": lambda: zoo.random_mixture(K=4, d=16, seed=0),
        "gaussian": lambda: zoo.anisotropic_gaussian(3, seed=1),
    }
    _check_choice(name, "toy", TOYS)
    return toys[name]()


PREDICTIONS = ("eps", "x0", "v")
DTYPES = ("float64", "float32")
#: Grids a Config may name: refimpl's (``grids.GRIDS``) and "random", a seeded non-uniform grid (``config_grid``).
SPACINGS = (*GRIDS, "random")


def _check_int(value: Any, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


@dataclass(frozen=True)
class Config:
    """One configuration of the matrix: what is run, on which toy, how (validated when made).

    ``options`` are the method's options as (name, value) pairs, understood by both sides (for example
    ("eta", 1.0)); ``dtype`` is the dtype of the state the implementation sees; ``spacing`` is the refimpl
    grid for implementations that take one (refimpl callables, k-diffusion; "random": a seeded grid uniformly
    random in lambda, so that neighbouring step ratios differ); ``final_zero`` makes the last of the
    ``n_steps`` steps go to sigma = 0 (alpha = 1; a callable sees it as a last timestep 0.0); ``encode`` runs
    the method's encoder (data to noise) instead of its sampler.
    """

    method: str
    n_steps: int
    schedule: str = "ddpm_linear"
    toy: str = "ring"
    prediction: str = "eps"
    dtype: str = "float64"
    batch: int = 8
    seed: int = 0
    spacing: str = "uniform_lambda"
    encode: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    final_zero: bool = False

    def __post_init__(self) -> None:
        get_method(self.method)  # raises ValueError naming the known methods
        _check_int(self.n_steps, "n_steps", 1)
        _check_int(self.batch, "batch", 1)
        _check_int(self.seed, "seed", 0)
        _check_choice(self.schedule, "schedule", tuple(SCHEDULES))
        _check_choice(self.toy, "toy", TOYS)
        _check_choice(self.prediction, "prediction", PREDICTIONS)
        _check_choice(self.dtype, "dtype", DTYPES)
        _check_choice(self.spacing, "spacing", SPACINGS)
        if not isinstance(self.options, tuple) or not all(
            isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str) for o in self.options
        ):
            raise TypeError(f"options must be a tuple of (name, value) pairs, got {self.options!r}")

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def size(self) -> tuple[int, int, int]:
        """Order used to find the smallest failing configuration."""
        return (self.n_steps, self.batch, len(self.options))

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        zero = " (the last to sigma = 0)" if self.final_zero else ""
        return (
            f"{self.method}{' (encoder)' if self.encode else ''}: {self.n_steps} steps{zero}, {self.schedule}, "
            f"{self.spacing}, {self.toy}, {self.prediction}, {self.dtype}{', ' + opts if opts else ''}"
        )


def config_grid(schedule: Any, config: Config) -> Tensor:
    """The continuous-time grid of ``config`` before any step to sigma = 0 (n_steps - 1 steps with ``final_zero``).

    "random" draws the interior points uniformly in lambda with the configuration's seed (a grid whose step ratios
    r = h_{i-1} / h_i vary; on a uniform-lambda grid r = 1 and a formula with r and 1/r swapped passes).
    """
    n = config.n_steps - 1 if config.final_zero else config.n_steps
    if n == 0:
        return torch.tensor([schedule.t_max], dtype=torch.float64)
    if config.spacing != "random":
        return grids.timesteps(schedule, n, config.spacing)
    ends = schedule(torch.tensor([schedule.t_max, schedule.t_min], dtype=torch.float64)).lambda_
    g = torch.Generator().manual_seed(config.seed + 104729)
    inner = ends[0] + (ends[1] - ends[0]) * torch.rand(n - 1, generator=g, dtype=torch.float64).sort().values
    lam = torch.cat([ends[:1], inner, ends[1:]]).clamp(schedule.lambda_min, schedule.lambda_max)
    ts = schedule.t_of_lambda(lam)
    ts[0], ts[-1] = schedule.t_max, schedule.t_min
    return ts


def with_options(config: Config, **options: Any) -> Config:
    """``config`` with options added or replaced."""
    return replace(config, options=tuple(sorted({**dict(config.options), **options}.items())))
