"""The exact targets of chapter 6 (``toy_models.targets``): each normalises and has the limits it must have.

Conditional laws and p(y | x_t) against Bayes' rule and autograd; the product of two mixtures against the
pointwise product (round-off) and grid quadrature; the tilt at w = 1 and w = 0; the Gaussian tilt and p^beta of a
Gaussian in closed form against the grid; grid sampling and quantiles against the grid law (CLT, round-off).
"""

from __future__ import annotations

import pytest
import torch
from tolerances import GRID_MOMENT_ATOL, IDENTITY_RTOL, clt_bound, grid_cdf_atol

from toy_models import GaussianMixture, labelled_pair
from toy_models.targets import (
    annealed,
    class_log_probs,
    classifier_grad,
    conditional,
    gaussian_tilt,
    grid_density,
    labelled_line,
    product,
    tilted,
    wasserstein_1d,
)

BOX = ([-6.0, -6.0], [6.0, 6.0])


def _gaussian(mean: list[float], cov: list[list[float]]) -> GaussianMixture:
    return GaussianMixture(torch.ones(1), torch.tensor([mean]), torch.tensor([cov]))


def test_conditional_keeps_the_labelled_components_and_refuses_other_labels() -> None:
    pair = labelled_pair()
    c1 = conditional(pair, 1)
    assert c1.K == 2 and float(c1.weights.sum()) == pytest.approx(1.0, abs=IDENTITY_RTOL)
    torch.testing.assert_close(c1.means, pair.means[2:], rtol=0, atol=0)
    for bad in (2, -1, 0.5, True):
        with pytest.raises(ValueError, match="label y"):
            conditional(pair, bad)


@pytest.mark.parametrize("alpha_sigma", [(0.9, 0.44), (0.2, 0.98)])
def test_exact_classifier_is_bayes_rule_and_its_gradient_the_score_difference(alpha_sigma) -> None:
    """p(y | x_t) sums to one over classes, equals w_y p_t(x | y) / p_t(x), and its log-gradient (autograd) equals
    grad log p_t(x | y) - grad log p_t(x)."""
    pair = labelled_pair()
    a, s = alpha_sigma
    x = pair.noised(a, s).sample(16, torch.Generator().manual_seed(0))
    log_p = class_log_probs(pair, x, a, s)
    torch.testing.assert_close(torch.logsumexp(log_p, -1), torch.zeros(16), rtol=0, atol=IDENTITY_RTOL)
    prior = torch.log(pair.weights[pair.labels == 1].sum())
    bayes = prior + conditional(pair, 1).log_prob_t(x, a, s) - pair.log_prob_t(x, a, s)
    torch.testing.assert_close(log_p[:, 1], bayes, rtol=0, atol=IDENTITY_RTOL)
    xg = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(class_log_probs(pair, xg, a, s)[:, 1].sum(), xg)
    torch.testing.assert_close(classifier_grad(pair, x, a, s, 1), auto, rtol=IDENTITY_RTOL, atol=IDENTITY_RTOL)


def test_product_of_mixtures_is_the_normalised_pointwise_product() -> None:
    """log(p1 p2) - log(product) is the same constant (log Z) at every point, and the product's moments equal the
    grid quadrature of p1 p2; its exact samples have the mean within a CLT bound."""
    pair = labelled_pair()
    p1, p2 = conditional(pair, 0), pair.noised(1.0, 0.8)
    prod = product(p1, p2)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    gap = p1.log_prob(x) + p2.log_prob(x) - prod.log_prob(x)
    assert float(gap.max() - gap.min()) < IDENTITY_RTOL * 10
    grid = grid_density(lambda y: p1.log_prob(y) + p2.log_prob(y), *BOX, 240)
    mean, cov = prod.moments()
    torch.testing.assert_close(grid.mean(), mean, rtol=0, atol=GRID_MOMENT_ATOL)
    torch.testing.assert_close(grid.covariance() - torch.diag(grid.h**2 / 12), cov, rtol=0, atol=GRID_MOMENT_ATOL)
    n = 4000
    draws = prod.sample(n, torch.Generator().manual_seed(2))
    assert bool(((draws.mean(0) - mean).abs() <= clt_bound(cov.diagonal().sqrt(), n)).all())
    with pytest.raises(ValueError, match="dimension"):
        product(p1, labelled_line())


def test_tilt_is_normalised_and_reduces_to_cond_at_one_and_uncond_at_zero() -> None:
    pair = labelled_pair()
    pc = conditional(pair, 1)
    for w, target in [(1.0, pc), (0.0, pair)]:
        t = tilted(pc, pair, w, *BOX, 120)
        ref = grid_density(target.log_prob, *BOX, 120)
        assert float(t.mass.sum()) == pytest.approx(1.0, abs=IDENTITY_RTOL)
        torch.testing.assert_close(t.mass, ref.mass, rtol=IDENTITY_RTOL, atol=1e-300)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="w must"):
            tilted(pc, pair, bad, *BOX, 10)


@pytest.mark.parametrize("w", [0.5, 3.0])
def test_gaussian_tilt_closed_form_matches_the_grid(w: float) -> None:
    pc, pu = _gaussian([1.0, 0.0], [[0.3, 0.1], [0.1, 0.4]]), _gaussian([0.0, -0.5], [[1.0, 0.0], [0.0, 1.5]])
    exact = gaussian_tilt(pc, pu, w)
    grid = tilted(pc, pu, w, *BOX, 300)
    mean, cov = exact.moments()
    torch.testing.assert_close(grid.mean(), mean, rtol=0, atol=GRID_MOMENT_ATOL)
    torch.testing.assert_close(grid.covariance() - torch.diag(grid.h**2 / 12), cov, rtol=0, atol=GRID_MOMENT_ATOL)


def test_gaussian_tilt_refuses_a_non_normalisable_tilt_and_mixtures() -> None:
    wide, narrow = _gaussian([0.0], [[4.0]]), _gaussian([0.0], [[1.0]])
    with pytest.raises(ValueError, match="normalisable"):
        gaussian_tilt(wide, narrow, 3.0)  # precision 3/4 - 2 < 0
    with pytest.raises(ValueError, match="single Gaussians"):
        gaussian_tilt(labelled_pair(), narrow, 1.0)


def test_annealed_gaussian_has_covariance_over_beta_and_beta_one_is_p() -> None:
    g = _gaussian([0.5], [[0.8]])
    for beta in (0.5, 2.0):
        grid = annealed(g, beta, [-10.0], [10.0], 2000)
        assert float(grid.mean()[0]) == pytest.approx(0.5, abs=GRID_MOMENT_ATOL)
        assert float(grid.covariance()[0, 0] - grid.h[0] ** 2 / 12) == pytest.approx(0.8 / beta, abs=GRID_MOMENT_ATOL)
    line = labelled_line()
    torch.testing.assert_close(
        annealed(line, 1.0, [-6.0], [6.0], 500).mass, grid_density(line.log_prob, [-6.0], [6.0], 500).mass
    )
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="beta"):
            annealed(line, bad, [-6.0], [6.0], 10)


def test_grid_sampling_and_quantiles_reproduce_the_grid_law() -> None:
    line = labelled_line()
    grid = annealed(line, 2.0, [-6.0], [7.0], 1300)
    n = 20000
    draws = grid.sample(n, torch.Generator().manual_seed(3))
    std = float(grid.covariance()[0, 0].sqrt())
    assert abs(float(draws.mean() - grid.mean()[0])) <= clt_bound(std, n)
    u = torch.linspace(0.001, 0.999, 101)
    q = grid.quantile(u)
    # the grid law's CDF at q, accumulated cell by cell with the uniform part of the last cell
    edges = grid.points[:, 0] - grid.h[0] / 2
    cdf = torch.stack([(grid.mass * ((qi - edges) / grid.h[0]).clamp(0, 1)).sum() for qi in q])
    torch.testing.assert_close(cdf, u, rtol=0, atol=grid_cdf_atol(1300))
    assert wasserstein_1d(q, q) == 0.0
    with pytest.raises(ValueError, match="inside"):
        grid.quantile(torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="n must"):
        grid.sample(0)
    with pytest.raises(ValueError, match="one-dimensional"):
        grid_density(labelled_pair().log_prob, *BOX, 10).quantile(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="same shape"):
        wasserstein_1d(q, q[:-1])
