"""Checkers for the exercises of chapter 2, the analytic lab (``notebooks/02_analytic_lab.md``)."""

from __future__ import annotations

import math
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
from refimpl.guidance import classifier_free_guidance
from refimpl.samplers import ddpm_posterior, posterior_symbolic, sample_ddim
from refimpl.schedules import get_schedule
from toy_models import ExactModel, labelled_pair, ring

CHAPTER = "02_analytic_lab"
WIDTHS = (1e-6, 1e-3, 1e-1)


@exercise(
    "ex-lab-eta",
    chapter=CHAPTER,
    goal="DDPM and DDIM",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: DDIM's sigma_tilde^2 at eta = 1 for the ddpm_linear step from t = 0.501 to s = 0.500, from (eq-ddim)
answer = None
""",
)
def _eta(answer: Any) -> str:
    ddpm = get_schedule("ddpm_linear")
    v_t, v_s = ddpm(torch.tensor(0.501)), ddpm(torch.tensor(0.500))
    _, beta_tilde = ddpm_posterior(torch.zeros(1), torch.zeros(1), v_t, v_s)
    # 1 - e^{-2h} for a step h ~ 1e-3 in lambda: written with exp, it loses u / (2h) relative; allow 8 times that
    h = float(v_s.lambda_ - v_t.lambda_)
    tol = 8 * U64 / (2 * h) * float(beta_tilde)
    return close(answer, beta_tilde.reshape(()), tol, "sigma_tilde^2", "use the step's lambda_s - lambda_t")


@exercise(
    "ex-lab-cfg",
    chapter=CHAPTER,
    goal="classifier-free guidance",
    kind="implement",
    difficulty=1,
    minutes=10,
    stub="""
# answer: a function cfg(eps_u, eps_c, w) returning the guided noise prediction
def cfg(eps_u, eps_c, w):
    raise NotImplementedError


answer = cfg
""",
)
def _cfg(answer: Any) -> str:
    cfg = callable_answer(answer, "cfg")
    schedule = get_schedule("vp_linear")
    pair = labelled_pair()
    uncond, cond = ExactModel(pair, schedule), ExactModel(pair.condition(1), schedule)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor(0.5, dtype=torch.float64)
    eps_u, eps_c = uncond(x, t), cond(x, t)
    for w in (0.0, 1.0, 3.0, 7.5):
        expected = classifier_free_guidance(cond, uncond, w)(x, t)
        # a few roundings of numbers of size (1 + 2|w|) max|eps|
        tol = 8 * U64 * (1 + 2 * abs(w)) * float(torch.cat([eps_u, eps_c]).abs().max())
        close(
            call(cfg, eps_u, eps_c, w, what="cfg"),
            expected,
            tol,
            f"cfg at w = {w:g}",
            "w = 0 must give eps_u and w = 1 eps_c",
        )
    return "cfg agrees with refimpl.guidance.classifier_free_guidance at w = 0, 1, 3 and 7.5."


@exercise(
    "ex-lab-dirac",
    chapter=CHAPTER,
    goal="DDIM as an ODE solver",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the three max-abs errors of one DDIM step from t_max to t_min, for widths 1e-6, 1e-3 and 1e-1
answer = None
""",
)
def _dirac(answer: Any) -> str:
    errors = as_array(answer, "the three errors", (3,))
    # one step is exact for a point mass; x0_hat moves by at most a few widths along the path (|x| of order 1)
    if not (errors <= 10 * torch.tensor(WIDTHS)).all():
        raise ExerciseFailed(f"errors {errors.tolist()} should stay below 10 x the width {list(WIDTHS)}")
    if not (errors[0] < errors[1] < errors[2]) or errors[2] < 1e-3:
        raise ExerciseFailed(f"errors {errors.tolist()} should grow with the width, to above 1e-3 at width 0.1")
    return "one DDIM step is exact in the limit of a point mass and degrades with the width."


@exercise(
    "ex-lab-ode",
    chapter=CHAPTER,
    goal="the probability-flow ODE",
    kind="measure",
    difficulty=2,
    minutes=10,
    stub="""
# answer: samples of p_T carried to t_min by solve_pf_ode on the ring, a tensor of shape (n, 2), n >= 100
answer = None
""",
)
def _ode(answer: Any) -> str:
    x = as_array(answer, "the samples")
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] < 100:
        raise ExerciseFailed(f"the samples should have shape (n, 2) with n >= 100, got {tuple(x.shape)}")
    schedule, n = get_schedule("vp_linear"), x.shape[0]
    v = schedule(torch.tensor(schedule.t_min))
    mean, cov = ring().moments()
    second = float(v.alpha**2 * (cov.trace() + mean.pow(2).sum()) + 2 * v.sigma**2)  # E|x|^2 under p_{t_min}
    sq = x.pow(2).sum(1)
    # CLT: 4 standard errors for each mean coordinate and for E|x|^2
    if ((x.mean(0) - v.alpha * mean).abs() > 4 * x.std(0) / math.sqrt(n)).any():
        raise ExerciseFailed(f"the sample mean {x.mean(0).tolist()} is not within 4 standard errors of the ring's")
    if abs(float(sq.mean()) - second) > 4 * float(sq.std()) / math.sqrt(n):
        raise ExerciseFailed(f"E|x|^2 = {float(sq.mean()):.3f} should be {second:.3f} (the ring's, at t_min)")
    return f"mean and E|x|^2 of the {n} samples agree with p_(t_min) within 4 standard errors."


@exercise(
    "ex-lab-ddim-implement",
    chapter=CHAPTER,
    goal="DDPM and DDIM",
    kind="implement",
    difficulty=2,
    minutes=20,
    stub="""
# answer: a function my_ddim(model, x, timesteps) running deterministic DDIM (eta = 0) along timesteps
def my_ddim(model, x, timesteps):
    raise NotImplementedError


answer = my_ddim
""",
)
def _ddim_implement(answer: Any) -> str:
    my_ddim = callable_answer(answer, "my_ddim")
    schedule, model, x_T = exact_toy(ring(), 0, 16)
    ts = grids.uniform_lambda(schedule, 20)
    expected = sample_ddim(model, x_T, ts)
    tol = steps_tolerance(len(ts), float(x_T.abs().max()))
    return close(
        call(my_ddim, model, x_T, ts, what="my_ddim"),
        expected,
        tol,
        "my_ddim's samples",
        "x_t = alpha_t x0_hat + sigma_t eps_hat, both predicted at the start of the step",
    )


@exercise(
    "ex-lab-posterior",
    chapter=CHAPTER,
    goal="the DDPM posterior",
    kind="derive",
    difficulty=2,
    minutes=20,
    stub="""
# answer: (variance, coef_xt, coef_x0) of q(x_s | x_t, x_0) as sympy expressions in abar_s and abar_t
answer = None
""",
)
def _posterior(answer: Any) -> str:
    if not isinstance(answer, tuple | list) or len(answer) != 3:
        raise ExerciseFailed("the answer should be the tuple (variance, coef_xt, coef_x0)")
    ref = posterior_symbolic()
    names = {"abar_s": ref["abar_s"], "abar_t": ref["abar_t"]}
    for got, key in zip(answer, ("variance", "coef_xt", "coef_x0"), strict=True):
        sympy_equal(got, ref[key], key, names)
    return "variance and mean coefficients equal DDPM's Eq. (7)."
