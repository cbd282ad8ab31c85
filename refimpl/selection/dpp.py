"""Projection DPPs and generalised volume sampling for weighted least squares (numpy, float64).

Nouy & Michel (arXiv:2312.14057v3). Approximate f in L^2(mu) by an element of V_m = span(phi_1..phi_m),
phi orthonormal in L^2(mu), from evaluations at random points. Here mu is the uniform probability
measure on [-1, 1] and phi_j = sqrt(2j + 1) P_j the orthonormal Legendre polynomials (or any finite
ground set with a projection kernel).

* Christoffel function k_m(x) = sum_j phi_j(x)^2 = K_m(x, x); optimal i.i.d. sampling draws from
  rho = (k_m / m) mu and weights w = m / k_m (Cohen & Migliorati arXiv:1608.00512, recalled by Nouy & Michel).
* The projection DPP with kernel K_m(x, y) = phi(x)^T phi(y): m points with joint density
  det[K_m(x_i, x_j)] / m! w.r.t. mu^m; its one-point intensity is K_m(x, x) (each point is rho-distributed).
  Sampled by the chain rule (Hough-Krishnapur-Peres-Virag): the k-th point has density
  |P_k^perp phi(x)|^2 / (m - k + 1), P_k^perp the projection off span(phi(x_1..x_{k-1})), drawn by rejection
  from rho (acceptance |P_k^perp phi(x)|^2 / |phi(x)|^2).
* Generalised volume sampling of n >= m points (Nouy & Michel): density
  (n - m)! / n! det(sum_i w(x_i) phi(x_i) phi(x_i)^T) prod_i rho(x_i) w.r.t. mu^n; it is the union of a
  projection DPP (m points) and n - m i.i.d. rho points in random order (the volume-rescaled sampling of
  Derezinski, Warmuth & Hsu, generalised). Its weighted least-squares estimate is unbiased: E[Q f] = P f.
  With n = m it is the DPP itself, and then E |f - Q f|^2 = (m + 1) |f - P f|^2 exactly (checked by
  enumeration on finite sets and by quadrature on [-1, 1]; the error's variance is infinite, so Monte Carlo
  means of it converge slowly).
* Repeated DPPs: r independent projection DPPs, n = r m points, with the weights w.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from refimpl._validation import as_real_array, check_generator, check_integer

__all__ = [
    "ARCSINE_BOUND",
    "MAX_PROPOSAL_ROUNDS",
    "MAX_QUADRATURE_NODES",
    "MAX_SUBSETS",
    "best_coefficients",
    "check_projection_kernel",
    "christoffel",
    "dpp_interpolation_error",
    "inclusion_covariance",
    "l2_error",
    "least_squares_errors",
    "legendre_features",
    "optimal_weights",
    "projection_dpp_subset_law",
    "sample_christoffel",
    "sample_iid",
    "sample_projection_dpp",
    "sample_projection_dpp_discrete",
    "sample_repeated_dpp",
    "sample_volume",
    "volume_density",
    "weighted_least_squares",
]

#: sup_x (phi_j(x)^2 / 2) / arcsine(x) <= 3 for every j: Bernstein's inequality
#: sqrt(sin t) |P_j(cos t)| < sqrt(2 / (pi j)) gives (2j + 1) / j <= 3 for j >= 1, and pi / 2 for j = 0.
ARCSINE_BOUND = 3.0

Features = Callable[[np.ndarray, int], np.ndarray]


#: Rounds of 4m fresh proposals ``sample_projection_dpp`` draws for one point before it gives up (and rounds of
#: rejection ``sample_christoffel`` runs). Point k is
#: accepted with probability (m - k) / m >= 1/m per proposal, so a round of 4m misses with probability at most
#: (1 - 1/m)^(4m) < e^-4; 200 rounds miss with probability below e^-800: only degenerate features exhaust them.
MAX_PROPOSAL_ROUNDS = 200
#: Subsets ``projection_dpp_subset_law`` enumerates at most (binom(N, m) determinants); pass ``max_count`` to lift.
MAX_SUBSETS = 2**16
#: Quadrature nodes ``dpp_interpolation_error`` visits at most (n_quad^m determinants); pass ``max_count`` to lift.
MAX_QUADRATURE_NODES = 10**5


def _check_m(m: int) -> int:
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"the dimension m must be a positive integer, got {m!r}")
    return int(m)


def legendre_features(x: np.ndarray, m: int) -> np.ndarray:
    """phi(x) (N, m): phi_j = sqrt(2j + 1) P_j, orthonormal for the uniform probability measure on [-1, 1].

    Helper, no paper equation: the orthonormal Legendre basis, the example basis of Nouy & Michel, arXiv:2312.14057v3.
    """
    m = _check_m(m)
    x = np.asarray(x, dtype=np.float64)
    if np.any(np.abs(x) > 1):
        raise ValueError("x must lie in [-1, 1]")
    xr = x.ravel()
    P = np.empty((m, xr.size))  # (m, N): each P_j a contiguous row
    P[0] = 1.0
    if m > 1:
        P[1] = xr
    for j in range(1, m - 1):  # Bonnet: (j + 1) P_{j+1} = (2j + 1) x P_j - j P_{j-1}
        P[j + 1] = ((2 * j + 1) * xr * P[j] - j * P[j - 1]) / (j + 1)
    return np.ascontiguousarray((P * np.sqrt(2 * np.arange(m) + 1.0)[:, None]).T)


def christoffel(x: np.ndarray, m: int, features: Features = legendre_features) -> np.ndarray:
    """k_m(x) = sum_j phi_j(x)^2 = K_m(x, x), the one-point intensity of the projection DPP.

    Paper: Nouy & Michel, arXiv:2312.14057v3, the Christoffel function k_m, eq. [unverified].
    """
    return (features(x, m) ** 2).sum(-1)


def optimal_weights(x: np.ndarray, m: int, features: Features = legendre_features) -> np.ndarray:
    """w(x) = m / k_m(x): the weights that make E_rho[w phi phi^T] = I.

    Paper: Nouy & Michel, arXiv:2312.14057v3, the optimal weights w = m / k_m (Cohen & Migliorati arXiv:1608.00512),
    eq. [unverified].
    """
    return m / christoffel(x, m, features)


def sample_christoffel(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """n i.i.d. points of rho = (k_m / m) mu for Legendre: pick j uniform, then x ~ phi_j^2 dmu.

    x ~ phi_j^2 dmu by rejection from the arcsine law cos(pi U), density 1 / (pi sqrt(1 - x^2)), with
    the bound ``ARCSINE_BOUND``.

    Paper: Nouy & Michel, arXiv:2312.14057v3, i.i.d. sampling from rho = (k_m / m) mu, eq. [unverified].
    """
    m = _check_m(m)
    n = check_integer(n, "n", 0)
    check_generator(rng)
    out = np.empty(n)
    filled = 0
    for _ in range(MAX_PROPOSAL_ROUNDS):
        if filled == n:
            break
        k = 2 * (n - filled) + 8
        j = rng.integers(0, m, size=k)
        x = np.cos(np.pi * rng.random(k))
        phi = legendre_features(x, m)[np.arange(k), j]
        ratio = phi**2 / 2 * np.pi * np.sqrt(1 - x**2) / ARCSINE_BOUND  # target / (bound * proposal)
        keep = x[rng.random(k) < ratio][: n - filled]
        out[filled : filled + keep.size] = keep
        filled += keep.size
    # a proposal is accepted with probability 1 / ARCSINE_BOUND, so a round of 2 (n - filled) + 8 proposals fills
    # about 2/3 of what is left: only a broken bound leaves points missing after MAX_PROPOSAL_ROUNDS rounds
    if filled < n:
        raise ValueError(
            f"rejection from the arcsine law accepted {filled} of n = {n} points in "
            f"{MAX_PROPOSAL_ROUNDS} rounds; the bound ARCSINE_BOUND does not hold for m = {m}"
        )
    return out


def sample_iid(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """n i.i.d. points from the optimal density rho = (k_m / m) mu.

    Paper: Nouy & Michel, arXiv:2312.14057v3, i.i.d. optimal sampling, eq. [unverified].
    """
    return sample_christoffel(n, m, rng)


def sample_projection_dpp(
    m: int,
    rng: np.random.Generator,
    features: Features = legendre_features,
    proposal: Callable[[int, int, np.random.Generator], np.ndarray] = sample_christoffel,
) -> np.ndarray:
    """m points of the projection DPP with kernel K_m(x, y) = phi(x)^T phi(y) (chain rule, in draw order).

    ``proposal(k, m, rng)`` must draw k points from rho = (k_m / m) mu.

    Paper: Nouy & Michel, arXiv:2312.14057v3, the projection DPP of the basis (chain rule of Hough et al.), eq.
    [unverified].
    """
    m = _check_m(m)
    Q = np.zeros((m, 0))  # orthonormal basis of span(phi(x_1), ..., phi(x_{k-1})) in R^m
    points = np.empty(m)
    pool = np.empty(0)  # proposals from rho, each used once, with their features and uniforms
    phi = np.empty((0, m))
    u, norm2 = np.empty(0), np.empty(0)
    for k in range(m):
        for _ in range(MAX_PROPOSAL_ROUNDS + 1):
            # accept with |P_k^perp phi(x)|^2 / |phi(x)|^2: target density over (m / (m - k)) times rho
            resid2 = norm2 - ((phi @ Q) ** 2).sum(-1)
            hits = np.flatnonzero(u * norm2 < resid2)
            if hits.size:
                break
            # every proposal left was rejected: draw fresh ones from rho
            pool = proposal(4 * m, m, rng)
            phi, u = features(pool, m), rng.random(pool.size)
            if not np.isfinite(phi).all():
                raise ValueError("features returned non-finite values for the proposed points")
            norm2 = (phi**2).sum(-1)  # |phi(x)|^2 = k_m(x) of each proposal
        else:
            raise ValueError(
                f"point {k + 1} of {m}: no proposal accepted in {MAX_PROPOSAL_ROUNDS} rounds of {4 * m}; the features "
                "are degenerate (their span has dimension below m) or the proposal does not draw from rho"
            )
        i = int(hits[0])
        points[k] = pool[i]
        r = phi[i] - Q @ (Q.T @ phi[i])
        Q = np.column_stack([Q, r / np.linalg.norm(r)])
        pool, phi, u, norm2 = pool[i + 1 :], phi[i + 1 :], u[i + 1 :], norm2[i + 1 :]  # rejected proposals are spent
    return points


def sample_volume(n: int, m: int, rng: np.random.Generator, features: Features = legendre_features) -> np.ndarray:
    """n >= m points of generalised volume sampling: a projection DPP and n - m i.i.d. rho points, shuffled.

    Paper: Nouy & Michel, arXiv:2312.14057v3, generalised volume-rescaled sampling, eq. [unverified].
    """
    m = _check_m(m)
    if n < m:
        raise ValueError(f"volume sampling needs n >= m points, got n = {n} < m = {m}")
    x = np.concatenate([sample_projection_dpp(m, rng, features), sample_christoffel(n - m, m, rng)])
    return rng.permutation(x)


def sample_repeated_dpp(r: int, m: int, rng: np.random.Generator, features: Features = legendre_features) -> np.ndarray:
    """r independent projection DPPs of m points each, concatenated (n = r m points).

    Paper: Nouy & Michel, arXiv:2312.14057v3, independent repetitions of the DPP, eq. [unverified].
    """
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise ValueError(f"the number of repetitions r must be an integer >= 1, got {r!r}")
    return np.concatenate([sample_projection_dpp(m, rng, features) for _ in range(r)])


def volume_density(rho: np.ndarray, w: np.ndarray, phi: np.ndarray) -> float:
    """(n - m)! / n! det(sum_i w_i phi_i phi_i^T) prod_i rho_i: the generalised volume-sampling density.

    rho, w: (n,) the density of rho w.r.t. mu and the weights at the n points; phi: (n, m) the features.

    Paper: Nouy & Michel, arXiv:2312.14057v3, the volume-sampling density, eq. [unverified].
    """
    rho, w, phi = as_real_array(rho, "rho"), as_real_array(w, "w"), as_real_array(phi, "phi")
    if phi.ndim != 2 or phi.shape[0] < phi.shape[1] or rho.shape != (phi.shape[0],) or w.shape != rho.shape:
        raise ValueError(f"need phi (n, m) with n >= m and rho, w (n,); got {phi.shape}, {rho.shape}, {w.shape}")
    n, m = phi.shape
    G = (w[:, None] * phi).T @ phi
    return math.factorial(n - m) / math.factorial(n) * float(np.linalg.det(G)) * float(np.prod(rho))


def weighted_least_squares(
    x: np.ndarray, y: np.ndarray, m: int, w: np.ndarray | None = None, features: Features = legendre_features
) -> np.ndarray:
    """Coefficients c (m,) minimising sum_i w_i (y_i - phi(x_i)^T c)^2 (w = m / k_m by default).

    Paper: Nouy & Michel, arXiv:2312.14057v3, the weighted least-squares projection Q f, eq. [unverified].
    """
    m = _check_m(m)
    x = np.asarray(x, dtype=np.float64)
    if x.size < m:
        raise ValueError(f"least squares in dimension m = {m} needs at least m points, got {x.size}")
    phi = features(x, m)
    w = m / (phi**2).sum(-1) if w is None else np.asarray(w, dtype=np.float64)  # optimal_weights, phi reused
    sw = np.sqrt(w)
    c, *_ = np.linalg.lstsq(sw[:, None] * phi, sw * np.asarray(y, dtype=np.float64), rcond=None)
    return c


@lru_cache(maxsize=8)
def _gauss_legendre(n_quad: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of n_quad-point Gauss-Legendre for the uniform probability measure on [-1, 1]."""
    t, wq = np.polynomial.legendre.leggauss(n_quad)
    return t, wq / 2


@lru_cache(maxsize=32)
def _quadrature_features(n_quad: int, m: int) -> np.ndarray:
    """legendre_features at the n_quad Gauss-Legendre nodes, computed once (read-only)."""
    phi = legendre_features(_gauss_legendre(n_quad)[0], m)
    phi.flags.writeable = False
    return phi


def best_coefficients(f: Callable[[np.ndarray], np.ndarray], m: int, n_quad: int = 400) -> np.ndarray:
    """c*_j = int f phi_j dmu: the coefficients of the orthogonal projection P f (Gauss-Legendre).

    Helper, no paper equation: the coefficients of the orthogonal projection P f, by quadrature.
    """
    t, wq = _gauss_legendre(n_quad)
    return _quadrature_features(n_quad, _check_m(m)).T @ (wq * f(t))


def l2_error(c: np.ndarray, f: Callable[[np.ndarray], np.ndarray], n_quad: int = 400) -> float:
    """|f - sum_j c_j phi_j|^2 in L^2(mu), mu uniform on [-1, 1] (Gauss-Legendre with n_quad nodes).

    Helper, no paper equation: the squared L^2(mu) error, by quadrature.
    """
    t, wq = _gauss_legendre(n_quad)
    resid = f(t) - _quadrature_features(n_quad, _check_m(len(c))) @ c
    return float(np.sum(wq * resid**2))


def dpp_interpolation_error(
    f: Callable[[np.ndarray], np.ndarray], m: int, n_quad: int = 10, max_count: int = MAX_QUADRATURE_NODES
) -> float:
    """E |f - Q f|^2 under the projection DPP (n = m points, interpolation), by tensor Gauss quadrature.

    Q f = P f + Q g with g = f - P f, and Q g has coefficients Phi^{-1} g(x), Phi_ij = phi_j(x_i); with the
    DPP density det(Phi)^2 / m!, E |Q g|^2 = (1/m!) int |adj(Phi) g(x)|^2 dmu^m, a polynomial integrand when
    f is one (then exact for n_quad large enough). Costs n_quad^m evaluations: refused beyond ``max_count``.

    Paper: Nouy & Michel, arXiv:2312.14057v3, E|f - Q f|^2 = (m + 1)|f - P f|^2 for the DPP; quadrature ours, eq.
    [unverified].
    """
    m = _check_m(m)
    if isinstance(n_quad, bool) or not isinstance(n_quad, (int, np.integer)) or n_quad < 1:
        raise ValueError(f"n_quad must be a positive integer, got {n_quad!r}")
    if n_quad**m > max_count:
        raise ValueError(f"n_quad^m = {n_quad}^{m} quadrature nodes exceed max_count = {max_count}; pass a larger one")
    t, wq = _gauss_legendre(n_quad)
    c = best_coefficients(f, m)
    g = f(t) - legendre_features(t, m) @ c  # g = f - P f at the nodes
    phi = legendre_features(t, m)
    total = 0.0
    for idx in itertools.product(range(n_quad), repeat=m):
        Phi = phi[list(idx)]
        # adj(Phi) g by Cramer: (adj Phi g)_j = det(Phi with column j replaced by g)
        coef = [np.linalg.det(np.column_stack([Phi[:, :j], g[list(idx)], Phi[:, j + 1 :]])) for j in range(m)]
        total += np.prod(wq[list(idx)]) * float(np.sum(np.square(coef)))
    best = float(np.sum(wq * g**2))
    return best + total / math.factorial(m)


def least_squares_errors(
    f: Callable[[np.ndarray], np.ndarray], m: int, n: int, method: str, reps: int, rng: np.random.Generator
) -> np.ndarray:
    """Squared L^2 errors (reps,) of weighted least squares from n points drawn by ``method``.

    method: ``iid`` (i.i.d. rho), ``volume`` (generalised volume sampling), ``repeated_dpp`` (n must be a
    multiple of m), ``dpp`` (n = m).

    Helper, no paper equation: Monte Carlo errors of weighted least squares for Nouy & Michel, arXiv:2312.14057v3's
    experiment.
    """
    samplers = {
        "iid": lambda: sample_iid(n, m, rng),
        "volume": lambda: sample_volume(n, m, rng),
        "repeated_dpp": lambda: sample_repeated_dpp(n // m, m, rng),
        "dpp": lambda: sample_projection_dpp(m, rng),
    }
    if method not in samplers:
        raise ValueError(f"method must be one of {sorted(samplers)}, got {method!r}")
    if method == "repeated_dpp" and n % m:
        raise ValueError(f"repeated_dpp needs n a multiple of m = {m}, got n = {n}")
    if method == "dpp" and n != m:
        raise ValueError(f"a projection DPP has exactly m = {m} points, got n = {n}")
    errs = np.empty(reps)
    for i in range(reps):
        x = samplers[method]()
        errs[i] = l2_error(weighted_least_squares(x, f(x), m), f)
    return errs


# ----------------------------------------------------------------------------------------------------------
# Finite ground sets


def check_projection_kernel(K: np.ndarray, atol: float = 1e-10) -> int:
    """Raise unless K (N, N) is a symmetric projection (K = K^T, K^2 = K); return its rank m = trace K.

    Helper, no paper equation: validation of a projection kernel.
    """
    K = as_real_array(K, "K")
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square matrix, got shape {K.shape}")
    if not np.allclose(K, K.T, atol=atol, rtol=0):
        raise ValueError("K must be symmetric")
    err = np.abs(K @ K - K).max()
    if err > atol * max(1.0, K.shape[0]):
        raise ValueError(f"K is not a projection: max |K^2 - K| = {err:.3g}")
    return round(float(np.trace(K)))


def sample_projection_dpp_discrete(
    K: np.ndarray, rng: np.random.Generator, n_samples: int = 1, k: int | None = None
) -> np.ndarray:
    """Samples of the projection DPP with kernel K on {0, ..., N-1}: (n_samples, rank K) sorted indices.

    Chain rule, batched over samples: with S the items drawn so far, item i comes next with probability
    d_i / (m - |S|), d_i = K_ii - K_iS K_SS^{-1} K_Si, updated by one Cholesky column per step:
    c = (K[s] - sum_l c_l[s] c_l) / sqrt(d_s), d <- d - c^2. ``k``, if given, must equal the rank
    (a projection DPP has no other size).

    Paper: Nouy & Michel, arXiv:2312.14057v3; the finite projection DPP by the chain rule, eq. [unverified].
    """
    m = check_projection_kernel(K)
    if k is not None and k != m:
        raise ValueError(f"a projection DPP of rank {m} has exactly {m} points; {k} were requested")
    K = np.asarray(K, dtype=np.float64)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    N = K.shape[0]
    d = np.tile(np.diag(K).copy(), (n_samples, 1))  # (B, N) conditional inclusion probabilities
    C = np.zeros((n_samples, m, N))
    rows = np.arange(n_samples)
    out = np.empty((n_samples, m), dtype=np.int64)
    for step in range(m):
        cdf = np.cumsum(np.maximum(d, 0.0), axis=1)
        u = rng.random(n_samples) * cdf[:, -1]
        s = np.minimum((cdf <= u[:, None]).sum(1), N - 1)  # inverse CDF, one item per sample
        out[:, step] = s
        c = K[s] - np.einsum("bl,bln->bn", C[rows, :step, s], C[:, :step, :])
        c /= np.sqrt(d[rows, s])[:, None]
        C[:, step] = c
        d = d - c**2
        d[rows, s] = 0.0  # drawn: exactly zero (round-off would leave ~1e-16)
    return np.sort(out, axis=1)


def projection_dpp_subset_law(K: np.ndarray, max_count: int = MAX_SUBSETS) -> dict[tuple[int, ...], float]:
    """P(S) = det(K_S) for every subset S of size rank(K): the exact law of the projection DPP.

    Enumerates binom(N, m) subsets: refused beyond ``max_count`` (raise it knowingly: each costs a determinant).

    Helper, no paper equation: the exact law det(K_S) of a finite projection DPP, by enumeration.
    """
    m = check_projection_kernel(K)
    K = np.asarray(K, dtype=np.float64)
    if math.comb(K.shape[0], m) > max_count:
        raise ValueError(
            f"binom({K.shape[0]}, {m}) = {math.comb(K.shape[0], m)} subsets exceed max_count = {max_count}; "
            "pass a larger max_count to enumerate them anyway"
        )
    return {S: float(np.linalg.det(K[np.ix_(S, S)])) for S in itertools.combinations(range(K.shape[0]), m)}


def inclusion_covariance(K: np.ndarray) -> np.ndarray:
    """Cov(1[i in X], 1[j in X]) = diag(K_ii) - K_ij^2 for a DPP with Hermitian kernel K.

    Helper, no paper equation: Cov of inclusion indicators, -K_ij^2 off the diagonal (a standard DPP fact).
    """
    K = as_real_array(K, "K")
    if (
        K.ndim != 2
        or K.shape[0] != K.shape[1]
        or not np.allclose(K, K.T, rtol=0, atol=1e-10 * max(1.0, np.abs(K).max()))
    ):
        raise ValueError(f"K must be a symmetric square matrix, got shape {K.shape}")
    return np.diag(np.diag(K)) - K**2
