"""Checkers for the exercises of the transport-paths chapter (``notebooks/14_transport_paths.md``)."""

from __future__ import annotations

from typing import Any

import torch

from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, sympy_equal
from refimpl.schedules import RectifiedFlow
from refimpl.transport import is_cyclically_monotone, marginal_velocity, ot_plan
from toy_models import ExactModel, ring

CHAPTER = "14_transport_paths"


@exercise(
    "ex-transport-ddim",
    chapter=CHAPTER,
    goal="the marginal velocity of the straight path",
    kind="implement",
    difficulty=1,
    minutes=15,
    stub="""
# answer: a function my_velocity(mixture, x, t) returning the exact marginal velocity of the straight path, (B, d)
def my_velocity(mixture, x, t):
    raise NotImplementedError


answer = my_velocity
""",
)
def _ddim(answer: Any) -> str:
    my_velocity = callable_answer(answer, "my_velocity")
    rf, messages = RectifiedFlow(), []
    for mixture in (ring(), ring(K=3, radius=1.0, std=0.4)):
        model = ExactModel(mixture, rf)
        for t in (0.1, 0.5, 0.9):
            x = model.sample_xt(16, t, torch.Generator().manual_seed(31))[1]
            expected = marginal_velocity(mixture, x, t, rf)
            got = call(my_velocity, mixture, x, t, what=f"my_velocity(mixture, x, {t})")
            x0, eps = mixture.x0_eps(x, 1 - t, t)
            # a few roundings of x, x0 and eps; eps recovered as (x - alpha x0) / sigma carries x0's by alpha / sigma
            scale = float(x.abs().max() + x0.abs().max() + eps.abs().max())
            tol = 64 * U64 * (1 + (1 - t) / t) * scale
            messages.append(
                close(got, expected, tol, f"the velocity at t = {t}", "u_t(x) = E[eps | x_t = x] - E[x_0 | x_t = x]")
            )
    return messages[0] + f" So do the other {len(messages) - 1} velocities (two mixtures, t = 0.1, 0.5, 0.9)."


@exercise(
    "ex-transport-midpoint",
    chapter=CHAPTER,
    goal="the order of flow samplers on straight paths",
    kind="derive",
    difficulty=3,
    minutes=25,
    stub="""
# answer: the coefficient of h^4 in the midpoint rule's local error, a sympy expression in the symbols p, q and r
answer = None
""",
)
def _midpoint(answer: Any) -> str:
    import sympy as sp

    p, q, r = sp.symbols("p q r", real=True)
    expected = -(q**2) * (4 * p * r - q**2) / (128 * r**4)
    return sympy_equal(answer, expected, "the h^4 coefficient", {"p": p, "q": q, "r": r}) + (
        " It vanishes only for q = 0 or 4 p r = q^2 (then sqrt(c) is linear in s)."
    )


@exercise(
    "ex-transport-swap",
    chapter=CHAPTER,
    goal="optimal couplings are cyclically monotone",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: [largest 2-swap gain of the OT assignment, of the random relabelling], as is_cyclically_monotone returns them
answer = None
""",
)
def _swap(answer: Any) -> str:
    got = as_array(answer, "the two largest swap gains", (2,))
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(200, 2, generator=gen, dtype=torch.float64)
    y = ring().sample(4, gen)
    assign = ot_plan(torch.cdist(x, y) ** 2, None, torch.full((4,), 0.25, dtype=torch.float64)).argmax(1)
    relabelled = assign[torch.randperm(200, generator=gen)]
    # a gain is four inner products of 2-d points, each two products and a sum of size |x| |y|
    tol = 64 * 4 * 2 * U64 * float(x.abs().max()) * float(y.abs().max())
    if not abs(float(got[0])) <= tol:
        raise ExerciseFailed(
            f"the OT assignment's largest swap gain should be 0 up to round-off ({tol:.1g}), got {float(got[0]):.3g}: "
            "use ot_plan(cost, None, torch.full((4,), 0.25)).argmax(1) as the assignment and "
            "is_cyclically_monotone(x, y[assign])[1]"
        )
    expected = is_cyclically_monotone(x, y[relabelled])[1]
    return (
        close(
            got[1],
            torch.tensor(expected),
            tol,
            "the random relabelling's largest swap gain",
            "draw x (200 normal points), the 4 ring points, then the permutation from one generator seeded with 12",
        )
        + " The OT assignment admits no improving swap; a random one does."
    )
