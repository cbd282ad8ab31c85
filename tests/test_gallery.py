"""Gallery pieces: averaged latents (Tex4D), similarity-preservation loss (DomainStudio), memory = component (GMem)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tolerances import clt_bound, roundoff

from refimpl import gallery
from toy_models import ring


@pytest.mark.parametrize("K", [1, 4, 16])
@pytest.mark.parametrize("abar", [0.2, 0.7])
def test_averaged_latents_have_variance_abar_var_plus_noise_over_k(K: int, abar: float) -> None:
    """Sample variance of 40000 averaged latents of N(0.3, 2) data within the CLT bound of the formula
    (Var of a sample variance of Gaussian draws: 2 v^2 / n); re-noising restores abar var + 1 - abar."""
    gen = torch.Generator().manual_seed(K)
    n, var_x0 = 40_000, 2.0
    x0 = 0.3 + math.sqrt(var_x0) * torch.randn(n, 1, generator=gen)
    xbar = gallery.average_latents(x0, abar, K, gen)
    v = gallery.averaged_latent_variance(abar, var_x0, K)
    assert abs(float(xbar.var()) - v) <= clt_bound(math.sqrt(2) * v, n)
    fixed = gallery.renoise_average(xbar, abar, K, gen)
    v_fixed = abar * var_x0 + 1 - abar
    assert abs(float(fixed.var()) - v_fixed) <= clt_bound(math.sqrt(2) * v_fixed, n)


def test_the_ddim_map_of_an_averaged_latent_has_too_little_spread() -> None:
    """The exact probability-flow map of the Gaussian toy (GaussianMixture.pf_ode_map) sends the averaged latent
    to a law of variance var_x0 (abar var_x0 + (1 - abar)/K) / (abar var_x0 + 1 - abar) < var_x0."""
    from toy_models.gmm import GaussianMixture

    var_x0, abar, K = 2.0, 0.3, 8
    g = GaussianMixture(torch.ones(1), torch.zeros(1, 1), torch.full((1, 1, 1), var_x0))
    x = torch.linspace(-3, 3, 7)[:, None]
    a, s = math.sqrt(abar), math.sqrt(1 - abar)
    slope = float((g.pf_ode_map(x, a, s, 1.0, 0.0)[-1] - g.pf_ode_map(x, a, s, 1.0, 0.0)[0]) / (x[-1] - x[0]))
    v_in = gallery.averaged_latent_variance(abar, var_x0, K)
    assert abs(slope**2 * v_in - gallery.ode_output_variance(v_in, abar, var_x0)) <= roundoff(32, scale=var_x0)
    assert gallery.ode_output_variance(v_in, abar, var_x0) < var_x0
    v_ok = gallery.averaged_latent_variance(abar, var_x0, 1)
    assert abs(gallery.ode_output_variance(v_ok, abar, var_x0) - var_x0) <= roundoff(16, scale=var_x0)


@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0))
def test_the_similarity_loss_is_zero_for_matching_similarities_and_scale_invariant(seed: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(6, 4, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen))
    scales = scale * torch.rand(6, 1, generator=gen) + 0.01
    assert float(gallery.pairwise_similarity_loss(z, z * scales @ q)) <= roundoff(256)  # rescaled and rotated
    other = torch.randn(6, 4, generator=gen)
    loss = float(gallery.pairwise_similarity_loss(z, other))
    assert loss > 0
    assert abs(float(gallery.pairwise_similarity_loss(z * scales, other)) - loss) <= roundoff(256, scale=loss)


def test_the_similarity_loss_vanishes_only_when_the_distributions_match() -> None:
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    w = z.clone()
    w[0] = -w[0]  # changes the cosines of sample 0
    p, q = gallery.similarity_distributions(z), gallery.similarity_distributions(w)
    assert float((p - q).abs().max()) > 0.01 and float(gallery.pairwise_similarity_loss(z, w)) > 0


@pytest.mark.parametrize("alpha, sigma", [(0.9, 0.4), (0.3, 0.95)])
def test_the_mixture_score_is_the_responsibility_weighted_memory_conditioned_score(alpha: float, sigma: float) -> None:
    gmm = ring(K=5)
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(1)) * 2
    got = gallery.mixture_score_from_components(gmm, x, alpha, sigma)
    assert float((got - gmm.score(x, alpha, sigma)).abs().max()) <= roundoff(64, scale=float(got.abs().max()))
    comp = gallery.memory_entry_model(gmm, 2)
    assert comp.K == 1 and torch.equal(comp.means[0], gmm.means[2])


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="abar"):
        gallery.averaged_latent_variance(1.0, 1.0, 2)
    with pytest.raises(ValueError, match="K"):
        gallery.average_latents(torch.zeros(2, 1), 0.5, 0)
    with pytest.raises(ValueError, match="n >= 3"):
        gallery.similarity_distributions(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature"):
        gallery.similarity_distributions(torch.ones(4, 3), temperature=0.0)
    with pytest.raises(ValueError, match="one shape"):
        gallery.pairwise_similarity_loss(torch.ones(4, 3), torch.ones(5, 3))
    with pytest.raises(ValueError, match="k must index"):
        gallery.memory_entry_model(ring(K=3), 3)


def test_the_temperature_sharpens_the_similarity_distributions() -> None:
    """``temperature`` off default: p_i = softmax(cos / T) directly, the loss is zero for matching similarities
    (rescaled embeddings) and the sum of the KL divergences at that temperature otherwise."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 4, generator=g)
    zn = z / z.norm(dim=1, keepdim=True)
    cos = zn @ zn.T
    off = ~torch.eye(6, dtype=torch.bool)
    expected = torch.softmax(cos[off].reshape(6, 5) / 0.25, -1)
    assert float((gallery.similarity_distributions(z, temperature=0.25) - expected).abs().max()) <= roundoff(64)
    assert float(gallery.pairwise_similarity_loss(z, 3.0 * z, temperature=0.25)) <= roundoff(256)
    other = torch.randn(6, 4, generator=g)
    on = other / other.norm(dim=1, keepdim=True)
    q = torch.softmax((on @ on.T)[off].reshape(6, 5) / 0.25, -1)
    kl = float((expected * (expected.log() - q.log())).sum())  # sum_i KL(p_i || q_i) at T = 0.25
    loss = float(gallery.pairwise_similarity_loss(z, other, temperature=0.25))
    assert loss > 0 and abs(loss - kl) <= roundoff(256, kl)
