"""Score distillation as particle flows (chapter 9): SDS, VSD, ISM and TSM on the exact mixture lab.

Identities to round-off (SDS is VSD whose fake law is the particle itself; TSM with gamma = 1 is ISM; for a
point mass the DDIM inversion is exact and ISM = TSM = SDS), measured orders (the two TSM paths differ at second
order in the interval, ISM's target drifts at first order), the exact MMD against its i.i.d. expectation (CLT),
and the two flows' laws: SDS collapses the particles of a mode, VSD beats i.i.d. draws of the data.
"""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import SD_SPREAD_FRACTION, Z, clt_bound, roundoff, sd_point_mass_bound

from refimpl.differentiable.mmd import gaussian_rbf_expectation
from refimpl.distillation.score_distillation import (
    WEIGHTINGS,
    interval_paths,
    ism_gradient,
    mixture_kernel_mean,
    mmd2_to_mixture,
    particle_flow,
    particle_law,
    sds_gradient,
    tsm_gradient,
    vsd_gradient,
    within_mode_spread,
)
from refimpl.guidance import classifier_free_guidance
from refimpl.models import FunctionModel, predict
from refimpl.reference import ORDER_TOL, convergence_order
from refimpl.schedules import get_schedule
from toy_models import ExactModel, labelled_pair, ring

SCHEDULES = ["vp_linear", "rectified_flow"]


def _point_mass(theta: torch.Tensor, schedule) -> FunctionModel:
    """The exact eps-prediction of delta_theta (a point per row): eps_hat(x_t) = (x_t - alpha_t theta) / sigma_t."""

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = schedule(t)
        a, s = (v.alpha[:, None], v.sigma[:, None]) if v.alpha.ndim else (v.alpha, v.sigma)
        return (x - a * theta) / s

    return FunctionModel(eps, schedule, "eps")


def _lab(name: str, w: float = 3.0):
    s = get_schedule(name)
    mix = labelled_pair()
    uncond, cond = ExactModel(mix, s), ExactModel(mix.condition(1), s)
    return s, mix, uncond, classifier_free_guidance(cond, uncond, w)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
def test_sds_is_vsd_whose_fake_law_is_the_particle_itself(name: str, weighting: str) -> None:
    """The point mass at theta predicts the injected eps exactly, so VSD with it as fake law is SDS."""
    s, mix, uncond, _ = _lab(name)
    g = torch.Generator().manual_seed(0)
    theta, eps = mix.sample(64, g), torch.randn(64, 2, generator=g)
    t = s.t_min + (s.t_max - s.t_min) * (0.05 + 0.9 * torch.rand(64, generator=g))
    sds = sds_gradient(theta, uncond, t, eps, weighting=weighting)
    vsd = vsd_gradient(theta, uncond, _point_mass(theta, s), t, eps, weighting=weighting)
    v = s(t)
    w = WEIGHTINGS[weighting](v.alpha, v.sigma)[:, None]
    bound = sd_point_mass_bound(theta, eps, v.alpha[:, None], v.sigma[:, None]) * w
    assert bool(((sds - vsd).abs() <= bound).all())


@pytest.mark.parametrize("name", SCHEDULES)
def test_weightings_are_sigma_squared_and_sigma_over_alpha(name: str) -> None:
    """w(t) = sigma_t^2 (DreamFusion, threestudio's 1 - alpha-bar) and sigma_t / alpha_t (LucidDreamer, Dreamer XL)."""
    s, mix, uncond, _ = _lab(name)
    g = torch.Generator().manual_seed(10)
    theta, eps = mix.sample(16, g), torch.randn(16, 2, generator=g)
    t = torch.full((16,), 0.5)
    plain = sds_gradient(theta, uncond, t, eps, weighting="one")
    alpha, sigma = float(s.alpha_t(0.5)), float(s.sigma_t(0.5))
    for weighting, w in [("sigma2", sigma**2), ("sigma_over_alpha", sigma / alpha)]:
        got = sds_gradient(theta, uncond, t, eps, weighting=weighting)
        assert float((got - w * plain).abs().max()) <= roundoff(4, scale=float(plain.abs().max()) * max(w, 1.0))


@pytest.mark.parametrize("name", SCHEDULES)
def test_ism_tsm_and_sds_coincide_for_a_point_mass(name: str) -> None:
    """For delta_theta the DDIM inversion is the noising line, so every target is the injected eps."""
    s = get_schedule(name)
    g = torch.Generator().manual_seed(1)
    theta, eps = 2 * torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    model = _point_mass(theta, s)
    t_start, s_, t = s.t_min, 0.4, 0.6
    ism = ism_gradient(theta, model, model, eps, s=s_, t=t, t_start=t_start, inversion_steps=3, weighting="one")
    tsm = tsm_gradient(
        theta, model, model, eps, s=s_, t=t, gamma=0.3, t_start=t_start, inversion_steps=3, weighting="one"
    )
    sds = sds_gradient(theta, model, torch.tensor(t), eps, weighting="one")
    v = s(torch.tensor([t_start, s_, t]))
    bound = 16 * float(sd_point_mass_bound(theta, eps, v.alpha.min(), v.sigma.min()).max())  # 3 + 2 steps
    for grad in (ism, tsm):
        assert float((grad - sds).abs().max()) <= bound
        assert float(grad.abs().max()) <= bound  # the point mass's own guidance: eps_hat(x_t) = eps
    paths = interval_paths(theta, model, eps, s=s_, t=t, mu=0.5, t_start=s_, inversion_steps=1)
    exact = s(t).alpha * theta + s(t).sigma * eps
    assert float((paths.x_t - exact).abs().max()) <= bound
    assert float((paths.x_t_via_mu - exact).abs().max()) <= bound


@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine"])
def test_tsm_with_gamma_one_is_ism_and_differs_otherwise(name: str) -> None:
    """gamma = 1 puts mu at s: path (b) is path (a), the targets are the same number (Dreamer XL, Sec. 3.2)."""
    s, mix, uncond, guided = _lab(name)
    g = torch.Generator().manual_seed(2)
    theta, eps = mix.sample(32, g), torch.randn(32, 2, generator=g)
    opts = {"s": 0.3, "t": 0.4, "t_start": s.t_min, "inversion_steps": 4}
    ism = ism_gradient(theta, guided, uncond, eps, **opts)
    assert torch.equal(tsm_gradient(theta, guided, uncond, eps, gamma=1.0, **opts), ism)
    tsm = tsm_gradient(theta, guided, uncond, eps, gamma=0.3, **opts)
    assert float((tsm - ism).abs().max()) > 1e-3


def test_tsm_paths_differ_at_second_order_and_ism_target_drifts_at_first() -> None:
    """|x_t(a) - x_t(b)| is the difference of one- and two-step DDIM: O(delta^2). ISM's target eps(x_s, s) differs
    from eps(x_t, t) at the network input by O(delta), TSM's eps(x_mu, mu) by O((t - mu)) = O(delta)."""
    s, mix, uncond, _ = _lab("vp_linear")
    g = torch.Generator().manual_seed(3)
    theta, eps = mix.sample(64, g), torch.randn(64, 2, generator=g)
    t = 0.5
    deltas = [0.08, 0.04, 0.02, 0.01]
    gaps, drifts = [], []
    for d in deltas:
        p = interval_paths(theta, uncond, eps, s=t - d, t=t, mu=t - d / 2, t_start=s.t_min, inversion_steps=5)
        gaps.append(float((p.x_t - p.x_t_via_mu).norm(dim=1).mean()))
        e_t = predict(uncond, p.x_t, torch.tensor(t), "eps")
        drifts.append(float((e_t - predict(uncond, p.x_s, torch.tensor(t - d), "eps")).norm(dim=1).mean()))
    steps = [round(1 / d) for d in deltas]
    assert abs(convergence_order(steps, gaps).order - 2) < ORDER_TOL
    assert abs(convergence_order(steps, drifts).order - 1) < ORDER_TOL


def test_mmd_to_a_mixture_has_its_iid_expectation() -> None:
    """E MMD^2(empirical law of n i.i.d. draws, p) = (1 - E k(X, X')) / n, exactly; checked by a CLT bound."""
    mix, n, reps, ell = ring(), 16, 200, 0.7
    g = torch.Generator().manual_seed(4)
    values = torch.stack([mmd2_to_mixture(mix.sample(n, g), mix, ell) for _ in range(reps)])
    expected = (1 - mixture_kernel_mean(mix, ell)) / n
    assert abs(float(values.mean() - expected)) <= clt_bound(float(values.std()), reps)
    assert float(mmd2_to_mixture(mix.means, mix, ell)) > 0.0


def test_mixture_kernel_mean_matches_the_pairwise_gaussian_formula() -> None:
    """The batched closed form against chapter 7b's one-pair E k(X, Y) (an independent implementation)."""
    mix, ell = labelled_pair(), 0.4
    w, m, S = mix.weights, mix.means, mix.covariances
    pairwise = sum(
        w[j] * w[k] * gaussian_rbf_expectation(m[j], S[j], m[k], S[k], ell) for j in range(mix.K) for k in range(mix.K)
    )
    assert abs(float(mixture_kernel_mean(mix, ell) - pairwise)) <= roundoff(64 * mix.K**2)


@pytest.mark.parametrize("method", ["sds", "vsd"])
def test_particle_flow_step_is_the_mean_gradient_step_refimpl_vs_itself(method: str) -> None:
    """One step of the loop, options away from their defaults, against the gradient functions on the same draws."""
    s = get_schedule("vp_cosine")
    model = ExactModel(ring(), s)
    theta = torch.randn(8, 2, generator=torch.Generator().manual_seed(8))
    opts = {"lr": 0.2, "n_noise": 3, "t_range": (0.3, 0.6), "weighting": "sigma2", "bandwidth": 0.2}
    traj = particle_flow(theta, model, method=method, steps=1, generator=torch.Generator().manual_seed(9), **opts)
    g = torch.Generator().manual_seed(9)
    t = 0.3 + 0.3 * torch.rand(24, generator=g)
    eps = torch.randn(24, 2, generator=g)
    x = theta.repeat(3, 1)
    if method == "sds":
        grad = sds_gradient(x, model, t, eps, weighting="sigma2")
    else:
        grad = vsd_gradient(x, model, ExactModel(particle_law(theta, 0.2), s), t, eps, weighting="sigma2")
    assert traj.shape == (2, 8, 2) and torch.equal(traj[0], theta)
    assert float((traj[1] - (theta - 0.2 * grad.reshape(3, 8, 2).mean(0))).abs().max()) <= roundoff(16)


@pytest.fixture(scope="module")
def flows() -> dict[str, torch.Tensor]:
    """SDS and VSD from the same 32 particles near the origin, on the ring under vp_linear (w(t) = 1)."""
    model = ExactModel(ring(), get_schedule("vp_linear"))
    theta0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(5))
    common = {"lr": 0.1, "weighting": "one", "steps": 150}
    return {
        "sds": particle_flow(
            theta0, model, method="sds", n_noise=16, **common, generator=torch.Generator().manual_seed(6)
        ),
        "vsd": particle_flow(
            theta0, model, method="vsd", n_noise=4, bandwidth=0.1, **common, generator=torch.Generator().manual_seed(7)
        ),
    }


def test_sds_collapses_each_mode_and_vsd_keeps_its_spread(flows) -> None:
    """Within a mode the data spread is std sqrt(d); SDS ends well below it, VSD near it."""
    mix = ring()
    data_spread = math.sqrt(float(mix.covariances[0].trace()))
    sds = within_mode_spread(flows["sds"][-1], mix.means)
    vsd = within_mode_spread(flows["vsd"][-1], mix.means)
    assert sds < SD_SPREAD_FRACTION * data_spread < vsd


def test_vsd_particles_beat_iid_draws_and_sds_does_not(flows) -> None:
    """Exact MMD^2 to the data law: VSD's 32 particles below the expectation for 32 i.i.d. draws, SDS far above."""
    mix, ell = ring(), 0.5
    floor = float((1 - mixture_kernel_mean(mix, ell)) / 32)
    assert float(mmd2_to_mixture(flows["vsd"][-1], mix, ell)) < floor
    assert float(mmd2_to_mixture(flows["sds"][-1], mix, ell)) > Z * floor


def test_bad_input_raises() -> None:
    s, _, uncond, guided = _lab("vp_linear")
    theta, eps = torch.zeros(4, 2), torch.zeros(4, 2)
    opts = {"s": 0.3, "t": 0.4, "t_start": s.t_min, "inversion_steps": 2}
    with pytest.raises(ValueError, match="weighting"):
        sds_gradient(theta, uncond, 0.5, eps, weighting="snr")
    with pytest.raises(ValueError, match="eps"):
        sds_gradient(theta, uncond, 0.5, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="theta"):
        sds_gradient(torch.zeros(4), uncond, 0.5, torch.zeros(4))
    with pytest.raises(ValueError, match="t must lie"):
        sds_gradient(theta, uncond, 2.0, eps)
    with pytest.raises(ValueError, match="bandwidth"):
        particle_law(theta, 0.0)
    with pytest.raises(ValueError, match="gamma"):
        tsm_gradient(theta, guided, uncond, eps, gamma=1.5, **opts)
    with pytest.raises(ValueError, match="t_start <= s <= mu <= t"):
        ism_gradient(theta, guided, uncond, eps, **{**opts, "s": 0.5})
    with pytest.raises(ValueError, match="inversion_steps"):
        ism_gradient(theta, guided, uncond, eps, **{**opts, "inversion_steps": 0})
    with pytest.raises(ValueError, match="method"):
        particle_flow(theta, uncond, method="ism")
    with pytest.raises(ValueError, match="steps"):
        particle_flow(theta, uncond, steps=0)
    with pytest.raises(ValueError, match="t_range"):
        particle_flow(theta, uncond, t_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="lr"):
        particle_flow(theta, uncond, lr=0.0)
    with pytest.raises(ValueError, match="theta"):
        particle_flow(torch.zeros(4), uncond)
    with pytest.raises(ValueError, match="two or more"):
        within_mode_spread(torch.zeros(1, 2), torch.zeros(3, 2))
