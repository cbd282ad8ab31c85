"""Denoising MCMC (Kim & Ye 2022) and minority guidance (Um et al. 2023) on the mixture lab.

* unadjusted Langevin on Gaussian data has the stationary variance c / (1 - eps / (4 c)) (derived: the AR(1)
  recursion x' = (1 - eps / (2c)) x + sqrt(eps) z), checked by CLT on a long chain;
* a Gibbs sweep (MALA x-steps, exact p(j | x) draws) leaves the joint p(x, j) invariant: the sigma-index
  histogram after sweeps started from the joint passes a chi-square test against the prior; the official arg-max
  sigma step fails it;
* the minority score is larger on the rare component, and classifier guidance towards it raises the fraction of
  rare samples from the exact data value (w = 0) monotonically in w.
"""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import Z, chi2_bound, clt_bound, pearson_chi2

from refimpl import grids
from refimpl.guidance import classifier_guidance
from refimpl.guidance.dmcmc import dlg_sweep, langevin_step, sigma_log_posterior
from refimpl.guidance.minority import minority_score
from refimpl.samplers import sample_ddim
from refimpl.schedules import get_schedule
from toy_models import ExactModel, GaussianMixture, labelled_pair
from toy_models.targets import class_log_probs, sample_labelled


def test_unadjusted_langevin_stationary_variance_on_a_gaussian() -> None:
    c, eps, sigma = 0.5, 0.5, 0.3
    g = GaussianMixture(torch.ones(1), torch.zeros(1, 1), torch.tensor([[[c - sigma**2]]]))
    gen = torch.Generator().manual_seed(0)
    n, burn = 16000, 30  # (1 - eps / (2c))^(2 burn) = 0.5^60: nothing of the start remains
    x = torch.zeros(n, 1)
    s, e = torch.full((n,), sigma), torch.full((n,), eps)
    for _ in range(burn):
        x = langevin_step(g, x, s, e, torch.randn(n, 1, generator=gen))
    v_exact = c / (1 - eps / (4 * c))
    # the sample variance of n i.i.d. Gaussian draws has SD v sqrt(2 / n)
    assert abs(float(x.var()) - v_exact) <= clt_bound(v_exact * math.sqrt(2), n)
    assert abs(v_exact - c) > 2 * clt_bound(v_exact * math.sqrt(2), n)  # the bias is visible at this eps


def _joint(mix, sigmas, log_prior, n, gen):
    j = torch.multinomial(log_prior.exp(), n, replacement=True, generator=gen)
    return mix.sample(n, gen) + sigmas[j][:, None] * torch.randn(n, mix.d, generator=gen), j


@pytest.mark.parametrize("sigma_step", ["gibbs", "argmax"])
def test_gibbs_sigma_step_keeps_the_joint_and_argmax_does_not(sigma_step: str) -> None:
    mix, J, n = labelled_pair(), 6, 3000
    sigmas = torch.logspace(math.log10(2.0), math.log10(0.05), J)
    log_prior = torch.full((J,), -math.log(J))
    gen = torch.Generator().manual_seed(1)
    x, j = _joint(mix, sigmas, log_prior, n, gen)
    for _ in range(3):
        x, j = dlg_sweep(mix, x, j, sigmas, log_prior, eta=0.5, sigma_step=sigma_step, metropolis=True, generator=gen)
    stat, dof = pearson_chi2(torch.bincount(j, minlength=J), log_prior.exp())
    if sigma_step == "gibbs":
        assert stat <= chi2_bound(dof), stat
    else:
        assert stat > chi2_bound(dof), stat
    lp = sigma_log_posterior(mix, x[:5], sigmas, log_prior)
    torch.testing.assert_close(torch.logsumexp(lp, -1), torch.zeros(5), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="sigma_step"):
        dlg_sweep(mix, x, j, sigmas, log_prior, eta=0.5, sigma_step="mode")
    with pytest.raises(ValueError, match="eta"):
        dlg_sweep(mix, x, j, sigmas, log_prior, eta=0.0)


def _imbalanced() -> GaussianMixture:
    return GaussianMixture(
        torch.tensor([0.95, 0.05]),
        torch.tensor([[-0.5, 0.0], [1.5, 1.0]]),
        torch.tensor([[[0.5, 0.1], [0.1, 0.4]], [[0.2, 0.0], [0.0, 0.2]]]),
        torch.tensor([0, 1]),
    )


def test_minority_score_is_higher_on_the_rare_component() -> None:
    mix, s = _imbalanced(), get_schedule("vp_linear")
    gen = torch.Generator().manual_seed(2)
    x0, y = sample_labelled(mix, 3000, gen)
    score = minority_score(ExactModel(mix, s), x0, torch.tensor(0.3), torch.randn(4, 3000, 2, generator=gen))
    rare, common = score[y == 1], score[y == 0]
    gap_se = math.sqrt(float(rare.var()) / len(rare) + float(common.var()) / len(common))
    assert float(rare.mean() - common.mean()) > Z * gap_se
    with pytest.raises(ValueError, match="noise"):
        minority_score(ExactModel(mix, s), x0, torch.tensor(0.3), torch.randn(3000, 2))


def test_minority_fraction_rises_with_the_guidance_weight() -> None:
    mix, s = _imbalanced(), get_schedule("vp_linear")
    model = ExactModel(mix, s)
    gen = torch.Generator().manual_seed(3)
    n = 1500
    x_T = torch.randn(n, 2, generator=gen) * s.sigma_t(s.t_max)
    ts = grids.timesteps(s, 24)

    def rare_fraction(x):
        return float((mix.responsibilities(x, 1.0, 0.0)[:, 1] > 0.5).double().mean())

    fractions = []
    for w in (0.0, 0.5, 1.0):
        guided = classifier_guidance(model, lambda x, t: class_log_probs(mix, x, *model._a_s(t)), 1, w)
        fractions.append(rare_fraction(sample_ddim(guided, x_T, ts)))
    exact = rare_fraction(mix.sample(20000, gen))  # the data law's own fraction
    p = max(exact, 1 / n)
    # two independent binomial proportions, plus DDIM's first-order error at 24 steps (policy: one SE more)
    assert abs(fractions[0] - exact) <= (Z + 1) * math.sqrt(p * (1 - p) * (1 / n + 1 / 20000))
    assert fractions[0] < fractions[1] < fractions[2], fractions
