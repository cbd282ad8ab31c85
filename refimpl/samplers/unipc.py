"""UniPC: the unified predictor (UniP) and corrector (UniC) of Zhao et al. (2023), arXiv:2302.04867v4.

Both are exponential integrators in lambda = log(alpha / sigma) (Lu et al. 2022, arXiv:2206.00927v3,
Sec. 3.1). Write the model output m as the data prediction x0 (``prediction="x0"``, hh = -h) or the
noise prediction eps (``prediction="eps"``, hh = h), with h = lambda_t - lambda_s for a step s -> t (the paper
steps from t_{i-1} to t_i). The exact solution expands as (Taylor expansion of m in lambda around the start s)

    x_t = c x_s - k_t hh phi_1(hh) m_s - k_t sum_{n>=1} hh^{n+1} phi_{n+1}(hh) m^(n)
          (c, k_t) = (sigma_t / sigma_s, alpha_t) for x0, (alpha_t / alpha_s, sigma_t) for eps,

and UniPC replaces the sum by B(hh) sum_m a_m D_m / r_m, with the differences D_m = m_{s_m} - m_s at
earlier (or, for the corrector, later) points lambda_{s_m} = lambda_s + r_m h. Matching the Taylor
coefficients of orders 1..p gives the linear system of their Theorem 3.1 (Eq. 7-8):

    sum_m a_m r_m^(k-1) = g_k(hh) := hh phi_{k+1}(hh) k! / B(hh),   k = 1..p,

with B(h) = h ("bh1") or B(h) = e^h - 1 ("bh2"), their Sec. 3.3. Solving it integrates the Lagrange
interpolant of the p + 1 outputs exactly, whatever B(h) (B cancels): the step is a setting of the multistep
engine (``refimpl.samplers.multistep``; tests/test_multistep.py checks the engine's weights against Eq. 8).
UniP-p uses the p - 1 previous outputs (order p); UniC-p re-does the step with the output at the new point
added (r = 1), which costs no model call because that output is needed by the next step anyway, and raises the
order to p + 1. The official code and diffusers replace the solved coefficient of UniP-2 and UniC-1 by its
limit 1/2 (``simplified=True``, the default); both choices have the same order, and only then does B(h) matter.
UniP-2 with bh2 and the 1/2 is multistep DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2).

The sampler (their Algorithm 2, multistep) runs UniP of order min(i + 1, p) at step i and applies
UniC to every step but the last. UniPC-p with the corrector has order p + 1 (measured for p = 1, 2).
For p = 3 the warm-up step (UniP-1 = DDIM, then UniC-1) has local error O(h^3) and caps the order at 3
in theory, but its constant carries the derivative of the x0 prediction at t_max, of size alpha_T^2,
so on the toys the error follows order 4 down to round-off.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from refimpl._validation import check_float_tensors, check_kinds
from refimpl.models import DiffusionModel
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback
from refimpl.samplers.dpm_solver import ASYMPTOTIC_STEPS
from refimpl.samplers.multistep import (
    B_FUNCTIONS,
    INTEGRANDS,
    SETTINGS,
    MultistepSetting,
    multistep_step,
    sample_multistep,
)
from refimpl.schedules import ScheduleValues

__all__ = ["sample_unipc", "unipc_corrector_step", "unipc_predictor_step", "unipc_setting"]

MAX_ORDER = 3


def unipc_setting(variant: str, prediction: str, simplified: bool) -> MultistepSetting:
    """The engine's setting for UniPC with B(h) ``variant``: with the solved coefficients (``simplified=False``)
    B(h) cancels from Eq. 7-8 and the step is the exact integral of the interpolant (rows ``dpm_solver_pp_exact``,
    ``deis_logrho``); with the official 1/2 it is the row ``unipc_<variant>[_eps]``."""
    check_kinds(str, variant=variant, prediction=prediction)
    if variant not in B_FUNCTIONS:
        raise ValueError(f"unknown B(h) variant {variant!r}; choose one of {B_FUNCTIONS}")
    if prediction not in INTEGRANDS:
        raise ValueError(f"prediction must be one of {INTEGRANDS}, got {prediction!r}")
    if simplified:
        return SETTINGS[f"unipc_{variant}" + ("_eps" if prediction == "eps" else "")]
    return SETTINGS["dpm_solver_pp_exact" if prediction == "x0" else "deis_logrho"]


def unipc_predictor_step(
    x: Tensor,
    m_s: Tensor,
    history: list[tuple[Tensor, Tensor]],
    v_s: ScheduleValues,
    v_t: ScheduleValues,
    *,
    variant: str = "bh2",
    prediction: str = "x0",
    simplified: bool = True,
) -> Tensor:
    """UniP-p from s to t: ``history`` holds the p - 1 earlier (lambda, output) pairs, newest first.

    x, m_s (B, ...): the state and the model output (kind ``prediction``) at s. Zhao et al. (2023), Eq. 7-8.
    """
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x, m_s=m_s)
    check_kinds((list, tuple), history=history)
    setting = unipc_setting(variant, prediction, simplified)
    return multistep_step(x, [(v_s.lambda_, m_s), *history], v_s, v_t, setting)


def unipc_corrector_step(
    x: Tensor,
    m_s: Tensor,
    history: list[tuple[Tensor, Tensor]],
    m_t: Tensor,
    v_s: ScheduleValues,
    v_t: ScheduleValues,
    *,
    variant: str = "bh2",
    prediction: str = "x0",
    simplified: bool = True,
) -> Tensor:
    """UniC-p: re-do the step s -> t from x (at s) with m_t, the model output at the predicted point at t, added.

    ``history`` holds the p - 1 earlier (lambda, output) pairs used by the predictor, newest first.
    Zhao et al. (2023), Eq. 7-8 with r_p = 1 (Algorithm 1).
    """
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x, m_s=m_s, m_t=m_t)
    check_kinds((list, tuple), history=history)
    setting = unipc_setting(variant, prediction, simplified)
    return multistep_step(x, [(v_s.lambda_, m_s), (v_t.lambda_, m_t), *history], v_s, v_t, setting)


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
    orders: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Multistep UniPC-p (Zhao et al. 2023, Algorithm 2): UniP of order ``order``, UniC after every step but the last.

    One model call per step. ``corrector=False`` gives UniP alone (order p). ``orders`` (one predictor order per
    step, each at most the number of outputs seen; ``step_orders(n, p, lower_final=True)`` is diffusers'
    ``lower_order_final``) overrides the warm-up min(i + 1, p).
    """
    setting = unipc_setting(variant, prediction, simplified)
    method = next(name for name, row in SETTINGS.items() if row is setting)
    return sample_multistep(
        model, x, timesteps, method=method, order=order, orders=orders, corrector=corrector, callback=callback
    )


# UniPC-1 and UniPC-2 with both B(h), in data and noise prediction. The toys' sharp modes keep UniPC-2 pre-asymptotic
# for long: its third-order error constant is small, so the fourth-order term competes with it up to hundreds of
# steps (local slopes in the multistep chapter, "Why some settings are not registered"). On the sharpest mixtures the
# strategy draws (1-D modes of variance 0.05, to t_min) the B(h) = e^h - 1 variants' local slopes stay above 3 and
# nearly level below 256 steps, then fall towards 3: slopes taken from 64 steps can look settled there, while from 128
# steps on they fall by more than the settling threshold, and the doublings carry the measurement on into the
# asymptotic regime. The shared mixture test runs the three finest counts (from 128 steps on); the closed-form
# Gaussian test, where no such plateau occurs, fits all four (from 64).
# UniPC-3 (UniP-3 + UniC): the warm-up step (UniP-1, then UniC-1) has local error O(h^3), which
# caps the global order at 3; from t_max its error on a single Gaussian follows order 4 (the warm-up's constant
# carries alpha_T^2) and on sharp mixtures it changes sign between 16 and 512 steps (the multistep chapter), so its
# order is measured on the closed-form Gaussian over lambda in [-1, 3], from 128 steps (local slopes settle towards 3).
_ASYMPTOTIC = (64, 128, 256, 512)
for _p, _variant, _prediction in (
    (1, "bh1", "x0"), (1, "bh2", "x0"), (2, "bh1", "x0"), (2, "bh2", "x0"),
    (1, "bh1", "eps"), (1, "bh2", "eps"), (2, "bh1", "eps"), (2, "bh2", "eps"),
):  # fmt: skip
    register(
        SamplerSpec(
            name=f"unipc{_p}_{_variant}" + ("_eps" if _prediction == "eps" else ""),
            sample=sample_unipc,
            order=_p + 1,
            stochastic=False,
            paper="zhao2023unipc",
            equation=f"arXiv:2302.04867v4 Algorithm 2, UniP-{_p} + UniC, B(h) {_variant}, {_prediction} prediction",
            options={"order": _p, "variant": _variant, "prediction": _prediction},
            order_steps=_ASYMPTOTIC if _p == 2 else ASYMPTOTIC_STEPS[2],
        )
    )
for _variant, _prediction in (("bh1", "x0"), ("bh2", "x0"), ("bh1", "eps"), ("bh2", "eps")):
    register(
        SamplerSpec(
            name=f"unipc3_{_variant}" + ("_eps" if _prediction == "eps" else ""),
            sample=sample_unipc,
            order=3,
            stochastic=False,
            paper="zhao2023unipc",
            equation=f"arXiv:2302.04867v4 Algorithm 2, UniP-3 + UniC, B(h) {_variant}, {_prediction} prediction",
            options={"order": 3, "variant": _variant, "prediction": _prediction},
            order_check="gaussian",
            order_note="from t_max superconvergent on a single Gaussian (order 4), sign changes on sharp mixtures "
            "(the multistep chapter): measured on the Gaussian over lambda in [-1, 3] from 128 steps",
            order_span=(-1.0, 3.0),
            order_steps=(128, 256, 512, 1024),
        )
    )
