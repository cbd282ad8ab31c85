"""CDRL: recovery likelihood of one noise level, sampled by Langevin refinement of an initializer's proposals
(Zhu et al. 2024, arXiv:2309.05153v4; diffusion recovery likelihood of Gao et al. 2021, arXiv:2012.08125v2).

Between two adjacent noise levels x_{t+1} = a x_t + s eps (a = alpha_{t+1} / alpha_t,
s^2 = sigma_{t+1}^2 - a^2 sigma_t^2), the recovery likelihood is the conditional

    p(x_t | x_{t+1}) ∝ p_t(x_t) exp(-|x_{t+1} - a x_t|^2 / (2 s^2))          (their Eq. 2-3 [unverified]),

an EBM f_theta = log p_t tilted by a Gaussian that is sharp when s is small, so it is far closer to a Gaussian than
p_t. For Gaussian data p_t = N(m, C) the conditional is Gaussian in closed form (``recovery_gaussian``).
CDRL's sampler draws an initializer proposal and refines it with K Langevin steps
x <- x + (delta / 2) grad log p(x | x_{t+1}) + sqrt(delta) z (Sec. 3 [unverified]); on a Gaussian target this
is a linear recursion whose moments after K steps are exact (``langevin_gaussian_moments``). The initializer is
fitted to the refined samples (``fit_initializer``, a linear-Gaussian one here): the cooperative update.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from refimpl._validation import (
    check_callable,
    check_finite,
    check_instance,
    check_integer,
    check_number,
    check_symmetric_positive_definite,
    check_tensor,
)
from refimpl.schedules import ScheduleValues

__all__ = [
    "fit_initializer",
    "kl_to_gaussian_fit_1d",
    "langevin",
    "langevin_gaussian_moments",
    "recovery_coefficients",
    "recovery_gaussian",
    "recovery_score",
]


def recovery_coefficients(v_t: ScheduleValues, v_next: ScheduleValues) -> tuple[Tensor, Tensor]:
    """(a, s): x_{t+1} = a x_t + s eps between levels t and t + 1 (noisier), s^2 = sigma_{t+1}^2 - a^2 sigma_t^2."""
    check_instance(v_t, ScheduleValues, "v_t")
    check_instance(v_next, ScheduleValues, "v_next")
    a = v_next.alpha / v_t.alpha
    s2 = v_next.sigma**2 - a**2 * v_t.sigma**2
    if not bool(s2 > 0):
        raise ValueError("v_next must be a noisier level than v_t")
    return a, torch.sqrt(s2)


def recovery_gaussian(
    mean: Tensor, cov: Tensor, a: float | Tensor, s: float | Tensor, x_next: Tensor
) -> tuple[Tensor, Tensor]:
    """p(x_t | x_{t+1}) for p_t = N(mean, cov): precision P = C^{-1} + (a^2 / s^2) I,
    mean P^{-1} (C^{-1} m + (a / s^2) x_{t+1}). Returns means (B, d) and the shared covariance (d, d)."""
    check_symmetric_positive_definite(cov, "cov")
    d = mean.shape[-1]
    if x_next.ndim != 2 or x_next.shape[-1] != d:
        raise ValueError(f"x_next must have shape (B, {d}), got {tuple(x_next.shape)}")
    check_finite(x_next, "x_next")
    c_inv = torch.linalg.inv(cov)
    precision = c_inv + (a**2 / s**2) * torch.eye(d, dtype=cov.dtype)
    post_cov = torch.linalg.inv(precision)
    post_cov = 0.5 * (post_cov + post_cov.T)
    means = (c_inv @ mean + (a / s**2) * x_next) @ post_cov.T
    return means, post_cov


def recovery_score(
    score_t: Callable[[Tensor], Tensor], x: Tensor, x_next: Tensor, a: float | Tensor, s: float | Tensor
) -> Tensor:
    """grad_x log p(x | x_{t+1}) = grad log p_t(x) + a (x_{t+1} - a x) / s^2."""
    return score_t(x) + a * (x_next - a * x) / s**2


def langevin(
    score: Callable[[Tensor], Tensor],
    x: Tensor,
    delta: float,
    n_steps: int,
    *,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """K unadjusted Langevin steps x <- x + (delta / 2) score(x) + sqrt(delta) z; noise (K, *x.shape) if given."""
    check_callable(score, "score")
    x = check_tensor(x, "x")
    if not check_number(delta, "delta") > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    check_integer(n_steps, "n_steps", 0)
    if noise is not None and tuple(check_tensor(noise, "noise").shape) != (n_steps, *x.shape):
        raise ValueError(f"noise must have shape {(n_steps, *x.shape)}, got {tuple(noise.shape)}")
    for k in range(n_steps):
        z = noise[k] if noise is not None else torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x + 0.5 * delta * score(x) + delta**0.5 * z
    return x


def langevin_gaussian_moments(
    mean0: Tensor, cov0: Tensor, target_mean: Tensor, target_cov: Tensor, delta: float, n_steps: int
) -> tuple[Tensor, Tensor]:
    """Exact law after ``langevin`` on N(target_mean, target_cov) from N(mean0, cov0).

    With P the target precision, one step is x <- M x + (delta / 2) P m + sqrt(delta) z, M = I - (delta / 2) P, so
    mean_{k+1} = M mean_k + (delta / 2) P m and cov_{k+1} = M cov_k M^T + delta I. As K grows the covariance tends
    to (P - (delta / 4) P^2)^{-1}, not P^{-1}: the discretisation bias of unadjusted Langevin.
    mean0 is (d,) or (B, d) (one start mean per conditional).
    """
    mean0, target_mean = check_tensor(mean0, "mean0"), check_tensor(target_mean, "target_mean")
    check_symmetric_positive_definite(check_tensor(cov0, "cov0", 2), "cov0")
    check_symmetric_positive_definite(check_tensor(target_cov, "target_cov", 2), "target_cov")
    d = target_mean.shape[-1] if target_mean.ndim else 0
    if not (target_mean.ndim in (1, 2) and mean0.ndim in (1, 2) and mean0.shape[-1] == d):
        raise ValueError(
            f"mean0 and target_mean must be (d,) or (B, d), got {tuple(mean0.shape)}, {tuple(target_mean.shape)}"
        )
    if cov0.shape != (d, d) or target_cov.shape != (d, d):
        raise ValueError(f"cov0 and target_cov must be ({d}, {d}), got {tuple(cov0.shape)}, {tuple(target_cov.shape)}")
    if not check_number(delta, "delta") > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    check_integer(n_steps, "n_steps", 0)
    P = torch.linalg.inv(target_cov)
    M = torch.eye(d, dtype=P.dtype) - 0.5 * delta * P
    drift = 0.5 * delta * (P @ target_mean.T).T if target_mean.ndim == 2 else 0.5 * delta * P @ target_mean
    mean, cov = mean0, cov0
    for _ in range(n_steps):
        mean = mean @ M.T + drift
        cov = M @ cov @ M.T + delta * torch.eye(d, dtype=P.dtype)
    return mean, cov


def fit_initializer(x_next: Tensor, refined: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The cooperative update of a linear-Gaussian initializer q(x_t | x_{t+1}) = N(A x_{t+1} + b, V): least
    squares of the refined samples on x_{t+1}. Returns A (d, d), b (d,), V (d, d) (the residual covariance)."""
    x_next, refined = check_tensor(x_next, "x_next"), check_tensor(refined, "refined")
    if x_next.shape != refined.shape or x_next.ndim != 2:
        raise ValueError(
            f"x_next and refined must both have shape (B, d), got {tuple(x_next.shape)}, {tuple(refined.shape)}"
        )
    if len(refined) <= x_next.shape[1] + 1:
        raise ValueError(
            f"refined needs more than d + 1 = {x_next.shape[1] + 1} rows to estimate V, got {len(refined)}"
        )
    design = torch.cat([x_next, torch.ones_like(x_next[:, :1])], 1)
    coef = torch.linalg.lstsq(design, refined).solution  # (d + 1, d)
    residual = refined - design @ coef
    return coef[:-1].T, coef[-1], residual.T @ residual / (len(refined) - design.shape[1])


def kl_to_gaussian_fit_1d(log_p: Tensor, grid: Tensor) -> float:
    """KL(p || N(m, v)) for a 1-D density given by its log on a uniform grid, with (m, v) its own moments
    (midpoint quadrature; p is renormalised on the grid). Zero exactly for a Gaussian, up to quadrature error."""
    grid, log_p = check_tensor(grid, "grid"), check_tensor(log_p, "log_p")
    if grid.ndim != 1 or log_p.shape != grid.shape or len(grid) < 3:
        raise ValueError(
            f"log_p and grid must be 1-D of one length >= 3, got {tuple(log_p.shape)}, {tuple(grid.shape)}"
        )
    dx = float(grid[1] - grid[0])
    if not (dx > 0 and bool(((grid[1:] - grid[:-1] - dx).abs() <= 1e-9 * dx * len(grid)).all())):
        raise ValueError("grid must be uniform and increasing")
    log_p = log_p - torch.logsumexp(log_p, 0) - math.log(dx)
    p = torch.exp(log_p)
    m = float((p * grid).sum() * dx)
    v = float((p * (grid - m) ** 2).sum() * dx)
    if not v > 0:
        raise ValueError("the density given by log_p sits on one grid point (variance 0): refine the grid")
    log_q = -0.5 * (grid - m) ** 2 / v - 0.5 * math.log(2 * math.pi * v)
    return float((p * (log_p - log_q)).sum() * dx)
