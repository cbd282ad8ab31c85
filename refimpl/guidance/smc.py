"""Feynman-Kac correctors: weighted reverse-SDE simulation with SMC resampling (Skreta et al. 2025, arXiv:2503.02819v2).

Targets built from several diffusion models by a geometric combination at every time,
q_t ~ prod_i p_{i,t}^{a_i}: the geometric tilt p_c^w p_u^(1 - w) of CFG (a = (w, 1 - w)), the annealed p_t^beta
(one model, a = beta) and the product p_{1,t} p_{2,t} (a = (1, 1)). Simulating the reverse SDE with the combined
score S = sum_i a_i s_i does not sample q_t ("naive score mixing"); the Feynman-Kac weights fix it.

Derivation (ours, in the schedule spine's letters; the paper's Prop. 3.2 (annealing) and 3.3 (product), so numbered
in their README, are the EDM case). The forward SDE dx = f x dt + g dW with f = alpha'/alpha,
g^2 = (sigma^2)' - 2 f sigma^2 gives every model's marginal the equation
d_t log p = -f d - f x.s + (g^2/2)(div s + |s|^2). The reverse SDE with drift f x - g^2 S, run backwards in t, moves
a density by an operator L; the weight rate that makes the weighted particle law proportional to q_t is
(d_tau log q~ - L* q~ / q~) with tau = -t, which is

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

from refimpl._validation import as_float_tensor, as_positive_float, check_finite, check_integer, check_real_tensor
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
    log_weights = check_real_tensor(log_weights, "log_weights", log_weights=True)
    if log_weights.ndim == 0 or bool((log_weights == -math.inf).all(-1).any()):
        raise ValueError("log_weights must be (..., N) with a finite entry in every row")
    log_weights = log_weights - log_weights.amax(-1, keepdim=True)  # scale-free: no overflow in the squares
    return torch.exp(2 * torch.logsumexp(log_weights, -1) - torch.logsumexp(2 * log_weights, -1))


def systematic_resample(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Indices by systematic resampling of each row of ``weights`` (N,) or (R, N): one uniform u per row, points
    (u + i) / N through the row's CDF.

    Particle i is copied floor(N w_i) or ceil(N w_i) times, and N w_i times in expectation (tested).
    """
    w = check_finite(as_float_tensor(weights, "weights"), "weights")
    if w.ndim not in (1, 2) or w.shape[-1] == 0:
        raise ValueError(f"weights must be (N,) or (R, N) with N >= 1, got shape {tuple(w.shape)}")
    if bool((w < 0).any()) or not bool((w.sum(-1) > 0).all()):
        raise ValueError("weights must be non-negative with a positive sum")
    n = w.shape[-1]
    cdf = torch.cumsum(w / w.sum(-1, keepdim=True), -1)
    u = torch.rand((*w.shape[:-1], 1), generator=generator, dtype=w.dtype)
    points = (u + torch.arange(n, dtype=w.dtype)) / n
    return torch.searchsorted(cdf, points).clamp(max=n - 1)


def fk_log_weight_rate(scores: Sequence[Tensor], a: Tensor, g2: Tensor) -> Tensor:
    """The rate (FK): (g^2 / 2)(|sum_i a_i s_i|^2 - sum_i a_i |s_i|^2) per particle, scores each (..., d)."""
    if isinstance(scores, Tensor) or not isinstance(scores, Sequence) or not scores:
        raise TypeError(f"scores must be a non-empty sequence of tensors, got {type(scores).__name__}")
    scores = [check_real_tensor(s, "scores") for s in scores]
    if len({s.shape for s in scores}) != 1 or scores[0].ndim == 0:
        raise ValueError(f"scores must share one shape (..., d), got {[tuple(s.shape) for s in scores]}")
    a = check_real_tensor(a, "a", 1)
    if a.numel() != len(scores):
        raise ValueError(f"a must hold one coefficient per score ({len(scores)}), got {a.numel()}")
    g2 = check_real_tensor(g2, "g2")
    stacked = torch.stack(scores)  # (M, ..., d)
    combined = torch.einsum("m,m...d->...d", a, stacked)
    return 0.5 * g2 * ((combined**2).sum(-1) - torch.einsum("m,m...->...", a, (stacked**2).sum(-1)))


@dataclass(frozen=True)
class FKResult:
    """Particles (R, N, d) at the last time with normalised weights (R, N) for R independent populations, the ESS
    (R,) before each step's resampling (n_steps, R), and how many steps resampled."""

    x: Tensor
    weights: Tensor
    ess: Tensor
    n_resampled: int

    def mean(self) -> Tensor:
        """Self-normalised estimate of E_q[x] for each population: (R, d)."""
        return torch.einsum("rn,rnd->rd", self.weights, self.x)

    def covariance(self) -> Tensor:
        """Self-normalised estimate of Cov_q[x] for each population: (R, d, d)."""
        centred = self.x - self.mean()[:, None]
        return torch.einsum("rn,rni,rnj->rij", self.weights, centred, centred)


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
    """Weighted reverse SDE for q_t ~ prod_i p_{i,t}^{a_i} from R independent populations x (R, N, d) at
    timesteps[0].

    ``reweight=False`` is naive score mixing (no weights, no resampling). ``resample_below`` in [0, 1]: a population
    is resampled when its ESS < resample_below N (1: every step; 0: never). ``noise`` (n_steps, R, N, d) or
    ``generator`` drives the SDE; the resampling uniforms come from ``generator``.
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
    if x.ndim != 3 or x.shape[1] == 0 or x.shape[0] == 0:
        raise ValueError(f"x must hold populations of particles (R, N, d) with R, N >= 1, got {tuple(x.shape)}")
    R, n, d = x.shape
    x = x.clone()  # resampling writes rows in place
    ts = check_sampler_inputs(models[0], x, timesteps)
    values = models[0].schedule(ts)
    noise_at = NoiseSource(noise, generator, len(ts) - 1, x)
    log_w = torch.zeros(R, n, dtype=x.dtype)
    ess, n_resampled = [], 0
    for i in range(len(ts) - 1):
        v = values[i]
        h = ts[i] - ts[i + 1]
        f = v.d_alpha / v.alpha
        g2 = 2 * v.sigma * v.d_sigma - 2 * f * v.sigma**2
        scores = [predict(m, x.reshape(R * n, d), ts[i], "score").reshape(R, n, d) for m in models]
        combined = torch.einsum("m,mrnd->rnd", coeffs, torch.stack(scores))
        if reweight:
            log_w = log_w + h * fk_log_weight_rate(scores, coeffs, g2)
            ess.append(effective_sample_size(log_w))
            redo = (ess[-1] < resample_below * n) | (resample_below == 1.0)
            if bool(redo.any()):
                idx = systematic_resample(torch.softmax(log_w[redo], -1), generator)  # (R', N)
                x[redo] = torch.take_along_dim(x[redo], idx[..., None], 1)
                combined[redo] = torch.take_along_dim(combined[redo], idx[..., None], 1)
                log_w[redo] = 0.0
                n_resampled += 1
        # Euler-Maruyama, backwards in t: x <- x - h (f x - g^2 S) + g sqrt(h) z
        x = x - h * (f * x - g2 * combined) + torch.sqrt(g2 * h) * noise_at(i)
    ess_t = torch.stack(ess) if ess else torch.full((len(ts) - 1, R), float(n), dtype=x.dtype)
    return FKResult(x, torch.softmax(log_w, -1), ess_t, n_resampled)


def prior_particles(
    R: int, n: int, d: int, sigma: float, total: float, generator: torch.Generator | None = None
) -> Tensor:
    """R populations of n draws (R, n, d) from N(0, sigma^2 / total I), total = sum_i a_i > 0: the normalised
    prod_i N(0, sigma^2)^{a_i}, the target at a time where every model's marginal is N(0, sigma^2) up to
    alpha_T |mu| / sigma_T."""
    R, n, d = check_integer(R, "R", 1), check_integer(n, "n", 1), check_integer(d, "d", 1)
    sigma, total = as_positive_float(sigma, "sigma"), as_positive_float(total, "total")
    return sigma / math.sqrt(total) * torch.randn(R, n, d, generator=generator, dtype=torch.float64)
