"""Checkers for the exercises of the forward-variants chapter (``notebooks/03_forward_variants.md``)."""

from __future__ import annotations

import math
from typing import Any

import torch

from refimpl.exercises import exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, sympy_equal
from refimpl.forward import (
    ShiftedModel,
    kappa_residual,
    langevin_gaussian_moments,
    rddm_step,
    recovery_coefficients,
    recovery_gaussian,
    shifted_forward,
)
from refimpl.schedules import get_schedule
from toy_models import ExactModel, anisotropic_gaussian, ring

CHAPTER = "03_forward_variants"
COOP_CHAINS, COOP_ROUNDS, COOP_STEPS = 2000, 4, 30  # the cooperative exercise's set-up
Z_BOUND = 5.0  # CLT: a Gaussian estimate further than 5 standard deviations from its mean fails with p < 6e-7


@exercise(
    "ex-forward-rddm-eps",
    chapter=CHAPTER,
    goal="RDDM's residual step, and that with I_in = 0 it is DDIM",
    kind="implement",
    difficulty=2,
    minutes=20,
    stub="""
# answer: a function my_rddm_step(I_s, I_in, eps_hat, v_s, v_t): RDDM's deterministic step from an eps network
def my_rddm_step(I_s, I_in, eps_hat, v_s, v_t):
    raise NotImplementedError


answer = my_rddm_step
""",
)
def _rddm_eps(answer: Any) -> str:
    my_step = callable_answer(answer, "my_rddm_step")
    vp = get_schedule("vp_linear")
    model = ExactModel(ring(), vp)
    gen = torch.Generator().manual_seed(30)
    I_in = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    messages = []
    for s, t in ((0.7, 0.6), (0.4, 0.3), (0.1, 0.05)):
        v_s, v_t = vp(torch.tensor(s, dtype=torch.float64)), vp(torch.tensor(t, dtype=torch.float64))
        I_0 = model.mixture.sample(8, gen)
        I_s = shifted_forward(I_0, I_in, v_s, torch.randn(8, 2, generator=gen, dtype=torch.float64))
        eps_hat = ShiftedModel(model, I_in, kappa_residual)(I_s, torch.tensor(s, dtype=torch.float64))
        # the package's route: I_res = I_in - x0 with x0 the Tweedie mean of the unshifted state (Eq. eq-rddm-step)
        x0 = model.x0(I_s - (1 - v_s.alpha) * I_in, torch.tensor(s, dtype=torch.float64))
        expected = rddm_step(I_s, I_in - x0, eps_hat, v_s, v_t)
        got = call(my_step, I_s.clone(), I_in.clone(), eps_hat.clone(), v_s, v_t, what="my_rddm_step")
        # a few roundings on terms of the size of the inputs, amplified by the division by alpha_s - 1 + 1 = alpha_s
        scale = max(float(I_s.abs().max()), float(I_in.abs().max()), float(eps_hat.abs().max()), 1.0)
        messages.append(
            close(
                got,
                expected,
                64 * U64 * scale / float(v_s.alpha),
                f"my_rddm_step from s = {s} to t = {t}",
                "I_res = (I_s - I_in - bbar_s eps)/(abar_s - 1) with abar = 1 - alpha, bbar = sigma, then Eq. 7",
            )
        )
    return " ".join(messages)


@exercise(
    "ex-forward-trojan-gamma",
    chapter=CHAPTER,
    goal="TrojDiff's Trojan chain and its sampler",
    kind="derive",
    difficulty=2,
    minutes=20,
    stub="""
# answer: the attacker's step x_t, a sympy expression in x, eps, z, mu, gamma, alpha_s, sigma_s, alpha_t, sigma_t,
# sigma_tilde
answer = None
""",
)
def _trojan_gamma(answer: Any) -> str:
    import sympy as sp

    names = "x eps z mu gamma alpha_s sigma_s alpha_t sigma_t sigma_tilde"
    symbols = {name: sp.Symbol(name, positive=True) for name in names.split()}
    x, eps, z, mu, gamma, alpha_s, sigma_s, alpha_t, sigma_t, sigma_tilde = symbols.values()
    # x0 from x_s = alpha_s x0 + sigma_s (mu + gamma eps), then the Trojan marginal at t with the noise split as in
    # DDIM (Chen, Song & Li 2023, arXiv:2303.05762v2, Eq. 7; official generalized_steps_bd)
    x0 = (x - sigma_s * (gamma * eps + mu)) / alpha_s
    expected = alpha_t * x0 + sigma_t * mu + gamma * (sp.sqrt(sigma_t**2 - sigma_tilde**2) * eps + sigma_tilde * z)
    return sympy_equal(answer, expected, "the Trojan step", symbols) + (
        " With gamma = 1 and mu = 0 it is DDIM's step (Song et al. 2021, Eq. 12)."
    )


@exercise(
    "ex-forward-cooperative",
    chapter=CHAPTER,
    goal="the recovery likelihood and Langevin refinement",
    kind="measure",
    difficulty=3,
    minutes=25,
    stub="""
# answer: the initializer's A (2 x 2) after 4 rounds of propose, refine (30 Langevin steps), refit (2000 chains)
answer = None
""",
)
def _cooperative(answer: Any) -> str:
    got = as_array(answer, "A after 4 rounds", (2, 2))
    gauss, vp = anisotropic_gaussian(2, seed=4), get_schedule("vp_linear")
    v_t, v_n = vp(torch.tensor(0.4, dtype=torch.float64)), vp(torch.tensor(0.45, dtype=torch.float64))
    a, s = recovery_coefficients(v_t, v_n)
    m_t, c_t = gauss.noised(v_t.alpha, v_t.sigma).moments()
    _, post_cov = recovery_gaussian(m_t, c_t, a, s, m_t[None])
    A_true = (a / s**2) * post_cov  # the slope of the recovery conditional's mean in x_{t+1}
    delta = 0.25 * float(torch.linalg.eigvalsh(post_cov).min())
    # one round: refined = M^K (A x + b + V^(1/2) z) + (I - M^K) m(x) + Langevin noise, M = I - (delta/2) P, so the
    # refit's expected slope is M^K A + (I - M^K) A_true (least squares is unbiased), and its residual covariance
    # is the law of K Langevin steps from N(., V): langevin_gaussian_moments
    eye = torch.eye(2, dtype=torch.float64)
    MK = torch.linalg.matrix_power(eye - 0.5 * delta * torch.linalg.inv(post_cov), COOP_STEPS)
    A, V = eye / a * 0.3, 0.25 * eye
    # the refit's error in one entry has variance <= lambda_max(V) / (n lambda_min(Cov x_{t+1})); a round's error
    # is carried to the end by later rounds' M^K
    cov_next = gauss.noised(v_n.alpha, v_n.sigma).moments()[1]
    per_unit = 1.0 / (COOP_CHAINS * float(torch.linalg.eigvalsh(cov_next).min()))
    variance = 0.0
    for r in range(COOP_ROUNDS):
        A = MK @ A + (eye - MK) @ A_true
        V = langevin_gaussian_moments(m_t, V, m_t, post_cov, delta, COOP_STEPS)[1]
        carry = float(torch.linalg.matrix_norm(torch.linalg.matrix_power(MK, COOP_ROUNDS - 1 - r), ord=2))
        variance += carry**2 * float(torch.linalg.eigvalsh(V).max()) * per_unit
    # the sample covariance of 2000 draws sits within a factor 2 of the population's: allow twice the variance
    tol = Z_BOUND * math.sqrt(2 * variance)
    start_error = float((eye / a * 0.3 - A_true).abs().max())
    hint = f"E[A] is A_true + M^(K R) (A_0 - A_true), M = I - (delta/2) P; the start was {start_error:.3f} from A_true"
    message = close(got, A, tol, "A after 4 rounds", hint)
    return message + f" E[A] is {float((A - A_true).abs().max()):.1e} from A_true: each round contracts by M^K."
