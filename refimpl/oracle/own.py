"""Check your own sampler: a plain function with refimpl's sampler signature, on a default set of configurations.

    from refimpl.oracle import check
    print(check(my_sampler, method="dpm_solver_pp_2m"))

``my_sampler(model, x, timesteps, *, callback=None, noise=None, **options)`` walks the decreasing times
``timesteps`` from x and returns the last state; ``model(x, t)`` is the network (``model.schedule(t)`` gives
alpha_t, sigma_t, lambda_t; ``model.prediction`` what it predicts). Three things are optional:

* ``callback``: if the function takes it and calls ``callback(StepInfo(i, t, t_next, x, x_next, x0))`` once per
  step, every state is compared with the reference (per step); otherwise only the last one (end to end);
* ``noise``: a stochastic method gets the injected noise (shape (n_steps, *x.shape), step i uses noise[i]), so its
  path can be compared with the reference's;
* a last timestep 0.0 means a last step to sigma = 0 (alpha = 1); the model must not be called there. The
  default configurations include such grids; a function that raises on them before its first model call does
  not take such a step, and they are skipped (said so in the verdict).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from refimpl.models import CountingModel, ModelWrapper
from refimpl.oracle.config import Config, config_grid
from refimpl.oracle.core import check as check_one
from refimpl.oracle.methods import get_method
from refimpl.oracle.report import Report
from refimpl.oracle.running import Implementation, Run
from refimpl.samplers import Trajectory

__all__ = ["DEFAULT_CONFIGS", "RefimplCallable", "Verdict", "assert_agrees", "check", "default_configs"]


@dataclass
class RefimplCallable:
    """Any callable with refimpl's sampler signature, run on the refimpl grid of ``config`` (see the module docstring).

    ``stochastic``: pass the injected noise (None: when the method is stochastic with the configuration's options and
    the function takes ``noise``). With ``config.encode`` the callable is an encoder: it walks the same grid from its
    last time up to its first.
    """

    fn: Callable[..., Tensor]
    name: str = ""
    stochastic: bool | None = None
    method: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"the sampler must be callable, got {type(self.fn).__name__}")
        self.name = self.name or getattr(self.fn, "__qualname__", None) or repr(self.fn)

    @functools.cached_property
    def _parameters(self) -> Mapping[str, inspect.Parameter] | None:
        try:
            return inspect.signature(self.fn).parameters
        except (TypeError, ValueError):
            return None

    def _takes(self, name: str) -> bool:
        params = self._parameters
        if params is None:
            return True
        return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def run(self, config: Config, model: Any, x_T: Tensor, noise: Tensor | None) -> Run:
        ts = config_grid(model.schedule, config)
        given = torch.cat([ts, torch.zeros(1, dtype=ts.dtype)]) if config.final_zero else ts
        counting, traj = CountingModel(_CastingModel(model, x_T.dtype)), Trajectory()
        spec = get_method(config.method)
        options = {**dict(spec.options), **dict(config.options)}
        stochastic = spec.is_stochastic(**options) if self.stochastic is None else self.stochastic
        kwargs: dict[str, Any] = dict(config.options)
        takes_noise = self._takes("noise")
        if stochastic and takes_noise and noise is not None:
            kwargs["noise"] = noise
        if self._takes("callback"):
            kwargs["callback"] = traj
        try:
            out = self.fn(counting, x_T, given, **kwargs)
        except Exception as err:
            if config.final_zero and not counting.calls:  # it rejected the grid: it takes no step to sigma = 0
                reason = f"it takes no last step to sigma = 0 (raised {type(err).__name__} before any model call)"
                return Run(ts, [], [], skipped=reason)
            raise
        times = torch.cat([ts, torch.tensor([float("nan")], dtype=ts.dtype)]) if config.final_zero else ts
        n = len(times) - 1
        if traj.steps and len(traj.steps) != n:
            return Run(times, [], [], error=f"reported {len(traj.steps)} steps through its callback, not {n}")
        inner = [s.x_next for s in traj.steps[:-1]] if traj.steps else [None] * (n - 1)
        return Run(
            times.flip(0) if config.encode else times,
            [x_T, *inner, out] if n else [out],
            [float(t) for t in counting.t_queried],
            final="x0" if config.final_zero else "grid",
            noise_ignored=bool(stochastic and not takes_noise),
        )


@dataclass
class _CastingModel(ModelWrapper):
    """The exact model evaluated in float64, its output cast back to the caller's dtype."""

    dtype: torch.dtype

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x.double(), torch.as_tensor(t, dtype=torch.float64)).to(x.dtype)


#: The default configurations: every grid family (uniform in t and in lambda, Karras, quadratic, random), three
#: schedules, every parameterisation, float32 and float64 states, and last steps to sigma = 0; step counts from 1.
DEFAULT_CONFIGS: tuple[dict[str, Any], ...] = (
    dict(n_steps=1, schedule="vp_linear", spacing="uniform_lambda"),
    dict(n_steps=2, schedule="edm", spacing="karras", prediction="x0"),
    dict(n_steps=6, schedule="vp_linear", spacing="uniform_t", prediction="v"),
    dict(n_steps=8, schedule="vp_cosine", spacing="quadratic"),
    dict(n_steps=7, schedule="edm", spacing="random", prediction="x0", toy="mixture16"),
    dict(n_steps=5, schedule="vp_linear", spacing="random", seed=1, final_zero=True),
    dict(n_steps=6, schedule="edm", spacing="karras", dtype="float32"),
    dict(n_steps=4, schedule="edm", spacing="uniform_lambda", prediction="v", final_zero=True),
)


def default_configs(method: str, **overrides: Any) -> list[Config]:
    """``DEFAULT_CONFIGS`` for ``method`` (at least its ``min_steps``), each with ``overrides`` applied.

    A method without a step to sigma = 0 in the reference (an encoder) skips the ``final_zero`` ones.
    """
    spec = get_method(method)
    out = []
    for fields in DEFAULT_CONFIGS:
        fields = {**fields, **overrides}
        if fields.get("encode") and fields.get("final_zero"):
            continue
        out.append(Config(method, **{**fields, "n_steps": max(fields["n_steps"], spec.min_steps)}))
    return out


@dataclass
class Verdict:
    """The reports of all configurations; ``str`` gives the headline and the table of each failure."""

    implementation: str
    method: str
    reports: list[Report] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports)

    @property
    def skipped(self) -> list[Report]:
        return [r for r in self.reports if r.skipped]

    @property
    def failures(self) -> list[Report]:
        return [r for r in self.reports if not r.passed]

    def headline(self) -> str:
        """One line: PASS or FAIL (with the first problem of the smallest failure), and the worst deviation-to-
        tolerance ratio over all configurations with the step where it occurs."""
        rows = [(r, r.worst) for r in self.reports if r.worst is not None and not r.skipped]
        worst = max(rows, key=lambda rw: rw[1].ratio, default=None)
        where = ""
        if worst is not None:
            r, w = worst
            where = f"; worst deviation {w.ratio:.3g} x tolerance at step {w.i} ({w.where}) of [{r.config}]"
        if self.skipped:
            where += f"; {len(self.skipped)} skipped: {self.skipped[0].skipped}"
        n = len(self.reports) - len(self.skipped)
        if self.passed:
            return f"PASS: {self.implementation} agrees with refimpl's {self.method} in all {n} configurations{where}"
        first = min(self.failures, key=lambda r: r.config.size())
        return (
            f"FAIL: {self.implementation} disagrees with refimpl's {self.method} in {len(self.failures)} of {n} "
            f"configurations; smallest [{first.config}]: {first.problems[0]}{where}"
        )

    def __str__(self) -> str:
        parts = [self.headline()]
        status = lambda r: "SKIP" if r.skipped else "PASS" if r.passed else "FAIL"  # noqa: E731
        parts += [f"  {status(r)}  {r.config}" for r in self.reports]
        parts += ["", *[r.table() + "\n" for r in self.failures]]
        return "\n".join(parts).rstrip()


def _as_implementation(sampler: Any, name: str = "") -> Implementation:
    if hasattr(sampler, "run") and hasattr(sampler, "name"):
        return sampler
    return RefimplCallable(sampler, name=name)


def check(
    sampler: Any,
    config: Config | Iterable[Config] | None = None,
    *,
    method: str | None = None,
    exact: bool = False,
    **options: Any,
) -> Verdict | Report:
    """Check ``sampler`` against refimpl's ``method``: a ``Verdict`` over the default configurations.

    ``sampler`` is a plain function with refimpl's sampler signature (see the module docstring) or an adapter
    (``DiffusersScheduler``, ``KDiffusionSampler``). ``options`` go to both sides as the method's options (e.g.
    ``eta=1.0``). Given one ``Config``, returns that configuration's ``Report``; given several, a ``Verdict``.
    ``exact`` adds the distance to the exact probability-flow ODE solution to every row (slower).
    """
    impl = _as_implementation(sampler)
    if isinstance(config, Config):
        return check_one(impl, config, exact=exact)
    if config is None:
        if method is None:
            method = getattr(impl, "method", None)
            if not isinstance(method, str):
                raise TypeError("check needs method= (the refimpl method the sampler implements), or a Config")
        configs = default_configs(method, options=tuple(sorted(options.items())))
    else:
        configs = list(config)
        if not configs or not all(isinstance(c, Config) for c in configs):
            raise TypeError("config must be a Config or a non-empty iterable of Config")
        method = method or configs[0].method
    return Verdict(impl.name, method, [check_one(impl, c, exact=exact) for c in configs])


def assert_agrees(sampler: Any, method: str | None = None, **kwargs: Any) -> Verdict:
    """``check``, raising AssertionError with the headline and the failing tables when any configuration fails.

    For another project's test suite: ``assert_agrees(my_sampler, "dpm_solver_pp_2m")``.
    """
    verdict = check(sampler, method=method, **kwargs)
    if isinstance(verdict, Report):
        verdict = Verdict(verdict.implementation, verdict.config.method, [verdict])
    if not verdict.passed:
        raise AssertionError(str(verdict))
    return verdict
