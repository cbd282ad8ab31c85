"""UniPC: UniP-1 is DDIM, the coefficient system, the corrector against its closed form, diffusers, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import UniPCMultistepScheduler
from hypothesis import given
from hypothesis import strategies as st
from strategies import schedules
from tolerances import IDENTITY_RTOL, ORDER_TOL

from refimpl import grids
from refimpl.models import CountingModel, predict_x0_eps
from refimpl.reference import measure_order
from refimpl.samplers import sample_ddim, sample_unipc, step_orders, unipc_corrector_step, unipc_predictor_step
from refimpl.samplers._exponential import phi
from refimpl.schedules import DiscreteVP, get_schedule
from toy_models import ExactModel, anisotropic_gaussian, random_mixture, ring


@given(s=schedules(), n=st.integers(1, 10), prediction=st.sampled_from(["x0", "eps"]))
def test_unip_1_is_ddim(s, n: int, prediction: str) -> None:
    """UniP-1 without corrector is the first-order exponential integrator, i.e. DDIM, in either prediction."""
    model = ExactModel(ring(), s)
    x = model.sample_xt(5, s.t_max, torch.Generator().manual_seed(n))[1]
    ts = grids.uniform_lambda(s, n)
    a = sample_unipc(model, x, ts, order=1, corrector=False, prediction=prediction)
    b = sample_ddim(model, x, ts)
    v = s(ts)
    scale = float(b.abs().max()) + float(x.abs().max()) * float((v.alpha[1:] / v.alpha[:-1]).max())
    assert float((a - b).abs().max()) <= IDENTITY_RTOL * scale


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("prediction", ["x0", "eps"])
@given(h=st.floats(0.01, 3.0), r=st.lists(st.floats(-3.0, -0.2), min_size=1, max_size=2, unique=True))
def test_solved_unip_is_eq_7_with_the_coefficients_of_eq_8(variant: str, prediction: str, h: float, r: list) -> None:
    """UniP with solved coefficients (the engine's exact weights) = their Eq. 7 with a from the Vandermonde system of
    Eq. 8, sum_m a_m r_m^(k-1) = hh phi_{k+1}(hh) k! / B(hh), solved here (Zhao et al. 2023, Theorem 3.1)."""
    s = get_schedule("vp_linear")
    v_s = s(s.t_of_lambda(-1.0))
    v_t = s(s.t_of_lambda(-1.0 + h))
    rks = torch.tensor(r, dtype=torch.float64)
    x, m_s = (
        torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(901)),
        torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(902)),
    )
    ms = [torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(903)) for _ in r]
    hh, c, k_t = (-h, v_t.sigma / v_s.sigma, v_t.alpha) if prediction == "x0" else (h, v_t.alpha / v_s.alpha, v_t.sigma)
    hh = torch.tensor(hh, dtype=torch.float64)
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    R = torch.stack([rks ** (k - 1) for k in range(1, len(r) + 1)])
    g = torch.stack([hh * phi(k + 1, hh) * math.factorial(k) / b_h for k in range(1, len(r) + 1)])
    a = torch.linalg.solve(R, g)
    expected = (
        c * x
        - k_t * torch.expm1(hh) * m_s
        - k_t * b_h * sum(a_m * (m_m - m_s) / r_m for a_m, r_m, m_m in zip(a, rks, ms, strict=True))
    )
    history = [(v_s.lambda_ + r_m * (v_t.lambda_ - v_s.lambda_), m_m) for r_m, m_m in zip(rks, ms, strict=True)]
    got = unipc_predictor_step(x, m_s, history, v_s, v_t, variant=variant, prediction=prediction, simplified=False)
    cond = float(torch.linalg.cond(R))  # the solve's round-off grows with the Vandermonde condition number
    scale = float(expected.abs().max()) + float(x.abs().max()) + float(torch.stack(ms).abs().max())
    assert float((got - expected).abs().max()) <= IDENTITY_RTOL * cond * scale


@pytest.mark.parametrize("prediction", ["x0", "eps"])
def test_unic_1_is_the_exponential_integral_of_the_linear_interpolant(prediction: str) -> None:
    """With the solved coefficient, UniC-1 integrates the straight line through (lambda_s, m_s), (lambda_t, m_t)
    exactly: x_t = DDIM - k_t hh^2 phi_2(hh) (m_t - m_s) / hh (the exponential trapezoidal rule), for both B(h)."""
    s = get_schedule("vp_linear")
    v_s, v_t = s(0.6), s(0.35)
    x, m_s, m_t = (
        torch.randn(4, 3, generator=torch.Generator().manual_seed(904)),
        torch.randn(4, 3, generator=torch.Generator().manual_seed(905)),
        torch.randn(4, 3, generator=torch.Generator().manual_seed(906)),
    )
    h = v_t.lambda_ - v_s.lambda_
    hh, c, k_t = (-h, v_t.sigma / v_s.sigma, v_t.alpha) if prediction == "x0" else (h, v_t.alpha / v_s.alpha, v_t.sigma)
    expected = c * x - k_t * torch.expm1(hh) * m_s - k_t * hh * phi(2, hh) * (m_t - m_s)
    for variant in ("bh1", "bh2"):
        got = unipc_corrector_step(x, m_s, [], m_t, v_s, v_t, variant=variant, prediction=prediction, simplified=False)
        assert float((got - expected).abs().max()) <= IDENTITY_RTOL * float(expected.abs().max())


def _diffusers_unipc(order: int, variant: str, predict_x0: bool, lower_order_final: bool, n: int):
    """diffusers' UniPCMultistepScheduler ("linspace" spacing, final sigma at step 0) with float64 sigmas.

    Convention: its DDPM step k is our t = (k + 1) / N and its last sigma ("sigma_min") is step 0, t = 1 / N;
    it stores sigmas in float32, so we put ours (float64, the same schedule) in their place.
    """
    s = DiscreteVP.ddpm_linear()
    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, solver_order=order, solver_type=variant,
        predict_x0=predict_x0, lower_order_final=lower_order_final, timestep_spacing="linspace",
        final_sigmas_type="sigma_min",
    )  # fmt: skip
    scheduler.set_timesteps(n)
    ts = torch.tensor([(int(k) + 1) / 1000 for k in scheduler.timesteps] + [1 / 1000], dtype=torch.float64)
    scheduler.sigmas = torch.exp(-s.lambda_t(ts))
    return s, scheduler, ts


@pytest.mark.parametrize(
    ("order", "variant", "predict_x0", "lower_order_final"),
    [(1, "bh2", True, False), (2, "bh1", True, False), (2, "bh2", True, True), (3, "bh1", True, True),
     (3, "bh2", True, False), (2, "bh2", False, False), (3, "bh1", False, True)],
)  # fmt: skip
def test_agrees_with_diffusers(order: int, variant: str, predict_x0: bool, lower_order_final: bool) -> None:
    n = 7
    s, scheduler, ts = _diffusers_unipc(order, variant, predict_x0, lower_order_final, n)
    model = ExactModel(random_mixture(K=3, d=2, seed=3), s)
    x = model.sample_xt(5, ts[0], torch.Generator().manual_seed(1))[1]
    theirs = x
    for k, t in zip(scheduler.timesteps, ts, strict=False):
        theirs = scheduler.step(model(theirs, t), k, theirs).prev_sample
    prediction = "x0" if predict_x0 else "eps"
    orders = step_orders(n, order, lower_final=lower_order_final)  # diffusers' lower_order_final, as per-step orders
    ours = sample_unipc(model, x, ts, order=order, variant=variant, prediction=prediction, orders=orders)
    assert float((ours - theirs).abs().max()) <= IDENTITY_RTOL * float(ours.abs().max())


def test_the_corrector_raises_the_order_by_one() -> None:
    """UniP-1 and UniP-2 alone are of order 1 and 2; with UniC, 2 and 3 (measured on the Gaussian toy)."""
    s = get_schedule("vp_linear")
    model = ExactModel(anisotropic_gaussian(3, seed=1), s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(0))[1]
    ref = model.pf_ode_map(x, s.t_max, s.t_min)
    for p, corrector, order in [(1, False, 1), (1, True, 2), (2, False, 2), (2, True, 3)]:
        result = measure_order(
            lambda m, x, ts, p=p, c=corrector: sample_unipc(m, x, ts, order=p, variant="bh1", corrector=c),
            model, x, (32, 64, 128, 256), reference=ref,
        )  # fmt: skip
        assert result.order == pytest.approx(order, abs=ORDER_TOL), str(result)


def test_one_model_call_per_step_with_the_corrector() -> None:
    s = get_schedule("vp_cosine")
    for order in (1, 2, 3):
        for n in (1, 2, 5):
            model = CountingModel(ExactModel(ring(), s))
            sample_unipc(
                model,
                torch.randn(3, 2, generator=torch.Generator().manual_seed(907)),
                grids.uniform_lambda(s, n),
                order=order,
            )
            assert model.calls == n


def test_bad_input() -> None:
    s = get_schedule("vp_linear")
    model, x, ts = (
        ExactModel(ring(), s),
        torch.randn(3, 2, generator=torch.Generator().manual_seed(908)),
        grids.uniform_t(s, 5),
    )
    for order in (0, 4, 2.5, True):
        with pytest.raises(ValueError, match="order"):
            sample_unipc(model, x, ts, order=order)
    with pytest.raises(ValueError, match="B\\(h\\)"):
        sample_unipc(model, x, ts, variant="bh3")
    with pytest.raises(ValueError, match="prediction"):
        sample_unipc(model, x, ts, prediction="v")
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_unipc(model, x, ts.flip(0))
    v_s, v_t = s(ts[0]), s(ts[1])
    x0, _ = predict_x0_eps(model, x, ts[0])
    with pytest.raises(ValueError, match="orders\\[0\\] = 2"):
        sample_unipc(model, x, ts, order=2, orders=[2, 2, 2, 2, 2])
    with pytest.raises(ValueError, match="B\\(h\\)"):
        unipc_predictor_step(x, x0, [(v_s.lambda_ - 0.1, x0)], v_s, v_t, variant="bh0", simplified=False)
