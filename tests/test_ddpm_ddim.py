"""DDPM and DDIM: the sympy posterior, DDIM(eta=1) = DDPM, exact laws, inversion and bad input."""

from __future__ import annotations

import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import schedules, times
from tolerances import IDENTITY_RTOL, ORDER_TOL, U64, clt_bound, roundoff

from refimpl import get_sampler, grids
from refimpl.reference import convergence_order
from refimpl.samplers import (
    Trajectory,
    ddim_sigma,
    ddpm_posterior,
    forward_sample,
    invert_ddim,
    posterior_symbolic,
    sample_ddim,
    sample_ddpm,
)
from refimpl.schedules import get_schedule
from toy_models import ExactModel, random_mixture, ring

VP_NAMES = ["vp_linear", "vp_cosine", "ddpm_linear", "scaled_linear"]


@pytest.mark.parametrize("name", VP_NAMES)
def test_sympy_posterior_equals_the_numeric_one(name: str) -> None:
    """Completing the square in sympy gives the coefficients and variance that ddpm_posterior computes."""
    sym = posterior_symbolic()
    args = (sym["abar_s"], sym["abar_t"])
    coef_xt, coef_x0, var = (sp.lambdify(args, sym[k]) for k in ("coef_xt", "coef_x0", "variance"))
    s = get_schedule(name)
    ts = grids.uniform_lambda(s, 7)
    for i in range(len(ts) - 1):
        v_s, v_t = s(ts[i]), s(ts[i + 1])  # a step from s to t < s
        # posterior_symbolic keeps DDPM's letters: its abar_t is the step's start, its abar_s the end
        abar_s, abar_t = float(v_t.alpha**2), float(v_s.alpha**2)
        mean_xt, var_num = ddpm_posterior(torch.ones(1), torch.zeros(1), v_s, v_t)
        mean_x0, _ = ddpm_posterior(torch.zeros(1), torch.ones(1), v_s, v_t)
        assert float(mean_xt) == pytest.approx(coef_xt(abar_s, abar_t), rel=IDENTITY_RTOL)
        assert float(mean_x0) == pytest.approx(coef_x0(abar_s, abar_t), rel=IDENTITY_RTOL)
        assert float(var_num) == pytest.approx(var(abar_s, abar_t), rel=IDENTITY_RTOL)


def test_sympy_posterior_is_the_ddpm_paper_formula() -> None:
    """Ho et al. (2020), Eq. 7: beta-tilde = (1 - abar_s)/(1 - abar_t) beta, beta = 1 - abar_t/abar_s."""
    sym = posterior_symbolic()
    abar_s, abar_t = sym["abar_s"], sym["abar_t"]
    beta = 1 - abar_t / abar_s
    assert sp.simplify(sym["variance"] - (1 - abar_s) / (1 - abar_t) * beta) == 0
    assert sp.simplify(sym["coef_x0"] - sp.sqrt(abar_s) * beta / (1 - abar_t)) == 0
    assert sp.simplify(sym["coef_xt"] - sp.sqrt(abar_t / abar_s) * (1 - abar_s) / (1 - abar_t)) == 0


@given(s=schedules(), data=st.data())
def test_ddim_eta_one_has_the_ddpm_posterior_variance(s, data) -> None:
    """sigma_tilde(eta = 1)^2 = sigma_t^2 (1 - e^{-2h}) = the DDPM posterior variance of a step s -> t.

    Bound: the posterior variance subtracts alpha_{s|t}^2 sigma_t^2 from sigma_s^2, which cancels all but a
    fraction 1 - e^{-2h} of it: 16 operations times the condition number 1 / (1 - e^{-2h}).
    """
    start = data.draw(times(s, 0.0, 0.9))
    end = data.draw(times(s, 0.0, 1.0).filter(lambda u: s.lambda_t(u) > s.lambda_t(start) + 1e-3))
    v_s, v_t = s(start), s(end)
    _, var = ddpm_posterior(torch.zeros(1), torch.zeros(1), v_s, v_t)
    condition = 1.0 / float(-torch.expm1(-2.0 * (v_t.lambda_ - v_s.lambda_)))
    assert float(ddim_sigma(1.0, v_s, v_t) ** 2) == pytest.approx(float(var), rel=roundoff(16, 1.0, U64, condition))


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_ddim_with_eta_is_stochastic_by_its_rule(name: str) -> None:
    """The "ddim" entry is deterministic and "ddim_eta_half" stochastic; the rule follows eta, and the registered
    eta = 1/2 sampler uses its noise (two noises give two outputs) on both schedule families."""
    ddim, ddim_eta = get_sampler("ddim"), get_sampler("ddim_eta_half")
    assert not ddim.stochastic and ddim.is_stochastic(eta=0.5) and not ddim.is_stochastic(eta=0.0)
    assert ddim_eta.stochastic and ddim_eta.options["eta"] == 0.5 and not ddim_eta.is_stochastic(eta=0.0)
    s = get_schedule(name)
    model, ts = ExactModel(ring(), s), grids.uniform_t(s, 5)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    a = ddim_eta(model, x, ts, generator=torch.Generator().manual_seed(1))
    b = ddim_eta(model, x, ts, generator=torch.Generator().manual_seed(2))
    assert float((a - b).abs().max()) > roundoff(16 * 5, float(a.abs().max()))


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_ddim_eta_one_is_ddpm_with_the_same_noise(name: str) -> None:
    """Two code paths (DDIM's Eq. 12 and DDPM's posterior) give one trajectory to round-off."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    ts = grids.uniform_t(s, 40)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g) * s.sigma_t(s.t_max)
    noise = torch.randn(40, 64, 2, generator=g)
    a = sample_ddim(model, x, ts, eta=1.0, noise=noise)
    b = sample_ddpm(model, x, ts, noise=noise)
    assert float((a - b).abs().max()) <= IDENTITY_RTOL * float(a.abs().max())


@pytest.mark.slow
@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_with_the_exact_model_samples_the_exact_law(variance: str) -> None:
    """Ancestral sampling from p_T with the exact model gives p at t_min: mean and covariance within CLT bounds.

    With 1000 steps of the discrete DDPM schedule the sampler's own discretisation bias is far
    below the Monte Carlo error of n = 40000 samples (its weak order is 1).
    """
    s = get_schedule("ddpm_linear")
    gmm = random_mixture(K=3, d=2, seed=4)
    model = ExactModel(gmm, s)
    n = 40_000
    g = torch.Generator().manual_seed(1)
    _, x_T = model.sample_xt(n, s.t_max, g)
    x = sample_ddpm(model, x_T, grids.uniform_t(s, 999), variance=variance, generator=g)
    mean, cov = model.marginal(s.t_min).moments()
    centred = x - mean
    assert bool((centred.mean(0).abs() <= clt_bound(centred.std(0), n)).all())
    prods = centred[:, :, None] * centred[:, None, :]
    assert bool(((prods.mean(0) - cov).abs() <= clt_bound(prods.std(0), n)).all())


def test_forward_sample_and_trajectory() -> None:
    s = get_schedule("vp_linear")
    v = s(0.3)
    x0, eps = torch.randn(3, 2), torch.randn(3, 2)
    torch.testing.assert_close(forward_sample(x0, v, eps), v.alpha * x0 + v.sigma * eps)
    model = ExactModel(ring(), s)
    traj = Trajectory()
    ts = grids.uniform_lambda(s, 5)
    out = sample_ddim(model, torch.randn(3, 2), ts, callback=traj)
    assert traj.xs.shape == (6, 3, 2) and traj.x0s.shape == (5, 3, 2)
    torch.testing.assert_close(traj.xs[-1], out, rtol=0, atol=0)
    torch.testing.assert_close(traj.times, ts, rtol=0, atol=0)


def test_ddim_inversion_round_trip_error_shrinks_at_first_order() -> None:
    """Invert then sample: the round-trip error of DDIM inversion is O(h), so it halves as steps double.

    Below about 100 steps inversion can carry a point across to another mode (the error is O(1)
    there), so the asymptotic regime starts at 128 steps on this toy.
    """
    s = get_schedule("vp_linear")
    model = ExactModel(random_mixture(K=3, d=2, seed=2), s)
    x0 = model.sample_xt(16, s.t_min, torch.Generator().manual_seed(0))[1]
    steps = (128, 256, 512)
    errors = []
    for n in steps:
        ts = grids.uniform_lambda(s, n)
        errors.append(float((sample_ddim(model, invert_ddim(model, x0, ts), ts) - x0).abs().max()))
    assert convergence_order(steps, errors).order == pytest.approx(1.0, abs=ORDER_TOL)


def test_bad_sampler_input_raises() -> None:
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x = torch.randn(4, 2)
    ts = grids.uniform_t(s, 4)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_ddim(model, x, ts.flip(0))
    with pytest.raises(ValueError, match="must lie in"):
        sample_ddim(model, x, torch.tensor([2.0, 0.5]))
    with pytest.raises(ValueError, match="non-finite"):
        sample_ddim(model, x * float("nan"), ts)
    with pytest.raises(ValueError, match="shape"):
        sample_ddim(model, torch.randn(4, 3), ts)
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(model, x, ts, eta=1.5)
    with pytest.raises(ValueError, match="noise must have shape"):
        sample_ddpm(model, x, ts, noise=torch.randn(3, 4, 2))
    with pytest.raises(ValueError, match="variance"):
        sample_ddpm(model, x, ts, variance="learned")
    with pytest.raises(TypeError, match="schedule"):
        sample_ddim(lambda x, t: x, x, ts)


@pytest.mark.parametrize("name", ["vp_cosine", "edm"])
def test_ddim_noise_is_linear_in_eta_and_eta_one_is_the_ddpm_posterior_off_vp(name: str) -> None:
    """eta strictly between 0 and 1 scales sigma_tilde linearly (Eq. 16), and at eta = 1 sigma_tilde^2 is DDPM's
    posterior variance sigma_{s|t}^2 sigma_t^2 / sigma_s^2, written out here with alpha_{s|t} = alpha_s / alpha_t
    (not a VP-only identity: on EDM alpha = 1). Each side is a few operations: 16 roundings of its size."""
    s = get_schedule(name)
    ts = torch.tensor([0.8 * s.t_max, 0.35 * s.t_max], dtype=torch.float64)
    v_s, v_t = s(ts)[0], s(ts)[1]
    full = ddim_sigma(1.0, v_s, v_t)
    for eta in (0.25, 0.5, 0.9):
        assert abs(float(ddim_sigma(eta, v_s, v_t) - eta * full)) <= roundoff(16, float(full))
    a_st = v_s.alpha / v_t.alpha
    var_st = v_s.sigma**2 - a_st**2 * v_t.sigma**2
    expected = var_st * v_t.sigma**2 / v_s.sigma**2
    x = torch.ones(1, 2, dtype=torch.float64)
    _, var = ddpm_posterior(x, x, v_s, v_t)
    assert abs(float(var - expected)) <= roundoff(16, float(expected))
    assert abs(float(full**2 - expected)) <= roundoff(16, float(expected))
