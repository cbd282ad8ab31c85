"""The oracle's core: run an implementation under test and refimpl's reference side by side, step by step.

Both start from the same x_T (exact samples of p_T of an exact toy), walk the same grid (the one the
implementation chose, mapped to continuous time) and, for stochastic methods, inject the same noise.
For every step the report gives the deviation from the reference state, the deviation from the exact
probability-flow ODE solution (deterministic methods), whether the state stayed finite, and where the
model was queried against where the method says it should be; then a verdict.

Tolerance of "agrees with the reference": an implementation whose coefficients are computed in a
format of unit round-off u (float32: 2^-24; float64: 2^-53) makes a relative error of a few u per
coefficient and step, and these add up over the steps; we allow ``TOL_OPS * (n_steps + 1) * u`` times
the state's scale, TOL_OPS = 64 operations' worth a step. Model query times must agree to the
same relative tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from refimpl.models import CountingModel, predict
from refimpl.reference import solve_pf_ode
from refimpl.registry import get_sampler
from refimpl.samplers import Trajectory
from refimpl.schedules import get_schedule

__all__ = ["Config", "Implementation", "Report", "Run", "StepReport", "check", "make_toy", "reference_run"]

TOL_OPS = 64


def make_toy(name: str) -> Any:
    """A named exact toy data law (toy_models.zoo)."""
    from toy_models import zoo

    toys = {
        "ring": zoo.ring,
        "labelled_pair": zoo.labelled_pair,
        "mixture16": lambda: zoo.random_mixture(K=4, d=16, seed=0),
        "gaussian": lambda: zoo.anisotropic_gaussian(3, seed=1),
    }
    if name not in toys:
        raise ValueError(f"unknown toy {name!r}; choose one of {sorted(toys)}")
    return toys[name]()


@dataclass(frozen=True)
class Config:
    """One configuration of the matrix: what is run, on which toy, how.

    ``options`` are the method's options as (name, value) pairs, understood by both sides (for example
    ("eta", 1.0) or ("solver_order", 2)); ``dtype`` is the dtype of the state the implementation sees.
    """

    method: str
    n_steps: int
    schedule: str = "ddpm_linear"
    toy: str = "ring"
    prediction: str = "eps"
    dtype: str = "float64"
    batch: int = 8
    seed: int = 0
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def size(self) -> tuple[int, int, int]:
        """Order used to find the smallest failing configuration."""
        return (self.n_steps, self.batch, len(self.options))

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        return (
            f"{self.method}: {self.n_steps} steps, {self.schedule}, {self.toy}, {self.prediction}, "
            f"{self.dtype}{', ' + opts if opts else ''}"
        )


@dataclass
class Run:
    """What one sampler did: the grid it walked (continuous times), its states, and its model queries.

    ``times`` has n_steps + 1 entries; ``denoise_final`` marks the convention of a last step to
    alpha = 1, sigma = 0 (its state is then the x0 prediction at times[-2], and times[-1] is NaN).
    ``noise`` is the noise the implementation really used, when it could not take the injected one;
    ``coefficient_dtype`` the precision of its step coefficients (diffusers keeps alpha-bar in float32
    whatever the state's dtype), which sets the tolerance together with the state's dtype.
    """

    times: Tensor
    states: list[Tensor]
    queries: list[float]
    denoise_final: bool = False
    error: str | None = None
    noise: Tensor | None = None
    coefficient_dtype: torch.dtype | None = None


class Implementation(Protocol):
    """An implementation under test: ``run`` walks its own grid on the exact model and records a Run."""

    name: str

    def run(self, config: Config, model: Any, x_T: Tensor, noise: Tensor | None) -> Run: ...


@dataclass(frozen=True)
class StepReport:
    i: int
    t: float
    dev_reference: float
    dev_exact: float
    finite: bool


@dataclass
class Report:
    """The comparison of one configuration, and its verdict."""

    config: Config
    implementation: str
    steps: list[StepReport] = field(default_factory=list)
    nfe: int = 0
    nfe_expected: int = 0
    query_error: float = 0.0
    tolerance: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def table(self) -> str:
        head = f"{'step':>5} {'t':>10} {'|x - ref|':>11} {'|x - exact|':>12} finite"
        rows = [
            f"{s.i:>5} {s.t:>10.5f} {s.dev_reference:>11.2e} {s.dev_exact:>12.2e} {s.finite!s:>6}" for s in self.steps
        ]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.problems)
        return "\n".join(
            [
                f"{self.implementation} vs refimpl {self.config}",
                head,
                *rows,
                f"model calls {self.nfe} (method declares {self.nfe_expected}); "
                f"query-time error {self.query_error:.1e}; tolerance {self.tolerance:.1e}",
                verdict,
            ]
        )


def _setup(config: Config) -> tuple[Any, Tensor, Tensor]:
    from toy_models import ExactModel

    schedule = get_schedule(config.schedule)
    model = ExactModel(make_toy(config.toy), schedule, config.prediction)
    g = torch.Generator().manual_seed(config.seed)
    x_T = model.sample_xt(config.batch, schedule.t_max, g)[1]
    noise = torch.randn(config.n_steps, *x_T.shape, generator=g, dtype=torch.float64)
    return model, x_T, noise


def reference_run(
    config: Config, model: Any, x_T: Tensor, times: Tensor, noise: Tensor | None, denoise_final: bool
) -> tuple[Run, int]:
    """refimpl's registered method on the grid ``times`` (and a final denoise if asked); returns (run, NFE)."""
    spec = get_sampler(config.method)
    counting = CountingModel(model)
    grid = times[:-1] if denoise_final else times
    out, states = x_T, [x_T]
    if len(grid) > 1:  # a one-step run with a final denoise has no regular step
        traj = Trajectory()
        kwargs = {"noise": noise[: len(grid) - 1]} if spec.stochastic else {}
        options = {**dict(spec.options), **dict(config.options)}
        out = spec.sample(counting, x_T, grid, callback=traj, **options, **kwargs)
        states += [s.x_next for s in traj.steps]
    if denoise_final:  # the last step to alpha = 1, sigma = 0 returns the x0 prediction
        states.append(predict(counting, out, grid[-1], "x0"))
    return Run(times, states, [float(t) for t in counting.t_queried], denoise_final), counting.calls


def _exact_states(model: Any, x_T: Tensor, times: Tensor) -> list[Tensor | None]:
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


def check(impl: Implementation, config: Config, exact: bool = True) -> Report:
    """Run ``impl`` and the reference on ``config`` and compare them step by step."""
    model, x_T, noise = _setup(config)
    dtype = getattr(torch, config.dtype)
    report = Report(config, impl.name)
    try:
        run = impl.run(config, model, x_T.to(dtype), noise.to(dtype))
    except Exception as err:  # the implementation under test crashed: report it, do not crash the oracle
        report.problems.append(f"raised {type(err).__name__}: {err}")
        return report
    if run.error:
        report.problems.append(run.error)
        return report
    bad = [i for i, s in enumerate(run.states) if not isinstance(s, Tensor)]
    if bad:
        report.problems.append(f"step {bad[0]} returned {type(run.states[bad[0]]).__name__}, not a tensor")
        return report
    if len(run.states) != len(run.times):
        report.problems.append(f"reported {len(run.states)} states for a grid of {len(run.times)} times")
        return report
    wrong = [i for i, s in enumerate(run.states) if s.shape != x_T.shape]
    if wrong:
        report.problems.append(
            f"step {wrong[0]} returned shape {tuple(run.states[wrong[0]].shape)}, expected {tuple(x_T.shape)}"
        )
        return report
    spec = get_sampler(config.method)
    # A zero-length step (t -> t) spends a model call and cannot move the state: report it, and compare the
    # rest against the reference on the grid without it (the state must then stay where it was).
    keep = [0] + [i + 1 for i in range(len(run.times) - 1) if not run.times[i + 1] == run.times[i]]
    for i in range(len(run.times) - 1):
        if run.times[i + 1] == run.times[i]:
            report.problems.append(
                f"step {i} has zero length (t = {float(run.times[i]):.5g} to itself): "
                "a model call that cannot move the state"
            )
    try:
        used = noise if run.noise is None else run.noise
        ref, report.nfe_expected = reference_run(config, model, x_T, run.times[keep], used, run.denoise_final)
    except ValueError as err:
        report.problems.append(f"its grid is not a valid grid for {config.method}: {err}")
        return report
    expand = [len([k for k in keep if k <= i]) - 1 for i in range(len(run.times))]
    ref.states = [ref.states[j] for j in expand]
    ode = _exact_states(model, x_T, run.times[keep]) if exact and not spec.stochastic else [None] * len(keep)
    ode = [ode[j] for j in expand]
    scale = max(1.0, float(x_T.abs().max()))
    unit = max(torch.finfo(d).eps / 2 for d in (dtype, run.coefficient_dtype or dtype))
    report.tolerance = TOL_OPS * (config.n_steps + 1) * unit * scale
    first_dev = None
    for i, (x, x_ref, x_ode) in enumerate(zip(run.states, ref.states, ode, strict=True)):
        finite = bool(torch.isfinite(x).all())
        dev = float((x.double() - x_ref).abs().max()) if finite else math.inf
        dev_exact = float((x.double() - x_ode).abs().max()) if x_ode is not None and finite else math.nan
        report.steps.append(StepReport(i, float(run.times[i]), dev, dev_exact, finite))
        if first_dev is None and not dev <= report.tolerance:
            first_dev = i
    report.nfe = len(run.queries)
    if first_dev is not None:
        s = report.steps[first_dev]
        what = "non-finite state" if not s.finite else f"deviation {s.dev_reference:.2e} > {report.tolerance:.1e}"
        report.problems.append(f"first off the reference at step {first_dev} (t = {s.t:.5f}): {what}")
    if report.nfe != report.nfe_expected:
        report.problems.append(f"{report.nfe} model calls, the method makes {report.nfe_expected}")
    elif report.nfe:
        q, q_ref = torch.tensor(run.queries), torch.tensor(ref.queries)
        report.query_error = float(((q - q_ref).abs() / q_ref.abs().clamp_min(1e-12)).max())
        if report.query_error > TOL_OPS * unit:
            k = int(((q - q_ref).abs() / q_ref.abs()).argmax())
            report.problems.append(
                f"model query {k} at t = {float(q[k]):.6g}, the method queries t = {float(q_ref[k]):.6g}"
            )
    return report


def smallest_failure(reports: list[Report]) -> Report | None:
    """The failing report with the smallest configuration (fewest steps, then smallest batch)."""
    failing = [r for r in reports if not r.passed]
    return min(failing, key=lambda r: r.config.size()) if failing else None


def with_options(config: Config, **options: Any) -> Config:
    """``config`` with options added or replaced."""
    return replace(config, options=tuple(sorted({**dict(config.options), **options}.items())))
