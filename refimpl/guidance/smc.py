"""Feynman-Kac correctors: weighted reverse-SDE simulation with SMC resampling (Skreta et al. 2025, arXiv:2503.02819v2).

Targets built from several diffusion models by a geometric combination at every time,
q_t ~ prod_i p_{i,t}^{a_i}: the geometric tilt p_c^w p_u^(1 - w) of CFG (a = (w, 1 - w)), the annealed p_t^beta
(one model, a = beta) and the product p_{1,t} p_{2,t} (a = (1, 1)). Simulating the reverse SDE with the combined
score S = sum_i a_i s_i does not sample q_t ("naive score mixing"); the Feynman-Kac weights fix it.

Derivation (ours, in the schedule spine's letters; the paper's Prop. 3.2-3.3 [unverified numbering] are the EDM
case). The forward SDE dx = f x dt + g dW with f = alpha'/alpha, g^2 = (sigma^2)' - 2 f sigma^2 gives every model's
marginal the equation d_t log p = -f d - f x.s + (g^2/2)(div s + |s|^2). The reverse SDE with drift f x - g^2 S,
run backwards in t, moves a density by an operator L; the weight rate that makes the weighted particle law
proportional to q_t is (d_tau log q~ - L* q~ / q~) with tau = -t, which is

    d log w / d tau = (g^2 / 2) (|sum_i a_i s_i|^2 - sum_i a_i |s_i|^2) + f d (sum_i a_i - 1):         (FK)

the divergence terms cancel, and the last term is the same for every particle (dropped: it cancels in the
normalisation). For CFG under EDM (f = 0, g^2 = 2 sigma) the bracket is w (w - 1) |s_c - s_u|^2, the increment of
the paper's EDM2 code; annealing gives beta (beta - 1) |s|^2 and the product 2 s_1.s_2.

Each step: weights get h x (FK) at the step's start (h = t - t_next > 0), one Euler-Maruyama step, then systematic
resampling (Carpenter, Clifford & Fearnhead 1999) when the effective sample size falls below a fraction of N.
The paper's code also centres and clamps the increments (to [-1, 1] or [-2, 2]): clamping biases the weights,
so it is not done here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._validation import as_float_tensor, check_finite
from refimpl.models import DiffusionModel, check_model, predict
from refimpl.samplers._common import NoiseSource, check_sampler_inputs

__all__ = [
    "FKResult",
    "effective_sample_size",
    "fk_log_weight_rate",
    "prior_particles",
    "sample_fk",
    "systematic_resample",
]


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """ESS = (sum w)^2 / sum w^2 from unnormalised log weights (Kong 1992), in [1, N]."""
    return torch.exp(2 * torch.logsumexp(log_weights, -1) - torch.logsumexp(2 * log_weights, -1))


def systematic_resample(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Indices (N,) by systematic resampling: one uniform u, points (u + i) / N through the weights' CDF.

    Particle i is copied floor(N w_i) or ceil(N w_i) times, and N w_i times in expectation (tested).
    """
    w = check_finite(as_float_tensor(weights, "weights"), "weights")
    if w.ndim != 1 or w.numel() == 0:
        raise ValueError(f"weights must be a non-empty 1-D tensor, got shape {tuple(w.shape)}")
    if bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError("weights must be non-negative with a positive sum")
    n = w.numel()
    cdf = torch.cumsum(w / w.sum(), 0)
    points = (torch.rand((), generator=generator, dtype=w.dtype) + torch.arange(n, dtype=w.dtype)) / n
    return torch.searchsorted(cdf, points).clamp(max=n - 1)


def fk_log_weight_rate(scores: Sequence[Tensor], a: Tensor, g2: Tensor) -> Tensor:
    """The rate (FK): (g^2 / 2)(|sum_i a_i s_i|^2 - sum_i a_i |s_i|^2) per particle, scores each (N, d)."""
    stacked = torch.stack(list(scores))  # (M, N, d)
    combined = torch.einsum("m,mnd->nd", a, stacked)
    return 0.5 * g2 * ((combined**2).sum(-1) - torch.einsum("m,mn->n", a, (stacked**2).sum(-1)))


@dataclass(frozen=True)
class FKResult:
    """Particles (N, d) at the last time with normalised weights (N,), the ESS before each step's resampling,
    and how many times the particles were resampled."""

    x: Tensor
    weights: Tensor
    ess: Tensor
    n_resampled: int

    def mean(self) -> Tensor:
        """Self-normalised estimate of E_q[x]: (d,)."""
        return self.weights @ self.x

    def covariance(self) -> Tensor:
        """Self-normalised estimate of Cov_q[x]: (d, d)."""
        centred = self.x - self.mean()
        return torch.einsum("n,ni,nj->ij", self.weights, centred, centred)


def sample_fk(
    models: Sequence[DiffusionModel],
    a: Sequence[float],
    x: Tensor,
    timesteps: Tensor,
    *,
    reweight: bool = True,
    resample_below: float = 0.5,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> FKResult:
    """Weighted reverse SDE for q_t ~ prod_i p_{i,t}^{a_i} from particles x (N, d) at timesteps[0].

    ``reweight=False`` is naive score mixing (no weights, no resampling). ``resample_below`` in [0, 1]: resample
    when ESS < resample_below N (1: every step; 0: never). ``noise`` (n_steps, N, d) or ``generator`` drives both
    the SDE and the resampling (the resampling uniforms come from ``generator``).
    """
    if len(models) == 0 or len(models) != len(a):
        raise ValueError(f"need one coefficient per model and at least one model, got {len(models)} and {len(a)}")
    for m in models:
        check_model(m)
    coeffs = as_float_tensor(list(a), "a", x.dtype)
    if not bool(torch.isfinite(coeffs).all()):
        raise ValueError("coefficients a must be finite")
    if not 0.0 <= resample_below <= 1.0:
        raise ValueError(f"resample_below must lie in [0, 1], got {resample_below}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must hold particles (N, d) with N >= 1, got shape {tuple(x.shape)}")
    ts = check_sampler_inputs(models[0], x, timesteps)
    schedule = models[0].schedule
    values = schedule(ts)
    noise_at = NoiseSource(noise, generator, len(ts) - 1, x)
    n = x.shape[0]
    log_w = torch.zeros(n, dtype=x.dtype)
    ess, n_resampled = [], 0
    for i in range(len(ts) - 1):
        v = values[i]
        h = ts[i] - ts[i + 1]
        f = v.d_alpha / v.alpha
        g2 = 2 * v.sigma * v.d_sigma - 2 * f * v.sigma**2
        scores = [predict(m, x, ts[i], "score") for m in models]
        combined = torch.einsum("m,mnd->nd", coeffs, torch.stack(scores))
        if reweight:
            log_w = log_w + h * fk_log_weight_rate(scores, coeffs, g2)
            ess.append(effective_sample_size(log_w))
            if float(ess[-1]) < resample_below * n or resample_below == 1.0:
                idx = systematic_resample(torch.softmax(log_w, 0), generator)
                x, combined, log_w = x[idx], combined[idx], torch.zeros_like(log_w)
                n_resampled += 1
        # Euler-Maruyama, backwards in t: x <- x - h (f x - g^2 S) + g sqrt(h) z
        x = x - h * (f * x - g2 * combined) + torch.sqrt(g2 * h) * noise_at(i)
    ess_t = torch.stack(ess) if ess else torch.full((len(ts) - 1,), float(n), dtype=x.dtype)
    return FKResult(x, torch.softmax(log_w, 0), ess_t, n_resampled)


def prior_particles(n: int, d: int, sigma: float, total: float, generator: torch.Generator | None = None) -> Tensor:
    """n draws from N(0, sigma^2 / total I): prod_i N(0, sigma^2)^{a_i} normalised, the target at a time where every
    model's marginal is (up to alpha_T |mu| / sigma_T) N(0, sigma^2), total = sum_i a_i > 0."""
    if n < 1:
        raise ValueError(f"the number of particles n must be positive, got {n}")
    if not total > 0:
        raise ValueError(f"the sum of the coefficients must be positive, got {total}")
    return sigma / math.sqrt(total) * torch.randn(n, d, generator=generator, dtype=torch.float64)
