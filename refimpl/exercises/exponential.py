"""Checkers for the exercises of chapter 5, exponential integrators (``notebooks/05_exponential_integrators.md``)."""

from __future__ import annotations

from typing import Any

import torch

from refimpl import grids
from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import (
    U64,
    as_array,
    call,
    callable_answer,
    close,
    exact_toy,
    steps_tolerance,
    sympy_equal,
)
from refimpl.samplers import sample_ddim
from refimpl.samplers.deis import deis_ab_coefficients
from refimpl.schedules import get_schedule
from toy_models import random_mixture

CHAPTER = "05_exponential_integrators"
ORDER_BAND = 0.15  # the book's band for a measured order (STYLE rule 12)


@exercise(
    "ex-ei-r1",
    chapter=CHAPTER,
    goal="DPM-Solver's orders, measured",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the measured order of DPM-Solver-2 with r1 = 1 on the closed-form Gaussian (a float)
answer = None
""",
)
def _r1(answer: Any) -> str:
    order = float(as_array(answer, "the order", ()))
    if abs(order - 2) > ORDER_BAND:
        raise ExerciseFailed(
            f"a measured order of {order:.2f} is not within {ORDER_BAND} of 2: are the step counts "
            "in the asymptotic range (32 to 256), and the reference the exact flow map?"
        )
    return f"order {order:.2f}: DPM-Solver-2 is second order for any r1 in (0, 1]."


@exercise(
    "ex-ei-fast",
    chapter=CHAPTER,
    goal="DPM-Solver's NFE recipe",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the list of model calls counted for the budgets 4, 5, ..., 12 of DPM-Solver-fast
answer = None
""",
)
def _fast(answer: Any) -> str:
    return close(answer, torch.arange(4.0, 13.0), 0.0, "the counted calls", "count with refimpl.models.CountingModel")


@exercise(
    "ex-ei-tab",
    chapter=CHAPTER,
    goal="DEIS's tAB and rhoAB",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the pair (C_t, C_rho) of DEIS-AB3 weights on vp_linear, 6 uniform-lambda steps
answer = None
""",
)
def _tab(answer: Any) -> str:
    if not isinstance(answer, tuple | list) or len(answer) != 2:
        raise ExerciseFailed("the answer should be the pair (C_t, C_rho)")
    schedule = get_schedule("vp_linear")
    ts = grids.uniform_lambda(schedule, 6)
    rho = schedule.rho_t(ts)
    tol = 64 * U64 * float(rho.max())  # a few roundings of numbers of the size of rho
    for got, variable in zip(answer, ("t", "rho"), strict=True):
        weights = as_array(got, f"C_{variable}", (6, 3))
        close(
            weights,
            deis_ab_coefficients(schedule, ts, 3, variable),
            1e-9 * float(rho.max()),
            f"C_{variable}",
            "deis_ab_coefficients(schedule, ts, 3, variable)",
        )
        close(weights.sum(1), rho[1:] - rho[:-1], tol, f"the row sums of C_{variable}")
    return "both weight tables integrate constants exactly, and they differ on vp_linear."


@exercise(
    "ex-ei-ddim",
    chapter=CHAPTER,
    goal="variation of constants",
    kind="implement",
    difficulty=2,
    minutes=15,
    stub="""
# answer: a function dpm1(x_s, eps_s, v_s, v_t): the first-order exponential-integrator step from s to t
def dpm1(x_s, eps_s, v_s, v_t):
    raise NotImplementedError


answer = dpm1
""",
)
def _ddim(answer: Any) -> str:
    dpm1 = callable_answer(answer, "dpm1")
    schedule, model, x = exact_toy(random_mixture(K=4, d=16, seed=0), 7)
    ts = grids.quadratic(schedule, 15)
    v, out = schedule(ts), x
    for i in range(len(ts) - 1):
        out = call(dpm1, out, model(out, v.t[i]), v[i], v[i + 1], what="dpm1")
    tol = steps_tolerance(len(ts), float(x.abs().max()))
    return close(
        out,
        sample_ddim(model, x, ts),
        tol,
        "15 steps of dpm1",
        "x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_s with h = lambda_t - lambda_s",
    )


@exercise(
    "ex-ei-phi2",
    chapter=CHAPTER,
    goal="the phi functions",
    kind="derive",
    difficulty=1,
    minutes=10,
    stub="""
# answer: phi_2(h) in closed form, a sympy expression in the symbol h, integrated from (eq-phi)
answer = None
""",
)
def _phi2(answer: Any) -> str:
    import sympy as sp

    h = sp.Symbol("h", positive=True)
    return sympy_equal(answer, (sp.exp(h) - 1 - h) / h**2, "phi_2(h)", {"h": h})
