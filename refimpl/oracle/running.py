"""Running both sides: the implementation under test (checked for a usable run) and refimpl's reference on its grid.

A ``Run`` records what one sampler did: the grid it walked (continuous times), its states and its model queries.
The reference runs refimpl's registered method on the implementation's grid, from the same x_T, with the same
injected noise, and with the implementation's conventions (``Convention``) modelled by wrappers of the exact model.
"""

from __future__ import annotations

import functools
import inspect
import math
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from refimpl.models import CountingModel, ModelWrapper, predict
from refimpl.oracle.config import Config, make_toy
from refimpl.oracle.methods import final_step_to_zero, get_method
from refimpl.parameterization import from_x0_eps, to_x0_eps
from refimpl.reference import solve_pf_ode
from refimpl.samplers import Trajectory
from refimpl.schedules import get_schedule

__all__ = ["FINALS", "Convention", "Implementation", "Run", "Unusable", "exact_states", "nonzero_steps",
           "reference_run", "run_checked", "setup"]  # fmt: skip

FINALS = ("grid", "x0", "step")


@dataclass(frozen=True)
class Convention:
    """A convention of the implementation under test, modelled by the reference.

    ``options`` are reference-sampler options that model it (e.g. per-step ``orders``, a ``warmup``);
    ``clip_x0`` clips the model's x0 prediction to [-clip_x0, clip_x0] (eps recomputed from it);
    ``queries`` are (solver noise level t, model time input t') pairs: the reference's model is evaluated at
    t' whenever its solver is at t.
    """

    name: str
    detail: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    clip_x0: float | None = None
    queries: tuple[tuple[float, float], ...] = ()


@dataclass
class Run:
    """What one sampler did: the grid it walked (continuous times), its states, and its model queries.

    ``times`` has one entry per state. ``final`` says how the last state is reached: "grid" (a step to the
    grid time times[-1]), "x0" (a last step to alpha = 1, sigma = 0 that returns the x0 prediction at
    times[-2]) or "step" (the method's own step to sigma = 0); times[-1] is NaN for the last two.
    ``queries`` are the model's time inputs in call order and ``levels`` the solver's noise level at each
    call (where the implementation says it evaluates; None: the same as ``queries``); ``landings`` where each
    step's coefficients take the state (None: times[1:]), which must be where the next step starts.
    ``noise`` is the noise the implementation really used, when it could not take the injected one;
    ``coefficient_dtype`` the precision of its step coefficients (diffusers keeps alpha-bar in float32
    whatever the state's dtype), which sets the tolerance together with the state's dtype.
    ``reference_options`` select the variant of the method the implementation runs (not a convention).
    A state may be None where the implementation did not report it (an end-to-end run reports only the last);
    ``noise_ignored`` says that the method is stochastic here but the implementation could not take the noise;
    ``skipped`` why the configuration does not apply to the implementation (it takes no last step to sigma = 0).
    """

    times: Tensor
    states: list[Tensor]
    queries: list[float]
    final: str = "grid"
    conventions: tuple[Convention, ...] = ()
    reference_options: dict[str, Any] = field(default_factory=dict)
    levels: list[float] | None = None
    landings: list[float] | None = None
    error: str | None = None
    noise: Tensor | None = None
    coefficient_dtype: torch.dtype | None = None
    noise_ignored: bool = False
    skipped: str | None = None


class Implementation(Protocol):
    """An implementation under test: ``run`` walks its own grid on the exact model and records a Run."""

    name: str

    def run(self, config: Config, model: Any, x_T: Tensor, noise: Tensor | None) -> Run: ...


# --- model wrappers that model conventions --------------------------------------------------------------


@dataclass
class _ClippedModel(ModelWrapper):
    """The model with its x0 prediction clipped to [-c, c] and the output re-derived from (x, clipped x0)."""

    c: float

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        values = self.model.schedule(t)
        x0, _ = to_x0_eps(self.prediction, self.model(x, t), x, values)
        x0 = x0.clamp(-self.c, self.c)
        eps = (x - values.alpha * x0) / values.sigma
        return from_x0_eps(self.prediction, x0, eps, values)


@dataclass
class _RetimedModel(ModelWrapper):
    """The model evaluated at t' whenever it is asked at a solver level t of the pairs (t, t')."""

    pairs: tuple[tuple[float, float], ...]

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        level = float(t)
        for t_level, t_query in self.pairs:
            if abs(level - t_level) <= 1e-9 * abs(t_level):
                return self.model(x, torch.as_tensor(t_query, dtype=torch.float64))
        return self.model(x, t)


# --- the reference ------------------------------------------------------------------------------------


@functools.cache
def _toy(name: str) -> Any:
    """``make_toy(name)``, built once per process (a toy is a frozen data law, only read)."""
    return make_toy(name)


def setup(config: Config) -> tuple[Any, Tensor, Tensor]:
    """The exact model of ``config``, its seeded start x_T (x_0 when encoding) and the noise to inject."""
    from toy_models import ExactModel

    schedule = get_schedule(config.schedule)
    model = ExactModel(_toy(config.toy), schedule, config.prediction)
    g = torch.Generator().manual_seed(config.seed)
    x_start = model.sample_xt(config.batch, schedule.t_min if config.encode else schedule.t_max, g)[1]
    noise = torch.randn(config.n_steps, *x_start.shape, generator=g, dtype=torch.float64)
    return model, x_start, noise


def reference_run(
    config: Config,
    model: Any,
    x_T: Tensor,
    times: Tensor,
    noise: Tensor | None,
    final: str = "grid",
    conventions: tuple[Convention, ...] = (),
    reference_options: dict[str, Any] | None = None,
) -> tuple[Run, int]:
    """refimpl's method on the grid ``times`` with the given conventions modelled; returns (run, NFE).

    ``final`` as in ``Run``: "x0" ends with the x0 prediction at times[-2], "step" with the method's own step to
    sigma = 0 (``methods.final_step_to_zero``).
    """
    if final not in FINALS:
        raise ValueError(f"final must be one of {FINALS}, got {final!r}")
    spec = get_method(config.method)
    options = {**dict(spec.options), **(reference_options or {}), **dict(config.options)}
    for convention in conventions:
        options.update(dict(convention.options))
        if convention.clip_x0 is not None:
            model = _ClippedModel(model, convention.clip_x0)
        if convention.queries:
            model = _RetimedModel(model, convention.queries)
    counting = CountingModel(model)
    grid = times if final == "grid" else times[:-1]
    out, states, traj = x_T, [x_T], Trajectory()
    if config.encode:
        if spec.encode is None:
            raise ValueError(f"{config.method} has no encoder")
        out = spec.encode(counting, x_T, grid.flip(0), callback=traj)
        states += [s.x_next for s in traj.steps]
    elif len(grid) > 1:  # a one-step run with a final denoise has no regular step
        takes_noise = "noise" in inspect.signature(spec.sample).parameters  # also DDIM with eta > 0
        kwargs = {"noise": noise[: len(grid) - 1]} if noise is not None and takes_noise else {}
        out = spec.sample(counting, x_T, grid, callback=traj, **options, **kwargs)
        states += [s.x_next for s in traj.steps]
    if final == "x0":  # the last step to alpha = 1, sigma = 0 returns the x0 prediction
        states.append(predict(counting, out, grid[-1], "x0"))
    elif final == "step":
        states.append(final_step_to_zero(config.method, counting, out, grid, traj, options))
    return Run(times, states, [float(t) for t in counting.t_queried], final), counting.calls


def exact_states(model: Any, x_T: Tensor, times: Tensor) -> list[Tensor | None]:
    """The probability-flow ODE solution at each grid time, chained from x_T (None where t is not in the domain)."""
    out: list[Tensor | None] = [x_T]
    x, t_prev = x_T, times[0]
    for t in times[1:]:
        if not math.isfinite(float(t)):
            out.append(None)
            continue
        x = solve_pf_ode(model, x, t_prev, t, rtol=1e-10, atol=1e-10)
        out.append(x)
        t_prev = t
    return out


@dataclass(frozen=True)
class Unusable:
    """Why an implementation's run cannot be compared (it raised, returned a non-tensor, a wrong shape ...)."""

    reason: str
    traceback: str | None = None
    skipped: str | None = None


def run_checked(impl: Implementation, config: Config, model: Any, x_T: Tensor, noise: Tensor) -> Run | Unusable:
    """The implementation's run, or why it is not usable (crash, with its traceback; non-tensor; shape)."""
    dtype = getattr(torch, config.dtype)
    try:
        run = impl.run(config, model, x_T.to(dtype), noise.to(dtype))
    except Exception as err:  # the implementation under test crashed: report it, do not crash the oracle
        return Unusable(f"raised {type(err).__name__}: {err}", traceback.format_exc())
    if run.error or run.skipped:
        return Unusable(run.error or "", skipped=run.skipped)
    if len(run.states) != len(run.times):
        return Unusable(f"reported {len(run.states)} states for a grid of {len(run.times)} times")
    bad = [
        i
        for i, s in enumerate(run.states)
        if not isinstance(s, Tensor) and not (s is None and 0 < i < len(run.states) - 1)
    ]
    if bad:
        return Unusable(f"step {bad[0]} returned {type(run.states[bad[0]]).__name__}, not a tensor")
    wrong = [i for i, s in enumerate(run.states) if s is not None and s.shape != x_T.shape]
    if wrong:
        return Unusable(
            f"step {wrong[0]} returned shape {tuple(run.states[wrong[0]].shape)}, expected {tuple(x_T.shape)}"
        )
    return run


def nonzero_steps(times: Tensor, rel: float = 0.0) -> list[int]:
    """Indices of the grid times that end a step of non-zero length (and 0): a step from t_i to t_{i+1} has zero
    length when |t_{i+1} - t_i| <= rel |t_i| (``rel``: the round-off of the table the grid came from; 0: equal)."""
    return [0] + [i + 1 for i in range(len(times) - 1) if not abs(times[i + 1] - times[i]) <= rel * abs(times[i])]
