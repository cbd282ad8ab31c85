"""The analytic lab: a Gaussian mixture whose noised law, score, posterior and reverse kernels are exact.

Data x_0 ~ sum_k w_k N(mu_k, Sigma_k). Under any schedule, x_t = alpha_t x_0 + sigma_t eps has law
p_t = sum_k w_k N(alpha_t mu_k, C_k(t)) with C_k(t) = alpha_t^2 Sigma_k + sigma_t^2 I.

Writing Sigma_k = U_k diag(l_k) U_k^T once, every C_k(t) = U_k diag(alpha_t^2 l_k + sigma_t^2) U_k^T
is inverted for free, for any (alpha_t, sigma_t), so the whole lab is batched and exact:

* responsibilities r_k(x_t) = P(k | x_t) and log p_t, by Bayes' rule;
* the score grad log p_t = -sum_k r_k C_k^{-1}(x_t - alpha_t mu_k);
* Tweedie's posterior mean E[x_0 | x_t] = sum_k r_k (mu_k + alpha_t Sigma_k C_k^{-1}(x_t - alpha_t mu_k))
  (Efron 2011; Ho et al. 2020, arXiv:2006.11239v2, Eq. 15), and E[eps | x_t] = -sigma_t score;
* the reverse kernel q(x_s | x_t), s < t: a mixture with weights r_k(x_t) of the Gaussian
  conditionals of the jointly Gaussian (x_s, x_t) in component k;
* for a single Gaussian (K = 1), the probability-flow ODE map x_t -> x_s in closed form:
  U^T (x - alpha mu) scales by sqrt(c(s) / c(t)) coordinate-wise, c = alpha^2 l + sigma^2.

Everything depends on time only through (alpha_t, sigma_t); ``ExactModel`` binds a schedule.
Checked in ``tests/test_gmm.py`` against autograd, Monte Carlo (CLT bounds) and quadrature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from refimpl._validation import (
    as_float_tensor,
    check_finite,
    check_probability_vector,
    check_symmetric_positive_definite,
)
from refimpl.parameterization import from_x0_eps
from refimpl.schedules import NoiseSchedule

__all__ = ["ConditionalMixture", "ExactModel", "GaussianMixture"]

_LOG_2PI = math.log(2 * math.pi)


def _noise_level(
    alpha: object,
    sigma: object,
    dtype: torch.dtype,
    batch: int | None = None,
    names: tuple[str, str] = ("alpha", "sigma"),
) -> tuple[Tensor, Tensor]:
    """(alpha, sigma) as tensors of shape (B or 1, 1, 1) for (B, K, d) arithmetic, checked: real, finite,
    non-negative, not both zero (x_t would carry no information and no noise), one value or one per row of x."""
    a, s = as_float_tensor(alpha, names[0]), as_float_tensor(sigma, names[1])
    if a.numel() == 1 and s.numel() == 1:
        # one noise level for the whole batch (every sampler step): the same checks on two Python floats; a value
        # that fails any of them (NaN fails every comparison) takes the general path below, which names the error
        fa, fs = float(a.detach()), float(s.detach())
        if 0 <= fa < math.inf and 0 <= fs < math.inf and fa + fs > 0:
            return a.to(dtype).reshape(1, 1, 1), s.to(dtype).reshape(1, 1, 1)
    a = check_finite(a, names[0]).to(dtype).reshape(-1, 1, 1)
    s = check_finite(s, names[1]).to(dtype).reshape(-1, 1, 1)
    for name, v in zip(names, (a, s), strict=True):
        if bool((v < 0).any()):
            raise ValueError(f"{name} must be non-negative, got {float(v.min()):g}")
        if v.shape[0] == 0 or (batch is not None and v.shape[0] not in (1, batch)):
            raise ValueError(f"{name} must hold one value or one per row of x ({batch}), got {v.shape[0]}")
    if a.shape[0] != s.shape[0] and 1 not in (a.shape[0], s.shape[0]):
        raise ValueError(f"{names[0]} ({a.shape[0]} values) and {names[1]} ({s.shape[0]} values) do not match")
    if bool(((a == 0) & (s == 0)).any()):
        raise ValueError(f"{names[0]} and {names[1]} are both zero: x_t = 0 carries no law")
    return a, s


def _scalar_noise_level(
    alpha: object, sigma: object, names: tuple[str, str] = ("alpha", "sigma")
) -> tuple[float, float]:
    """One checked (alpha, sigma) pair as Python floats."""
    a, s = _noise_level(alpha, sigma, torch.float64, None, names)
    if a.numel() != 1 or s.numel() != 1:
        raise ValueError(f"{names[0]} and {names[1]} must be single numbers here, got {a.numel()} and {s.numel()}")
    return float(a), float(s)


def _rotate(diff: Tensor, eigvecs: Tensor) -> Tensor:
    """U_k^T diff_k: (B, K, d) -> (B, K, d), in each component's eigenbasis.

    As rows, (U_k^T diff_k)^T = diff_k^T U_k: one (B, d) @ (d, d) product per component, batched over k, which is
    faster than an einsum for a few points (fewer dispatched operations) and for many (no tiny matrices)."""
    return (diff.transpose(0, 1) @ eigvecs).transpose(0, 1)


def _unrotate(y: Tensor, eigvecs: Tensor) -> Tensor:
    """U_k y_k: (B, K, d) -> (B, K, d), batched over k as in ``_rotate`` ((U_k y_k)^T = y_k^T U_k^T)."""
    return (y.transpose(0, 1) @ eigvecs.mT).transpose(0, 1)


def _mix(r: Tensor, v: Tensor) -> Tensor:
    """sum_k r_k v_k for weights r (B, K) and vectors v (B|1, K, d): (B, d).

    One batched (1, K) @ (K, d) product per row; torch's sum over a short middle axis is several times slower for
    many rows (a reduction kernel per output element) and no faster for a few."""
    return (r[:, None, :] @ v).squeeze(1)


def _log_gauss(y: Tensor, var: Tensor) -> Tensor:
    """log N(y; 0, diag(var)) summed over the last axis."""
    return -0.5 * (y**2 / var + torch.log(var) + _LOG_2PI).sum(-1)


def _log_gauss_shifted(y: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """log N(y_k; 0, diag(var_k)) for y (B, K, d), as (terms (B, K), shift (B,)): the log densities are
    terms - shift / 2, with shift = min_k q_k the smallest quadratic form q_k = sum_j y_kj^2 / var_kj.

    Far from every mean (|y| above ~1e154) q overflows; the differences q_k - q_min that the responsibilities
    need do not: q_k = m^2 u_k with m = max |y| / sqrt(var) per row, so q_k - q_min = m^2 (u_k - u_min) is
    exactly 0 for the nearest component and at most +inf (weight 0) for the others, never inf - inf. That
    rescaled form is taken only for a batch where some q_min overflowed; elsewhere q is used as it is.
    """
    log_det = torch.log(var).sum(-1) + y.shape[-1] * _LOG_2PI
    q = (y * y / var) @ y.new_ones(y.shape[-1])  # sum over j as a product with ones: faster than .sum(-1) on d terms
    q_min = q.amin(-1)
    if math.isfinite(float(q_min.detach().sum())):
        return -0.5 * ((q - q_min[:, None]) + log_det), q_min
    z = y / torch.sqrt(var)
    m = z.abs().amax(dim=(-2, -1))
    m = torch.where(m > 0, m, torch.ones_like(m))
    u = ((z / m[:, None, None]) ** 2).sum(-1)  # (B, K), each <= d
    gap = u - u.amin(-1, keepdim=True)
    excess = torch.where(gap > 0, m[:, None] ** 2 * gap, torch.zeros_like(gap))
    return -0.5 * (excess + log_det), m**2 * u.amin(-1)


def _check_points(x: Tensor, d: int, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating torch.Tensor of shape (B, {d})")
    if x.ndim != 2 or x.shape[-1] != d:
        raise ValueError(f"{name} must have shape (B, {d}), got {tuple(x.shape)}")
    return check_finite(x, name)


@dataclass(frozen=True, eq=False)
class ConditionalMixture:
    """A batch of Gaussian mixtures sharing component covariances, e.g. the reverse kernel q(x_s | x_t).

    weights (B, K), means (B, K, d); component k has covariance U_k diag(variances_k) U_k^T with
    variances (K, d) and eigvecs (K, d, d).
    """

    weights: Tensor
    means: Tensor
    variances: Tensor
    eigvecs: Tensor

    def log_prob(self, y: Tensor) -> Tensor:
        """log density at y of shape (B, d) (one point per mixture) or (M, B, d); returns (B,) or (M, B)."""
        flat = y.reshape(-1, *self.means.shape[::2])  # (M, B, d)
        diff = flat[:, :, None, :] - self.means  # (M, B, K, d)
        rotated = torch.einsum("kji,mbkj->mbki", self.eigvecs, diff)
        log_n = _log_gauss(rotated, self.variances) + torch.log(self.weights)
        return torch.logsumexp(log_n, -1).reshape(y.shape[:-1])

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One exact draw from each mixture of the batch: (B, d)."""
        B, _, d = self.means.shape
        k = torch.multinomial(self.weights, 1, generator=generator).squeeze(-1)
        z = torch.randn(B, d, generator=generator, dtype=self.means.dtype)
        scaled = torch.sqrt(self.variances[k]) * z
        return self.means[torch.arange(B), k] + torch.einsum("bij,bj->bi", self.eigvecs[k], scaled)

    def mean(self) -> Tensor:
        """The mean of each mixture: (B, d)."""
        return torch.einsum("bk,bkd->bd", self.weights, self.means)

    def covariance(self) -> Tensor:
        """The covariance of each mixture, the Gaussian moment fit: (B, d, d)."""
        cov_k = torch.einsum("kij,kj,klj->kil", self.eigvecs, self.variances, self.eigvecs)
        m = self.mean()
        second = torch.einsum("bk,kij->bij", self.weights, cov_k) + torch.einsum(
            "bk,bki,bkj->bij", self.weights, self.means, self.means
        )
        return second - m[:, :, None] * m[:, None, :]


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """x_0 ~ sum_k w_k N(mu_k, Sigma_k), with optional class labels per component.

    Args:
        weights: (K,) non-negative, summing to 1.
        means: (K, d).
        covariances: (K, d, d) symmetric positive definite.
        labels: optional (K,) integer class of each component (for conditional models and guidance).
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor
    labels: Tensor | None = None
    eigvals: Tensor = field(init=False, repr=False)
    eigvecs: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # copies: the frozen record must not change when the caller later edits the tensors it passed
        means = as_float_tensor(self.means, "means").clone()
        dtype = means.dtype
        weights = as_float_tensor(self.weights, "weights", dtype).clone()
        covs = as_float_tensor(self.covariances, "covariances", dtype).clone()
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        check_finite(means, "means")
        K, d = means.shape
        check_probability_vector(weights, "weights", atol=math.sqrt(torch.finfo(dtype).eps))
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},) to match means, got {tuple(weights.shape)}")
        if covs.shape != (K, d, d):
            raise ValueError(f"covariances must have shape ({K}, {d}, {d}), got {tuple(covs.shape)}")
        check_symmetric_positive_definite(covs, "covariances")
        labels = self.labels
        if labels is not None:
            labels = torch.as_tensor(labels).clone()
            if labels.shape != (K,) or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise ValueError(
                    f"labels must be an integer tensor of shape ({K},), got {labels.dtype} {tuple(labels.shape)}"
                )
        eigvals, eigvecs = torch.linalg.eigh(0.5 * (covs + covs.mT))
        # eigh's eigenvalues carry an absolute error of about d eps max(l) (backward stable): a smaller one is
        # round-off in this dtype (it may come out 0 or negative and log_prob NaN), however Cholesky fared.
        floor = 16 * d * torch.finfo(dtype).eps * eigvals.amax(-1, keepdim=True)
        if bool((eigvals <= floor).any()):
            k = int(torch.nonzero((eigvals <= floor).any(-1))[0])
            raise ValueError(
                f"covariances[{k}] is too ill-conditioned for {dtype}: eigenvalues {eigvals[k].tolist()}, the smallest "
                f"must exceed 16 d eps max = {float(floor[k, 0]):.3g}; use float64 or a better-conditioned covariance"
            )
        for name, value in [
            ("weights", weights),
            ("means", means),
            ("covariances", covs),
            ("labels", labels),
            ("eigvals", eigvals),
            ("eigvecs", eigvecs),
        ]:
            object.__setattr__(self, name, value)

    # --- basic facts ---------------------------------------------------------------------
    @property
    def K(self) -> int:
        """Number of components."""
        return self.means.shape[0]

    @property
    def d(self) -> int:
        """Dimension."""
        return self.means.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def to(self, dtype: torch.dtype) -> GaussianMixture:
        """The same mixture with parameters in ``dtype``."""
        return GaussianMixture(self.weights.to(dtype), self.means.to(dtype), self.covariances.to(dtype), self.labels)

    def moments(self) -> tuple[Tensor, Tensor]:
        """Mean (d,) and covariance (d, d) of the data law."""
        m = self.weights @ self.means
        second = torch.einsum("k,kij->ij", self.weights, self.covariances) + torch.einsum(
            "k,ki,kj->ij", self.weights, self.means, self.means
        )
        return m, second - torch.outer(m, m)

    def noised(self, alpha: float | Tensor, sigma: float | Tensor) -> GaussianMixture:
        """The exact law of x_t = alpha x_0 + sigma eps, itself a Gaussian mixture (scalar alpha, sigma)."""
        a, s = _scalar_noise_level(alpha, sigma)
        eye = torch.eye(self.d, dtype=self.dtype)
        return GaussianMixture(self.weights, a * self.means, a**2 * self.covariances + s**2 * eye, self.labels)

    def condition(self, label: int) -> GaussianMixture:
        """The mixture of the components labelled ``label``, weights renormalised."""
        if self.labels is None:
            raise ValueError("this mixture has no labels")
        keep = self.labels == label
        if not bool(keep.any()):
            raise ValueError(f"no component has label {label}; labels are {sorted(set(self.labels.tolist()))}")
        w = self.weights[keep]
        return GaussianMixture(w / w.sum(), self.means[keep], self.covariances[keep], self.labels[keep])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws of x_0: (n, d)."""
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.d, generator=generator, dtype=self.dtype)
        return self.means[k] + torch.einsum("nij,nj->ni", self.eigvecs[k], torch.sqrt(self.eigvals[k]) * z)

    # --- the noised law at (alpha, sigma) ----------------------------------------------------
    def _terms(self, x: Tensor, alpha: object, sigma: object) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """y = U^T (x - alpha mu) (B, K, d), c = alpha^2 l + sigma^2, log w_k N_k + q_min / 2 (B, K), the shift
        q_min (B,) (see ``_log_gauss_shifted``), and alpha and sigma, each (B|1, 1, 1)."""
        x = _check_points(x, self.d)
        dt = x.dtype
        a, s = _noise_level(alpha, sigma, dt, x.shape[0])
        eigvecs = self.eigvecs.to(dt)
        y = _rotate(x[:, None, :] - a * self.means.to(dt), eigvecs)
        c = a**2 * self.eigvals.to(dt) + s**2
        terms, shift = _log_gauss_shifted(y, c)
        return y, c, terms + torch.log(self.weights.to(dt)), shift, a, s

    def log_prob_t(self, x: Tensor, alpha: object = 1.0, sigma: object = 0.0) -> Tensor:
        """log p_t(x) at noise (alpha, sigma); the defaults give the data law. Returns (B,); -inf only where the
        log density lies below the dtype's most negative number (|x| beyond ~1e154 times the data's scale)."""
        _, _, log_n, shift, _, _ = self._terms(x, alpha, sigma)
        return torch.logsumexp(log_n, -1) - 0.5 * shift

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_0(x), the data log density: (B,)."""
        return self.log_prob_t(x)

    def responsibilities(self, x: Tensor, alpha: object, sigma: object) -> Tensor:
        """r_k(x_t) = P(component k | x_t): (B, K)."""
        return torch.softmax(self._terms(x, alpha, sigma)[2], -1)

    def score(self, x: Tensor, alpha: object, sigma: object) -> Tensor:
        """grad_x log p_t(x) = -sum_k r_k C_k^{-1} (x - alpha mu_k): (B, d)."""
        y, c, log_n, _, _, _ = self._terms(x, alpha, sigma)
        return -_mix(torch.softmax(log_n, -1), _unrotate(y / c, self.eigvecs.to(x.dtype)))

    def x0_eps(self, x: Tensor, alpha: object, sigma: object) -> tuple[Tensor, Tensor]:
        """Tweedie's E[x_0 | x_t] and E[eps | x_t], each (B, d), computed without cancellation."""
        y, c, log_n, _, a, s = self._terms(x, alpha, sigma)
        r = torch.softmax(log_n, -1)
        eigvecs, eigvals = self.eigvecs.to(x.dtype), self.eigvals.to(x.dtype)
        x0 = _mix(r, self.means.to(x.dtype) + _unrotate(a * eigvals / c * y, eigvecs))
        eps = _mix(r, _unrotate(s * y / c, eigvecs))
        return x0, eps

    def reverse_kernel(
        self, x_t: Tensor, alpha_t: object, sigma_t: object, alpha_s: object, sigma_s: object
    ) -> ConditionalMixture:
        """The exact q(x_s | x_t) for s < t (lambda_s > lambda_t), a mixture per row of x_t.

        In component k, x_s ~ N(alpha_s mu_k, C_k(s)) and x_t = (alpha_t/alpha_s) x_s + sigma_{t|s} z, so
        x_s | x_t, k is Gaussian with mean alpha_s mu_k + a C_k(s) C_k(t)^{-1} (x_t - alpha_t mu_k) and
        covariance C_k(s) sigma_{t|s}^2 C_k(t)^{-1}, a = alpha_t / alpha_s,
        sigma_{t|s}^2 = sigma_t^2 - a^2 sigma_s^2 (Kingma et al. 2021, arXiv:2107.00630v6, Eq. 25-27,
        applied per component); the weights are r_k(x_t). alpha_s = 1, sigma_s = 0 gives p(x_0 | x_t).
        """
        a_t, s_t = _scalar_noise_level(alpha_t, sigma_t, ("alpha_t", "sigma_t"))
        a_s, s_s = _scalar_noise_level(alpha_s, sigma_s, ("alpha_s", "sigma_s"))
        if not a_s * s_t > a_t * s_s:
            raise ValueError("reverse_kernel needs s earlier than t: alpha_s / sigma_s > alpha_t / sigma_t")
        y_t, c_t, log_n, _, _, _ = self._terms(x_t, a_t, s_t)
        dt = x_t.dtype
        a = a_t / a_s
        var_t_given_s = s_t**2 - a**2 * s_s**2
        eigvals, eigvecs = self.eigvals.to(dt), self.eigvecs.to(dt)
        c_s = a_s**2 * eigvals + s_s**2
        means = a_s * self.means.to(dt) + _unrotate(a * c_s / c_t * y_t, eigvecs)
        variances = c_s * var_t_given_s / c_t[0]
        return ConditionalMixture(torch.softmax(log_n, -1), means, variances, eigvecs)

    def wiener_gain(self, alpha: object, sigma: object) -> Tensor:
        """The linear part of E[x_0 | x_t] for one Gaussian (K = 1): alpha Sigma (alpha^2 Sigma + sigma^2 I)^{-1}.

        E[x_0 | x_t] = mu + G (x_t - alpha mu) with G this (d, d) matrix; alpha G is the fraction of each
        eigen-direction's signal that the posterior mean recovers, l alpha^2 / (l alpha^2 + sigma^2).
        """
        if self.K != 1:
            raise ValueError(f"the Wiener gain needs a single Gaussian (K = 1), this mixture has K = {self.K}")
        a, s = _scalar_noise_level(alpha, sigma)
        factor = a * self.eigvals[0] / (a**2 * self.eigvals[0] + s**2)
        return torch.einsum("ij,j,kj->ik", self.eigvecs[0], factor, self.eigvecs[0])

    def pf_ode_map(
        self, x: Tensor, alpha_from: object, sigma_from: object, alpha_to: object, sigma_to: object
    ) -> Tensor:
        """Exact probability-flow ODE map from noise level (alpha_from, sigma_from) to (alpha_to, sigma_to).

        Only for one Gaussian (K = 1): there the flow is linear and each eigen-coordinate of
        x - alpha mu scales by sqrt(c_to / c_from), c = alpha^2 l + sigma^2 (dy/dt = (c'/2c) y).
        """
        if self.K != 1:
            raise ValueError(f"the closed-form ODE map needs a single Gaussian (K = 1), this mixture has K = {self.K}")
        y, c_from, _, _, _, _ = self._terms(x, alpha_from, sigma_from)
        a_to, s_to = _noise_level(alpha_to, sigma_to, x.dtype, x.shape[0], ("alpha_to", "sigma_to"))
        c_to = a_to**2 * self.eigvals.to(x.dtype) + s_to**2
        return (a_to * self.means.to(x.dtype) + _unrotate(torch.sqrt(c_to / c_from) * y, self.eigvecs.to(x.dtype)))[
            :, 0
        ]


@dataclass
class ExactModel:
    """A ``GaussianMixture`` under a schedule: an exact diffusion model predicting ``prediction``.

    ``model(x, t)`` returns the exact eps, x0, v, score or velocity; the other methods expose the
    rest of the lab at time t (a number, 0-d tensor, or a (B,) tensor of per-sample times).
    """

    mixture: GaussianMixture
    schedule: NoiseSchedule
    prediction: str = "eps"

    def __post_init__(self) -> None:
        from refimpl.models import check_model

        check_model(self)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        values = self.schedule(t)
        x0, eps = self.mixture.x0_eps(x, values.alpha, values.sigma)
        return from_x0_eps(self.prediction, x0, eps, values)

    def with_prediction(self, prediction: str) -> ExactModel:
        """The same exact model, answering ``prediction`` instead."""
        return ExactModel(self.mixture, self.schedule, prediction)

    def _a_s(self, t: object) -> tuple[Tensor, Tensor]:
        values = self.schedule(t)
        return values.alpha, values.sigma

    def log_prob(self, x: Tensor, t: object) -> Tensor:
        """log p_t(x): (B,)."""
        return self.mixture.log_prob_t(x, *self._a_s(t))

    def score(self, x: Tensor, t: object) -> Tensor:
        """grad log p_t(x): (B, d)."""
        return self.mixture.score(x, *self._a_s(t))

    def x0(self, x: Tensor, t: object) -> Tensor:
        """Tweedie's E[x_0 | x_t = x]: (B, d)."""
        return self.mixture.x0_eps(x, *self._a_s(t))[0]

    def eps(self, x: Tensor, t: object) -> Tensor:
        """E[eps | x_t = x]: (B, d)."""
        return self.mixture.x0_eps(x, *self._a_s(t))[1]

    def responsibilities(self, x: Tensor, t: object) -> Tensor:
        """P(component k | x_t = x): (B, K)."""
        return self.mixture.responsibilities(x, *self._a_s(t))

    def marginal(self, t: object) -> GaussianMixture:
        """The exact law p_t of x_t."""
        return self.mixture.noised(*self._a_s(t))

    def reverse_kernel(self, x_t: Tensor, t: object, s: object) -> ConditionalMixture:
        """The exact q(x_s | x_t) for s < t."""
        return self.mixture.reverse_kernel(x_t, *self._a_s(t), *self._a_s(s))

    def pf_ode_map(self, x: Tensor, t_from: object, t_to: object) -> Tensor:
        """The exact probability-flow ODE solution map x_{t_from} -> x_{t_to} (single Gaussian only)."""
        return self.mixture.pf_ode_map(x, *self._a_s(t_from), *self._a_s(t_to))

    def sample_xt(self, n: int, t: object, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n exact draws (x_0, x_t) with x_t = alpha_t x_0 + sigma_t eps."""
        a, s = self._a_s(t)
        x0 = self.mixture.sample(n, generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        return x0, a.to(x0.dtype) * x0 + s.to(x0.dtype) * noise
