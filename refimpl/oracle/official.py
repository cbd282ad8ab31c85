"""Evidence, not implementation: the official third-order multistep DPM-Solver(++) update, transcribed line for line.

Source: LuChengTHU/dpm-solver, ``dpm_solver_pytorch.py`` at commit 8acf2bb9419165fec8b3ffd01621aa735be5dee3,
method ``DPM_Solver.multistep_dpm_solver_third_update`` (MIT licence). Only the calls of its noise schedule are
replaced by their values (``ns.marginal_lambda(t)`` -> ``lambda_t``, ``ns.marginal_std`` -> ``sigma``,
``ns.marginal_log_mean_coeff`` -> ``log_alpha``); every other line is the official one, in its order and with its
names. diffusers 0.42.1 (``DPMSolverMultistepScheduler.multistep_dpm_solver_third_order_update``) and k-diffusion
0.1.1.post1 (``sample_dpmpp_3m_sde`` at eta = 0, with its exact second-order term) compute the same D2 term.

Side by side with refimpl's step (``refimpl.samplers.multistep``): D2 = h^2 [m0, m1, m2] is half of h^2 x'' (the
second divided difference [m0, m1, m2] is x'' / 2), but it is multiplied by phi_3, the coefficient of h^2 x'' in the
exact integral of the quadratic. The official step therefore integrates a quadratic x0(lambda) with half its
curvature: exact for lines, not for parabolas; its local error is O(h^3) and the method second order.
``official_3m_update(..., d2_factor=2.0)`` doubles the D2 term and is exact for quadratics
(``tests/test_oracle_findings.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["COMMIT", "SOURCE", "QuadraticStep", "official_3m_update", "quadratic_step"]

SOURCE = "LuChengTHU/dpm-solver, dpm_solver_pytorch.py, DPM_Solver.multistep_dpm_solver_third_update"
COMMIT = "8acf2bb9419165fec8b3ffd01621aa735be5dee3"


def official_3m_update(
    x: Tensor,
    model_prev_list: list[Tensor],
    lambda_prev_list: list[Tensor],
    lambda_t: Tensor,
    log_alpha_prev_0: Tensor,
    log_alpha_t: Tensor,
    sigma_prev_0: Tensor,
    sigma_t: Tensor,
    algorithm_type: str = "dpmsolver++",
    d2_factor: float = 1.0,
) -> Tensor:
    """The official multistep DPM-Solver-3 / DPM-Solver++(3M) update (``SOURCE`` at ``COMMIT``), oldest first lists.

    ``d2_factor`` multiplies the D2 term (1: the official code; 2: the exact integral of the quadratic, Lu et al.
    2022b, arXiv:2211.01095v3, the third-order Taylor term of Eq. (9) [unverified equation number]).
    """
    model_prev_2, model_prev_1, model_prev_0 = model_prev_list
    lambda_prev_2, lambda_prev_1, lambda_prev_0 = lambda_prev_list
    alpha_t = torch.exp(log_alpha_t)

    h_1 = lambda_prev_1 - lambda_prev_2
    h_0 = lambda_prev_0 - lambda_prev_1
    h = lambda_t - lambda_prev_0
    r0, r1 = h_0 / h, h_1 / h
    D1_0 = (1.0 / r0) * (model_prev_0 - model_prev_1)
    D1_1 = (1.0 / r1) * (model_prev_1 - model_prev_2)
    D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
    D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
    D2 = d2_factor * D2  # not in the official code: 1 leaves it as it is
    if algorithm_type == "dpmsolver++":
        phi_1 = torch.expm1(-h)
        phi_2 = phi_1 / h + 1.0
        phi_3 = phi_2 / h - 0.5
        x_t = (
            (sigma_t / sigma_prev_0) * x
            - (alpha_t * phi_1) * model_prev_0
            + (alpha_t * phi_2) * D1
            - (alpha_t * phi_3) * D2
        )
    else:
        phi_1 = torch.expm1(h)
        phi_2 = phi_1 / h - 1.0
        phi_3 = phi_2 / h - 0.5
        x_t = (
            (torch.exp(log_alpha_t - log_alpha_prev_0)) * x
            - (sigma_t * phi_1) * model_prev_0
            - (sigma_t * phi_2) * D1
            - (sigma_t * phi_3) * D2
        )
    return x_t


@dataclass(frozen=True)
class QuadraticStep:
    """One third-order step with an exact history of x0(lambda) = c0 + c1 lambda + c2 lambda^2 (``quadratic_step``)."""

    official: float  # official_3m_update with the given d2_factor
    refimpl: float  # refimpl's DPM-Solver++(3M) step (the exact integral of the quadratic)
    exact: float  # (sigma_t / sigma_s) x_s + sigma_t int e^l x0(l) dl, in closed form
    predicted_miss: float  # alpha_t phi_3 h^2 c2: the half of the D2 term the official step drops
    h: float


def quadratic_step(
    schedule: str = "edm", d2_factor: float = 1.0, c: tuple[float, float, float] = (0.3, -0.7, 0.45), x_s: float = 1.3
) -> QuadraticStep:
    """The official step, refimpl's and the exact solution for one step with model outputs on a quadratic in lambda.

    Three past points and the target are entries 3 to 6 of a 9-step Karras grid (unequal steps). The exact solution
    of the data-prediction ODE (Lu et al. 2022b, arXiv:2211.01095v3, Eq. (8) [unverified equation number]) uses the
    antiderivative e^l (c0 + c1 (l - 1) + c2 (l^2 - 2 l + 2)) of e^l x0(l).
    """
    from refimpl import grids
    from refimpl.samplers.dpm_solver_pp import dpm_solver_pp_multistep_step
    from refimpl.schedules import get_schedule

    s = get_schedule(schedule)
    v = s(grids.karras(s, 9)[3:7])
    c0, c1, c2 = c
    ms = [torch.full((1, 1), c0 + c1 * float(l) + c2 * float(l) ** 2, dtype=torch.float64) for l in v.lambda_[:3]]
    x = torch.full((1, 1), x_s, dtype=torch.float64)
    official = official_3m_update(
        x, ms, list(v.lambda_[:3]), v.lambda_[3], torch.log(v.alpha[2]), torch.log(v.alpha[3]), v.sigma[2],
        v.sigma[3], d2_factor=d2_factor,
    )  # fmt: skip
    ours = dpm_solver_pp_multistep_step(x, ms[::-1], list(v.lambda_[:3].flip(0)), v[2], v[3], 3)
    lam_s, lam_t = float(v.lambda_[2]), float(v.lambda_[3])

    def antiderivative(l: float) -> float:  # of e^(l - lambda_t) x0(l), scaled to stay finite
        return math.exp(l - lam_t) * (c0 + c1 * (l - 1) + c2 * (l * l - 2 * l + 2))

    sigma_t, alpha_t = float(v.sigma[3]), float(v.alpha[3])
    exact = sigma_t / float(v.sigma[2]) * x_s + alpha_t * (antiderivative(lam_t) - antiderivative(lam_s))
    h = lam_t - lam_s
    phi_3 = (math.expm1(-h) / h + 1.0) / h - 0.5
    return QuadraticStep(float(official), float(ours), exact, alpha_t * phi_3 * h**2 * c2, h)
