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

import torch
from torch import Tensor

__all__ = ["COMMIT", "SOURCE", "official_3m_update"]

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
