"""The analytic Gaussian-mixture lab: every exact quantity against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from strategies import mixtures, schedules, times
from tolerances import QUAD_MASS_ATOL, QUAD_PUSH_RTOL, REFERENCE_ATOL, U32, clt_bound, roundoff

from refimpl.guidance import classifier_free_guidance
from refimpl.models import predict
from refimpl.reference import solve_pf_ode
from refimpl.schedules import get_schedule
from toy_models import ExactModel, GaussianMixture, labelled_pair, random_mixture, ring


def _points(model: ExactModel, t: float, n: int, seed: int) -> torch.Tensor:
    return model.sample_xt(n, t, torch.Generator().manual_seed(seed))[1]


@given(gmm=mixtures(), s=schedules(), data=st.data(), seed=st.integers(0, 1000))
def test_score_is_the_gradient_of_log_p(gmm: GaussianMixture, s, data, seed: int) -> None:
    """The closed-form score equals autograd's gradient of the closed-form log p_t."""
    t = data.draw(times(s))
    model = ExactModel(gmm, s)
    x = _points(model, t, 6, seed).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.log_prob(x, t).sum(), x)
    score = model.score(x.detach(), t)
    # Both are sums of K terms y/c of size |score|; a few hundred operations each, condition ~ 1.
    scale = 1.0 + float(score.abs().max())
    assert float((grad - score).abs().max()) <= roundoff(1000, scale)


@given(gmm=mixtures(), s=schedules(), data=st.data(), seed=st.integers(0, 1000))
def test_predictions_are_consistent_with_the_score(gmm: GaussianMixture, s, data, seed: int) -> None:
    """eps = -sigma score; x_t = alpha x0 + sigma eps; v = alpha eps - sigma x0; all five agree."""
    t = data.draw(times(s))
    model = ExactModel(gmm, s)
    x = _points(model, t, 5, seed)
    v = s(t)
    x0, eps, score = model.x0(x, t), model.eps(x, t), model.score(x, t)
    scale = 1.0 + float(x.abs().max()) + float(x0.abs().max()) + float(eps.abs().max()) + float(score.abs().max())
    tol = roundoff(1000, scale)
    assert float((eps + v.sigma * score).abs().max()) <= tol * max(1.0, float(v.sigma))
    assert float((v.alpha * x0 + v.sigma * eps - x).abs().max()) <= tol * max(1.0, float(v.alpha))
    expected_v = v.alpha * eps - v.sigma * x0
    assert float((model.with_prediction("v")(x, v.t) - expected_v).abs().max()) <= tol
    for kind in ["x0", "score", "velocity"]:
        direct = model.with_prediction(kind)(x, v.t)
        via_eps = predict(model, x, v.t, kind)
        assert float((direct - via_eps).abs().max()) <= tol * (1 + float(direct.abs().max())) / max(
            float(v.alpha), float(v.sigma), 1e-3
        )


def test_tweedie_mean_equals_monte_carlo_posterior_mean() -> None:
    """E[x0 | x_t] by self-normalised importance sampling from the prior, within 5 CLT standard errors.

    With x0_i ~ p_0 and weights w_i = N(x_t; alpha x0_i, sigma^2 I), the estimate sum w x0 / sum w has
    asymptotic variance sum w_i^2 (x0_i - mean)^2 / (sum w_i)^2 (the delta method).
    """
    gmm = random_mixture(K=3, d=2, seed=3)
    s = get_schedule("vp_linear")
    model = ExactModel(gmm, s)
    t = 0.45
    a, sg = float(s.alpha_t(t)), float(s.sigma_t(t))
    g = torch.Generator().manual_seed(7)
    x_t = _points(model, t, 4, seed=11)
    x0 = gmm.sample(400_000, g)
    for j in range(x_t.shape[0]):
        logw = -0.5 * ((x_t[j] - a * x0) ** 2).sum(-1) / sg**2
        w = torch.softmax(logw, 0)
        est = (w[:, None] * x0).sum(0)
        std = torch.sqrt((w[:, None] ** 2 * (x0 - est) ** 2).sum(0))
        ess = 1.0 / float((w**2).sum())
        assert ess > 1000, "the weights must not degenerate for the CLT to apply"
        tweedie = model.x0(x_t[j : j + 1], t)[0]
        assert bool(((est - tweedie).abs() <= clt_bound(std, 1)).all()), (est, tweedie, std)


@settings(max_examples=10)
@given(gmm=mixtures(max_d=1, d=1), s=schedules(), data=st.data(), seed=st.integers(0, 1000))
def test_reverse_kernel_is_normalised_and_pushes_p_t_to_p_s(gmm: GaussianMixture, s, data, seed: int) -> None:
    """In 1-D by quadrature: int q(x_s | x_t) dx_s = 1, and int q(x_s | x_t) p_t(x_t) dx_t = p_s(x_s)."""
    t = data.draw(times(s, 0.0, 0.8))
    s_time = data.draw(times(s, 0.0, 1.0).filter(lambda u: s.lambda_t(u) > s.lambda_t(t) + 0.05))
    model = ExactModel(gmm, s)
    x_t = _points(model, t, 1, seed)
    kernel = model.reverse_kernel(x_t, t, s_time)
    # 12 widths of the widest component beyond the outermost means lose less than exp(-72) of any component's mass
    # (the mixture's own standard deviation can be far below the widest component's: too narrow a window).
    means, sd = kernel.means[0, :, 0], math.sqrt(float(kernel.variances.max()))
    mass, _ = quad(
        lambda y: math.exp(float(kernel.log_prob(torch.tensor([[y]])))),
        float(means.min()) - 12 * sd,
        float(means.max()) + 12 * sd,
        epsabs=1e-13,
        epsrel=1e-12,
        limit=200,
    )
    assert mass == pytest.approx(1.0, abs=QUAD_MASS_ATOL)

    # As a function of x_t the integrand is p_s(y) q(x_t | x_s = y): a Gaussian bump at alpha_{t|s} y of
    # width sigma_{t|s}, so 12 widths either side lose less than exp(-72) of its mass.
    v_t, v_s = s(t), s(s_time)
    a_ts = float(v_t.alpha / v_s.alpha)
    sd_ts = math.sqrt(float(v_t.sigma**2 - a_ts**2 * v_s.sigma**2))
    for y in [float(kernel.mean()), float(model.marginal(s_time).moments()[0]) + 0.3]:

        def integrand(u: float, y: float = y) -> float:
            xt = torch.tensor([[u]])
            return math.exp(
                float(model.reverse_kernel(xt, t, s_time).log_prob(torch.tensor([[y]]))) + float(model.log_prob(xt, t))
            )

        pushed, _ = quad(integrand, a_ts * y - 12 * sd_ts, a_ts * y + 12 * sd_ts, epsabs=1e-13, epsrel=1e-11, limit=200)
        exact = math.exp(float(model.log_prob(torch.tensor([[y]]), s_time)))
        assert pushed == pytest.approx(exact, rel=QUAD_PUSH_RTOL, abs=1e-12)


def test_reverse_kernel_moments_by_monte_carlo() -> None:
    """In 5-D: x_t ~ p_t then x_s ~ q(x_s | x_t) has the moments of p_s, within CLT bounds."""
    gmm = random_mixture(K=3, d=5, seed=1)
    s = get_schedule("vp_cosine")
    model = ExactModel(gmm, s)
    n, t, s_time = 100_000, 0.7, 0.3
    g = torch.Generator().manual_seed(0)
    _, x_t = model.sample_xt(n, t, g)
    x_s = model.reverse_kernel(x_t, t, s_time).sample(g)
    mean, cov = model.marginal(s_time).moments()
    centred = x_s - mean
    assert bool(((centred.mean(0)).abs() <= clt_bound(centred.std(0), n)).all())
    prods = centred[:, :, None] * centred[:, None, :]
    assert bool(((prods.mean(0) - cov).abs() <= clt_bound(prods.std(0), n)).all())


def test_sampling_matches_moments() -> None:
    """GaussianMixture.sample has the closed-form mean and covariance, within CLT bounds."""
    gmm = ring()
    n = 200_000
    x = gmm.sample(n, torch.Generator().manual_seed(1))
    mean, cov = gmm.moments()
    centred = x - mean
    assert bool((centred.mean(0).abs() <= clt_bound(centred.std(0), n)).all())
    prods = centred[:, :, None] * centred[:, None, :]
    assert bool(((prods.mean(0) - cov).abs() <= clt_bound(prods.std(0), n)).all())


@settings(max_examples=6)
@given(d=st.integers(1, 3), s=schedules(), data=st.data(), seed=st.integers(0, 100))
def test_closed_form_ode_map_agrees_with_reference_solver(d: int, s, data, seed: int) -> None:
    """For one Gaussian the exact probability-flow map equals the DOP853 reference to REFERENCE_ATOL (1e-10)."""
    from toy_models import anisotropic_gaussian

    model = ExactModel(anisotropic_gaussian(d, seed), s)
    t_from = data.draw(times(s, 0.5, 1.0))
    t_to = data.draw(times(s, 0.0, 0.45))
    x = _points(model, t_from, 4, seed)
    exact = model.pf_ode_map(x, t_from, t_to)
    assert float((solve_pf_ode(model, x, t_from, t_to) - exact).abs().max()) <= REFERENCE_ATOL * max(
        1.0, float(exact.abs().max())
    )


@given(gmm=mixtures(), s=schedules(), data=st.data(), seed=st.integers(0, 1000))
def test_float32_agrees_with_float64(gmm: GaussianMixture, s, data, seed: int) -> None:
    """The float32 model equals the float64 one to float32 round-off, amplified by the condition 1/min c."""
    t = data.draw(times(s))
    m64 = ExactModel(gmm, s)
    x = _points(m64, t, 8, seed)
    eps64 = m64.eps(x, t)
    eps32 = ExactModel(gmm.to(torch.float32), s).eps(x.float(), t)
    assert eps32.dtype == torch.float32
    v = s(t)
    c_min = float(v.alpha**2 * gmm.eigvals.min() + v.sigma**2)
    cond = (1.0 + float(x.abs().max())) ** 2 * max(1.0, float(v.alpha) ** 2 / c_min)
    assert float((eps32.double() - eps64).abs().max()) <= roundoff(100, 1.0 + float(eps64.abs().max()), U32, cond)


def test_single_component_kernel_is_the_ddpm_posterior_on_a_point_mass_limit() -> None:
    """p(x0 | x_t) of one Gaussian has the Wiener-filter mean mu + alpha S (alpha^2 S + sigma^2)^{-1}(x - alpha mu)."""
    gmm = random_mixture(K=1, d=3, seed=5)
    s = get_schedule("ddpm_linear")
    model = ExactModel(gmm, s)
    x = _points(model, 0.5, 3, 0)
    a, sg = s.alpha_t(0.5), s.sigma_t(0.5)
    S, mu = gmm.covariances[0], gmm.means[0]
    wiener = mu + (a * S @ torch.linalg.inv(a**2 * S + sg**2 * torch.eye(3)) @ (x - a * mu).T).T
    torch.testing.assert_close(model.x0(x, 0.5), wiener, rtol=1e-12, atol=1e-12)
    posterior = gmm.reverse_kernel(x, a, sg, 1.0, 0.0)
    torch.testing.assert_close(posterior.mean(), wiener, rtol=1e-12, atol=1e-12)


def test_classifier_free_guidance_limits() -> None:
    """CFG with w = 1 is the conditional model and w = 0 the unconditional one (Ho & Salimans 2022)."""
    gmm = labelled_pair()
    s = get_schedule("vp_linear")
    cond, uncond = ExactModel(gmm.condition(1), s), ExactModel(gmm, s)
    x, t = _points(uncond, 0.5, 7, 3), torch.tensor(0.5)
    # eps_u + w (eps_c - eps_u): w = 0 adds an exact 0; w = 1 rounds the difference and the sum (2 u each of terms
    # of size max |eps|)
    scale = max(float(cond(x, t).abs().max()), float(uncond(x, t).abs().max()))
    guided = classifier_free_guidance(cond, uncond, 1.0)(x, t)
    torch.testing.assert_close(guided, cond(x, t), rtol=0, atol=roundoff(4, scale))
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 0.0)(x, t), uncond(x, t), rtol=0, atol=0)


def test_bad_mixtures_raise() -> None:
    eye = torch.eye(2).expand(2, 2, 2)
    means = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="non-negative"):
        GaussianMixture(torch.tensor([1.5, -0.5]), means, eye)
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture(torch.tensor([0.5, 0.4]), means, eye)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(torch.tensor([0.5, 0.5]), means, torch.stack([torch.eye(2), -torch.eye(2)]))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match="shape"):
        GaussianMixture(torch.tensor([0.5, 0.5]), means, torch.eye(3).expand(2, 3, 3))
    with pytest.raises(ValueError, match="non-finite"):
        GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), eye)
    with pytest.raises(ValueError, match="no component has label"):
        ring().condition(5)


def test_bad_points_raise() -> None:
    model = ExactModel(ring(), get_schedule("vp_linear"))
    with pytest.raises(ValueError, match="shape"):
        model.score(torch.zeros(3, 3), 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        model.score(torch.tensor([[0.0, float("nan")]]), 0.5)
    with pytest.raises(ValueError, match="must lie in"):
        model.score(torch.zeros(3, 2), 1.5)
    with pytest.raises(ValueError, match="earlier"):
        model.reverse_kernel(torch.zeros(3, 2), 0.3, 0.6)
    with pytest.raises(ValueError, match="K = 1"):
        model.pf_ode_map(torch.zeros(3, 2), 0.9, 0.1)
