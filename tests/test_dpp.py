"""DPPs and volume sampling: sizes, intensities, exact laws on finite sets, DPPy as an oracle, least squares."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from dppy.finite_dpps import FiniteDPP
from dppy.multivariate_jacobi_ope import MultivariateJacobiOPE
from tolerances import IDENTITY_RTOL, Z, chi2_bound, clt_bound, pearson_chi2, roundoff

from refimpl.selection.dpp import (
    ARCSINE_BOUND,
    best_coefficients,
    check_projection_kernel,
    christoffel,
    dpp_interpolation_error,
    inclusion_covariance,
    l2_error,
    legendre_features,
    optimal_weights,
    projection_dpp_subset_law,
    sample_christoffel,
    sample_projection_dpp,
    sample_projection_dpp_discrete,
    sample_volume,
    volume_density,
    weighted_least_squares,
)

NODES, QW = np.polynomial.legendre.leggauss(200)
QW = QW / 2  # Gauss-Legendre for the uniform probability measure on [-1, 1]


def random_projection(N: int, m: int, seed: int) -> np.ndarray:
    U, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(N, m)))
    return U @ U.T


def test_legendre_features_are_orthonormal() -> None:
    phi = legendre_features(NODES, 25)
    assert np.abs(phi.T @ (QW[:, None] * phi) - np.eye(25)).max() <= roundoff(400, scale=25)


def test_the_arcsine_bound_holds() -> None:
    """phi_j^2 / 2 <= ARCSINE_BOUND / (pi sqrt(1 - x^2)) (Bernstein), checked on a fine grid up to j = 80."""
    x = np.cos(np.linspace(1e-6, np.pi - 1e-6, 20_001))
    ratio = legendre_features(x, 80) ** 2 / 2 * np.pi * np.sqrt(1 - x**2)[:, None]
    assert ratio.max() <= ARCSINE_BOUND


@pytest.mark.parametrize("m", [1, 5, 12])
def test_a_projection_dpp_has_exactly_m_distinct_points(m: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = sample_projection_dpp(m, rng)
        assert x.shape == (m,)
        assert np.unique(x).size == m
        assert np.all(np.abs(x) <= 1)
    K = random_projection(9, 4, 0)
    assert sample_projection_dpp_discrete(K, rng, 50).shape == (50, 4)


def linear_statistic_moments(h, m: int) -> tuple[float, float]:
    """Mean int h K(x,x) dmu and variance int h^2 K(x,x) - int int h(x) h(y) K(x,y)^2 of sum_i h(x_i)."""
    phi = legendre_features(NODES, m)
    k = (phi**2).sum(1)
    hw = QW * h(NODES)
    return float(hw @ k), float(QW @ (h(NODES) ** 2 * k) - hw @ (phi @ phi.T) ** 2 @ hw)


@pytest.mark.parametrize("sampler", ["refimpl", "dppy"])
def test_linear_statistics_of_the_continuous_dpp(sampler: str) -> None:
    """Mean (the one-point intensity K(x, x)) and variance (the pair correlation K(x, y)^2) of
    sum_i x_i^2 over 3000 samples, ours and DPPy's Jacobi ensemble, within CLT bounds. An i.i.d. rho sample
    has 5.8 times that variance."""
    m, n = 6, 3000
    h = lambda x: x**2  # noqa: E731
    mean, var = linear_statistic_moments(h, m)
    if sampler == "refimpl":
        rng = np.random.default_rng(1)
        X = np.array([sample_projection_dpp(m, rng) for _ in range(n)])
    else:
        ope = MultivariateJacobiOPE(m, np.array([[0.0, 0.0]]))
        X = np.array([ope.sample(random_state=np.random.RandomState(i)).ravel() for i in range(n)])
    S = h(X).sum(1)
    assert abs(S.mean() - mean) <= clt_bound(math.sqrt(var), n)
    sq = (S - mean) ** 2
    assert abs(sq.mean() - var) <= clt_bound(sq.std(), n)


def test_christoffel_sampling_has_the_density() -> None:
    """i.i.d. rho = k_m / m dmu: Kolmogorov distance within the DKW bound (false alarm 1e-6)."""
    m, n = 7, 20_000
    x = np.sort(sample_christoffel(n, m, np.random.default_rng(2)))
    grid = np.linspace(-1, 1, 4001)
    dens = christoffel(grid, m) / m / 2  # w.r.t. dx
    cdf_grid = np.concatenate([[0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(grid))])
    cdf = np.interp(x, grid, cdf_grid)
    dist = np.maximum(np.abs(np.arange(1, n + 1) / n - cdf), np.abs(np.arange(n) / n - cdf)).max()
    assert dist <= math.sqrt(math.log(2 / 1e-6) / (2 * n)) + 1e-5  # + trapezoid error of the CDF


def test_the_one_point_intensity_is_the_christoffel_function() -> None:
    """A uniformly chosen point of each DPP sample has density K(x, x) / m = rho: Kolmogorov distance of
    2000 such points (independent across samples) within the DKW bound."""
    m, n = 6, 2000
    rng = np.random.default_rng(11)
    x = np.sort([rng.choice(sample_projection_dpp(m, rng)) for _ in range(n)])
    grid = np.linspace(-1, 1, 4001)
    dens = christoffel(grid, m) / m / 2  # w.r.t. dx
    cdf_grid = np.concatenate([[0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(grid))])
    cdf = np.interp(x, grid, cdf_grid)
    dist = np.maximum(np.abs(np.arange(1, n + 1) / n - cdf), np.abs(np.arange(n) / n - cdf)).max()
    assert dist <= math.sqrt(math.log(2 / 1e-6) / (2 * n)) + 1e-5  # + trapezoid error of the CDF


def test_the_discrete_law_sums_to_one_and_matches_samples() -> None:
    """P(S) = det(K_S) sums to 1; our samples and DPPy's (GS and Chol) pass Pearson chi-square on all subsets."""
    K = random_projection(7, 3, 3)
    law = projection_dpp_subset_law(K)
    assert abs(sum(law.values()) - 1) <= roundoff(200)
    subsets = list(law)
    probs = np.array([law[s] for s in subsets])
    n = 6_000
    ours = sample_projection_dpp_discrete(K, np.random.default_rng(4), n)
    samples = {"refimpl": [tuple(s) for s in ours]}
    dpp = FiniteDPP("correlation", projection=True, K=K)
    for mode in ["GS", "Chol"]:
        dpp.flush_samples()
        rs = np.random.RandomState(5)
        samples[mode] = [tuple(sorted(dpp.sample_exact(mode=mode, random_state=rs))) for _ in range(n)]
    for name, draws in samples.items():
        index = {s: i for i, s in enumerate(subsets)}
        counts = np.bincount([index[s] for s in draws], minlength=len(subsets))
        stat, dof = pearson_chi2(counts, probs)
        assert stat <= chi2_bound(dof), name


def test_inclusion_frequencies_match_the_kernel_diagonal() -> None:
    """Mahalanobis chi-square of the inclusion frequencies against diag K with the exact DPP covariance
    diag(K_ii) - K_ij^2 (rank N - 1: the size is fixed)."""
    K = random_projection(12, 5, 6)
    n = 20_000
    freq = np.zeros(12)
    for s in sample_projection_dpp_discrete(K, np.random.default_rng(7), n):
        freq[s] += 1
    freq /= n
    C = inclusion_covariance(K)
    dev = freq - np.diag(K)
    stat = n * dev @ np.linalg.pinv(C, rcond=1e-10) @ dev
    assert stat <= chi2_bound(np.linalg.matrix_rank(C, tol=1e-10))


def discrete_features(N: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """phi (N, m) orthonormal for the uniform measure mu on N points, and mu."""
    mu = np.full(N, 1.0 / N)
    Q, _ = np.linalg.qr(np.sqrt(mu)[:, None] * np.random.default_rng(seed).normal(size=(N, m)))
    return Q / np.sqrt(mu)[:, None], mu


@pytest.mark.parametrize(("m", "n"), [(2, 2), (2, 3), (2, 4), (3, 3), (3, 4)])
def test_volume_sampling_on_a_finite_set_by_enumeration(m: int, n: int) -> None:
    """Over all N^n tuples: the density sums to 1, the weighted least-squares estimate is unbiased,
    E[Q f] = P f, and for n = m (the DPP) E|f - Q f|^2 = (m + 1) |f - P f|^2."""
    N = 6
    phi, mu = discrete_features(N, m, seed=10 * m + n)
    k = (phi**2).sum(1)
    rho, w = mu * k / m, m / k
    f = np.random.default_rng(n).normal(size=N)
    c_best = phi.T @ (mu * f)
    best = mu @ (f - phi @ c_best) ** 2
    total, mean_c, err = 0.0, np.zeros(m), 0.0
    for t in itertools.product(range(N), repeat=n):
        t = list(t)
        pr = volume_density(rho[t], w[t], phi[t])
        if pr <= 1e-300:
            continue
        G = (w[t, None] * phi[t]).T @ phi[t]
        c = np.linalg.solve(G, (w[t, None] * phi[t]).T @ f[t])
        total += pr
        mean_c += pr * c
        err += pr * mu @ (f - phi @ c) ** 2
    assert abs(total - 1) <= IDENTITY_RTOL
    assert np.abs(mean_c - c_best).max() <= IDENTITY_RTOL
    if n == m:
        assert abs(err / best - (m + 1)) <= IDENTITY_RTOL * (m + 1)


def test_continuous_volume_sampling_is_unbiased() -> None:
    """E[Q f] = P f for n = m + 4 generalised volume samples on [-1, 1], per coefficient within a CLT bound
    (Bonferroni over the m coefficients; with n >= m + 3 the estimate's variance is finite)."""
    m, n, reps = 4, 8, 2000
    f = lambda x: np.exp(x) * np.sin(3 * x)  # noqa: E731
    rng = np.random.default_rng(8)
    C = np.array([(lambda x: weighted_least_squares(x, f(x), m))(sample_volume(n, m, rng)) for _ in range(reps)])
    c_best = best_coefficients(f, m)
    z = Z + math.sqrt(2 * math.log(m))  # Bonferroni: m one-dimensional checks
    assert np.all(np.abs(C.mean(0) - c_best) <= clt_bound(C.std(0), reps, z))


@pytest.mark.parametrize("m", [2, 3])
def test_the_dpp_error_is_m_plus_one_times_the_best(m: int) -> None:
    """For the projection DPP on [-1, 1] (n = m), E|f - Q f|^2 = (m + 1)|f - P f|^2: tensor Gauss quadrature,
    exact for a polynomial f (here of degree m + 2). (Monte Carlo would not do: the error has infinite
    variance, since the DPP density vanishes only quadratically at singular designs.)"""
    f = lambda x: x ** (m + 2) - 0.5 * x ** (m + 1) + 0.3  # noqa: E731
    best = l2_error(best_coefficients(f, m), f)
    ratio = dpp_interpolation_error(f, m, n_quad=8) / best
    # 8^m terms, each an m x m determinant (m^2 operations, condition ~ 10), relative to the total
    assert abs(ratio - (m + 1)) <= roundoff(8**m * m**2, scale=m + 1, condition=10)


def test_optimal_weights_make_the_gram_matrix_unbiased() -> None:
    """E_rho[w phi phi^T] = I: quadrature of (k/m) (m/k) phi phi^T against mu."""
    m = 9
    phi = legendre_features(NODES, m)
    G = (QW * christoffel(NODES, m) / m * optimal_weights(NODES, m))[None, :] @ (
        phi[:, :, None] * phi[:, None, :]
    ).reshape(200, -1)
    assert np.abs(G.reshape(m, m) - np.eye(m)).max() <= roundoff(400, scale=m)


def test_bad_input_raises() -> None:
    K = random_projection(6, 3, 0)
    with pytest.raises(ValueError, match="not a projection"):
        check_projection_kernel(0.9 * K)
    with pytest.raises(ValueError, match="symmetric"):
        check_projection_kernel(K + np.triu(np.ones((6, 6)), 1) * 0.1)
    with pytest.raises(ValueError, match="exactly 3 points"):
        sample_projection_dpp_discrete(K, np.random.default_rng(0), k=4)
    with pytest.raises(ValueError, match="n >= m"):
        sample_volume(3, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least m points"):
        weighted_least_squares(np.zeros(2), np.zeros(2), 3)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        legendre_features(np.array([1.5]), 3)
    with pytest.raises(ValueError, match="positive integer"):
        legendre_features(np.array([0.5]), 0)


def _rotated_legendre(m: int):
    """phi R for a fixed orthogonal R: another orthonormal basis of the same span, so the same kernel K_m."""
    R, _ = np.linalg.qr(np.random.default_rng(9).normal(size=(m, m)))
    return lambda x, m_: legendre_features(x, m_) @ R, R


def test_refimpl_against_itself_a_rotated_basis_gives_the_same_kernel_and_samples() -> None:
    """``features`` off default: every quantity that depends only on K_m (Christoffel function, weights, the DPP,
    volume and repeated DPP samples with the same seed) is unchanged; least-squares coefficients rotate by R^T."""
    from refimpl.selection.dpp import sample_repeated_dpp

    m = 5
    feats, R = _rotated_legendre(m)
    x = np.linspace(-1, 1, 41)
    assert np.abs(christoffel(x, m, feats) - christoffel(x, m)).max() <= roundoff(16 * m, m)
    assert np.abs(optimal_weights(x, m, feats) - optimal_weights(x, m)).max() <= roundoff(32 * m, 1.0, condition=m)
    doubled = lambda x_, m_: 2.0 * legendre_features(x_, m_)  # noqa: E731 (not orthonormal: k_m scales by 4)
    assert np.abs(christoffel(x, m, doubled) - 4.0 * christoffel(x, m)).max() <= roundoff(64 * m, m)
    for draw in (
        lambda f, rng: sample_projection_dpp(m, rng, f),
        lambda f, rng: sample_volume(8, m, rng, f),
        lambda f, rng: sample_repeated_dpp(2, m, rng, f),
    ):
        ours = draw(feats, np.random.default_rng(3))
        # same draws; the acceptance ratios differ by round-off only, far from flipping a decision
        assert np.abs(ours - draw(legendre_features, np.random.default_rng(3))).max() <= 1e-9
    y = np.cos(3 * x)
    c_rot = weighted_least_squares(x, y, m, features=feats)
    assert np.abs(R @ c_rot - weighted_least_squares(x, y, m)).max() <= 1e-10


def test_custom_proposal_and_unit_weights_are_used() -> None:
    """``proposal`` is called (and a proposal with the same draws gives the same points); ``w = 1`` is ordinary least
    squares."""
    calls = []

    def proposal(k: int, m_: int, rng: np.random.Generator) -> np.ndarray:
        calls.append(k)
        return sample_christoffel(k, m_, rng)

    a = sample_projection_dpp(4, np.random.default_rng(1), proposal=proposal)
    assert calls and np.array_equal(a, sample_projection_dpp(4, np.random.default_rng(1)))
    x = np.linspace(-1, 1, 30)
    y = x**3 - x
    c = weighted_least_squares(x, y, 4, w=np.ones(30))
    ols = np.linalg.lstsq(legendre_features(x, 4), y, rcond=None)[0]
    assert np.abs(c - ols).max() <= 1e-12
