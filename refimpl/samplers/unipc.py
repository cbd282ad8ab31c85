"""UniPC: the unified predictor (UniP) and corrector (UniC) of Zhao et al. (2023), arXiv:2302.04867v4.

Both are exponential integrators in lambda = log(alpha / sigma) (Lu et al. 2022, arXiv:2206.00927v3,
Sec. 3.1). Write the model output m as the data prediction x0 (``prediction="x0"``, hh = -h) or the
noise prediction eps (``prediction="eps"``, hh = h), with h = lambda_s - lambda_t for a step t -> s.
The exact solution expands as (Taylor expansion of m in lambda around the start t)

    x_s = c x_t - k_s hh phi_1(hh) m_t - k_s sum_{n>=1} hh^{n+1} phi_{n+1}(hh) m^(n)
          (c, k_s) = (sigma_s / sigma_t, alpha_s) for x0, (alpha_s / alpha_t, sigma_s) for eps,

and UniPC replaces the sum by B(hh) sum_m a_m D_m / r_m, with the differences D_m = m_{t_m} - m_t at
earlier (or, for the corrector, later) points lambda_{t_m} = lambda_t + r_m h. Matching the Taylor
coefficients of orders 1..p gives the linear system of their Theorem 3.1 (Eq. 7-8):

    sum_m a_m r_m^(k-1) = g_k(hh) := hh phi_{k+1}(hh) k! / B(hh),   k = 1..p,

with B(h) = h ("bh1") or B(h) = e^h - 1 ("bh2"), their Sec. 3.3. UniP-p uses the p - 1 previous
outputs (order p); UniC-p re-does the step with the output at the new point added (r = 1), which
costs no model call because that output is needed by the next step anyway, and raises the order to
p + 1. The official code and diffusers replace the solved coefficient of UniP-2 and UniC-1 by its
limit 1/2 (``simplified=True``, the default); both choices have the same order.

The sampler (their Algorithm 2, multistep) runs UniP of order min(i + 1, p) at step i and applies
UniC to every step but the last. UniPC-p with the corrector has order p + 1 (measured for p = 1, 2).
For p = 3 the warm-up step (UniP-1 = DDIM, then UniC-1) has local error O(h^3) and caps the order at 3
in theory, but its constant carries the derivative of the x0 prediction at t_max, of size alpha_T^2,
so on the toys the error follows order 4 down to round-off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_orders, check_sampler_inputs
from refimpl.samplers._exponential import phi
from refimpl.schedules import ScheduleValues

__all__ = ["B_FUNCTIONS", "sample_unipc", "unipc_coefficients", "unipc_corrector", "unipc_predictor", "unipc_step"]

B_FUNCTIONS = ("bh1", "bh2")
PREDICTIONS = ("x0", "eps")
MAX_ORDER = 3


def _b_of(hh: Tensor, variant: str) -> Tensor:
    """B(hh) of Zhao et al. (2023), Sec. 3.3: "bh1" B(h) = h, "bh2" B(h) = e^h - 1."""
    if variant == "bh1":
        return hh
    if variant == "bh2":
        return torch.expm1(hh)
    raise ValueError(f"unknown B(h) variant {variant!r}; choose one of {B_FUNCTIONS}")


def unipc_coefficients(rks: Tensor, hh: Tensor, variant: str) -> Tensor:
    """Solve sum_m a_m r_m^(k-1) = hh phi_{k+1}(hh) k! / B(hh), k = 1..p, for a (p,); rks (p,) are the r_m.

    Zhao et al. (2023), Theorem 3.1 / Eq. 8 (the Vandermonde system R_p(h) a_p = g_p(h) / B(h)).
    """
    p = rks.numel()
    b_h = _b_of(hh, variant)
    g = torch.stack([hh * phi(k + 1, hh) * math.factorial(k) / b_h for k in range(1, p + 1)])
    R = torch.stack([rks ** (k - 1) for k in range(1, p + 1)])  # row k: r_1^(k-1) ... r_p^(k-1)
    return torch.linalg.solve(R, g)


def _unified_update(
    x: Tensor,
    m_t: Tensor,
    points: list[tuple[Tensor, Tensor]],
    values_t: ScheduleValues,
    values_s: ScheduleValues,
    variant: str,
    prediction: str,
    simplified: bool,
) -> Tensor:
    """x_s = c x_t - k_s (e^hh - 1) m_t - k_s B(hh) sum_m a_m D_m / r_m (Zhao et al. 2023, Eq. 7).

    D_m = m_m - m_t for the points [(lambda_m, m_m)] at r_m = (lambda_m - lambda_t) / h, and a solves Eq. 8
    (``unipc_coefficients``), or is the official code's 1/2 for a single point when ``simplified``.
    """
    h = values_s.lambda_ - values_t.lambda_
    if prediction == "x0":
        hh, c, k_s = -h, values_s.sigma / values_t.sigma, values_s.alpha
    elif prediction == "eps":
        hh, c, k_s = h, values_s.alpha / values_t.alpha, values_s.sigma
    else:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    x_s = expand_like(c, x) * x - expand_like(k_s * torch.expm1(hh), x) * m_t  # first order (DDIM)
    if points:
        rks = torch.stack([(lam_m - values_t.lambda_) / h for lam_m, _ in points])
        if simplified and len(points) == 1:
            a = torch.full((1,), 0.5, dtype=rks.dtype)  # the official code's UniP-2 / UniC-1 coefficient
        else:
            a = unipc_coefficients(rks, hh, variant)
        correction = sum(a_m * (m_m - m_t) / r_m for a_m, r_m, (_, m_m) in zip(a, rks, points, strict=True))
        x_s = x_s - expand_like(k_s * _b_of(hh, variant), x) * correction
    return x_s


def unipc_predictor(
    x: Tensor,
    m_t: Tensor,
    history: list[tuple[Tensor, Tensor]],
    values_t: ScheduleValues,
    values_s: ScheduleValues,
    *,
    variant: str = "bh2",
    prediction: str = "x0",
    simplified: bool = True,
) -> Tensor:
    """UniP-p from t to s: ``history`` holds the p - 1 earlier (lambda, output) pairs, newest first.

    x, m_t (B, ...): the state and the model output (kind ``prediction``) at t. Zhao et al. (2023), Eq. 7-8.
    """
    return _unified_update(x, m_t, history, values_t, values_s, variant, prediction, simplified)


def unipc_corrector(
    x: Tensor,
    m_t: Tensor,
    history: list[tuple[Tensor, Tensor]],
    m_s: Tensor,
    values_t: ScheduleValues,
    values_s: ScheduleValues,
    *,
    variant: str = "bh2",
    prediction: str = "x0",
    simplified: bool = True,
) -> Tensor:
    """UniC-p: re-do the step t -> s from x (at t) with m_s, the model output at the predicted point at s, added.

    ``history`` holds the p - 1 earlier (lambda, output) pairs used by the predictor, newest first.
    Zhao et al. (2023), Eq. 7-8 with r_p = 1 (Algorithm 1).
    """
    points = [*history, (values_s.lambda_, m_s)]
    return _unified_update(x, m_t, points, values_t, values_s, variant, prediction, simplified)


def unipc_step(
    x: Tensor,
    outputs: list[tuple[Tensor, Tensor]],
    values_t: ScheduleValues,
    values_s: ScheduleValues,
    order: int,
    **kwargs: object,
) -> Tensor:
    """UniP of order ``order`` from t to s; ``outputs`` = [(lambda, m)] newest first, outputs[0] at t."""
    if not 1 <= order <= len(outputs):
        raise ValueError(f"UniP-{order} needs {order} stored model outputs, {len(outputs)} available")
    (_, m_t), history = outputs[0], outputs[1:order]
    return unipc_predictor(x, m_t, history, values_t, values_s, **kwargs)


def sample_unipc(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    order: int = 2,
    variant: str = "bh2",
    prediction: str = "x0",
    corrector: bool = True,
    simplified: bool = True,
    lower_order_final: bool = False,
    orders: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Multistep UniPC-p (Zhao et al. 2023, Algorithm 2): UniP of order ``order``, UniC after every step but the last.

    One model call per step. ``lower_order_final`` lowers the order of the last steps to the number of
    steps left (as diffusers does). ``corrector=False`` gives UniP alone (order p). ``orders`` (one predictor
    order per step, each at most the number of outputs seen) overrides both warm-up and ``lower_order_final``.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be an integer in 1..{MAX_ORDER}, got {order!r}")
    if variant not in B_FUNCTIONS:
        raise ValueError(f"unknown B(h) variant {variant!r}; choose one of {B_FUNCTIONS}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    kwargs = {"variant": variant, "prediction": prediction, "simplified": simplified}
    values = model.schedule(ts)
    n = len(ts) - 1
    if orders is not None:
        orders = check_orders(orders, n, MAX_ORDER)
        order = max(orders)
    outputs: list[tuple[Tensor, Tensor]] = []  # (lambda, model output) newest first
    x_prev, p_prev = x, 0
    for i in range(n):
        x0, eps = predict_x0_eps(model, x, ts[i], values[i])
        m = x0 if prediction == "x0" else eps
        if corrector and i > 0:  # UniC-p_prev on the previous step, with the output just computed at its end
            x = unipc_corrector(x_prev, outputs[0][1], outputs[1:p_prev], m, values[i - 1], values[i], **kwargs)
        outputs = [(values[i].lambda_, m), *outputs][:order]
        p = min(order, i + 1, n - i) if lower_order_final else min(order, i + 1)
        if orders is not None:
            p = orders[i]
        x_next = unipc_step(x, outputs, values[i], values[i + 1], p, **kwargs)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x_prev, p_prev, x = x, p, x_next
    return x


# Registered: UniPC-2 with both B(h) (UniPC-1 is tested in tests/test_unipc.py). UniPC-3 is implemented but not
# registered: on the toys its error changes sign between 16 and 512 steps, so no window of step counts shows a clean
# slope (see the chapter).
# The toys' sharp modes keep UniPC-2 pre-asymptotic for long: its third-order error constant is small, so the
# fourth-order term competes with it up to hundreds of steps. On a 1-D mixture with modes of variance 0.05
# (vp_linear, to t_min) the bh2 variant's local slopes are 0.99, 2.44, 2.78, 2.90, 2.95 from 64 to 2048 steps
# (bh1: 2.80, 2.91, 2.96, 2.98, 2.99), so its order is measured from 256 steps on.
_ASYMPTOTIC = (256, 512, 1024, 2048)
for _p, _variant in ((2, "bh1"), (2, "bh2")):
    register(
        SamplerSpec(
            name=f"unipc{_p}_{_variant}",
            sample=sample_unipc,
            order=_p + 1,
            stochastic=False,
            paper="zhao2023unipc",
            equation=f"arXiv:2302.04867v4 Algorithm 2, UniP-{_p} + UniC, B(h) {_variant}, data prediction",
            options={"order": _p, "variant": _variant},
            order_steps=_ASYMPTOTIC,
        )
    )
