"""DEIS: the diffusion exponential integrator sampler (Zhang & Chen 2022, arXiv:2204.13902v4).

In the rescaled variables y = x / alpha_t and rho = sigma_t / alpha_t = e^{-lambda}, the probability-flow ODE
is dy/drho = eps_theta(alpha y, t(rho)) (their Sec. 4; DDIM is Euler's method in rho), so over one step

    x_{i+1} = (alpha_{i+1} / alpha_i) x_i + alpha_{i+1} int_{rho_i}^{rho_{i+1}} eps_theta drho(tau),

the exponential integrator of their Sec. 3 with the linear part exact. Two families approximate the integral:

* AB (their tAB-DEIS and rhoAB-DEIS, Sec. 3.3 and 4): eps is extrapolated by the Lagrange polynomial through
  the last ``order`` evaluations, in the variable t (tAB) or rho (rhoAB), and
  C_ij = int_{rho_i}^{rho_{i+1}} l_j drho, where l_j is the j-th Lagrange basis polynomial. In rho these are
  integrals of polynomials, done exactly (``refimpl.samplers.multistep.lagrange_integrals``; sympy derives them
  in the book and a test checks them); in t the integrand l_j(t(rho)) is not a polynomial and the integral is
  taken by Gauss-Legendre quadrature in rho (exact to round-off for smooth schedules; the official code uses a
  10,000-point Riemann sum). order counts the interpolation points: order 1 is DDIM, and DEIS's own
  "tAB-r" (degree r) is ``order = r + 1`` here. The first order - 1 steps use the points available.
  All three are settings of the one multistep engine (``refimpl.samplers.multistep``); rhoAB is the same map
  as the EDM/k-diffusion LMS started with lower orders (``refimpl.samplers.edm.sample_lms``).
* rhoRK (their Sec. 4): a classical explicit Runge-Kutta method applied to dy/drho (Kutta's third-order
  method by default, as in their code).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import as_float_tensor, check_instance, check_integer, check_strictly_decreasing
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.samplers.dpm_solver import ASYMPTOTIC_STEPS
from refimpl.samplers.multistep import SETTINGS, lagrange_integrals, multistep_weights, node, sample_multistep
from refimpl.schedules import NoiseSchedule

__all__ = [
    "RK_TABLEAUS",
    "deis_ab_coefficients",
    "lagrange_integrals",
    "lagrange_integrals_symbolic",
    "sample_deis_ab",
    "sample_deis_rhork",
]

#: Where DEIS-AB interpolates eps -> the engine's setting.
VARIABLES = {"t": "deis_tab", "rho": "deis_rhoab", "logrho": "deis_logrho"}

#: Explicit Butcher tableaus (c, A, b) of the rhoRK family (Hairer, Norsett & Wanner, Sec. II.1).
RK_TABLEAUS: dict[str, tuple[list[float], list[list[float]], list[float]]] = {
    "euler": ([0.0], [[]], [1.0]),
    "heun2": ([0.0, 1.0], [[], [1.0]], [0.5, 0.5]),
    "kutta3": ([0.0, 0.5, 1.0], [[], [0.5], [-1.0, 2.0]], [1 / 6, 4 / 6, 1 / 6]),
    "rk4": ([0.0, 0.5, 0.5, 1.0], [[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 2 / 6, 2 / 6, 1 / 6]),
}
RK_ORDERS = {"euler": 1, "heun2": 2, "kutta3": 3, "rk4": 4}


def lagrange_integrals_symbolic(q: int) -> dict[str, Any]:
    """The weights int_0^1 l_j(theta) dtheta of ``lagrange_integrals`` in closed form (sympy), for q points.

    The step runs over theta in [0, 1]; the newest point is theta_0 = 0 and the older ones theta_1, ..., theta_{q-1}
    lie behind it (negative). Returns the symbols ``thetas`` and the simplified ``weights`` (a list of q
    expressions); a weight times (b - a) is the integral over [a, b]. q in 1..6 (sympy's time grows fast with q;
    the samplers use at most 4).
    """
    check_integer(q, "q", 1, 6)
    import sympy as sp

    theta = sp.Symbol("theta", real=True)
    thetas = [sp.Integer(0), *sp.symbols(f"theta_1:{q}", negative=True)] if q > 1 else [sp.Integer(0)]
    weights = []
    for j in range(q):
        basis = sp.Mul(*[(theta - thetas[k]) / (thetas[j] - thetas[k]) for k in range(q) if k != j])
        weights.append(sp.factor(sp.integrate(sp.expand(basis), (theta, 0, 1))))
    return {"theta": theta, "thetas": thetas[1:], "weights": weights}


def deis_ab_coefficients(schedule: NoiseSchedule, ts: Tensor, order: int, variable: str = "t") -> Tensor:
    """The DEIS-AB weights C_ij = int_{rho_i}^{rho_{i+1}} l_j drho of every step of the grid ``ts``: (n, order).

    Column j weighs eps at t_{i-j} (j = 0: the newest); step i < order - 1 interpolates the i + 1 points it
    has and its remaining columns are 0. ``variable`` is where eps is interpolated: "t" (tAB), "rho" (rhoAB) or
    "logrho" (-lambda); the weights are the engine's (``refimpl.samplers.multistep.multistep_weights``) over
    alpha_{i+1}, so that x_{i+1} = (alpha_{i+1} / alpha_i) x_i + alpha_{i+1} sum_j C_ij eps_{i-j}.
    """
    check_instance(schedule, NoiseSchedule, "schedule")
    ts = schedule.check_t(check_strictly_decreasing(as_float_tensor(ts, "ts")), "ts")
    check_integer(order, "order", 1, 4)
    if not isinstance(variable, str) or variable not in VARIABLES:
        raise ValueError(f"variable must be one of {tuple(VARIABLES)}, got {variable!r}")
    setting = SETTINGS[VARIABLES[variable]]
    values = schedule(ts)
    u = node(setting, values)
    C = torch.zeros(len(ts) - 1, order, dtype=ts.dtype)
    for i in range(len(ts) - 1):
        q = min(order, i + 1)
        _, k_t, w = multistep_weights(setting, u[i + 1 - q : i + 1].flip(0), values[i], values[i + 1], schedule)
        C[i, :q] = w * k_t / values.alpha[i + 1]
    return C


def sample_deis_ab(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    order: int = 3,
    variable: str = "t",
    orders: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DEIS-AB (tAB, rhoAB or log-rho AB) from timesteps[0] to timesteps[-1]: one model call a step.

    x_{i+1} = (alpha_{i+1} / alpha_i) x_i + alpha_{i+1} sum_j C_ij eps_{i-j} (their Sec. 3.3, Eq. for tAB-DEIS),
    the engine's setting ``SETTINGS["deis_tab" | "deis_rhoab" | "deis_logrho"]``. ``orders`` (one per step, each at
    most the number of outputs seen; default the warm-up 1, 2, ..., ``order``) as in every multistep sampler, e.g.
    the lower orders at the last steps of diffusers' ``lower_order_final``.
    """
    if variable not in VARIABLES:
        raise ValueError(f"variable must be one of {tuple(VARIABLES)}, got {variable!r}")
    return sample_multistep(
        model, x, timesteps, method=VARIABLES[variable], order=order, orders=orders, callback=callback
    )


def sample_deis_rhork(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    method: str = "kutta3",
    callback: Callback | None = None,
) -> Tensor:
    """rhoRK-DEIS: the explicit Runge-Kutta ``method`` (a key of ``RK_TABLEAUS``) on dy/drho = eps (Sec. 4).

    Stage k evaluates eps at rho_i + c_k drho and y_i + drho sum_l a_kl eps_l, with x = alpha y.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if method not in RK_TABLEAUS:
        raise ValueError(f"method must be one of {sorted(RK_TABLEAUS)}, got {method!r}")
    c, A, b = RK_TABLEAUS[method]
    schedule = model.schedule
    values = schedule(ts)
    rho = values.rho
    d_rho = rho[1:] - rho[:-1]
    # Schedule values at every stage's rho_i + c_k d_rho, once per grid (stage 0 is the grid point itself).
    stage_values = [schedule(schedule.t_of_rho(rho[:-1] + ck * d_rho)) for ck in c]
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        y = x / expand_like(v_s.alpha, x)
        x0, eps = predict_x0_eps(model, x, ts[i], v_s)
        stages = [eps]
        for k in range(1, len(c)):
            v_k = stage_values[k][i]
            y_k = y + expand_like(d_rho[i], x) * sum(a * e for a, e in zip(A[k], stages, strict=False))
            stages.append(predict_x0_eps(model, expand_like(v_k.alpha, x) * y_k, v_k.t, v_k)[1])
        y_next = y + expand_like(d_rho[i], x) * sum(bk * e for bk, e in zip(b, stages, strict=True))
        x_next = expand_like(v_t.alpha, x) * y_next
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


# tAB interpolates in t: on a discrete schedule (log alpha piecewise linear in t) it loses order once steps
# approach the knot spacing, and rhoAB3 approaches its order slowly from below on sharp mixtures (the multistep chapter,
# "Why some settings are not registered", measures both), so the mixture test cannot check them: they are checked
# on the closed-form Gaussian. tAB with degree 3 (four points) starts with lower orders: its first step leaves an
# O(h^2) error, so it is registered with order 2, measured on the Gaussian from lambda = 0 on, where that start
# error dominates (from t_max it nearly vanishes and the slope creeps towards 4 from below; the multistep chapter).
_TAB_NOTE = "tAB loses order on discrete schedules (log alpha piecewise linear in t), which the mixture test draws"
_SLOW_NOTE = "approaches its order slowly from below on sharp mixtures (local slopes in the multistep chapter)"
for _name, _order, _variable, _note in (
    ("deis_tab2", 2, "t", _TAB_NOTE),
    ("deis_tab3", 3, "t", _TAB_NOTE),
    ("deis_rhoab3", 3, "rho", _SLOW_NOTE),
):
    register(
        SamplerSpec(
            name=_name,
            sample=sample_deis_ab,
            order=_order,
            stochastic=False,
            paper="zhang2023deis",
            equation=f"arXiv:2204.13902v4 Sec. 3.3-4, {_variable}AB-DEIS with a degree-{_order - 1} polynomial",
            options={"order": _order, "variable": _variable},
            order_steps=ASYMPTOTIC_STEPS[3],
            order_check="gaussian",
            order_note=_note,
        )
    )
register(
    SamplerSpec(
        name="deis_tab4",
        sample=sample_deis_ab,
        order=2,
        stochastic=False,
        paper="zhang2023deis",
        equation="arXiv:2204.13902v4 Sec. 3.3, tAB-DEIS with a degree-3 polynomial (their tAB-3)",
        options={"order": 4, "variable": "t"},
        order_steps=(16, 32, 64, 128),
        order_span=(0.0, 4.0),
        order_check="gaussian",
        order_note=f"{_TAB_NOTE}; it starts with lower orders (an O(h^2) error), which shows from lambda = 0 on, "
        "while from t_max the slope creeps towards 4 from below (the multistep chapter)",
    )
)
register(
    SamplerSpec(
        name="dpm_solver_2m_exact",
        sample=sample_deis_ab,
        order=2,
        stochastic=False,
        paper="zhang2023deis",
        equation="arXiv:2204.13902v4 Sec. 4, log-rho AB-DEIS, degree 1: the exact integral of the linear eps(lambda)",
        options={"order": 2, "variable": "logrho"},
        order_steps=ASYMPTOTIC_STEPS[3],
    )
)
register(
    SamplerSpec(
        name="deis_rhoab2",
        sample=sample_deis_ab,
        order=2,
        stochastic=False,
        paper="zhang2023deis",
        equation="arXiv:2204.13902v4 Sec. 4, rhoAB-DEIS with a degree-1 polynomial in rho",
        options={"order": 2, "variable": "rho"},
        order_steps=ASYMPTOTIC_STEPS[2],
    )
)
register(
    SamplerSpec(
        name="deis_rhork3",
        sample=sample_deis_rhork,
        order=3,
        stochastic=False,
        paper="zhang2023deis",
        equation="arXiv:2204.13902v4 Sec. 4, rhoRK-DEIS with Kutta's third-order tableau",
        nfe=lambda n: 3 * n,
        options={"method": "kutta3"},
        order_steps=ASYMPTOTIC_STEPS[3],
    )
)
