"""Checkers for the exercises of the chapter on differentiating through samplers
(``notebooks/11_differentiating.md``)."""

from __future__ import annotations

from typing import Any

import torch

from refimpl import grids
from refimpl.differentiable.adjoint import MixtureEps, adjoint_gradients
from refimpl.differentiable.mmd import mmd2_unbiased
from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, sympy_equal
from refimpl.schedules import get_schedule
from toy_models import ring

CHAPTER = "11_differentiating"
CHAIN_STEPS = 8


@exercise(
    "ex-diff-condition",
    chapter=CHAPTER,
    goal="the adjoint of the probability-flow ODE",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the pair (dL/dc, dL/dmeans) of adjoint gradients, shapes (2,) and (4, 2)
answer = None
""",
)
def _condition(answer: Any) -> str:
    if not isinstance(answer, tuple | list) or len(answer) != 2:
        raise ExerciseFailed("the answer should be the pair (dL/dc, dL/dmeans)")
    schedule, mixture = get_schedule("vp_linear"), ring(K=4)
    params = [mixture.means.clone(), torch.log(mixture.weights), torch.zeros(2, dtype=torch.float64)]
    lam8 = schedule.lambda_t(grids.uniform_lambda(schedule, 8))
    gen = torch.Generator().manual_seed(1)
    x_T = float(schedule.sigma_t(schedule.t_max)) * torch.randn(3, 2, generator=gen, dtype=torch.float64)
    target = torch.tensor([1.0, 0.5], dtype=torch.float64)
    result = adjoint_gradients(
        MixtureEps(mixture.covariances, schedule), schedule, params, x_T, lam8, lambda x0: ((x0 - target) ** 2).sum()
    )
    grad_c, grad_means = as_array(answer[0], "dL/dc", (2,)), as_array(answer[1], "dL/dmeans", (4, 2))
    scale = float(result.grad_params[0].abs().max())
    tol = 64 * 8 * U64 * scale  # 8 steps of a handful of roundings each, on gradients of this size
    close(grad_means, result.grad_params[0], tol, "dL/dmeans", "adjoint_gradients(...).grad_params[0]")
    close(grad_c, result.grad_params[2], tol, "dL/dc", "adjoint_gradients(...).grad_params[2]")
    return close(grad_c, grad_means.sum(0), 4 * tol, "dL/dc against sum_k dL/dmu_k")


@exercise(
    "ex-diff-mmd",
    chapter=CHAPTER,
    goal="the unbiased MMD estimator",
    kind="implement",
    difficulty=1,
    minutes=10,
    stub="""
# answer: a function my_mmd2(x, y, bandwidth): the unbiased MMD^2 estimate with the RBF kernel
def my_mmd2(x, y, bandwidth):
    raise NotImplementedError


answer = my_mmd2
""",
)
def _mmd(answer: Any) -> str:
    my_mmd2 = callable_answer(answer, "my_mmd2")
    gen = torch.Generator().manual_seed(21)
    messages = []
    for m, n, shift, bandwidth in [(30, 50, 0.5, 0.8), (5, 4, 0.0, 2.0)]:
        x = torch.randn(m, 2, generator=gen, dtype=torch.float64)
        y = shift + torch.randn(n, 2, generator=gen, dtype=torch.float64)
        # sums of m^2 + n^2 + mn kernel values in [0, 1], each a few roundings
        tol = 16 * U64 * (m * m + n * n + m * n) / min(m - 1, n - 1)
        messages.append(
            close(
                call(my_mmd2, x, y, bandwidth, what="my_mmd2"),
                mmd2_unbiased(x, y, bandwidth),
                tol,
                f"the estimate for m = {m}, n = {n}",
                "leave out the diagonal terms k(x_i, x_i): divide by m (m - 1), not m^2",
            )
        )
    return " ".join(messages)


@exercise(
    "ex-diff-mmd-equal",
    chapter=CHAPTER,
    goal="the unbiased MMD estimator",
    kind="derive",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the mean of the biased MMD^2 estimator when P = Q and m = n, a sympy expression in m and K
answer = None
""",
)
def _mmd_equal(answer: Any) -> str:
    import sympy as sp

    m, K = sp.symbols("m K", positive=True)
    return sympy_equal(answer, 2 * (1 - K) / m, "the biased estimator's mean", {"m": m, "K": K})


@exercise(
    "ex-diff-coupling-v",
    chapter=CHAPTER,
    goal="reversible coupling for compressed sensing",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: a dict {v: round-trip max-abs error} for v = 0.9, 0.5 and 0.2, 8 steps of the coupled chain
answer = None
""",
)
def _coupling(answer: Any) -> str:
    if not isinstance(answer, dict) or sorted(answer) != [0.2, 0.5, 0.9]:
        raise ExerciseFailed("the answer should be a dict with the keys 0.9, 0.5 and 0.2")
    largest = 64.0  # the chain's states: |x_T| < 6 divided by alpha at t_max, where DDIM rescales by 1 / alpha
    for v, error in answer.items():
        # each of the n inverses divides the round-off of the states (a handful of roundings) by v
        bound = 64 * CHAIN_STEPS * U64 * largest * v ** (-CHAIN_STEPS)
        value = float(as_array(error, f"the error at v = {v}", ()))
        if not value <= bound:
            raise ExerciseFailed(
                f"a round-trip error {value:.2e} at v = {v} is above the round-off bound "
                f"64 n u S v^(-n) = {bound:.1e}: is the inverse applied to the layers in reverse order?"
            )
    if not float(answer[0.2]) > 0:
        raise ExerciseFailed("a round trip at v = 0.2 with no error at all: was the chain run in float64?")
    return "every v inverts exactly up to round-off, amplified by at most v^(-n)."
