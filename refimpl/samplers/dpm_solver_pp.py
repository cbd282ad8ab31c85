"""DPM-Solver++: exponential integrators in data-prediction form, thresholding, and the SDE variant.

Lu, Zhou, Bao, Chen, Li & Zhu (2022), arXiv:2211.01095v3. Variation of constants on the probability-flow
ODE written with the data prediction x_theta = E[x_0 | x_t] gives, with h = lambda_t - lambda_s,

    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^{lambda} x_theta(x_lambda, lambda) dlambda
        = (sigma_t / sigma_s) x_s + alpha_t sum_k h^{k+1} phi_{k+1}(-h) x_theta^{(k)}(lambda_s) + ...

(their Sec. 4; phi_k from ``_exponential``). The integrand is bounded, e^{lambda - lambda_t} <= 1, and
x_theta stays in the data range, which is why these solvers stay stable under large guidance scales where
the noise-prediction ones (``dpm_solver``) do not.

* DPM-Solver++(1): DDIM.
* DPM-Solver++(2S), their Algorithm 1: singlestep, one extra call at lambda_s + r1 h (r1 = 1/2).
* DPM-Solver++(2M), their Algorithm 2: multistep, the derivative from the previous step's x_theta.
* DPM-Solver++(3M): multistep with a quadratic through the last three x_theta; its coefficients are the
  exact phi integrals of the Taylor terms (``dpm_solver_pp_multistep_step`` says why this differs from
  the official code). The multistep members are settings of ``refimpl.samplers.multistep``.
* SDE-DPM-Solver++(2M): the same expansion for the reverse SDE, whose linear part and noise are exact.
* Dynamic thresholding (Saharia et al. 2022, arXiv:2205.11487v1, Sec. 2.3), applied to every x_theta.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import as_finite_float, check_finite, check_float_tensors, check_kinds
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, NoiseSource, StepInfo, check_orders, check_sampler_inputs
from refimpl.samplers.dpm_solver import ASYMPTOTIC_STEPS, intermediate_values
from refimpl.samplers.multistep import SETTINGS, multistep_step, sample_multistep
from refimpl.schedules import ScheduleValues

__all__ = [
    "dpm_solver_pp_1_step",
    "dpm_solver_pp_2s_step",
    "dpm_solver_pp_multistep_step",
    "dynamic_thresholding",
    "sample_dpm_solver_pp_2s",
    "sample_dpm_solver_pp_multistep",
    "sample_sde_dpm_solver_pp",
    "sde_dpm_solver_pp_step",
]


def dynamic_thresholding(x0: Tensor, ratio: float = 0.995, max_value: float = 1.0) -> Tensor:
    """Dynamic thresholding of a batch of data predictions x0 (B, ...), data range [-max_value, max_value].

    Per sample, s = max(quantile_ratio(|x0|), max_value) and x0 <- clip(x0, -s, s) max_value / s
    (Saharia et al. 2022, arXiv:2205.11487v1, Sec. 2.3, written there for max_value = 1). The result lies in
    the data range, the map is idempotent, and predictions already in range are returned unchanged.
    """
    check_float_tensors(x0=x0)
    if x0.ndim < 1 or x0.numel() == 0:
        raise ValueError(f"x0 must be a non-empty batch (B, ...), got shape {tuple(x0.shape)}")
    check_finite(x0, "x0")
    ratio, max_value = as_finite_float(ratio, "ratio"), as_finite_float(max_value, "max_value")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
    if not max_value > 0:
        raise ValueError(f"max_value must be positive, got {max_value}")
    q = expand_like(torch.quantile(x0.abs().reshape(x0.shape[0], -1), ratio, dim=1), x0)
    s = torch.clamp(q, min=max_value)
    scale = torch.where(q > max_value, max_value / s, torch.ones_like(s))  # exactly 1 when already in range
    return torch.maximum(torch.minimum(x0, s), -s) * scale


def _x0(model: DiffusionModel, x: Tensor, values: ScheduleValues, threshold: dict | None) -> Tensor:
    """One model call as the data prediction x_theta(x, t), thresholded if ``threshold`` is given."""
    x0 = predict_x0_eps(model, x, values.t, values)[0]
    return x0 if threshold is None else dynamic_thresholding(x0, **threshold)


def _threshold_options(thresholding: bool, ratio: float, max_value: float) -> dict | None:
    if not thresholding:
        return None
    dynamic_thresholding(torch.zeros(1, 1), ratio, max_value)  # validate once, before the loop
    return {"ratio": ratio, "max_value": max_value}


def dpm_solver_pp_1_step(x: Tensor, x0_s: Tensor, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """DPM-Solver++(1) from s to t: x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0_s (DDIM; their Sec. 4)."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x, x0_s=x0_s)
    return multistep_step(x, [(v_s.lambda_, x0_s)], v_s, v_t, SETTINGS["dpm_solver_pp"])


def dpm_solver_pp_2s_step(
    x: Tensor, x0_s: Tensor, x0_s1: Tensor, v_s: ScheduleValues, v_s1: ScheduleValues, v_t: ScheduleValues
) -> Tensor:
    """DPM-Solver++(2S) from s to t given x_theta at s and at s_1 = t(lambda_s + r1 h) (Algorithm 1): a pure step.

    D = (1 - 1/(2 r1)) x0_s + 1/(2 r1) x0_s1, x_t = DPM-Solver++(1) with D. This is the engine's two-point
    "bh2" step (``refimpl.samplers.multistep``) with its second point inside the step; x0_s1 is the model's
    x_theta at ``dpm_solver_pp_1_step(x, x0_s, v_s, v_s1)``.
    """
    check_kinds(ScheduleValues, v_s=v_s, v_s1=v_s1, v_t=v_t)
    check_float_tensors(x=x, x0_s=x0_s, x0_s1=x0_s1)
    return multistep_step(x, [(v_s.lambda_, x0_s), (v_s1.lambda_, x0_s1)], v_s, v_t, SETTINGS["dpm_solver_pp"])


def dpm_solver_pp_multistep_step(
    x: Tensor, x0s: list[Tensor], lambdas: list[Tensor], v_s: ScheduleValues, v_t: ScheduleValues, order: int
) -> Tensor:
    """One multistep DPM-Solver++ step from s to t of ``order`` 1, 2 or 3: a pure function of the history.

    ``x0s[j]`` is x_theta at the j-th latest point (x0s[0] at s) and ``lambdas[j]`` its lambda.

    order 2 is their Algorithm 2: D = (1 + 1/(2r)) m0 - 1/(2r) m1, r = h_{i-1} / h_i, in DPM-Solver++(1) (the
    "midpoint form", not the exact integral of the line through m0, m1: ``SETTINGS["dpm_solver_pp_exact"]``).
    order 3 integrates the quadratic through (lambda_j, m_j), j = 0, 1, 2, exactly (their Sec. 4):
    alpha_t (h phi_1(-h) m0 + h^2 phi_2(-h) x' + h^3 phi_3(-h) x''), x' = [m0, m1] + (lambda_0 - lambda_1)[m0, m1, m2],
    x'' = 2 [m0, m1, m2] (divided differences); the engine's weights are these, regrouped by m_j.
    The official code and diffusers multiply h^2 [m0, m1, m2] (which is h^2 x''/2) by the coefficient of
    h^2 x'', dropping half of the last term: their local error is O(h^3), a second-order method.
    """
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x)
    check_kinds((list, tuple), x0s=x0s, lambdas=lambdas)
    if order not in (1, 2, 3):
        raise ValueError(f"multistep DPM-Solver++ has order 1, 2 or 3, got {order!r}")
    if len(x0s) < order or len(lambdas) < order:
        raise ValueError(f"order {order} needs {order} past data predictions, got {min(len(x0s), len(lambdas))}")
    points = list(zip(lambdas[:order], x0s[:order], strict=True))
    return multistep_step(x, points, v_s, v_t, SETTINGS["dpm_solver_pp"])


def sample_dpm_solver_pp_2s(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    r1: float = 0.5,
    thresholding: bool = False,
    ratio: float = 0.995,
    max_value: float = 1.0,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2S) from timesteps[0] to timesteps[-1] (Algorithm 1): two model calls a step."""
    ts = check_sampler_inputs(model, x, timesteps)
    if not 0 < r1 <= 1:
        raise ValueError(f"r1 must lie in (0, 1], got {r1}")
    threshold = _threshold_options(thresholding, ratio, max_value)
    values = model.schedule(ts)
    mid = intermediate_values(model.schedule, values, r1)
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        x0 = _x0(model, x, v_s, threshold)
        x0_s1 = _x0(model, dpm_solver_pp_1_step(x, x0, v_s, mid[i]), mid[i], threshold)
        x_next = dpm_solver_pp_2s_step(x, x0, x0_s1, v_s, mid[i], v_t)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def sample_dpm_solver_pp_multistep(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    order: int = 2,
    warmup: str = "lower_order",
    thresholding: bool = False,
    ratio: float = 0.995,
    max_value: float = 1.0,
    orders: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Multistep DPM-Solver++(1M/2M/3M) from timesteps[0] to timesteps[-1] (Algorithm 2; Sec. 4): one call a step.

    The engine's setting ``SETTINGS["dpm_solver_pp"]`` (steps: ``dpm_solver_pp_multistep_step``).
    warmup="lower_order" (the paper's and official code's) takes the first steps at orders 1, 2, ...: a
    first-order first step leaves an O(h^2) error, so 3M is then globally second order. warmup="singlestep"
    takes the first step of 3M with DPM-Solver++(2S) (one extra model call), which keeps third order.
    ``orders`` (one order per step, each at most the number of points seen; ``step_orders`` builds the common
    patterns, e.g. the official code's lower orders at the last steps, which cost 3M an order too).
    """
    threshold = _threshold_options(thresholding, ratio, max_value)
    thresh = None if threshold is None else functools.partial(dynamic_thresholding, **threshold)
    return sample_multistep(
        model, x, timesteps, method="dpm_solver_pp", order=order, orders=orders, warmup=warmup, threshold=thresh,
        callback=callback,
    )  # fmt: skip


def sde_dpm_solver_pp_step(
    x: Tensor, x0s: list[Tensor], lambdas: list[Tensor], v_s: ScheduleValues, v_t: ScheduleValues, z: Tensor
) -> Tensor:
    """One SDE-DPM-Solver++ step from s to t: order 1 if one x_theta is given, 2M (midpoint form) if two.

    The reverse SDE's solution, by variation of constants in lambda, is
    x_t = (sigma_t / sigma_s) e^{-h} x_s + 2 alpha_t int e^{-2(lambda_t - lambda)} x_theta dlambda
    + sigma_t sqrt(1 - e^{-2h}) z; with x_theta = m0 + (lambda - lambda_s) D / (r h):
    x_t = (sigma_t / sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) (m0 + D / 2) + sigma_t sqrt(1 - e^{-2h}) z,
    D = (m0 - m1) / r, r = h_{i-1} / h_i (order 1: D = 0, exactly DDPM's ancestral step).
    """
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x, z=z)
    check_kinds((list, tuple), x0s=x0s, lambdas=lambdas)
    if not x0s or len(lambdas) < len(x0s):
        raise ValueError(
            f"x0s needs the data prediction at s, and lambdas a lambda for each; got {len(x0s)}, {len(lambdas)}"
        )
    h = v_t.lambda_ - v_s.lambda_
    one_minus = -torch.expm1(-2.0 * h)  # 1 - e^{-2h}
    D = x0s[0]
    if len(x0s) >= 2:
        r = (lambdas[0] - lambdas[1]) / h
        D = x0s[0] + 0.5 * (x0s[0] - x0s[1]) / expand_like(r, x)
    return (
        expand_like(v_t.sigma / v_s.sigma * torch.exp(-h), x) * x
        + expand_like(v_t.alpha * one_minus, x) * D
        + expand_like(v_t.sigma * torch.sqrt(one_minus), x) * z
    )


def sample_sde_dpm_solver_pp(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    order: int = 2,
    orders: Sequence[int] | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """SDE-DPM-Solver++ (order 1: DDPM; order 2: 2M) from timesteps[0] to timesteps[-1], one call a step.

    Noise is ``noise[i]`` at step i (shape (n_steps, *x.shape)) or drawn from ``generator``. ``orders`` (one per
    step, each 1 or 2 and at most the number of points seen) overrides ``order`` step by step.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if order not in (1, 2):
        raise ValueError(f"SDE-DPM-Solver++ has order 1 or 2, got {order!r}")
    if orders is not None:
        orders = check_orders(orders, len(ts) - 1, 2)
        order = max(orders)
    noise_at = NoiseSource(noise, generator, len(ts) - 1, x)
    values = model.schedule(ts)
    x0s: list[Tensor] = []
    lambdas: list[Tensor] = []
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        x0 = _x0(model, x, v_s, None)
        x0s, lambdas = [x0, *x0s[: order - 1]], [v_s.lambda_, *lambdas[: order - 1]]
        k = len(x0s) if orders is None else orders[i]
        x_next = sde_dpm_solver_pp_step(x, x0s[:k], lambdas[:k], v_s, v_t, noise_at(i))
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


register(
    SamplerSpec(
        name="dpm_solver_pp_2s",
        sample=sample_dpm_solver_pp_2s,
        order=2,
        stochastic=False,
        paper="lu2022dpmsolverpp",
        equation="arXiv:2211.01095v3 Algorithm 1 (DPM-Solver++(2S), r = 1/2)",
        nfe=lambda n: 2 * n,
        order_steps=ASYMPTOTIC_STEPS[2],
    )
)
register(
    SamplerSpec(
        name="dpm_solver_pp_2m",
        sample=sample_dpm_solver_pp_multistep,
        order=2,
        stochastic=False,
        paper="lu2022dpmsolverpp",
        equation="arXiv:2211.01095v3 Algorithm 2 (DPM-Solver++(2M))",
        options={"order": 2},
        order_steps=ASYMPTOTIC_STEPS[3],  # the one-step-old derivative keeps 32 steps pre-asymptotic on sharp toys
    )
)
# DPM-Solver++(3M): with equal lambda steps its leading global error from t_max is nearly a boundary term (on a
# single Gaussian it measures 4 there, and its slope wanders on sharp mixtures: the multistep chapter, "Why some
# settings are not registered"), so its order is measured on the closed-form Gaussian from lambda = -1 to 3, where
# the boundary term no longer hides it. The paper's first-order start leaves an O(h^2) error: globally second order.
_3M_SPAN = (-1.0, 3.0)
_3M_NOTE = (
    "from t_max the error on a single Gaussian is a boundary term (slope 4) and on sharp mixtures the slope wanders "
    "(the multistep chapter): the order is measured on the Gaussian over lambda in [-1, 3]"
)
register(
    SamplerSpec(
        name="dpm_solver_pp_3m_2s",
        sample=sample_dpm_solver_pp_multistep,
        order=3,
        stochastic=False,
        paper="lu2022dpmsolverpp",
        equation="arXiv:2211.01095v3 Sec. 4, DPM-Solver++(3M) (exact phi integrals of the quadratic), 2S first step",
        nfe=lambda n: n + 1,
        options={"order": 3, "warmup": "singlestep"},
        order_check="gaussian",
        order_note=_3M_NOTE,
        order_span=_3M_SPAN,
    )
)
register(
    SamplerSpec(
        name="dpm_solver_pp_3m",
        sample=sample_dpm_solver_pp_multistep,
        order=2,
        stochastic=False,
        paper="lu2022dpmsolverpp",
        equation="arXiv:2211.01095v3 Sec. 4, DPM-Solver++(3M) with the paper's lower-order start (orders 1, 2, 3, ...)",
        options={"order": 3},
        order_check="gaussian",
        order_note=_3M_NOTE + "; the first-order first step caps the global order at 2",
        order_span=_3M_SPAN,
    )
)
register(
    SamplerSpec(
        name="sde_dpm_solver_pp_2m",
        sample=sample_sde_dpm_solver_pp,
        order=2,
        stochastic=True,
        paper="lu2022dpmsolverpp",
        equation="arXiv:2211.01095v3, SDE-DPM-Solver++(2M) (midpoint form; weak order 2 measured on Gaussian data)",
        options={"order": 2},
    )
)
