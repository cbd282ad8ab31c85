"""The oracle's core: run an implementation under test and refimpl's reference side by side, step by step.

Both start from the same x_T (exact samples of p_T of an exact toy), walk the same grid (the one the
implementation chose, mapped to continuous time) and, for stochastic methods, inject the same noise.
For every step the report gives the deviation from the reference state, the deviation from the exact
probability-flow ODE solution (deterministic methods), whether the state stayed finite, and where the
model was queried against where the method says it should be; then a verdict.

Conventions of the implementation (a final denoising step, clipped x0 predictions, lower orders in the last
steps, a model time input that differs from the solver's noise level, ...) are modelled explicitly as options
of the reference (``Convention``), never by loosening the tolerance; the report measures what each one
changes (the reference with it against the reference without it).

The stages of ``check``, in order: run the implementation (``running``), check its grid, run the reference with
the implementation's conventions and measure what each changes, compare every reported state with its per-step
tolerance (``tolerance``), compare the model calls, and name recognisable patterns (hints) in the ``Report``
(``report``). Configurations are in ``config``.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from refimpl.models import ModelWrapper
from refimpl.oracle.config import Config, with_options
from refimpl.oracle.methods import get_method
from refimpl.oracle.report import ConventionNote, Report, StepReport, smallest_failure
from refimpl.oracle.running import (
    Convention,
    Implementation,
    Run,
    Unusable,
    exact_states,
    nonzero_steps,
    reference_run,
    run_checked,
    setup,
)
from refimpl.oracle.tolerance import (
    TOL_OPS,
    alpha_growth,
    amplification_factors,
    max_deviation,
    perturbed,
    query_tolerance,
    tolerance,
    unit_roundoff,
)

__all__ = ["Config", "Report", "check", "smallest_failure", "with_options"]


def _step_orders(config: Config, options: dict[str, Any], n: int) -> list[int | None]:
    """The reference's order for each of the n steps: per-step ``orders`` where the method takes them (multistep
    methods start lower: ``step_orders``), else the declared order. Index 0 is x_T (no step)."""
    from refimpl.samplers.multistep import step_orders

    spec = get_method(config.method)
    order = math.ceil(options.get("order", spec.order))
    if "orders" in options:
        orders = list(options["orders"])
    elif "orders" in inspect.signature(spec.sample).parameters:
        orders = step_orders(n, order)
    else:
        orders = [order] * n
    return [None, *orders, *[order] * (n - len(orders))][: n + 1]


# --- the stages of a check ----------------------------------------------------------------------------------


@dataclass
class _Context:
    """What the stages of ``check`` share: the configuration, the exact model, the run and its precision."""

    config: Config
    model: Any
    x_T: Tensor
    noise: Tensor
    run: Run
    report: Report
    keep: list[int]
    size: float
    unit: float


def _grid_stage(c: _Context) -> None:
    """Zero-length steps (a model call that cannot move the state) and landings off the implementation's own grid."""
    times = c.run.times
    for i in range(len(times) - 1):
        if times[i + 1] == times[i]:
            c.report.problems.append(
                f"step {i} has zero length (t = {float(times[i]):.5g} to itself): "
                "a model call that cannot move the state"
            )
        elif i + 1 not in c.keep:  # a step shorter than the table's round-off, in either direction
            c.report.problems.append(
                f"step {i} has zero length to round-off (t = {float(times[i]):.8g} to {float(times[i + 1]):.8g}, "
                f"relative {float(abs(times[i + 1] / times[i] - 1)):.1e}): a model call that cannot move the state"
            )
    for i, landing in enumerate((c.run.landings or [])[:-1]):
        start = float(times[i + 1])
        if not abs(landing - start) <= TOL_OPS * c.unit * abs(start):
            c.report.problems.append(
                f"step {i} lands at t = {landing:.6g} but the next step starts from t = {start:.6g}: "
                "off the scheduler's own grid"
            )
            break


def _levels(c: _Context) -> list[float]:
    return c.run.levels if c.run.levels is not None else c.run.queries


def _query_convention(c: _Context) -> list[Convention]:
    """The run's conventions, plus "model time off the noise level" when the model's time input differs from the
    solver's noise level by more than the conversion's round-off."""
    conventions = list(c.run.conventions)
    levels, queries = _levels(c), c.run.queries
    if not queries:
        return conventions
    tol = query_tolerance(c.model.schedule, torch.tensor(levels[: len(queries)], dtype=torch.float64), c.unit)
    off = [(lv, q) for lv, q, tl in zip(levels, queries, tol.tolist(), strict=False) if abs(q - lv) > tl * abs(lv)]
    if off:  # the model's time input does not map back to the solver's noise level: model it, measure it
        worst = max(abs(q - lv) / abs(lv) for lv, q in off)
        detail = f"the model's time input differs from the solver's noise level by up to {worst:.1e} (relative)"
        conventions.append(
            Convention("model time off the noise level", detail, queries=tuple(zip(levels, queries, strict=False)))
        )
    return conventions


def _reference_stage(c: _Context, conventions: list[Convention]) -> tuple[Run, list[float]] | None:
    """The reference on the implementation's grid with its conventions, what each convention changes, and the
    measured amplification of the reference (per state of the run). None if the grid is not valid for the method.

    The reference, its probe from a perturbed x_T and, for a stochastic method, a second copy of the reference (is
    it deterministic given the injected noise?) are one batched run: every exact toy and every grid method acts on
    the rows of a batch independently (an adaptive method's step control couples them: it gets separate runs).
    """
    run, config = c.run, c.config
    used = c.noise if run.noise is None else run.noise
    spec = get_method(config.method)
    stochastic = spec.is_stochastic(**{**run.reference_options, **dict(config.options)})

    def reference(conv: list[Convention], x_start: Tensor = c.x_T) -> tuple[Run, int]:
        return reference_run(
            config, c.model, x_start, run.times[c.keep], used, run.final, tuple(conv), run.reference_options
        )

    # the noise's batch axis is the one before x's own: (n_steps, B, ...), or (n_steps, 2, B, ...) for two a step
    starts = [c.x_T, perturbed(c.x_T, c.size, config.seed)] + ([c.x_T] if stochastic else [])
    try:
        if spec.kind == "adaptive":
            refs = [reference(conventions, x) for x in starts]
            (ref, c.report.nfe_expected), others = refs[0], [r for r, _ in refs[1:]]
        else:
            noise = None if used is None else torch.cat([used] * len(starts), dim=used.ndim - c.x_T.ndim)
            batched, c.report.nfe_expected = reference_run(
                config,
                c.model,
                torch.cat(starts),
                run.times[c.keep],
                noise,
                run.final,
                tuple(conventions),
                run.reference_options,
            )
            b = len(c.x_T)
            ref, *others = [replace(batched, states=[s[k * b:(k + 1) * b] for s in batched.states])
                            for k in range(len(starts))]  # fmt: skip
    except ValueError as err:
        c.report.problems.append(f"its grid is not a valid grid for {config.method}: {err}")
        return None
    for k, convention in enumerate(conventions):  # what each convention changes
        without, _ = reference(conventions[:k] + conventions[k + 1 :])
        note = ConventionNote(
            convention.name, convention.detail, max_deviation(ref.states, without.states), c.report.tolerance
        )
        c.report.conventions.append(note)
        if note.matters and convention.queries:
            c.report.problems.append(
                f"the model is not queried at the solver's noise level ({convention.detail}); this changes the "
                f"states by {note.effect:.1e} > {c.report.tolerance:.1e}"
            )
    amplification = amplification_factors(ref, others[0], c.size)
    # the probe needs a deterministic reference: a stochastic method must take the injected noise
    if stochastic and max_deviation(ref.states, others[1].states) > 0:
        c.report.problems.append(
            f"refimpl's {config.method} is not deterministic given the injected noise (does it take `noise`?): "
            "no step-by-step comparison is possible"
        )
        amplification = [1.0] * len(amplification)
    return ref, amplification


def _state_stage(c: _Context, ref: Run, amplification: list[float], scale: float, exact: bool) -> None:
    """Each reported state against the reference (per-step tolerance) and the exact ODE solution."""
    run, config, report = c.run, c.config, c.report
    expand = [len([k for k in c.keep if k <= i]) - 1 for i in range(len(run.times))]
    spec = get_method(config.method)
    options = {**dict(spec.options), **run.reference_options, **dict(config.options)}
    for convention in run.conventions:
        options.update(dict(convention.options))
    orders = _step_orders(config, options, len(c.keep) - 1)
    ode = exact_states(c.model, c.x_T, run.times[c.keep]) if exact and not spec.stochastic else [None] * len(c.keep)
    first = None
    for i, x in enumerate(run.states):
        j = expand[i]
        tol = TOL_OPS * (j + 1) * c.unit * scale * amplification[j]
        order = orders[j] if j > 0 and expand[i - 1] != j else None
        if x is None:
            report.steps.append(StepReport(i, float(run.times[i]), math.nan, math.nan, True, amplification[j], tol,
                                           order, reported=False))  # fmt: skip
            continue
        finite = bool(torch.isfinite(x).all())
        dev = float((x.double() - ref.states[j]).abs().max()) if finite else math.inf
        dev_exact = float((x.double() - ode[j]).abs().max()) if ode[j] is not None and finite else math.nan
        report.steps.append(StepReport(i, float(run.times[i]), dev, dev_exact, finite, amplification[j], tol, order))
        if first is None and not dev <= tol:
            first = report.steps[-1]
    if first is not None:
        what = (
            "non-finite state" if not first.finite else f"deviation {first.dev_reference:.2e} > {first.tolerance:.1e}"
        )
        report.problems.append(f"first off the reference at step {first.i} ({first.where}): {what}")


def _call_stage(c: _Context, ref: Run) -> None:
    """The number of model calls, and where each is made against where the method evaluates."""
    report, levels = c.report, _levels(c)
    report.nfe = len(c.run.queries)
    if report.nfe != report.nfe_expected:
        report.problems.append(f"{report.nfe} model calls, the method makes {report.nfe_expected}")
        return
    if not report.nfe:
        return
    q, q_ref = torch.tensor(levels, dtype=torch.float64), torch.tensor(ref.queries, dtype=torch.float64)
    rel = (q - q_ref).abs() / q_ref.abs().clamp_min(1e-12)
    report.query_error = float(rel.max())
    excess = rel / query_tolerance(c.model.schedule, q_ref, c.unit)
    if float(excess.max()) > 1:
        k = int(excess.argmax())
        report.problems.append(
            f"model call {k} is made at noise level t = {float(q[k]):.8g}, the method evaluates at "
            f"t = {float(q_ref[k]):.8g} (relative difference {float(rel[k]):.1e})"
        )


@dataclass
class _Float32Outputs(ModelWrapper):
    """The model with its outputs rounded to float32 (the inputs kept as given)."""

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x.double(), t).float()


def _float32_yardstick(c: _Context) -> float | None:
    """The largest deviation of refimpl's DDIM with a float32 state (and float32 model outputs) from its float64 run
    on the run's finite grid: what float32 rounding alone does to a first-order method there (None: no step there)."""
    from refimpl.samplers import sample_ddim

    times = c.run.times[c.keep]
    grid = times[torch.isfinite(times)]
    if len(grid) < 2:
        return None
    # an encoder's grid increases: DDIM inversion (refimpl's DDIM encoder walks the grid from its last time up)
    run = functools.partial(get_method("ddim").encode, timesteps=grid.flip(0)) if c.config.encode else (
        functools.partial(sample_ddim, timesteps=grid)
    )  # fmt: skip
    exact = run(c.model, c.x_T)
    return float((run(_Float32Outputs(c.model), c.x_T.float()).double() - exact).abs().max())


def _hint_stage(c: _Context) -> None:
    """Name the pattern behind the problems where one is recognisable."""
    report, run, config = c.report, c.run, c.config
    if run.noise_ignored:
        report.hints.append(
            f"{config.method} is stochastic with these options, but the implementation takes no `noise` argument: "
            "it draws its own noise, so its path cannot be compared; accept `noise` (shape (n_steps, *x.shape), "
            "step i uses noise[i])"
        )
    failing = [s for s in report.steps if s.reported and s.finite and s.i > 0 and s.dev_reference > s.tolerance]
    f32 = torch.finfo(torch.float32).eps / 2
    float32_sized = (
        bool(failing) and c.unit < f32 and all(s.dev_reference <= s.tolerance * f32 / c.unit for s in failing)
    )
    if float32_sized:
        report.hints.append(
            "every deviation is within float32 round-off (it would pass a float32 tolerance): is a coefficient, "
            "the time or the state cast to float32 somewhere (torch.tensor(...) without dtype, a float32 table)?"
        )
    yardstick = _float32_yardstick(c) if failing and (c.unit >= f32 or float32_sized) else None
    if yardstick is not None:
        worst = max(s.dev_reference for s in failing)
        report.hints.append(
            f"what float32 rounding alone does on this grid: refimpl's DDIM (first order) with a float32 state "
            f"deviates from its float64 run by {yardstick:.1e}; the worst deviation here is {worst:.1e}"
        )
    zero = [s for s in report.steps if not s.finite and math.isnan(s.t)]
    if zero and all(s.finite for s in report.steps if not math.isnan(s.t)):
        report.hints.append(
            "only the step to sigma = 0 is not finite: there alpha = 1, sigma = 0 and h = lambda_t - lambda_s = +inf; "
            "a multistep formula with ratios of step sizes breaks, and the usual last step is first order "
            "(it returns the x0 prediction, as the reference does)"
        )
    if report.nfe > report.nfe_expected > 0:
        report.hints.append(
            f"{report.nfe - report.nfe_expected} model call(s) more than the method makes: a repeated evaluation, "
            "or a stage the method does not have (each call is the expensive part of a sampler)"
        )


def check(impl: Implementation, config: Config, exact: bool = True) -> Report:
    """Run ``impl`` and the reference on ``config`` and compare them step by step (the stages above, in order)."""
    model, x_T, noise = setup(config)
    report = Report(config, impl.name)
    run = run_checked(impl, config, model, x_T, noise)
    if isinstance(run, Unusable):
        if run.skipped:
            report.skipped = run.skipped
        else:
            report.problems.append(run.reason)
            report.traceback = run.traceback
        return report
    keep = nonzero_steps(run.times, TOL_OPS * unit_roundoff(config, run))
    size = max(1.0, float(x_T.abs().max()))
    scale = size * alpha_growth(model, run.times[keep])
    report.tolerance, unit = tolerance(config, run, scale)
    c = _Context(config, model, x_T, noise, run, report, keep, size, unit)
    _grid_stage(c)
    staged = _reference_stage(c, _query_convention(c))
    if staged is not None:
        ref, amplification = staged
        _state_stage(c, ref, amplification, scale, exact)
        _call_stage(c, ref)
    _hint_stage(c)
    return report
