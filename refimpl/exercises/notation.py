"""Checkers for the exercises of the notation chapter (``notebooks/01_notation.md``)."""

from __future__ import annotations

from typing import Any

import torch

from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, sympy_equal
from refimpl.schedules import get_schedule

CHAPTER = "01_notation"
N_DDPM = 1000  # DDPM's number of steps (Ho et al. 2020, arXiv:2006.11239v2, Sec. 4)


@exercise(
    "ex-notation-ddpm",
    chapter=CHAPTER,
    goal="DDPM's alpha-bar is the book's alpha squared",
    kind="implement",
    difficulty=2,
    minutes=15,
    stub="""
# answer: a function my_alpha(t) giving alpha_t of the continuous ddpm_linear schedule for a tensor t in [1/N, 1]
def my_alpha(t):
    raise NotImplementedError


answer = my_alpha
""",
)
def _ddpm(answer: Any) -> str:
    my_alpha = callable_answer(answer, "my_alpha")
    ddpm = get_schedule("ddpm_linear")
    gen = torch.Generator().manual_seed(1)
    # knots, midpoints between knots and random times, the ends included
    t = torch.cat(
        [
            torch.tensor([ddpm.t_min, 0.5, 0.5005, ddpm.t_max], dtype=torch.float64),
            ddpm.t_min + (ddpm.t_max - ddpm.t_min) * torch.rand(60, generator=gen, dtype=torch.float64),
        ]
    )
    got = call(my_alpha, t.clone(), what="my_alpha")
    # log alpha is a sum of up to N log1p's (or the log of a product of N factors): N roundings, relative, on
    # alpha <= 1, and a few more for the interpolation and the exponential
    return close(
        got,
        ddpm.alpha_t(t),
        4 * (N_DDPM + 8) * U64,
        "my_alpha on 64 times in [1/N, 1]",
        "alpha_{n/N}^2 = prod_{i <= n} (1 - beta_i), and log alpha_t is linear in t between the knots t_n = n/N",
    )


@exercise(
    "ex-notation-edm",
    chapter=CHAPTER,
    goal="EDM's sigma is the noise level of x_t / alpha_t",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the pair (EDM noise level sigma of x_t / alpha_t at t = 0.5 on vp_linear, the edm time of equal lambda)
answer = None
""",
)
def _edm(answer: Any) -> str:
    got = as_array(answer, "the pair (sigma, t_edm)", (2,))
    vp = get_schedule("vp_linear")
    rho = float(vp.rho_t(torch.tensor(0.5, dtype=torch.float64)))  # sigma_t / alpha_t = e^{-lambda_t}, Eq. eq-rho
    # both are e^{-lambda_t} up to a handful of roundings (lambda, exp, log, and t(lambda) on edm), relative
    return close(
        got,
        torch.tensor([rho, rho], dtype=torch.float64),
        32 * U64 * rho,
        "the pair (sigma, t_edm)",
        "sigma = sigma_t / alpha_t = e^{-lambda_t}; edm has alpha_t = 1, sigma_t = t, so lambda = -log t",
    )


@exercise(
    "ex-notation-cosine",
    chapter=CHAPTER,
    goal="reading a schedule in lambda",
    kind="derive",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the time t at which the cosine schedule has lambda_t = 0, a sympy expression in the offset s
answer = None
""",
)
def _cosine(answer: Any) -> str:
    import sympy as sp

    s = sp.symbols("s", positive=True)
    # alpha_t = sigma_t = 1/sqrt(2): cos(pi/2 (t+s)/(1+s)) = cos(pi/2 s/(1+s)) / sqrt(2) (Nichol & Dhariwal 2021,
    # arXiv:2102.09672v1, Eq. 17), on the branch (t+s)/(1+s) in [0, 1]
    expected = 2 * (1 + s) / sp.pi * sp.acos(sp.cos(sp.pi / 2 * s / (1 + s)) / sp.sqrt(2)) - s
    try:
        expr = sp.sympify(answer)
    except (sp.SympifyError, TypeError):
        expr = None
    if not isinstance(expr, sp.Expr):
        raise ExerciseFailed(f"t(lambda = 0) should be a sympy expression in s, got {type(answer).__name__}")
    value = float(expected.subs(s, sp.Rational(8, 1000)))
    # asin and atan forms of the same angle count: simplify does not see asin(x) + acos(x) = pi/2 by itself
    message = sympy_equal(expr.rewrite(sp.acos), expected, "t(lambda = 0)", {"s": s})
    return message + f" At s = 0.008 it is t = {value:.12f}."
