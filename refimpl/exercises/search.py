"""Checkers for the exercises of the search chapter (``notebooks/07_search_and_cheaper_evaluations.md``)."""

from __future__ import annotations

from typing import Any

import torch

from refimpl import grids
from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import call, callable_answer, close, exact_toy, steps_tolerance, sympy_equal
from refimpl.registry import get_sampler
from refimpl.samplers import sample_ddim
from refimpl.samplers.usf import steps_for_budget
from refimpl.search import output_law
from toy_models import GaussianMixture, anisotropic_gaussian

CHAPTER = "07_search_and_cheaper_evaluations"


@exercise(
    "ex-search-budget",
    chapter=CHAPTER,
    goal="how a budget of model calls fixes the number of steps",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the pair (number of steps n, model calls counted) for B = 5 with AFS and a last corrector
answer = None
""",
)
def _budget(answer: Any) -> str:
    try:
        n, calls = (int(v) for v in answer)
    except (TypeError, ValueError) as err:
        raise ExerciseFailed("the answer should be a pair of integers (steps, calls counted)") from err
    expected = steps_for_budget(5, "zero_x0", last_corrector=True)
    if n != expected:
        raise ExerciseFailed(
            f"{n} steps is not it: n = B + [AFS] - [last corrector] = 5 + 1 - 1 = {expected} "
            "(the AFS saves the first call, the last corrector costs one)"
        )
    if calls != 5:
        raise ExerciseFailed(f"the counting model saw {calls} calls, the budget is 5: run the {n}-step solver on it")
    return f"{n} steps spend exactly 5 model calls."


def _probe_scale(sample: Any, model: Any, ts: torch.Tensor, start_mean: torch.Tensor) -> tuple[float, float]:
    """The largest output and the largest entry of the sampler's linear map M, from probes at 0, e_j, mean + e_j."""
    d = start_mean.numel()
    eye = torch.eye(d, dtype=torch.float64)
    out = sample(model, torch.cat([torch.zeros(1, d, dtype=torch.float64), eye, start_mean + eye]), ts)
    return float(out.abs().max()), float((out[1 : 1 + d] - out[0]).abs().max())


@exercise(
    "ex-search-exact-end",
    chapter=CHAPTER,
    goal="the exact output law of a linear sampler on Gaussian data",
    kind="implement",
    difficulty=2,
    minutes=20,
    stub="""
# answer: a function my_output_law(sample, model, ts) returning the mean (d,) and covariance (d, d) of the output
def my_output_law(sample, model, ts):
    raise NotImplementedError


answer = my_output_law
""",
)
def _exact_end(answer: Any) -> str:
    my_output_law = callable_answer(answer, "my_output_law")
    centred = GaussianMixture(
        torch.ones(1), torch.zeros(1, 3), torch.diag(torch.tensor([0.01, 0.1, 1.0], dtype=torch.float64))[None]
    )
    cases = [
        ("DDIM, one step, centred 3-d Gaussian", sample_ddim, centred, 1),
        ("DPM-Solver++(2M), 4 steps, 8-d Gaussian", get_sampler("dpm_solver_pp_2m"), anisotropic_gaussian(d=8), 4),
    ]
    messages = []
    for name, sample, mixture, n in cases:
        _, model, _ = exact_toy(mixture, seed=0, n=1)
        ts = grids.uniform_lambda(model.schedule, n)
        mean, cov = output_law(sample, model, ts)
        got = call(my_output_law, sample, model, ts, what="my_output_law")
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise ExerciseFailed("my_output_law should return a pair (mean, covariance)")
        start = model.marginal(ts[0])
        d = mean.numel()
        out_scale, m_scale = _probe_scale(sample, model, ts, start.means[0])
        # each entry of c and M carries the round-off of n steps on outputs of size out_scale, delta; the mean
        # c + M mu sums d products, the covariance M S M^T d^2 products of two M entries and one of S
        delta = steps_tolerance(n, out_scale)
        tol_mean = delta * (1 + d * float(start.means[0].abs().max()))
        tol_cov = 2 * d * d * m_scale * float(start.covariances[0].abs().max()) * delta
        hint = "probe the sampler with x = 0 and the unit vectors: c = out(0), column j of M = out(e_j) - c"
        messages.append(close(got[0], mean, tol_mean, f"the mean ({name})", hint))
        messages.append(close(got[1], cov, tol_cov, f"the covariance ({name})", "M Sigma_T M^T"))
    return " ".join(messages[:2]) + " So do the mean and covariance of the 4-step DPM-Solver++(2M)."


@exercise(
    "ex-search-dc-quadratic",
    chapter=CHAPTER,
    goal="dynamic compensation as Lagrange interpolation",
    kind="derive",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the compensated output for m(t) = a + b t + c t^2, a sympy expression in a, b, c, rho, t0, t1, t2
answer = None
""",
)
def _dc_quadratic(answer: Any) -> str:
    import sympy as sp

    a, b, c, rho, t0, t1, t2 = sp.symbols("a b c rho t0 t1 t2")
    t_tilde = t1 + rho * (t0 - t1)  # DC-Solver (Zhao et al. 2024, arXiv:2409.03755v1), Sec. 3.2
    expected = a + b * t_tilde + c * t_tilde**2
    names = {str(s): s for s in (a, b, c, rho, t0, t1, t2)}
    return sympy_equal(answer, expected, "the compensated output", names) + (
        " The three-point interpolant reproduces every quadratic."
    )
