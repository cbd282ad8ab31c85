"""The oracle's order check: an implementation's measured global order, against refimpl's on the same grids.

Deterministic methods only: the error is the distance to the exact probability-flow ODE solution at the end of
the implementation's own grid (closed form on the single-Gaussian toy, else ``reference.solve_pf_ode``),
fitted over step counts (``reference.convergence_order``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor

from refimpl.oracle.config import Config
from refimpl.oracle.methods import get_method
from refimpl.oracle.running import Implementation, Unusable, nonzero_steps, reference_run, run_checked, setup
from refimpl.oracle.tolerance import tolerance
from refimpl.reference import ORDER_TOL, OrderResult, convergence_order, solve_pf_ode

__all__ = ["ORDER_FLOOR", "ORDER_TOL", "OrderReport", "order_check"]

#: An order is measured only from errors at least this many tolerances above the implementation's round-off.
ORDER_FLOOR = 10.0


@dataclass
class OrderReport:
    """The implementation's error against the exact ODE at successive step counts, and its fitted order."""

    implementation: str
    config: Config
    declared: float
    steps: tuple[int, ...]
    errors: tuple[float, ...] = ()
    result: OrderResult | None = None
    problem: str | None = None
    reference_errors: tuple[float, ...] = ()
    reference: OrderResult | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        head = f"{self.implementation} ({self.config.method}, declared order {self.declared:g})"
        body = str(self.result) if self.result is not None else ""
        ref = f"refimpl on the same grids: order {self.reference.order:.3f}" if self.reference is not None else ""
        return "\n".join([head, body, ref, "PASS" if self.passed else f"FAIL: {self.problem}"])


def _exact_end(model: Any, x_T: Tensor, t_from: Tensor, t_to: Tensor) -> Tensor:
    """The probability-flow ODE solution at t_to from x_T at t_from: in closed form on a single Gaussian (the
    "gaussian" toy: the flow is linear), else by ``reference.solve_pf_ode``."""
    if getattr(model.mixture, "K", None) == 1:
        return model.pf_ode_map(x_T, t_from, t_to)
    return solve_pf_ode(model, x_T, t_from, t_to)


def order_check(
    impl: Implementation, config: Config, steps: tuple[int, ...], declared: float | None = None
) -> OrderReport:
    """Measure the global order of ``impl`` (deterministic methods) from its error at the end of its own grid.

    For each n in ``steps`` the implementation walks its grid from x_T; the error is the max-abs difference from
    the exact probability-flow ODE solution between the same two times. Errors must stay ``ORDER_FLOOR``
    tolerances above the implementation's round-off. refimpl's method walks the same grids (with the same modelled
    conventions) and its order is fitted too. The implementation's fitted order must lie within ``ORDER_TOL`` of
    ``declared`` if given, else of the reference's on the same grids (a library's grids, e.g. integer timesteps
    of a 1000-step schedule, may keep both out of the asymptotic regime; the method's declared order is then the
    wrong yardstick, the reference's behaviour on those grids the right one).
    """
    spec = get_method(config.method)
    explicit, declared = declared, spec.order if declared is None else declared
    out = OrderReport(impl.name, config, declared, tuple(steps))
    if spec.stochastic:
        out.problem = f"{config.method} is stochastic: its (weak) order needs a law, not a path"
        return out
    errors, ref_errors = [], []
    for n in steps:
        cfg = replace(config, n_steps=n)
        model, x_T, noise = setup(cfg)
        run = run_checked(impl, cfg, model, x_T, noise)
        if isinstance(run, Unusable):
            out.problem = f"at {n} steps: {run.reason or run.skipped}"
            return out
        if run.final != "grid" or not math.isfinite(float(run.times[-1])):
            out.problem = "the run ends with a step to sigma = 0, where the ODE has no solution to compare with"
            return out
        exact_end = _exact_end(model, x_T, run.times[0], run.times[-1])
        err = float((run.states[-1].double() - exact_end).abs().max())
        tol = tolerance(cfg, run, max(1.0, float(x_T.abs().max())))[0]
        if not err > ORDER_FLOOR * tol:
            out.problem = f"the error at {n} steps ({err:.1e}) is within {ORDER_FLOOR:g} tolerances of round-off"
            return out
        errors.append(err)
        times = run.times[nonzero_steps(run.times)]  # a zero-length step cannot move the state (check reports it)
        ref, _ = reference_run(cfg, model, x_T, times, None, run.final, run.conventions, run.reference_options)
        ref_errors.append(float((ref.states[-1].double() - exact_end).abs().max()))
    out.errors, out.reference_errors = tuple(errors), tuple(ref_errors)
    out.result, out.reference = convergence_order(steps, errors), convergence_order(steps, ref_errors)
    target, what = (out.reference.order, "refimpl's on the same grids") if explicit is None else (declared, "declared")
    if abs(out.result.order - target) > ORDER_TOL:
        out.problem = f"measured order {out.result.order:.2f}, {what} {target:.2f} (the method's: {spec.order:g})"
    return out
