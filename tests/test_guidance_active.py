"""Active diffusion subsampling (Nolan et al. 2024) and HD-Painter's structured noise (Manukyan et al. 2023).

* for a Gaussian prior and coordinate measurements the maximum-entropy choice is the maximum posterior variance
  (exact), and particles drawn from the exact posterior choose the same coordinate once K is large;
* the mixture posterior is exact: its density is proportional to prior x likelihood (round-off);
* structured noise has zero mean and unit variance per sample to round-off, so the step's noise budget is
  sigma_tilde^2 exactly; bad input is refused.
"""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import IDENTITY_RTOL

from refimpl import grids
from refimpl.guidance.active import max_entropy_index, measurement_entropy, mixture_posterior
from refimpl.guidance.hdpainter import standardise, structured_ddim_step
from refimpl.schedules import get_schedule
from toy_models import labelled_pair, random_mixture


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
