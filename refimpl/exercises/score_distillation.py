"""Checkers for the exercises of the score-distillation chapter (``notebooks/13_score_distillation.md``)."""

from __future__ import annotations

from typing import Any

import torch

from refimpl.distillation.score_distillation import sds_gradient, tsm_gradient
from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, exact_toy, sympy_equal
from refimpl.guidance import classifier_free_guidance
from refimpl.schedules import get_schedule
from toy_models import ExactModel, labelled_pair, ring

CHAPTER = "13_score_distillation"


@exercise(
    "ex-sd-sds",
    chapter=CHAPTER,
    goal="SDS as a mode-seeking field",
    kind="implement",
    difficulty=1,
    minutes=10,
    stub="""
# answer: a function my_sds(theta, model, t, eps): the SDS gradient with w = 1, one noise per particle
def my_sds(theta, model, t, eps):
    raise NotImplementedError


answer = my_sds
""",
)
def _sds(answer: Any) -> str:
    my_sds = callable_answer(answer, "my_sds")
    _, model, _ = exact_toy(ring(), 0)
    gen = torch.Generator().manual_seed(17)
    theta, eps = (
        2 * torch.randn(24, 2, generator=gen, dtype=torch.float64),
        torch.randn(24, 2, generator=gen, dtype=torch.float64),
    )
    t = 0.02 + 0.96 * torch.rand(24, generator=gen, dtype=torch.float64)
    expected = sds_gradient(theta, model, t, eps, weighting="one")
    # a noise prediction of size |eps_hat| <= a few, through a handful of roundings of states of size |x| < 8
    tol = 256 * U64 * 8
    return close(
        call(my_sds, theta, model, t, eps, what="my_sds"),
        expected,
        tol,
        "my_sds's gradients",
        "x_t = alpha_t theta + sigma_t eps, then eps_hat(x_t, t) - eps",
    )


@exercise(
    "ex-sd-point-mass",
    chapter=CHAPTER,
    goal="VSD as SDS minus the particles' own score",
    kind="derive",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the fake law's noise prediction at x_t = alpha theta + sigma eps, a sympy expression in alpha, sigma, h, eps
answer = None
""",
)
def _point_mass(answer: Any) -> str:
    import sympy as sp

    alpha, sigma, h = sp.symbols("alpha sigma h", positive=True)
    theta, eps = sp.symbols("theta eps", real=True)
    expected = sigma**2 * eps / (alpha**2 * h**2 + sigma**2)
    names = {"alpha": alpha, "sigma": sigma, "h": h, "eps": eps, "theta": theta}
    return sympy_equal(answer, expected, "eps_phi(x_t)", names) + " At h = 0 it is the injected eps: VSD is SDS."


@exercise(
    "ex-sd-jitter",
    chapter=CHAPTER,
    goal="SDS as a mode-seeking field",
    kind="measure",
    difficulty=2,
    minutes=10,
    stub="""
# answer: the dict {4: spread, 16: spread} of within-mode spreads after SDS flows with 4 and 16 noises per step
answer = None
""",
)
def _jitter(answer: Any) -> str:
    if not isinstance(answer, dict) or sorted(answer) != [4, 16]:
        raise ExerciseFailed("the answer should be a dict with the keys 4 and 16")
    few, many = (float(as_array(answer[m], f"the spread with {m} noises", ())) for m in (4, 16))
    data = float(ring().covariances[0].trace()) ** 0.5
    if not 0 < many < few < data:
        raise ExerciseFailed(
            f"spreads {few:.3f} (4 noises) and {many:.3f} (16 noises): with more noises per step the spread "
            f"should shrink, and both should stay below the data's within-mode spread {data:.3f}"
        )
    return f"the spread shrinks from {few:.3f} to {many:.3f}: it is Monte Carlo jitter, not the data's spread."


@exercise(
    "ex-sd-tsm-guidance",
    chapter=CHAPTER,
    goal="ISM and TSM targets from DDIM inversion",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the guidance direction w(t) (eps_cfg - eps_uncond)(x_t, t) at the section's x_t, a (64, 2) tensor
answer = None
""",
)
def _tsm_guidance(answer: Any) -> str:
    schedule = get_schedule("vp_linear")
    lab = labelled_pair()
    uncond = ExactModel(lab, schedule)
    guided = classifier_free_guidance(ExactModel(lab.condition(1), schedule), uncond, 7.5)
    gen = torch.Generator().manual_seed(3)
    theta, eps = lab.sample(64, gen), torch.randn(64, 2, generator=gen, dtype=torch.float64)
    opts = {"s": 0.42, "t": 0.5, "t_start": schedule.t_min, "inversion_steps": 5}
    expected = tsm_gradient(theta, guided, uncond, eps, gamma=0.0, **opts)
    # the same arithmetic in another order: a handful of roundings of the guided prediction (scale 7.5) times w
    tol = 1024 * U64 * float(expected.abs().max() + 1)
    return close(answer, expected, tol, "the guidance direction", "w = sigma_t / alpha_t at t = 0.5, x_t from path (a)")
