"""Active diffusion subsampling (Nolan et al. 2024) and HD-Painter's structured noise (Manukyan et al. 2023).

* for a Gaussian prior and coordinate measurements the maximum-entropy choice is the maximum posterior variance
  (exact), and particles drawn from the exact posterior choose the same coordinate once K is large;
* the mixture posterior is exact: its density is proportional to prior x likelihood (round-off);
* particles by guided diffusion: the prior guided by the exact log p(y | x_t) is the posterior's model (round-off),
  so the ADS loop on guided particles selects what it selects on exact posterior particles; DPS's likelihood drops
  exactly Cov[x_0 | x_t] (adding it back recovers the exact gradient for a Gaussian prior);
* structured noise has zero mean and unit variance per sample to round-off, so the step's noise budget is
  sigma_tilde^2 exactly; bad input is refused.
"""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import IDENTITY_RTOL

from refimpl import grids
from refimpl.guidance.active import (
    dps_measurement_likelihood,
    exact_measurement_likelihood,
    max_entropy_index,
    measurement_entropy,
    measurement_guidance,
    mixture_posterior,
    select_measurements,
)
from refimpl.guidance.hdpainter import standardise, structured_ddim_step
from refimpl.models import predict
from refimpl.samplers import sample_ddim
from refimpl.schedules import get_schedule
from toy_models import ExactModel, labelled_pair, random_mixture


def test_max_entropy_is_max_posterior_variance_for_a_gaussian_prior() -> None:
    prior = random_mixture(K=1, d=6, seed=4)
    observed = torch.tensor([1, 4])
    y = torch.tensor([0.3, -0.2])
    post = mixture_posterior(prior, observed, y, 0.05)
    var = post.covariances[0].diagonal().clone()
    var[observed] = -1
    exact_choice = int(var.argmax())
    # the predicted measurement is N(., var_ii + s^2): its entropy is monotone in the posterior variance
    h = 0.5 * torch.log(2 * math.pi * math.e * (post.covariances[0].diagonal() + 0.05))
    h[observed] = -torch.inf
    assert int(h.argmax()) == exact_choice
    particles = post.sample(20000, torch.Generator().manual_seed(5))
    assert max_entropy_index(particles, observed, 0.05) == exact_choice
    assert measurement_entropy(particles, 0.05).shape == (6,)


def test_mixture_posterior_is_prior_times_likelihood() -> None:
    prior = labelled_pair()
    observed, y, s2 = torch.tensor([0]), torch.tensor([1.2]), 0.1
    post = mixture_posterior(prior, observed, y, s2)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(6))
    log_lik = -0.5 * (x[:, 0] - 1.2) ** 2 / s2
    gap = post.log_prob(x) - prior.log_prob(x) - log_lik
    assert float(gap.max() - gap.min()) < 10 * IDENTITY_RTOL


def test_active_bad_input() -> None:
    prior = labelled_pair()
    with pytest.raises(ValueError, match="observed"):
        mixture_posterior(prior, torch.tensor([2]), torch.tensor([0.0]), 0.1)
    with pytest.raises(ValueError, match="noise_var"):
        mixture_posterior(prior, torch.tensor([0]), torch.tensor([0.0]), 0.0)
    with pytest.raises(ValueError, match="already observed"):
        max_entropy_index(torch.randn(5, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1]), 0.1)
    with pytest.raises(ValueError, match="K >= 2"):
        measurement_entropy(torch.zeros(1, 3), 0.1)


def test_structured_noise_has_the_eta_ddim_variance_budget() -> None:
    g = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(7)) * 5 + 2
    z = standardise(g)
    flat = z.flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(4), rtol=0, atol=IDENTITY_RTOL)
    torch.testing.assert_close(flat.pow(2).mean(1), torch.ones(4), rtol=0, atol=IDENTITY_RTOL)
    s = get_schedule("vp_cosine")
    v_t = s(grids.timesteps(s, 4)[2])
    x0, eps = torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 8)
    out = structured_ddim_step(x0, eps, v_t, 0.4, g)  # only the structured noise remains
    torch.testing.assert_close(out.flatten(1).pow(2).mean(1), torch.full((4,), 0.16), rtol=IDENTITY_RTOL, atol=0)
    with pytest.raises(ValueError, match="zero variance"):
        standardise(torch.ones(2, 5))
    with pytest.raises(ValueError, match="two coordinates"):
        standardise(torch.ones(2, 1))


# --- particles by guided diffusion (issue 14, item on #49) -----------------------------------------------------


@pytest.mark.parametrize("schedule_name", ["vp_linear", "edm"])
def test_exact_measurement_guidance_is_the_posterior_model(schedule_name: str) -> None:
    """prior score + grad log p(y | x_t) (Bayes on the joint mixture of (x_t, y)) = the score of the noised exact
    posterior (the conditioned mixture): two independent formulas, equal to round-off."""
    prior, s = random_mixture(K=3, d=6, seed=2), get_schedule(schedule_name)
    observed, y, s2 = torch.tensor([1, 4]), torch.tensor([0.3, -0.5]), 0.01
    posterior = ExactModel(mixture_posterior(prior, observed, y, s2), s)
    guided = measurement_guidance(ExactModel(prior, s), exact_measurement_likelihood(prior, s, observed, y, s2))
    for frac in (0.05, 0.5, 0.9):
        t = torch.tensor(s.t_min + frac * (s.t_max - s.t_min))
        x = posterior.sample_xt(32, t, torch.Generator().manual_seed(0))[1]
        want = predict(posterior, x, t, "eps")
        torch.testing.assert_close(guided(x, t), want, rtol=0, atol=IDENTITY_RTOL * float(want.abs().max()))


@pytest.mark.parametrize("schedule_name", ["vp_linear", "edm"])
def test_dps_likelihood_is_exact_once_the_denoiser_spread_is_added(schedule_name: str) -> None:
    """For a Gaussian prior p(y | x_t) = N(y; x0_hat_i, C_ii + s^2) with C = Cov[x_0 | x_t]: DPS drops C_ii, and
    DPS with noise variance C_ii + s^2 has the exact guidance gradient (round-off); with s^2 alone it does not."""
    prior, s = random_mixture(K=1, d=4, seed=3), get_schedule(schedule_name)
    t = torch.tensor(s.t_min + 0.3 * (s.t_max - s.t_min))
    a, sig = s.alpha_t(t), s.sigma_t(t)
    S = prior.covariances[0]
    C = S - a**2 * S @ torch.linalg.solve(a**2 * S + sig**2 * torch.eye(4), S)
    observed, y, s2 = torch.tensor([2]), torch.tensor([0.7]), 0.05
    model = ExactModel(prior, s)
    x = model.sample_xt(16, t, torch.Generator().manual_seed(1))[1]
    exact = measurement_guidance(model, exact_measurement_likelihood(prior, s, observed, y, s2))
    dps_full = measurement_guidance(model, dps_measurement_likelihood(model, observed, y, s2 + float(C[2, 2])))
    dps = measurement_guidance(model, dps_measurement_likelihood(model, observed, y, s2))
    want = exact(x, t)
    scale = float(want.abs().max())
    torch.testing.assert_close(dps_full(x, t), want, rtol=0, atol=IDENTITY_RTOL * scale)
    assert float((dps(x, t) - want).abs().max()) > 1e3 * IDENTITY_RTOL * scale


def test_ads_with_guided_particles_selects_like_the_exact_posterior() -> None:
    """The ADS loop with particles from DDIM on the exactly guided prior selects the same coordinates and measures
    the same values as with particles from DDIM on the exact posterior model (same noise: round-off apart); the
    guidance scale s = 0 is the prior's own model."""
    prior, s = random_mixture(K=3, d=6, seed=2), get_schedule("vp_linear")
    ts, x_true = grids.timesteps(s, 12), prior.sample(1, torch.Generator().manual_seed(12))[0]

    def drawer(kind: str):
        gen = torch.Generator().manual_seed(13)

        def draw(obs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x_T = s.sigma_t(s.t_max) * torch.randn(128, 6, generator=gen)
            if kind == "posterior":
                return sample_ddim(ExactModel(mixture_posterior(prior, obs, y, 0.01), s), x_T, ts)
            like = exact_measurement_likelihood(prior, s, obs, y, 0.01)
            return sample_ddim(measurement_guidance(ExactModel(prior, s), like), x_T, ts)

        return draw

    obs_p, y_p = select_measurements(drawer("posterior"), x_true, 3, 0.01, torch.Generator().manual_seed(5))
    obs_g, y_g = select_measurements(drawer("guided"), x_true, 3, 0.01, torch.Generator().manual_seed(5))
    assert obs_g.tolist() == obs_p.tolist()
    torch.testing.assert_close(y_g, y_p, rtol=0, atol=0)
    like = exact_measurement_likelihood(prior, s, obs_p, y_p, 0.01)
    x, t = torch.randn(4, 6, generator=torch.Generator().manual_seed(6)), torch.tensor(0.5)
    assert torch.equal(measurement_guidance(ExactModel(prior, s), like, 0.0)(x, t), ExactModel(prior, s)(x, t))


def test_measurement_guidance_bad_input() -> None:
    prior, s = random_mixture(K=2, d=3, seed=0), get_schedule("vp_linear")
    like = exact_measurement_likelihood(prior, s, torch.tensor([0]), torch.tensor([0.1]), 0.1)
    with pytest.raises(ValueError, match="s must"):
        measurement_guidance(ExactModel(prior, s), like, -1.0)
    with pytest.raises(ValueError, match="y must"):
        exact_measurement_likelihood(prior, s, torch.tensor([0, 1]), torch.tensor([0.1]), 0.1)
    with pytest.raises(ValueError, match="noise_var"):
        dps_measurement_likelihood(ExactModel(prior, s), torch.tensor([0]), torch.tensor([0.1]), -0.1)
    with pytest.raises(ValueError, match="n_select"):
        select_measurements(lambda o, y: torch.zeros(4, 3), torch.zeros(3), 4, 0.1)
