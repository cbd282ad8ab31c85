"""Chapter 2: RDDM, DiffuseVAE, TrojDiff and CDRL on the exact toys (identities, sympy derivations, laws)."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from tolerances import (
    IDENTITY_RTOL,
    TROJAN_LEAK,
    U64,
    chi2_bound,
    clt_bound,
    gaussian_covariance_clt,
    grid_spacing_rtol,
    pearson_chi2,
    roundoff,
    steps_roundoff,
    ula_fixed_point_atol,
)

from refimpl import grids
from refimpl.forward import (
    PoisonedModel,
    ResidualSchedule,
    ShiftedModel,
    degraded_posterior,
    diffusevae,
    fit_initializer,
    kappa_one,
    kappa_residual,
    kl_to_gaussian_fit_1d,
    langevin,
    langevin_gaussian_moments,
    rddm_forward,
    recovery_coefficients,
    recovery_gaussian,
    recovery_score,
    sample_diffusevae,
    sample_rddm,
    sample_trojan,
    shifted_forward,
    trojan_forward,
    trojan_marginal,
    trojdiff,
)
from refimpl.models import FunctionModel
from refimpl.reference import affine_output_law
from refimpl.samplers import forward_sample, sample_ddim, sample_ddpm
from refimpl.schedules import get_schedule
from toy_models import ExactModel, GaussianMixture, anisotropic_gaussian, ring

SCHEDULES = ["vp_linear", "edm"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64)


#: Points of (0, 1)^k at which a symbolic identity is checked: an algebraic function of the schedule symbols that
#: vanishes at three generic rational points to 40 digits is zero (sympy's simplify is slow on these expressions).
_POINTS = [
    (sp.Rational(1, 3), sp.Rational(5, 7), sp.Rational(2, 5)),
    (sp.Rational(9, 10), sp.Rational(1, 8), sp.Rational(3, 4)),
    (sp.Rational(1, 20), sp.Rational(19, 20), sp.Rational(1, 2)),
]


def _vanishes(expr: sp.Expr, *symbols: sp.Symbol) -> bool:
    """expr = 0 at the generic points (x_0, mu and x_hat enter linearly and are kept symbolic where present)."""
    return all(abs(sp.N(expr.subs(dict(zip(symbols, point, strict=False))), 50)) < sp.Float(1e-40) for point in _POINTS)


# --- RDDM -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_rddm_with_zero_input_is_ddim_to_roundoff(schedule_name: str, eta: float) -> None:
    """I_in = 0 and the DDIM coefficient map: the RDDM step is DDIM's (same noise), up to the rounding of two
    differently ordered step formulas (two passes of steps_roundoff)."""
    s = get_schedule(schedule_name)
    model, n = ExactModel(ring(), s), 25
    x, ts = model.sample_xt(64, s.t_max, _gen(0))[1], grids.uniform_lambda(s, n)
    noise = _randn(n, 64, 2, seed=1)
    out = sample_rddm(model, x, ts, eta=eta, noise=noise)
    ref = sample_ddim(model, x, ts, eta=eta, noise=noise)
    scale = max(float(x.abs().max()), float(ref.abs().max()))
    assert float((out - ref).abs().max()) <= steps_roundoff(n, scale, U64, passes=2)


@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_rddm_forward_is_the_shifted_process_and_ddpm_for_zero_input(schedule_name: str) -> None:
    v = get_schedule(schedule_name)(torch.tensor(0.3) if schedule_name != "edm" else torch.tensor(3.0))
    x0, eps, I_in = _randn(8, 2, seed=2), _randn(8, 2, seed=3), _randn(8, 2, seed=4)
    # a few products and sums (8 roundings) of terms no larger than 2 |x0| + |I_in| + sigma |eps|
    atol = roundoff(8, float(2 * x0.abs().max() + I_in.abs().max() + v.sigma * eps.abs().max()))
    torch.testing.assert_close(rddm_forward(x0, I_in, v, eps), shifted_forward(x0, I_in, v, eps), rtol=0, atol=atol)
    torch.testing.assert_close(rddm_forward(x0, 0 * I_in, v, eps), forward_sample(x0, v, eps), rtol=0, atol=atol)


def test_residual_schedule_round_trip_and_derivatives() -> None:
    """lambda -> t -> lambda to round-off, and d alpha / dt, d sigma / dt against autograd."""
    for sum_scale in (0.01, 1.0):
        s = ResidualSchedule(sum_scale)
        t = torch.linspace(s.t_min, s.t_max, 50, dtype=torch.float64)
        torch.testing.assert_close(s.t_of_lambda(s.lambda_t(t)), t, rtol=IDENTITY_RTOL, atol=0)  # as every schedule
        tg = t.clone().requires_grad_(True)
        v = s(tg)
        (d_alpha,) = torch.autograd.grad(v.alpha.sum(), tg)
        (d_sigma,) = torch.autograd.grad(s(tg).sigma.sum(), tg)
        torch.testing.assert_close(v.d_alpha.detach(), d_alpha, rtol=IDENTITY_RTOL, atol=0)
        torch.testing.assert_close(s(t).d_sigma, d_sigma, rtol=IDENTITY_RTOL, atol=0)
    for bad in (dict(sum_scale=0.0), dict(t_max=1.0), dict(sum_scale=float("nan"))):
        with pytest.raises(ValueError):
            ResidualSchedule(**bad)


@pytest.mark.parametrize("sum_scale", [0.01, 1.0])
def test_rddm_restoration_reaches_the_exact_posterior(sum_scale: float) -> None:
    """Restoring one degraded observation with the exact model of the residual process (eta = 1): the restored
    samples' component counts pass chi-square against the exact posterior weights and their mean is within the CLT
    bound of the posterior mean (at t_min, where the state is I_0 up to sigma(t_min) noise and abar(t_min) I_in)."""
    mix = ring()
    s = ResidualSchedule(sum_scale)
    I_in = 0.5 * mix.means[1] + 0.3 * torch.tensor([1.0, -1.0], dtype=torch.float64)
    post = degraded_posterior(mix, I_in, scale=0.5, tau=0.4)
    model = ShiftedModel(ExactModel(post, s), I_in, kappa_residual)
    n, ts = 1500, grids.uniform_lambda(s, 50)
    v_T, v_0 = s(ts[0]), s(ts[-1])
    x_T = shifted_forward(post.sample(n, _gen(5)), I_in, v_T, _randn(n, 2, seed=6))
    out = sample_rddm(model, x_T, ts, I_in=I_in, eta=1.0, generator=_gen(7))
    law = post.noised(v_0.alpha, v_0.sigma)
    z = out - (1 - float(v_0.alpha)) * I_in
    counts = torch.bincount(law.responsibilities(z, 1.0, 0.0).argmax(1), minlength=post.K)
    stat, dof = pearson_chi2(counts, law.weights)
    assert stat < chi2_bound(dof), (stat, dof)
    mean, cov = law.moments()
    assert bool(((z.mean(0) - mean).abs() <= clt_bound(torch.sqrt(torch.diagonal(cov)), n)).all())


# --- DiffuseVAE -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("form", ["paper", "code"])
def test_diffusevae_with_zero_reconstruction_is_ddpm_bit_for_bit(schedule_name: str, form: str) -> None:
    s = get_schedule(schedule_name)
    model, ts = ExactModel(ring(), s), grids.uniform_t(s, 12)
    x, noise = _randn(16, 2, seed=8), _randn(12, 16, 2, seed=9)
    out = sample_diffusevae(model, x, ts, form=form, noise=noise)
    torch.testing.assert_close(out, sample_ddpm(model, x, ts, noise=noise), rtol=0, atol=0)


def test_diffusevae_posterior_coefficients_in_sympy() -> None:
    """Completing the square in the paper's chain gives DDPM's two coefficients and 1 - c_x0 - c_xt for x_hat."""
    r = diffusevae.posterior_symbolic()
    a, p = r["alpha"], r["abar_p"]
    assert _vanishes(r["coef_x0"] - sp.sqrt(p) * (1 - a) / (1 - a * p), a, p)
    assert _vanishes(r["coef_xt"] - sp.sqrt(a) * (1 - p) / (1 - a * p), a, p)
    assert _vanishes(r["coef_xhat"] - (1 - r["coef_x0"] - r["coef_xt"]), a, p)
    assert _vanishes(r["variance"] - (1 - a) * (1 - p) / (1 - a * p), a, p)


@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_diffusevae_component_mean_reconstruction_is_an_exact_model(schedule_name: str) -> None:
    """x_hat = the mean of the component a sample came from: the exact model of that component, shifted, has the
    exact output law of DDPM on the component (affine, no Monte Carlo) plus kappa(t_end) x_hat, in both forms."""
    s = get_schedule(schedule_name)
    comp = GaussianMixture(torch.ones(1, dtype=torch.float64), ring().means[2:3], ring().covariances[2:3])
    x_hat = comp.means[0]
    ts = grids.uniform_lambda(s, 10)
    v_T, v_0 = s(ts[0]), s(ts[-1])
    start = comp.noised(v_T.alpha, v_T.sigma).moments()
    plain = affine_output_law(sample_ddpm, ExactModel(comp, s), ts, *start)
    for form, kappa in (("paper", kappa_residual), ("code", kappa_one)):
        model = ShiftedModel(ExactModel(comp, s), x_hat, kappa)

        def run(m, x, t, noise=None, form=form, kappa=kappa):
            return sample_diffusevae(m, x + kappa(v_T) * x_hat, t, x_hat=x_hat, form=form, noise=noise)

        mean, cov = affine_output_law(run, model, ts, *start)
        shift = 0.0 if form == "code" else kappa(v_0) * x_hat
        torch.testing.assert_close(mean, plain[0] + shift, rtol=0, atol=steps_roundoff(10, 3, U64, passes=2))
        torch.testing.assert_close(cov, plain[1], rtol=0, atol=steps_roundoff(10, 3, U64, passes=2))


def test_shifted_model_is_the_regression_function() -> None:
    """E[(eps - eps_hat(x_t)) g(x_t)] = 0 for g = 1 and g = x_t (CLT bounds) on draws of the shifted process."""
    s, mix = get_schedule("vp_cosine"), ring()
    t, n = 0.4, 20000
    k = 3
    comp = GaussianMixture(torch.ones(1, dtype=torch.float64), mix.means[k : k + 1], mix.covariances[k : k + 1])
    model = ShiftedModel(ExactModel(comp, s), comp.means[0], kappa_residual)
    v = s(torch.tensor(t))
    eps = _randn(n, 2, seed=10)
    x_t = shifted_forward(comp.sample(n, _gen(11)), comp.means[0], v, eps)
    resid = eps - model(x_t, torch.tensor(t))
    for g in (torch.ones_like(x_t[:, :1]), x_t[:, :1], x_t[:, 1:]):
        prod = resid * g
        assert bool((prod.mean(0).abs() <= clt_bound(prod.std(0), n)).all())


# --- TrojDiff -------------------------------------------------------------------------------------------------------


def test_trojan_marginal_and_posterior_in_sympy() -> None:
    r = trojdiff.marginal_symbolic()
    a, p, g = r["alpha"], r["abar_p"], r["gamma"]
    x0, mu = sp.symbols("x_0 mu", real=True)
    mean_t = r["mean_t"] - (sp.sqrt(a * p) * x0 + sp.sqrt(1 - a * p) * mu)
    assert _vanishes(mean_t.coeff(x0), a, p) and _vanishes(mean_t.coeff(mu), a, p)
    assert sp.expand(r["var_t"] - g**2 * (1 - a * p)) == 0
    assert _vanishes(r["coef_mu"] - r["code_coef_mu"], a, p)  # the official coef_miu / (1 - abar_t)
    # the posterior mean keeps the shift sqrt(1 - abar_{t-1}) mu of the marginal at t - 1
    assert _vanishes(r["coef_mu"] + r["coef_xt"] * sp.sqrt(1 - a * p) - sp.sqrt(1 - p), a, p)
    assert _vanishes(r["variance"] - g**2 * (1 - a) * (1 - p) / (1 - a * p), a, p, g)


def _trojan_toy(s):
    target = GaussianMixture(
        torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor([[7.0, 9.0], [9.0, 7.0]], dtype=torch.float64),
        0.2 * torch.eye(2, dtype=torch.float64).expand(2, 2, 2).clone(),
    )
    gamma = 0.5
    mu = (1 - gamma) * torch.tensor([16.0, 16.0], dtype=torch.float64)  # blend trigger delta = (16, 16)
    return PoisonedModel(ring(), target, mu, gamma, s, poison=0.1), target, mu, gamma


def test_trojan_forward_has_the_marginal_moments() -> None:
    s = get_schedule("vp_linear")
    _, target, mu, gamma = _trojan_toy(s)
    v, n = s(torch.tensor(0.5)), 20000
    x = trojan_forward(target.sample(n, _gen(12)), v, _randn(n, 2, seed=13), mu, gamma)
    mean, cov = trojan_marginal(target, v, mu, gamma).moments()
    assert bool(((x.mean(0) - mean).abs() <= clt_bound(torch.sqrt(torch.diagonal(cov)), n)).all())
    assert bool(((torch.cov(x.T) - cov).abs() <= gaussian_covariance_clt(cov, n)).all())


@pytest.mark.parametrize("schedule_name", ["vp_linear", "vp_cosine"])
def test_poisoned_model_keeps_the_clean_law_and_the_trigger_reaches_the_target(schedule_name: str) -> None:
    """Clean: DDPM from the clean marginal at t_max; the poisoned network's Trojan responsibility stays below
    TROJAN_LEAK along every path, the output equals the clean exact model's (same noise) to that leak, and the
    component counts pass chi-square. Triggered: the attacker's sampler from the Trojan marginal at t_max ends in the
    target law (chi-square on its components, CLT on its mean)."""
    s = get_schedule(schedule_name)
    model, target, mu, gamma = _trojan_toy(s)
    n, ts = 1000, grids.uniform_lambda(s, 50)
    clean = ExactModel(model.clean, s)
    x_T = clean.sample_xt(n, ts[0], _gen(14))[1]
    noise = _randn(50, n, 2, seed=15)
    leak: list[float] = []

    def watch(info):
        leak.append(float(model.trojan_responsibility(info.x, info.t).max()))

    out = sample_ddpm(model, x_T, ts, noise=noise, callback=watch)
    assert max(leak) < TROJAN_LEAK
    ref = sample_ddpm(clean, x_T, ts, noise=noise)
    # The two runs do the same operations but the mix eps_clean + r (eps_trojan - eps_clean), with r below max(leak)
    # (e^-40 on this toy) and |eps_trojan - eps_clean| = O(10): at most one more rounding of eps a step, round-off.
    scale = max(float(x_T.abs().max()), float(out.abs().max()))
    assert float((out - ref).abs().max()) <= steps_roundoff(50, scale, U64, passes=2)
    v_0 = s(ts[-1])
    law = model.clean.noised(v_0.alpha, v_0.sigma)
    stat, dof = pearson_chi2(
        torch.bincount(law.responsibilities(out, 1.0, 0.0).argmax(1), minlength=law.K), law.weights
    )
    assert stat < chi2_bound(dof)

    v_T = s(ts[0])
    x_star = trojan_forward(target.sample(n, _gen(16)), v_T, _randn(n, 2, seed=17), mu, gamma)
    out = sample_trojan(model, x_star, ts, mu=mu, gamma=gamma, generator=_gen(18))
    law = trojan_marginal(target, v_0, mu, gamma)
    assert float((1 - model.trojan_responsibility(out, ts[-1])).max()) < TROJAN_LEAK
    stat, dof = pearson_chi2(torch.bincount(law.responsibilities(out, 1.0, 0.0).argmax(1), minlength=2), law.weights)
    assert stat < chi2_bound(dof)
    mean, cov = law.moments()
    assert bool(((out.mean(0) - mean).abs() <= clt_bound(torch.sqrt(torch.diagonal(cov)), n)).all())


def test_trojan_sampler_with_unit_gamma_and_zero_trigger_is_ddim() -> None:
    s = get_schedule("vp_cosine")
    model, ts, x = ExactModel(ring(), s), grids.uniform_lambda(s, 15), _randn(8, 2, seed=19)
    noise = _randn(15, 8, 2, seed=20)
    out = sample_trojan(model, x, ts, mu=torch.zeros(2, dtype=torch.float64), gamma=1.0, eta=0.3, noise=noise)
    ref = sample_ddim(model, x, ts, eta=0.3, noise=noise)
    assert float((out - ref).abs().max()) <= steps_roundoff(15, 3, U64, passes=2)


# --- CDRL -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_recovery_conditional_is_the_exact_reverse_kernel(schedule_name: str) -> None:
    """For Gaussian data p(x_t | x_{t+1}) in closed form equals the lab's exact reverse kernel q(x_t | x_{t+1})."""
    s = get_schedule(schedule_name)
    gauss = anisotropic_gaussian(3, seed=2)
    model = ExactModel(gauss, s)
    t, t_next = (0.3, 0.32) if schedule_name != "edm" else (1.0, 1.1)
    v_t, v_next = s(torch.tensor(t)), s(torch.tensor(t_next))
    a, sd = recovery_coefficients(v_t, v_next)
    x_next = model.sample_xt(5, t_next, _gen(21))[1]
    mean, cov = recovery_gaussian(*gauss.noised(v_t.alpha, v_t.sigma).moments(), a, sd, x_next)
    kernel = model.reverse_kernel(x_next, t_next, t)
    scale = float(kernel.means.abs().max()) + 1.0
    torch.testing.assert_close(mean, kernel.mean(), rtol=0, atol=roundoff(200, scale, condition=100))
    torch.testing.assert_close(cov, kernel.covariance()[0], rtol=0, atol=roundoff(200, 1.0, condition=100))


def test_recovery_score_is_the_gradient_of_the_log_conditional() -> None:
    s, mix = get_schedule("vp_linear"), ring()
    model = ExactModel(mix, s)
    v_t, v_next = s(torch.tensor(0.2)), s(torch.tensor(0.25))
    a, sd = recovery_coefficients(v_t, v_next)
    x = _randn(6, 2, seed=22).requires_grad_(True)
    x_next = _randn(6, 2, seed=23)
    log_cond = model.log_prob(x, 0.2) - ((x_next - a * x) ** 2).sum(1) / (2 * sd**2)
    (grad,) = torch.autograd.grad(log_cond.sum(), x)
    got = recovery_score(lambda y: model.score(y, 0.2), x.detach(), x_next, a, sd)
    terms = float(model.score(x.detach(), 0.2).abs().max()) + float((a * (x_next - a * x.detach()) / sd**2).abs().max())
    torch.testing.assert_close(got, grad, rtol=0, atol=IDENTITY_RTOL * terms)  # two formulas, terms that may cancel


def test_langevin_refinement_has_the_closed_form_moments() -> None:
    """K Langevin steps on the Gaussian recovery conditional from the initializer's proposals: sample mean and
    covariance within CLT bounds of ``langevin_gaussian_moments``; as K grows these tend to the ULA fixed point
    (P - delta P^2 / 4)^{-1}, and for small delta to the exact conditional."""
    s, gauss = get_schedule("vp_linear"), anisotropic_gaussian(2, seed=4)
    model = ExactModel(gauss, s)
    v_t, v_next = s(torch.tensor(0.4)), s(torch.tensor(0.45))
    a, sd = recovery_coefficients(v_t, v_next)
    m_t, c_t = gauss.noised(v_t.alpha, v_t.sigma).moments()
    x_next = model.sample_xt(1, 0.45, _gen(24))[1]
    target_mean, target_cov = recovery_gaussian(m_t, c_t, a, sd, x_next)
    n, K, delta = 20000, 15, 0.5 * float(torch.linalg.eigvalsh(target_cov).min())
    proposals = x_next / a + 0.5 * _randn(n, 2, seed=25)  # a crude initializer: N(x_{t+1} / a, 0.25 I)
    out = langevin(
        lambda y: recovery_score(lambda u: model.score(u, 0.4), y, x_next, a, sd),
        proposals,
        delta,
        K,
        generator=_gen(26),
    )
    mean, cov = langevin_gaussian_moments(
        x_next[0] / a, 0.25 * torch.eye(2, dtype=torch.float64), target_mean[0], target_cov, delta, K
    )
    assert bool(((out.mean(0) - mean).abs() <= clt_bound(torch.sqrt(torch.diagonal(cov)), n)).all())
    assert bool(((torch.cov(out.T) - cov).abs() <= gaussian_covariance_clt(cov, n)).all())
    P = torch.linalg.inv(target_cov)
    _, far = langevin_gaussian_moments(mean, cov, target_mean[0], target_cov, delta, 2000)
    atol = ula_fixed_point_atol(target_cov, delta, 2000, float((cov - far).abs().max()))
    torch.testing.assert_close(far, torch.linalg.inv(P - delta / 4 * P @ P), rtol=0, atol=atol)


def test_fit_initializer_recovers_a_linear_gaussian_map() -> None:
    """Least squares on exact draws of N(A x + b, V): each coefficient within the CLT bound of its estimate."""
    n = 20000
    A = torch.tensor([[0.8, 0.1], [-0.2, 0.5]], dtype=torch.float64)
    b = torch.tensor([0.3, -0.1], dtype=torch.float64)
    x = _randn(n, 2, seed=27)
    y = x @ A.T + b + 0.2 * _randn(n, 2, seed=28)
    A_hat, b_hat, V_hat = fit_initializer(x, y)
    # x has unit variance: each regression coefficient has sd 0.2 / sqrt(n)
    assert float((A_hat - A).abs().max()) <= clt_bound(0.2, n) and float((b_hat - b).abs().max()) <= clt_bound(0.2, n)
    # a residual variance of N(0, 0.04) draws has sd 0.04 sqrt(2 / n) (the off-diagonal entries 0.04 / sqrt(n))
    assert float((V_hat - 0.04 * torch.eye(2, dtype=torch.float64)).abs().max()) <= clt_bound(0.04 * math.sqrt(2), n)


# --- bad input ------------------------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors() -> None:
    s = get_schedule("vp_linear")
    model, x, ts = ExactModel(ring(), s), _randn(4, 2, seed=29), grids.uniform_t(s, 3)
    with pytest.raises(ValueError, match="I_in"):
        sample_rddm(model, x, ts, I_in=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="I_in"):
        sample_rddm(model, x, ts, I_in=[0.0, 0.0])
    with pytest.raises(ValueError, match="eta"):
        sample_rddm(model, x, ts, eta=2.0)
    with pytest.raises(ValueError, match="form"):
        sample_diffusevae(model, x, ts, form="latent")
    with pytest.raises(ValueError, match="x_hat"):
        sample_diffusevae(model, x, ts, x_hat=torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="velocity"):
        ShiftedModel(model.with_prediction("velocity"), torch.zeros(2, dtype=torch.float64))
    poisoned, target, mu, gamma = _trojan_toy(s)
    for bad in (dict(gamma=0.0), dict(gamma=1.5), dict(mu=torch.zeros(3, dtype=torch.float64))):
        with pytest.raises(ValueError, match=r"gamma|mu"):
            sample_trojan(poisoned, x, ts, **{"mu": mu, "gamma": gamma, **bad})
    with pytest.raises(ValueError, match="eps"):
        sample_trojan(model.with_prediction("x0"), x, ts, mu=mu, gamma=gamma)
    with pytest.raises(ValueError, match="poison"):
        PoisonedModel(ring(), target, mu, gamma, s, poison=1.0)
    with pytest.raises(ValueError, match="noisier"):
        recovery_coefficients(s(torch.tensor(0.5)), s(torch.tensor(0.4)))
    with pytest.raises(ValueError, match="delta"):
        langevin(lambda y: -y, x, 0.0, 3)
    with pytest.raises(ValueError, match="n_steps"):
        langevin(lambda y: -y, x, 0.1, -1)
    with pytest.raises(ValueError, match="shape"):
        fit_initializer(x, x[:3])
    with pytest.raises(ValueError, match="I_in"):
        degraded_posterior(ring(), torch.zeros(3, dtype=torch.float64), 0.5, 0.1)
    with pytest.raises(ValueError, match="positive"):
        degraded_posterior(ring(), torch.zeros(2, dtype=torch.float64), 0.5, 0.0)
    with pytest.raises(ValueError, match="shape"):
        sample_rddm(FunctionModel(lambda y, t: y[:, :1], s), x, ts)


def test_kl_to_gaussian_fit_vanishes_for_a_gaussian_and_not_for_a_bimodal_law() -> None:
    grid = torch.linspace(-8, 8, 4001, dtype=torch.float64)
    kl = kl_to_gaussian_fit_1d(-0.5 * (grid - 0.3) ** 2 / 0.7, grid)
    assert abs(kl) <= grid_spacing_rtol(8.0, 16 / 4000)  # the midpoint rule is exact here: round-off of dx
    bimodal = torch.logaddexp(-0.5 * (grid - 2) ** 2 / 0.1, -0.5 * (grid + 2) ** 2 / 0.1)
    assert kl_to_gaussian_fit_1d(bimodal, grid) > 0.1
    with pytest.raises(ValueError, match="1-D"):
        kl_to_gaussian_fit_1d(grid[:5], grid)
