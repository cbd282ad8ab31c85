"""Schedules and grids: inverses, derivatives, the discrete knots, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import SCHEDULE_NAMES, schedules, times
from tolerances import IDENTITY_RTOL, U32, roundoff

from refimpl import grids
from refimpl.schedules import DiscreteVP, EDMSchedule, VPCosine, VPLinear, VPSchedule, get_schedule


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@given(frac=st.floats(0.0, 1.0))
@example(frac=0.0)
@example(frac=1.0)
def test_lambda_t_lambda_round_trip(name: str, frac: float) -> None:
    """lambda -> t -> lambda returns lambda to 1e-12 relative, endpoints included."""
    s = get_schedule(name)
    lam = torch.tensor(s.lambda_max + frac * (s.lambda_min - s.lambda_max))
    back = s.lambda_t(s.t_of_lambda(lam))
    assert abs(float(back - lam)) <= IDENTITY_RTOL * max(1.0, abs(float(lam)))


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@given(frac=st.floats(0.0, 1.0))
@example(frac=0.0)
@example(frac=1.0)
def test_t_lambda_t_round_trip(name: str, frac: float) -> None:
    """t -> lambda -> t returns t to 1e-12 relative, endpoints included."""
    s = get_schedule(name)
    t = torch.tensor(s.t_min + frac * (s.t_max - s.t_min))
    assert abs(float(s.t_of_lambda(s.lambda_t(t)) - t)) <= IDENTITY_RTOL * float(t)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@given(frac=st.floats(0.0, 1.0))
@example(frac=0.0)
@example(frac=1.0)
def test_rho_is_sigma_over_alpha_and_t_of_rho_inverts_it(name: str, frac: float) -> None:
    """rho_t = sigma_t / alpha_t (EDM's sigma, DEIS's rho) to 1e-12 relative; t -> rho -> t round trip, endpoints
    included; the record's ``v_t.rho`` is the same value."""
    s = get_schedule(name)
    t = torch.tensor(s.t_min + frac * (s.t_max - s.t_min), dtype=torch.float64)
    v = s(t)
    rho = s.rho_t(t)
    assert abs(float(rho - v.sigma / v.alpha)) <= IDENTITY_RTOL * float(rho)
    assert float(v.rho) == float(rho)
    assert abs(float(s.t_of_rho(rho) - t)) <= IDENTITY_RTOL * float(t)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_t_of_rho_rejects_levels_outside_the_schedule(name: str) -> None:
    s = get_schedule(name)
    for bad in [0.5 * s.rho_min, 2.0 * s.rho_max, float("nan")]:
        with pytest.raises(ValueError, match="rho"):
            s.t_of_rho(bad)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_endpoints_and_monotonicity(name: str) -> None:
    s = get_schedule(name)
    t = grids.uniform_t(s, 1000)
    lam = s.lambda_t(t)
    assert bool((lam[1:] > lam[:-1]).all()), "lambda must increase as t decreases"
    assert float(s.t_of_lambda(s.lambda_min)) == pytest.approx(s.t_max, rel=IDENTITY_RTOL)
    assert float(s.t_of_lambda(s.lambda_max)) == pytest.approx(s.t_min, rel=IDENTITY_RTOL)


@given(s=schedules(), data=st.data())
def test_derivatives_match_autograd(s, data) -> None:
    """d alpha/dt, d sigma/dt and d lambda/dt equal autograd (inside a segment for discrete schedules)."""
    t0 = data.draw(times(s, 0.02, 0.98))
    if isinstance(s, DiscreteVP):  # keep away from the knots, where only one-sided derivatives exist
        t0 = math.floor(t0 * s.N) / s.N + 0.5 / s.N
    t = torch.tensor(t0, requires_grad=True)
    for value, derivative in [(s.alpha_t, s.d_alpha_t), (s.sigma_t, s.d_sigma_t), (s.lambda_t, s.d_lambda_t)]:
        out = value(t)  # EDM's alpha_t = 1 does not depend on t at all
        grad = torch.autograd.grad(out, t)[0] if out.requires_grad else torch.zeros(())
        assert float(derivative(t0)) == pytest.approx(float(grad), rel=1e-10, abs=1e-12)


@given(s=schedules(), data=st.data())
def test_vp_identity_and_values_record(s, data) -> None:
    t = data.draw(times(s))
    v = s(t)
    if isinstance(s, VPSchedule):
        assert float(v.alpha**2 + v.sigma**2) == pytest.approx(1.0, abs=IDENTITY_RTOL)
    assert float(v.lambda_) == pytest.approx(math.log(float(v.alpha) / float(v.sigma)), abs=IDENTITY_RTOL)
    assert float(v.d_alpha) == pytest.approx(float(s.d_alpha_t(t)), rel=IDENTITY_RTOL)


def test_discrete_knots_match_the_ddpm_products() -> None:
    """At t_n = n/N the interpolated alpha_t^2 is DDPM's alpha-bar_n = prod (1 - beta_i), from numpy."""
    import numpy as np

    s = DiscreteVP.ddpm_linear()
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert np.allclose(s.alpha_t(t).numpy() ** 2, abar, rtol=1e-12, atol=0)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear"])
def test_discrete_schedules_match_diffusers(beta_schedule: str) -> None:
    """diffusers' DDPMScheduler (an independent implementation) has the same alpha-bar."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(
        beta_schedule=beta_schedule,
        beta_start=1e-4 if beta_schedule == "linear" else 0.00085,
        beta_end=0.02 if beta_schedule == "linear" else 0.012,
    )
    ours = DiscreteVP.ddpm_linear() if beta_schedule == "linear" else DiscreteVP.scaled_linear()
    theirs = sched.alphas_cumprod.to(torch.float64)
    # diffusers accumulates in float32: compare at float32 resolution over 1000 products.
    torch.testing.assert_close(ours.alphas_cumprod, theirs, rtol=roundoff(1000, unit=U32), atol=0)


def test_cosine_matches_nichol_dhariwal() -> None:
    """alpha-bar(t) = f(t)/f(0), f(t) = cos^2(pi/2 (t+s)/(1+s)), straight from the paper."""
    s = VPCosine()
    t = torch.linspace(s.t_min, s.t_max, 50)
    f = torch.cos(0.5 * math.pi * (t + 0.008) / 1.008) ** 2
    f0 = math.cos(0.5 * math.pi * 0.008 / 1.008) ** 2
    torch.testing.assert_close(s.alpha_t(t) ** 2, f / f0, rtol=1e-13, atol=0)


def test_vp_linear_matches_beta_integral() -> None:
    """log alpha_t = -(1/2) int_0^t beta(u) du with beta linear from 0.1 to 20 (scipy quadrature)."""
    from scipy.integrate import quad

    s = VPLinear()
    for t in [1e-3, 0.3, 0.7, 1.0]:
        integral, _ = quad(lambda u: 0.1 + u * (20 - 0.1), 0, t)
        assert float(s.log_alpha_t(t)) == pytest.approx(-0.5 * integral, rel=1e-13)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("spacing", sorted(grids.GRIDS))
def test_grids_are_decreasing_with_exact_endpoints(name: str, spacing: str) -> None:
    s = get_schedule(name)
    ts = grids.timesteps(s, 17, spacing)
    assert ts.shape == (18,) and ts.dtype == torch.float64
    assert bool((ts[1:] < ts[:-1]).all())
    assert float(ts[0]) == s.t_max and float(ts[-1]) == s.t_min


def test_uniform_lambda_has_equal_lambda_steps() -> None:
    s = get_schedule("vp_cosine")
    lam = s.lambda_t(grids.uniform_lambda(s, 20))
    h = torch.diff(lam)
    # each lambda round-trips through t(lambda) to IDENTITY_RTOL relative: a difference of two is off by twice
    # that times the largest |lambda|, relative to the step h
    rtol = 2 * IDENTITY_RTOL * float(lam.abs().max()) / float(h.min())
    torch.testing.assert_close(h, torch.full_like(h, float(h.mean())), rtol=rtol, atol=0)


def test_karras_grid_is_edm_eq5_on_edm() -> None:
    """On the EDM schedule sigma = t, so the grid is Karras et al. (2022) Eq. 5 without the final 0."""
    s = EDMSchedule()
    n, rho = 10, 7.0
    i = torch.arange(n + 1, dtype=torch.float64)
    expected = (80 ** (1 / rho) + i / n * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
    torch.testing.assert_close(grids.karras(s, n), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_bad_times_raise(name: str) -> None:
    s = get_schedule(name)
    for bad in [s.t_min * 0.5, s.t_max * 1.01 + 1e-3, float("nan")]:
        with pytest.raises(ValueError):
            s.alpha_t(bad)
    with pytest.raises(ValueError, match="lambda"):
        s.t_of_lambda(s.lambda_max + 1.0)


def test_bad_construction_and_names_raise() -> None:
    with pytest.raises(ValueError, match="unknown schedule"):
        get_schedule("vp_quartic")
    with pytest.raises(ValueError):
        VPLinear(beta_0=1.0, beta_1=0.5)
    with pytest.raises(ValueError):
        DiscreteVP(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError):
        EDMSchedule(sigma_min=0.0)
    s = get_schedule("vp_linear")
    with pytest.raises(ValueError, match="n_steps"):
        grids.uniform_t(s, 0)
    with pytest.raises(ValueError, match="larger than"):
        grids.uniform_t(s, 5, t_start=0.2, t_end=0.5)
    with pytest.raises(ValueError, match="unknown spacing"):
        grids.timesteps(s, 5, "logistic")
