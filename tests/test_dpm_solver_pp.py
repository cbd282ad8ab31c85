"""DPM-Solver++: DDIM identities, thresholding, multistep history and warm-up, diffusers, and the SDE solver's law.

Measured orders of dpm_solver_pp_2s/2m/3m come from the shared registry tests.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.integrate import quad
from tolerances import (
    IDENTITY_RTOL,
    ORDER_TOL,
    SOLVER_OPS_PER_STEP,
    U32,
    U64,
    clt_bound,
    gaussian_covariance_clt,
    roundoff,
)

from refimpl import grids
from refimpl.reference import affine_output_law, convergence_order, measure_order
from refimpl.samplers import (
    dynamic_thresholding,
    sample_ddim,
    sample_ddpm,
    sample_dpm_solver_pp_multistep,
    sample_sde_dpm_solver_pp,
)
from refimpl.samplers.dpm_solver_pp import dpm_solver_pp_multistep_step
from refimpl.samplers.multistep import step_orders
from refimpl.schedules import DiscreteVP, get_schedule
from toy_models import ExactModel, anisotropic_gaussian, ring

SCHEDULES = ["vp_linear", "vp_cosine", "ddpm_linear", "edm"]


@pytest.mark.parametrize("name", SCHEDULES)
def test_first_order_members_are_ddim_and_ddpm(name: str) -> None:
    """DPM-Solver++(1) is DDIM; SDE-DPM-Solver++(1) is DDPM's ancestral step, with the same noise."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    g = torch.Generator().manual_seed(0)
    x = model.sample_xt(16, s.t_max, g)[1]
    ts = grids.uniform_t(s, 12)
    ddim = sample_ddim(model, x, ts)
    pp1 = sample_dpm_solver_pp_multistep(model, x, ts, order=1)
    assert float((pp1 - ddim).abs().max()) <= IDENTITY_RTOL * float(ddim.abs().max())
    noise = torch.randn(12, *x.shape, generator=g)
    ddpm = sample_ddpm(model, x, ts, noise=noise)
    sde1 = sample_sde_dpm_solver_pp(model, x, ts, order=1, noise=noise)
    assert float((sde1 - ddpm).abs().max()) <= IDENTITY_RTOL * float(ddpm.abs().max())


# --- dynamic thresholding --------------------------------------------------------------------------
arrays = st.lists(st.floats(-6.0, 6.0), min_size=12, max_size=12).map(lambda v: torch.tensor(v).reshape(3, 4))


@given(x0=arrays, ratio=st.floats(0.5, 1.0), max_value=st.floats(0.5, 3.0))
@example(x0=torch.full((3, 4), 6.0), ratio=1.0, max_value=1.0)
def test_thresholding_is_a_projection_into_the_data_range(x0: torch.Tensor, ratio: float, max_value: float) -> None:
    """Idempotent (to round-off: a second pass may see s one ulp above max_value) and lands in range."""
    once = dynamic_thresholding(x0, ratio, max_value)
    twice = dynamic_thresholding(once, ratio, max_value)
    assert float(once.abs().max()) <= max_value * (1 + 4 * U64)
    torch.testing.assert_close(twice, once, rtol=4 * U64, atol=4 * U64 * max_value)


@given(x0=arrays, ratio=st.floats(0.5, 1.0), max_value=st.floats(0.5, 3.0))
def test_thresholding_leaves_in_range_predictions_unchanged(x0: torch.Tensor, ratio: float, max_value: float) -> None:
    inside = x0.clamp(-max_value, max_value)
    torch.testing.assert_close(dynamic_thresholding(inside, ratio, max_value), inside, rtol=0, atol=0)


def test_thresholding_scales_outliers_back_and_checks_its_arguments() -> None:
    x0 = torch.tensor([[0.5, -4.0, 2.0, 1.0]])
    # ratio 1: s = max |x0| = 4, so x0 * 1 / 4
    torch.testing.assert_close(dynamic_thresholding(x0, 1.0, 1.0), x0 / 4)
    with pytest.raises(ValueError, match="ratio"):
        dynamic_thresholding(x0, 0.0)
    with pytest.raises(ValueError, match="max_value"):
        dynamic_thresholding(x0, 0.9, -1.0)


def test_thresholding_inside_the_sampler_is_inactive_on_in_range_data() -> None:
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(0))[1]
    ts = grids.uniform_lambda(s, 10)
    plain = sample_dpm_solver_pp_multistep(model, x, ts)
    # Tweedie's x0 is a convex combination of points within a few std of the means: |x0| < 3 here
    wide = sample_dpm_solver_pp_multistep(model, x, ts, thresholding=True, max_value=10.0)
    torch.testing.assert_close(wide, plain, rtol=0, atol=0)
    tight = sample_dpm_solver_pp_multistep(model, x, ts, thresholding=True, max_value=1.0)
    assert float(tight.abs().max()) < float(plain.abs().max())


# --- multistep history and warm-up -----------------------------------------------------------------
def test_an_order_above_the_available_history_raises() -> None:
    s = get_schedule("vp_linear")
    v = s(grids.uniform_t(s, 2))
    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(901))
    with pytest.raises(ValueError, match="order 3 needs 3 past data predictions, got 2"):
        dpm_solver_pp_multistep_step(x, [x, x], [v.lambda_[1], v.lambda_[0]], v[1], v[2], 3)
    with pytest.raises(ValueError, match="order"):
        sample_dpm_solver_pp_multistep(ExactModel(ring(), s), x, grids.uniform_t(s, 3), order=4)
    with pytest.raises(ValueError, match="warmup"):
        sample_dpm_solver_pp_multistep(ExactModel(ring(), s), x, grids.uniform_t(s, 3), order=3, warmup="none")


@pytest.mark.parametrize(
    ("options", "order"),
    [
        ({"warmup": "singlestep"}, 3),
        ({"warmup": "lower_order"}, 2),  # the paper's warm-up: a first-order first step, O(h^2) for good
        ({"warmup": "singlestep", "lower_final": True}, 2),  # a first-order last step, likewise
    ],
)
def test_3m_keeps_its_order_only_with_a_second_order_warm_up(options: dict, order: int) -> None:
    """From lambda = -1 (where x_theta moves) to lambda = 3: lower-order first or last steps cost an order.

    From t_max the loss hides behind the tiny derivatives of x_theta there (the registry measures 3 for all three).
    """
    s = get_schedule("vp_linear")
    model = ExactModel(anisotropic_gaussian(3, seed=1), s)
    t0, t1 = float(s.t_of_lambda(-1.0)), float(s.t_of_lambda(3.0))
    x = model.sample_xt(4, t0, torch.Generator().manual_seed(0))[1]
    lower_final = options.pop("lower_final", False)

    def sample(m, x_, ts):  # the official lower orders at the last steps, as per-step orders
        orders = step_orders(len(ts) - 1, 3, lower_final=True) if lower_final else None
        return sample_dpm_solver_pp_multistep(m, x_, ts, order=3, orders=orders, **options)

    result = measure_order(
        sample, model, x, (32, 64, 128, 256), t_start=t0, t_end=t1, reference=model.pf_ode_map(x, t0, t1)
    )
    assert result.order == pytest.approx(order, abs=ORDER_TOL), str(result)


def test_2m_matches_diffusers_to_float32_round_off() -> None:
    """The same exact model, timesteps and start: diffusers' DPMSolverMultistepScheduler(dpmsolver++, order 2)."""
    from diffusers import DPMSolverMultistepScheduler

    schedule = DiscreteVP.ddpm_linear()
    model = ExactModel(ring(), schedule)
    x = model.sample_xt(32, schedule.t_max, torch.Generator().manual_seed(0))[1]
    theirs = DPMSolverMultistepScheduler(
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        lower_order_final=False,
        final_sigmas_type="sigma_min",
    )
    n = 20
    theirs.set_timesteps(n)
    sample = x
    for k in theirs.timesteps:
        sample = theirs.step(model(sample, (k.to(torch.float64) + 1) / schedule.N), k, sample).prev_sample
    ts = torch.cat([(theirs.timesteps.to(torch.float64) + 1) / schedule.N, torch.tensor([schedule.t_min])])
    ours = sample_dpm_solver_pp_multistep(model, x, ts, order=2)
    scale = float(ours.abs().max())
    assert float((ours - sample).abs().max()) <= roundoff(SOLVER_OPS_PER_STEP * n, scale, U32)


# --- SDE-DPM-Solver++(2M) on Gaussian data -----------------------------------------------------------
def _gaussian_setup(name: str = "vp_linear"):
    s = get_schedule(name)
    model = ExactModel(anisotropic_gaussian(2, seed=3), s)
    return s, model, model.marginal(s.t_max).moments(), model.marginal(s.t_min).moments()


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_sde_2m_law_converges_at_weak_order_2(name: str) -> None:
    """The exact output law (affine in x_T and the noise) approaches p_{t_min}'s mean and covariance as n^-2."""
    s, model, (m_T, C_T), (m_0, C_0) = _gaussian_setup(name)
    steps = (32, 64, 128, 256)
    errors = []
    for n in steps:
        m, C = affine_output_law(sample_sde_dpm_solver_pp, model, grids.uniform_lambda(s, n), m_T, C_T)
        errors.append(max(float((m - m_0).abs().max()), float((C - C_0).abs().max())))
    result = convergence_order(steps, errors)
    assert result.order == pytest.approx(2.0, abs=ORDER_TOL), str(result)


def test_sde_2m_samples_match_the_exact_law_within_clt_bounds() -> None:
    """Draws with a generator: sample mean and covariance against the sampler's exact law (CLT, z = 5), and
    against p_{t_min} itself within CLT + the exact discretisation bias."""
    s, model, (m_T, C_T), (m_0, C_0) = _gaussian_setup()
    n_samples, n_steps = 20_000, 40
    ts = grids.uniform_lambda(s, n_steps)
    m, C = affine_output_law(sample_sde_dpm_solver_pp, model, ts, m_T, C_T)
    g = torch.Generator().manual_seed(7)
    x_T = model.sample_xt(n_samples, s.t_max, g)[1]
    out = sample_sde_dpm_solver_pp(model, x_T, ts, generator=g)
    mean, cov = out.mean(0), torch.cov(out.T)
    assert bool(((mean - m).abs() <= clt_bound(torch.sqrt(torch.diagonal(C)), n_samples)).all())
    assert bool(((cov - C).abs() <= gaussian_covariance_clt(C, n_samples)).all())
    bias_m, bias_C = (m - m_0).abs(), (C - C_0).abs()
    assert bool(((mean - m_0).abs() <= clt_bound(torch.sqrt(torch.diagonal(C)), n_samples) + bias_m).all())
    assert bool(((cov - C_0).abs() <= gaussian_covariance_clt(C, n_samples) + bias_C).all())


def test_affine_output_law_of_the_exact_flow_is_the_true_marginal() -> None:
    """Probing the exact ODE map (affine for one Gaussian) transports p_T's moments to p_{t_min}'s."""
    s, model, (m_T, C_T), (m_0, C_0) = _gaussian_setup()

    def exact_map(model, x, timesteps):
        return model.pf_ode_map(x, timesteps[0], timesteps[-1])

    m, C = affine_output_law(exact_map, model, grids.uniform_t(s, 1), m_T, C_T, stochastic=False)
    torch.testing.assert_close(m, m_0, rtol=IDENTITY_RTOL, atol=IDENTITY_RTOL)
    torch.testing.assert_close(C, C_0, rtol=IDENTITY_RTOL, atol=IDENTITY_RTOL)


def test_affine_output_law_of_a_non_symmetric_map() -> None:
    """x -> A x + b + N z with a non-symmetric A: mean A m + b, covariance A C A^T + N N^T."""
    s, model, (m_T, C_T), _ = _gaussian_setup()
    A, b, N = torch.tensor([[1.0, 2.0], [-0.5, 0.3]]), torch.tensor([0.2, -1.0]), torch.tensor([[0.4, 0.0], [0.1, 0.2]])

    def affine(model, x, timesteps, noise):
        return x @ A.T + b + noise[0] @ N.T

    m, C = affine_output_law(affine, model, grids.uniform_t(s, 1), m_T, C_T)
    torch.testing.assert_close(m, A @ m_T + b, rtol=IDENTITY_RTOL, atol=IDENTITY_RTOL)
    torch.testing.assert_close(C, A @ C_T @ A.T + N @ N.T, rtol=IDENTITY_RTOL, atol=IDENTITY_RTOL)


def test_sde_bad_input() -> None:
    s = get_schedule("vp_linear")
    model, x, ts = (
        ExactModel(ring(), s),
        torch.randn(2, 2, generator=torch.Generator().manual_seed(902)),
        grids.uniform_t(s, 3),
    )
    with pytest.raises(ValueError, match="order 1 or 2"):
        sample_sde_dpm_solver_pp(model, x, ts, order=3)
    with pytest.raises(ValueError, match="noise must have shape"):
        sample_sde_dpm_solver_pp(model, x, ts, noise=torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_sde_dpm_solver_pp(model, x, ts.flip(0))


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_3m_update_integrates_a_quadratic_data_prediction_exactly(name: str) -> None:
    """If x_theta(lambda) is a quadratic, the 3M step is the exact solution (sigma_t / sigma_s) x_s +
    alpha_t int e^{lambda - lambda_t} x_theta dlambda (scipy quad). Halving the phi_3 term, as the official
    code and diffusers do, misses it by alpha_t h^3 phi_3(-h) x_theta'' / 2."""
    s = get_schedule(name)
    ts = grids.karras(s, 9)[3:7]  # three past points and the target, unequal steps
    v = s(ts)
    lam = [float(v) for v in v.lambda_]
    c0, c1, c2 = 0.3, -0.7, 0.45

    def m(l: float) -> float:
        return c0 + c1 * l + c2 * l**2

    x_s = torch.tensor([[1.3]])
    x0s = [torch.tensor([[m(lam[2 - j])]]) for j in range(3)]  # newest first: at lambda_2, lambda_1, lambda_0
    lambdas = [v.lambda_[2 - j] for j in range(3)]
    ours = dpm_solver_pp_multistep_step(x_s, x0s, lambdas, v[2], v[3], 3)
    integral = quad(lambda l: math.exp(l - lam[3]) * m(l), lam[2], lam[3], epsabs=1e-300, epsrel=1e-13)[0]
    exact = float(v.sigma[3] / v.sigma[2]) * 1.3 + float(v.alpha[3]) * integral
    assert float(ours) == pytest.approx(exact, rel=IDENTITY_RTOL, abs=IDENTITY_RTOL)
