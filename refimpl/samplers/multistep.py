"""The multistep family as one engine: integrate the Lagrange interpolant of past model outputs over the step.

Every linear multistep sampler of the book takes a step from s to t (h = lambda_t - lambda_s > 0) as

    x_t = c x_s + k_t sum_j w_j m_j,      w_j = int over the step of (kernel) x l_j,

where m_j are the model outputs at the last q points (``prediction``: the data prediction x0 or the noise
prediction eps), l_j is the j-th Lagrange basis polynomial through those points in the interpolation
``variable``, and the kernel is what variation of constants leaves of the probability-flow ODE:

* x0 in lambda (DPM-Solver++, arXiv:2211.01095v3 Sec. 4; UniP, arXiv:2302.04867v4 Eq. 7):
  x_t = (sigma_t / sigma_s) x_s + alpha_t int e^{lambda - lambda_t} x0 dlambda;
* eps in lambda (DPM-Solver, arXiv:2206.00927v3 Eq. 3.4; DEIS with log rho, arXiv:2204.13902v4 Sec. 4):
  x_t = (alpha_t / alpha_s) x_s - sigma_t int e^{lambda_t - lambda} eps dlambda;
* eps in rho = sigma / alpha = e^{-lambda} (DEIS rhoAB; EDM/k-diffusion LMS, arXiv:2206.00364v2 Eq. 4):
  the same integral written as x_t = (alpha_t / alpha_s) x_s + alpha_t int eps drho, whose kernel is 1: the
  polynomial is in rho, and the integral is exact;
* eps in t (DEIS tAB, arXiv:2204.13902v4 Sec. 3.3): alpha_t int l_j(t(rho)) drho is not a polynomial
  integral; it is taken by Gauss-Legendre quadrature in rho.

With theta = (u - u_s) / (u_t - u_s) on the step, an exponential kernel is e^{(1 - theta) z} (z = -h for x0,
z = h for eps; z = 0 is the polynomial kernel), and int_0^1 theta^m e^{(1 - theta) z} dtheta = m! phi_{m+1}(z)
(Hochbruck & Ostermann 2010, Eq. 2.10). So one function, ``lagrange_integrals``, gives the weights of every
exact setting. The methods differ only in these choices, each one row of ``SETTINGS``:

* a two-point step may instead use UniPC's simplified coefficient 1/2 (arXiv:2302.04867v4 Eq. 7 and Sec. 3.3, as
  their official code does): x_t = c x_s - k [(e^hh - 1) m_0 + B(hh) (m_1 - m_0) / (2 r_1)], r_1 = (lambda_1 -
  lambda_s) / h, with (hh, c, k) = (-h, sigma_t / sigma_s, alpha_t) for x0 and (h, alpha_t / alpha_s, sigma_t) for
  eps, and B(h) = h ("bh1") or e^h - 1 ("bh2"). With bh2 this is DPM-Solver++(2M)'s "midpoint form"
  (arXiv:2211.01095v3 Algorithm 2), and with the second point inside the step DPM-Solver++(2S) (Algorithm 1);
* a setting may start with a singlestep companion (``warmup="singlestep"``): DPM-Solver++(2S) for the first
  step of 3M, classical RK4 in sigma for the first order - 1 steps of LMS (k-diffusion starts with lower
  orders instead, ``warmup="lower_order"``);
* UniPC's corrector (UniC) re-does the previous step with the new output added to its points (r = 1).

Identities proved in tests/test_multistep.py: UniP with solved coefficients is the exact setting for either B(h)
(B cancels); UniP-bh2 with the simplified coefficient is multistep DPM-Solver(++); the EDM/k-diffusion LMS
started with lower orders and DEIS rhoAB are the same map (Adams-Bashforth in rho on eps in x / alpha).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import (
    as_float_tensor,
    check_finite_result,
    check_float_tensors,
    check_instance,
    check_integer,
    check_kinds,
)
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_orders, check_sampler_inputs
from refimpl.samplers._exponential import phi
from refimpl.samplers.dpm_solver import ASYMPTOTIC_STEPS, intermediate_values
from refimpl.schedules import NoiseSchedule, ScheduleValues

__all__ = [
    "INTEGRANDS",
    "SETTINGS",
    "WARMUPS",
    "MultistepSetting",
    "lagrange_basis",
    "lagrange_integrals",
    "multistep_step",
    "multistep_weights",
    "node",
    "sample_multistep",
    "step_orders",
]

#: The model output a multistep sampler interpolates (option ``prediction``).
INTEGRANDS = ("x0", "eps")
#: The variable the interpolant is a polynomial in.
VARIABLES = ("lambda", "rho", "t")
#: How the first steps are taken before ``order`` outputs are known: "lower_order" -- step i uses the i + 1
#: points it has; "singlestep" -- the setting's singlestep companion takes the first steps (see SETTINGS).
WARMUPS = ("lower_order", "singlestep")
#: UniPC's B(h) (arXiv:2302.04867v4 Sec. 3.3) for the simplified two-point coefficient.
B_FUNCTIONS = ("bh1", "bh2")
#: The warm-up companions a setting may name (see ``MultistepSetting``), and the highest order of any setting.
SINGLESTEPS = (None, "2s", "rk4")
MAX_ORDER = 4
GAUSS_LEGENDRE_NODES = 24
_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(GAUSS_LEGENDRE_NODES)  # (nodes, weights) on [-1, 1]


class _MultistepFields(NamedTuple):
    prediction: str
    variable: str
    simplified: str | None
    max_order: int
    singlestep: str | None
    equation: str


class MultistepSetting(_MultistepFields):
    """One named multistep method: what is interpolated, in which variable, and how a two-point step is formed.

    ``simplified`` None integrates every interpolant exactly; "bh1"/"bh2" replaces the solved coefficient of a
    two-point step by 1/2 with UniPC's B(h). ``singlestep`` names the warm-up companion ("2s": DPM-Solver++(2S)
    for the first step of order 3; "rk4": RK4 in sigma for the first order - 1 steps; None: none). Checked when
    made (``ValueError``/``TypeError`` naming the field).
    """

    __slots__ = ()

    def __new__(
        cls,
        prediction: str,
        variable: str,
        simplified: str | None,
        max_order: int,
        singlestep: str | None,
        equation: str,
    ) -> MultistepSetting:
        check_kinds(str, prediction=prediction, variable=variable, equation=equation)
        check_kinds((str, type(None)), simplified=simplified, singlestep=singlestep)
        if prediction not in INTEGRANDS or variable not in VARIABLES:
            raise ValueError(f"prediction must be in {INTEGRANDS} and variable in {VARIABLES}")
        if simplified is not None and simplified not in B_FUNCTIONS:
            raise ValueError(f"simplified must be None or one of {B_FUNCTIONS}, got {simplified!r}")
        if variable != "lambda" and (prediction != "eps" or simplified is not None):
            raise ValueError("the polynomial kernels (rho, t) integrate eps exactly")
        check_integer(max_order, "max_order", 1, MAX_ORDER)
        if singlestep not in SINGLESTEPS:
            raise ValueError(f"singlestep must be one of {SINGLESTEPS}, got {singlestep!r}")
        return super().__new__(cls, prediction, variable, simplified, max_order, singlestep, equation)


#: A checked row of ``SETTINGS`` (the constructor checks).
_setting = MultistepSetting


#: Every multistep method of the book as a setting of the one update (rows with equal fields are one map).
SETTINGS: dict[str, MultistepSetting] = {
    "dpm_solver_pp": _setting("x0", "lambda", "bh2", 3, "2s", "arXiv:2211.01095v3 Algorithm 2 / Sec. 4"),
    "dpm_solver_pp_exact": _setting("x0", "lambda", None, 3, None, "arXiv:2302.04867v4 Eq. 7-8 (solved)"),
    "dpm_solver": _setting("eps", "lambda", "bh2", 3, None, "arXiv:2211.01095v3 Algorithm 2, eps form"),
    "deis_logrho": _setting("eps", "lambda", None, 4, None, "arXiv:2204.13902v4 Sec. 4, log-rho AB"),
    "deis_rhoab": _setting("eps", "rho", None, 4, None, "arXiv:2204.13902v4 Sec. 4, rhoAB-DEIS"),
    "deis_tab": _setting("eps", "t", None, 4, None, "arXiv:2204.13902v4 Sec. 3.3, tAB-DEIS"),
    "lms": _setting("eps", "rho", None, 4, "rk4", "k-diffusion sample_lms; arXiv:2206.00364v2 Eq. 4"),
    **{
        f"unipc_{b}{suffix}": _setting(pred, "lambda", b, 3, None, "arXiv:2302.04867v4 Eq. 7-8, Alg. 2")
        for b in B_FUNCTIONS
        for pred, suffix in (("x0", ""), ("eps", "_eps"))
    },
}


def step_orders(n_steps: int, order: int, *, lower_final: bool = False) -> list[int]:
    """The per-step orders of the common patterns: min(order, i + 1) (a lower-order start), and with
    ``lower_final`` also at most the n_steps - i steps left (diffusers' ``lower_order_final`` of UniPC; DPM-Solver's
    official rule for few steps). Pass the result as ``orders=``."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    return [min(order, i + 1, n_steps - i) if lower_final else min(order, i + 1) for i in range(n_steps)]


def _check_nodes(nodes: object, batched: bool = False) -> None:
    """Interpolation nodes: a floating tensor (q,), or (..., q) if ``batched``, with q >= 1 (O(1): no look at the
    entries; non-finite or coinciding nodes show in the result, which the callers check)."""
    check_float_tensors(nodes=nodes)
    if nodes.ndim < 1 or (nodes.ndim > 1 and not batched) or nodes.shape[-1] == 0:
        shape = "(..., q)" if batched else "1-D"
        raise ValueError(f"nodes must be a non-empty {shape} tensor, got shape {tuple(nodes.shape)}")


def lagrange_basis(nodes: Tensor, u: Tensor) -> Tensor:
    """l_j(u) = prod_{k != j} (u - u_k) / (u_j - u_k), the Lagrange basis of ``nodes`` (q,) at points u (P,): (P, q).
    The nodes must be distinct and finite (``ValueError`` otherwise)."""
    _check_nodes(nodes)
    check_float_tensors(u=u)
    q = nodes.numel()
    basis = torch.stack(
        [
            math.prod([(u - nodes[k]) / (nodes[j] - nodes[k]) for k in range(q) if k != j], start=torch.ones_like(u))
            for j in range(q)
        ],
        -1,
    )
    return check_finite_result(basis, "that nodes are finite and distinct and u is finite")


def lagrange_integrals(nodes: Tensor, a: Tensor, b: Tensor, z: Tensor | float = 0.0) -> Tensor:
    """(b - a) int_0^1 e^{(1 - theta) z} l_j(a + theta (b - a)) dtheta for the Lagrange basis of ``nodes`` (..., q).

    z = 0: the plain integral int_a^b l_j(u) du (DEIS rhoAB, LMS). With theta_k = (u_k - a) / (b - a), l_j is
    prod_{k != j} (theta - theta_k) / (theta_j - theta_k); expanding the numerator in powers of theta and using
    int_0^1 theta^m e^{(1 - theta) z} dtheta = m! phi_{m+1}(z) integrates it exactly. Shifting to [0, 1] keeps
    the coefficients of order one, so nothing cancels when the nodes are far from zero. Returns (..., q).
    Distinct finite nodes, a != b and a finite z are needed (``ValueError`` otherwise).
    """
    _check_nodes(nodes, batched=True)
    check_float_tensors(a=a, b=b)
    if a.shape != b.shape or a.shape != nodes.shape[:-1]:
        raise ValueError(f"a and b must have the batch shape of nodes {tuple(nodes.shape[:-1])}, got {tuple(a.shape)}")
    q = nodes.shape[-1]
    z = as_float_tensor(z, "z", nodes.dtype)
    bad = "that nodes are finite and distinct, a != b and a, b and z are finite"
    if nodes.ndim == 1 and a.ndim == 0 and b.ndim == 0 and z.ndim == 0 and not _needs_grad(nodes, a, b, z):
        # One step (every call a sampler makes): the same arithmetic on Python floats, where a 0-d tensor per
        # operation would cost far more than the operation.
        length = float(b) - float(a)
        try:
            theta = [(float(u) - float(a)) / length for u in nodes]
            moments = [math.factorial(m) * float(phi(m + 1, z)) for m in range(q)]
            w = _basis_integrals(theta, moments, 1.0)
        except (ZeroDivisionError, OverflowError):
            raise ValueError(f"division by zero or overflow: check {bad}") from None
        if not all(math.isfinite(w_j * length) for w_j in w):
            raise ValueError(f"non-finite result: check {bad}")
        return torch.tensor(w, dtype=nodes.dtype) * length
    length = (b - a)[..., None]
    theta = (nodes - a[..., None]) / length
    moments = [math.factorial(m) * phi(m + 1, z) for m in range(q)]  # int_0^1 theta^m e^{(1 - theta) z}
    thetas = [theta[..., k] for k in range(q)]
    w = torch.stack(_basis_integrals(thetas, moments, torch.ones_like(thetas[0])), -1) * length
    return check_finite_result(w, bad)


def _needs_grad(*tensors: Tensor) -> bool:
    return any(t.requires_grad for t in tensors)


def _basis_integrals(theta: list, moments: list, one: Tensor | float) -> list:
    """int_0^1 e^{(1 - theta) z} l_j(theta) dtheta for each j, given the nodes ``theta`` in [0, 1] coordinates and
    the ``moments`` int_0^1 theta^m e^{(1 - theta) z}; numbers or tensors alike (``one`` is 1 of their kind)."""
    q = len(theta)
    out = []
    for j in range(q):
        others = [theta[k] for k in range(q) if k != j]
        coef = [one]  # coefficients of prod_k (theta - theta_k), lowest power first
        for root in others:
            coef = [-root * coef[0]] + [coef[m - 1] - root * coef[m] for m in range(1, len(coef))] + [coef[-1]]
        numerator = sum(c * moments[m] for m, c in enumerate(coef))
        denominator = math.prod([theta[j] - root for root in others]) if others else 1.0
        out.append(numerator / denominator)
    return out


def _quadrature_in_rho(schedule: NoiseSchedule, t_nodes: Tensor, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """int_{rho_s}^{rho_t} l_j(t(rho)) drho, l_j the Lagrange basis in t through ``t_nodes`` (q,): Gauss-Legendre
    on the pieces of the step on which t(rho) is smooth (cut at a piecewise schedule's ``t_knots``, where
    quadrature across a kink would lose about six digits)."""
    cuts = torch.stack([v_s.t, v_t.t])
    knots = getattr(schedule, "t_knots", None)
    if knots is not None:
        inner = knots[(knots < v_s.t) & (knots > v_t.t)].to(cuts.dtype)
        cuts = torch.cat([cuts[:1], inner.flip(0), cuts[1:]])  # decreasing in t, increasing in rho
    g, w = (torch.as_tensor(a, dtype=cuts.dtype) for a in _GAUSS_LEGENDRE)
    rho_cuts = schedule.rho_t(cuts)
    rho_cuts[0], rho_cuts[-1] = v_s.rho, v_t.rho
    half = 0.5 * (rho_cuts[1:] - rho_cuts[:-1])[:, None]
    rho = 0.5 * (rho_cuts[1:] + rho_cuts[:-1])[:, None] + half * g
    tau = schedule.t_of_rho(rho.clamp(schedule.rho_min, schedule.rho_max))
    basis = lagrange_basis(t_nodes, tau.reshape(-1)).reshape(*tau.shape, -1)  # (pieces, G, q)
    return (half[..., None] * w[:, None] * basis).sum((0, 1))


def node(setting: MultistepSetting, v: ScheduleValues) -> Tensor:
    """Where a point lies in the setting's interpolation variable: lambda, rho or t."""
    check_instance(setting, MultistepSetting, "setting")
    check_instance(v, ScheduleValues, "v")
    return {"lambda": v.lambda_, "rho": v.rho, "t": v.t}[setting.variable]


def multistep_weights(
    setting: MultistepSetting,
    nodes: Tensor,
    v_s: ScheduleValues,
    v_t: ScheduleValues,
    schedule: NoiseSchedule | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(c, k_t, w): the step is x_t = c x_s + k_t sum_j w_j m_j for outputs m_j at ``nodes`` (q,), given in the
    setting's variable (``node``).

    The only place Lagrange weights are computed (see the module docstring); ``schedule`` is needed for t.
    """
    check_instance(setting, MultistepSetting, "setting")
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_kinds((NoiseSchedule, type(None)), schedule=schedule)
    h = v_t.lambda_ - v_s.lambda_
    if setting.variable == "lambda":
        z = -h if setting.prediction == "x0" else h
        w = lagrange_integrals(nodes, v_s.lambda_, v_t.lambda_, z)
        if setting.prediction == "x0":
            return v_t.sigma / v_s.sigma, v_t.alpha, w
        return v_t.alpha / v_s.alpha, -v_t.sigma, w
    if setting.variable == "rho":
        w = lagrange_integrals(nodes, v_s.rho, v_t.rho)
    else:
        if schedule is None:
            raise ValueError("interpolation in t needs the schedule (t(rho) inside the step)")
        w = _quadrature_in_rho(schedule, nodes, v_s, v_t)
    return v_t.alpha / v_s.alpha, v_t.alpha, w


def _b_of(hh: Tensor, variant: str) -> Tensor:
    """B(hh) of Zhao et al. (2023), arXiv:2302.04867v4 Sec. 3.3: "bh1" B(h) = h, "bh2" B(h) = e^h - 1."""
    return hh if variant == "bh1" else torch.expm1(hh)


def multistep_step(
    x: Tensor,
    points: Sequence[tuple[Tensor, Tensor]],
    v_s: ScheduleValues,
    v_t: ScheduleValues,
    setting: MultistepSetting,
    schedule: NoiseSchedule | None = None,
) -> Tensor:
    """One step of ``setting`` from s to t: ``points`` = [(u_j, m_j)], u_j in the setting's variable (``node``),
    points[0] at s, the others earlier points (a predictor), the point at t (a corrector) or inside the step (a
    singlestep stage). A pure function of the model outputs m_j."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_instance(setting, MultistepSetting, "setting")
    check_float_tensors(x=x)
    check_kinds((list, tuple), points=points)
    if not points:
        raise ValueError("a multistep step needs at least the model output at s")
    if not 1 <= len(points) <= setting.max_order + 1:
        raise ValueError(f"{len(points)} points: this setting interpolates at most {setting.max_order + 1}")
    m0 = points[0][1]
    if setting.simplified is not None and len(points) == 2:
        h = v_t.lambda_ - v_s.lambda_
        hh = -h if setting.prediction == "x0" else h
        c, k_t = (
            (v_t.sigma / v_s.sigma, v_t.alpha) if setting.prediction == "x0" else (v_t.alpha / v_s.alpha, v_t.sigma)
        )
        (lambda_1, m1) = points[1]
        r1 = (lambda_1 - v_s.lambda_) / h
        return (
            expand_like(c, x) * x
            - expand_like(k_t * torch.expm1(hh), x) * m0
            - expand_like(k_t * _b_of(hh, setting.simplified) / (2 * r1), x) * (m1 - m0)
        )
    c, k_t, w = multistep_weights(setting, torch.stack([torch.as_tensor(u) for u, _ in points]), v_s, v_t, schedule)
    return expand_like(c, x) * x + expand_like(k_t, x) * sum(
        expand_like(w_j, x) * m for w_j, (_, m) in zip(w, points, strict=True)
    )


def _output(model: DiffusionModel, x: Tensor, v: ScheduleValues, prediction: str, threshold: Callable | None):
    x0, eps = predict_x0_eps(model, x, v.t, v)
    if threshold is not None:
        x0 = threshold(x0)
    return x0, (x0 if prediction == "x0" else eps)


def sample_multistep(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    method: str,
    order: int,
    orders: Sequence[int] | None = None,
    warmup: str = "lower_order",
    corrector: bool = False,
    threshold: Callable[[Tensor], Tensor] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """The multistep sampler of the setting ``SETTINGS[method]`` from timesteps[0] to timesteps[-1].

    Step i interpolates the last ``orders[i]`` outputs (default ``step_orders(n, order)``). With
    ``warmup="singlestep"`` the setting's companion takes the first steps instead (2S: step 0 if order = 3, one extra
    model call; RK4 in sigma: steps 0..order - 2, three extra calls each). ``corrector`` (UniC) re-does each step
    but the last with the output at its end added (no extra call). ``threshold`` maps every x0 (x0 settings).
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if method not in SETTINGS:
        raise ValueError(f"method must be one of {sorted(SETTINGS)}, got {method!r}")
    setting = SETTINGS[method]
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= setting.max_order:
        raise ValueError(f"order must be an integer in 1..{setting.max_order}, got {order!r}")
    if warmup not in WARMUPS:
        raise ValueError(f"warmup must be one of {WARMUPS}, got {warmup!r}")
    n = len(ts) - 1
    history = order if orders is None else max(orders)
    orders = step_orders(n, order) if orders is None else check_orders(orders, n, setting.max_order)
    n_warm = 0
    if warmup == "singlestep":
        n_warm = {"2s": int(history == 3), "rk4": history - 1, None: 0}[setting.singlestep]
    schedule = model.schedule
    values = schedule(ts)
    points: list[tuple[Tensor, Tensor]] = []  # (node, output) newest first
    x_prev, p_prev = x, 0
    for i in range(n):
        v_s, v_t = values[i], values[i + 1]
        x0, m = _output(model, x, v_s, setting.prediction, threshold)
        if corrector and i > 0:  # UniC: the previous step again, with the output just computed at its end
            new = (node(setting, v_s), m)
            x = multistep_step(x_prev, [points[0], new, *points[1:p_prev]], values[i - 1], v_s, setting, schedule)
        points = [(node(setting, v_s), m), *points][:history]
        if i < n_warm and setting.singlestep == "2s":
            v_mid = intermediate_values(schedule, values[i : i + 2], 0.5)[0]
            m_mid = _output(model, multistep_step(x, points[:1], v_s, v_mid, setting), v_mid, "x0", threshold)[1]
            x_next = multistep_step(x, [points[0], (v_mid.lambda_, m_mid)], v_s, v_t, setting)
        elif i < n_warm:
            from refimpl.samplers.pndm import run_prk_step  # here: pndm imports this module's WARMUPS

            x_next = run_prk_step(model, x, ts[i], ts[i + 1], m, midpoint="sigma")[0]  # RK4 in (sigma, x / alpha)
        else:
            x_next = multistep_step(x, points[: orders[i]], v_s, v_t, setting, schedule)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x_prev, p_prev, x = x, orders[i], x_next
    return x


# Settings registered as methods of their own (the paper-shaped views register theirs in their modules). The
# third-order settings with the paper's lower-order start (orders 1, 2, 3, ...) are globally second order: the
# first-order first step leaves an O(h^2) error. From t_max their error on a single Gaussian is a boundary term
# (slope 4) and on sharp mixtures their slopes wander (the multistep chapter, "Why some settings are not
# registered"), so their order is measured on the closed-form Gaussian over lambda in [-1, 3] (as DPM-Solver++(3M)'s).
_THIRD_ORDER_NOTE = (
    "from t_max the error on a single Gaussian is a boundary term (slope 4) and on sharp mixtures the slope wanders "
    "(the multistep chapter): measured on the Gaussian over lambda in [-1, 3]; the first-order start caps the order "
    "at 2"
)
for _name, _method, _paper, _equation in (
    ("dpm_solver_3m", "dpm_solver", "lu2022dpmsolverpp",
     "arXiv:2211.01095v3 Sec. 4 in noise prediction: multistep DPM-Solver-3, midpoint second-order step"),
    ("dpm_solver_3m_exact", "deis_logrho", "zhang2023deis",
     "arXiv:2204.13902v4 Sec. 4: exact integral of the quadratic eps(lambda) (DEIS log-rho AB, degree 2)"),
    ("dpm_solver_pp_3m_exact", "dpm_solver_pp_exact", "lu2022dpmsolverpp",
     "arXiv:2211.01095v3 Sec. 4, DPM-Solver++(3M) with the exact second-order step (k-diffusion's form)"),
):  # fmt: skip
    register(
        SamplerSpec(
            name=_name,
            sample=sample_multistep,
            order=2,
            stochastic=False,
            paper=_paper,
            equation=_equation,
            options={"method": _method, "order": 3},
            order_check="gaussian",
            order_note=_THIRD_ORDER_NOTE,
            order_span=(-1.0, 3.0),
        )
    )
register(
    SamplerSpec(
        name="dpm_solver_2m",
        sample=sample_multistep,
        order=2,
        stochastic=False,
        paper="lu2022dpmsolverpp",
        equation="arXiv:2211.01095v3 Algorithm 2 in noise prediction (midpoint form), multistep DPM-Solver-2",
        options={"method": "dpm_solver", "order": 2},
        order_steps=ASYMPTOTIC_STEPS[3],
    )
)
register(
    SamplerSpec(
        name="dpm_solver_pp_2m_exact",
        sample=sample_multistep,
        order=2,
        stochastic=False,
        paper="zhao2023unipc",
        equation="arXiv:2302.04867v4 Eq. 7-8, UniP-2 with the solved coefficient: the exact integral of the linear x0",
        options={"method": "dpm_solver_pp_exact", "order": 2},
        order_steps=ASYMPTOTIC_STEPS[3],
    )
)
