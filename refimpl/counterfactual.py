"""Counterfactuals by inversion on a linear-Gaussian causal model (the idea of CausalDiffAE, Komanduri et al.
2024, arXiv:2404.17735: invert an observation with the diffusion model conditioned on its causal variables,
intervene on those variables, regenerate from the same latent).

The causal model (``LinearGaussianSCM``): k causal variables in topological order, c = A c + n with A strictly
lower triangular and n ~ N(0, diag(noise_std^2)); an observation x = m + B c + u, u ~ N(0, Sigma). The
diffusion model of x given c is then the Gaussian N(m + B c, Sigma) (``ConditionalGaussianModel``, exact).

Pearl's counterfactual for do(c_i = v) given (c, x) is abduction (n = (I - A) c, u = x - m - B c), action
(set c_i = v, recompute its descendants with the same n) and prediction: x' = x + B (c' - c).

Inversion does almost that. For Gaussians that differ only in their mean the probability-flow map is affine,
x_T - alpha_T m = M (x - alpha_end m) with the same M for every c, so exact ODE inversion under c followed by
generation under c' gives (``ode_counterfactual``)

    x' = x + alpha_end Delta - M^{-1}(alpha_T Delta),   Delta = B (c' - c):

Pearl's answer (scaled to the sampler's last time) minus a correction that comes from the two conditional
laws differing at the start time T. It shrinks like alpha_T / sigma_T = exp(lambda_T): the latent x_T is the
abducted noise only to the extent that the terminal law forgets c. Exact inverters (EDICT, BDIA) converge to
it with their order; DDIM inversion adds its own first-order error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._validation import (
    check_instance,
    check_integer,
    check_number,
    check_symmetric_positive_definite,
    check_tensor,
)
from refimpl.parameterization import from_x0_eps
from refimpl.registry import SamplerSpec
from refimpl.schedules import NoiseSchedule
from toy_models.gmm import GaussianMixture

__all__ = ["ConditionalGaussianModel", "LinearGaussianSCM", "diffusion_counterfactual", "ode_counterfactual"]


@dataclass
class ConditionalGaussianModel:
    """The exact model of data N(means[b], covariance) for row b of a batch: one mean per row (B, d).

    ``model(x, t)`` answers ``prediction`` for x (B, d); the rows' laws share the covariance.
    """

    covariance: Tensor
    means: Tensor
    schedule: NoiseSchedule
    prediction: str = "eps"

    def __post_init__(self) -> None:
        from refimpl.models import check_model

        self.means = check_tensor(self.means, "means", 2)
        d = self.means.shape[-1]
        cov = check_tensor(self.covariance, "covariance", 2)
        if cov.shape != (d, d):
            raise ValueError(f"covariance must be ({d}, {d}) for means (B, {d}), got {tuple(cov.shape)}")
        check_instance(self.schedule, NoiseSchedule, "schedule")
        self._centred = GaussianMixture(torch.ones(1, dtype=cov.dtype), torch.zeros(1, d, dtype=cov.dtype), cov[None])
        check_model(self)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if x.shape != self.means.shape:
            raise ValueError(f"x must have the shape of the means {tuple(self.means.shape)}, got {tuple(x.shape)}")
        values = self.schedule(t)
        shift = values.alpha.to(x.dtype).reshape(-1, 1) * self.means.to(x.dtype)  # alpha_t m_b
        x0, eps = self._centred.x0_eps(x - shift, values.alpha, values.sigma)
        return from_x0_eps(self.prediction, x0 + self.means.to(x.dtype), eps, values)


@dataclass(frozen=True)
class LinearGaussianSCM:
    """c = A c + n (A strictly lower triangular, n ~ N(0, diag(noise_std^2))); x = offset + B c + u, u ~ N(0, Sigma).

    weights A (k, k), noise_std (k,), loading B (d, k), offset m (d,), covariance Sigma (d, d).
    """

    weights: Tensor
    noise_std: Tensor
    loading: Tensor
    offset: Tensor
    covariance: Tensor

    def __post_init__(self) -> None:
        A = check_tensor(self.weights, "weights", 2)
        k = A.shape[0]
        if A.shape != (k, k) or bool((torch.triu(A) != 0).any()):
            raise ValueError("weights must be a strictly lower-triangular (k, k) matrix (a DAG in topological order)")
        noise_std = check_tensor(self.noise_std, "noise_std")
        if noise_std.shape != (k,) or bool((noise_std <= 0).any()):
            raise ValueError(f"noise_std must be ({k},) and positive")
        offset = check_tensor(self.offset, "offset", 1)
        d = offset.shape[0]
        loading, covariance = check_tensor(self.loading, "loading"), check_tensor(self.covariance, "covariance")
        if loading.shape != (d, k) or covariance.shape != (d, d):
            raise ValueError(f"loading must be ({d}, {k}) and covariance ({d}, {d})")
        check_symmetric_positive_definite(covariance, "covariance")
        for name, value in (("weights", A), ("noise_std", noise_std), ("loading", loading), ("offset", offset)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "covariance", covariance)

    @property
    def k(self) -> int:
        """Number of causal variables."""
        return self.weights.shape[0]

    def causes_from_noise(self, n: Tensor) -> Tensor:
        """c = (I - A)^{-1} n for rows n (N, k), by forward substitution in topological order."""
        c = torch.zeros_like(n)
        for j in range(self.k):
            c[:, j] = c @ self.weights[j] + n[:, j]
        return c

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n draws of (c (n, k), x (n, d)) from the causal model."""
        noise = torch.randn(n, self.k, generator=generator, dtype=self.weights.dtype) * self.noise_std
        c = self.causes_from_noise(noise)
        u = torch.randn(n, self.offset.shape[0], generator=generator, dtype=self.weights.dtype)
        return c, self.mean_of_x(c) + u @ torch.linalg.cholesky(self.covariance).T

    def mean_of_x(self, c: Tensor) -> Tensor:
        """E[x | c] = m + B c, rows (N, d)."""
        return self.offset + c @ self.loading.T

    def intervene(self, c: Tensor, index: int, value: float) -> Tensor:
        """do(c_index = value) on each row of c (N, k): abduct n = (I - A) c, set c_index, recompute the rest."""
        c = self._check_causes(c, "c")
        check_number(value, "value")
        if not 0 <= check_integer(index, "index") < self.k:
            raise ValueError(f"index must be a causal variable in [0, {self.k}), got {index}")
        n = c - c @ self.weights.T  # abduction of the causal noise
        c_new = torch.zeros_like(c)
        for j in range(self.k):
            c_new[:, j] = value if j == index else c_new @ self.weights[j] + n[:, j]
        return c_new

    def _check_causes(self, c: Tensor, name: str) -> Tensor:
        c = check_tensor(c, name, 2)
        if c.shape[1] != self.k:
            raise ValueError(f"{name} must have shape (N, k = {self.k}), got {tuple(c.shape)}")
        return c

    def counterfactual(self, x: Tensor, c: Tensor, c_new: Tensor, alpha: float = 1.0) -> Tensor:
        """Pearl's counterfactual x' = x + alpha B (c_new - c) (abduction of u, then prediction); alpha scales
        the data to the sampler's last time (x_{t_n} = alpha_{t_n} x_0 + sigma_{t_n} eps)."""
        return x + alpha * (c_new - c) @ self.loading.T

    def model(self, c: Tensor, schedule: NoiseSchedule) -> ConditionalGaussianModel:
        """The exact diffusion model of x given the causes c (N, k), one row each."""
        return ConditionalGaussianModel(self.covariance, self.mean_of_x(c), schedule)


def diffusion_counterfactual(
    spec: SamplerSpec,
    scm: LinearGaussianSCM,
    schedule: NoiseSchedule,
    x: Tensor,
    c: Tensor,
    index: int,
    value: float,
    timesteps: Tensor,
) -> tuple[Tensor, Tensor]:
    """Invert x (N, d) at timesteps[-1] under p(x | c), intervene do(c_index = value), regenerate under the new
    causes. Returns (x', c')."""
    check_instance(spec, SamplerSpec, "spec")
    check_instance(scm, LinearGaussianSCM, "scm")
    check_instance(schedule, NoiseSchedule, "schedule")
    c = scm._check_causes(c, "c")
    if spec.encode is None:
        raise ValueError(f"sampler {spec.name!r} has no encoder to invert with")
    c_new = scm.intervene(c, index, value)
    latent = spec.encode(scm.model(c, schedule), x, timesteps)  # abduction of everything c does not explain
    return spec(scm.model(c_new, schedule), latent, timesteps), c_new


def ode_counterfactual(
    scm: LinearGaussianSCM,
    schedule: NoiseSchedule,
    x: Tensor,
    c: Tensor,
    c_new: Tensor,
    t_start: float | None = None,
    t_end: float | None = None,
) -> Tensor:
    """The exact result of ODE inversion under c from t_end to t_start and ODE generation under c_new back to
    t_end (defaults: t_max, t_min): x + alpha_end Delta - M^{-1}(alpha_start Delta), Delta = B (c_new - c),
    with M^{-1} the centred Gaussian's flow map from t_start to t_end (``GaussianMixture.pf_ode_map``)."""
    check_instance(scm, LinearGaussianSCM, "scm")
    check_instance(schedule, NoiseSchedule, "schedule")
    x = check_tensor(x, "x", 2)
    c, c_new = scm._check_causes(c, "c"), scm._check_causes(c_new, "c_new")
    if x.shape != (c.shape[0], scm.offset.shape[0]) or c_new.shape != c.shape:
        raise ValueError(
            f"x must be (N, d = {scm.offset.shape[0]}) with c and c_new (N, k) for one N, got "
            f"{tuple(x.shape)}, {tuple(c.shape)}, {tuple(c_new.shape)}"
        )
    t_start = schedule.t_max if t_start is None else check_number(t_start, "t_start")
    t_end = schedule.t_min if t_end is None else check_number(t_end, "t_end")
    v_s, v_t = schedule(t_start), schedule(t_end)
    delta = (c_new - c) @ scm.loading.T
    d = delta.shape[-1]
    centred = GaussianMixture(torch.ones(1, dtype=x.dtype), torch.zeros(1, d, dtype=x.dtype), scm.covariance[None])
    back = centred.pf_ode_map(v_s.alpha * delta, v_s.alpha, v_s.sigma, v_t.alpha, v_t.sigma)
    return x + v_t.alpha * delta - back
