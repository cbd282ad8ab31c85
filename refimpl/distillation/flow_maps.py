"""Exact targets for distillation: probability-flow maps between two times, as functions.

On Gaussian data N(mu, Sigma) the probability-flow ODE (Song et al. 2021, arXiv:2011.13456v2, Eq. 13) is
linear in x - alpha_t mu, so its solution map from time s to time t is affine, x_t = M x_s + b, with

    M = U diag(sqrt(c_t / c_s)) U^T,   b = alpha_t mu - alpha_s M mu,   c = alpha^2 l + sigma^2,     (1)

Sigma = U diag(l) U^T (``toy_models.gmm.GaussianMixture.pf_ode_map`` applies the same map to points). Every
affine sampler on Gaussian data (DDIM with the exact model, an affine student) is also an affine map; ``affine_map_of``
reads (M, b) off any such function by probing it with the origin and the unit vectors, exact up to round-off.
On the mixture lab the flow map has no closed form: ``reference_flow_map`` is the DOP853 reference solve
(``refimpl.reference.solve_pf_ode``, within 1e-10 of the state's scale).

An affine student maps Gaussian noise to a Gaussian, so its distance to Gaussian data is exact too: the 2-Wasserstein
distance between N(m_1, S_1) and N(m_2, S_2) (Givens & Shortt 1984, Prop. 7 [unverified])

    W2^2 = |m_1 - m_2|^2 + tr(S_1 + S_2 - 2 (S_2^(1/2) S_1 S_2^(1/2))^(1/2)).                          (2)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from refimpl._validation import check_finite_result, check_tensor
from refimpl.models import DiffusionModel
from refimpl.reference import solve_pf_ode
from refimpl.schedules import NoiseSchedule
from toy_models.gmm import GaussianMixture

__all__ = ["affine_map_of", "apply_affine", "gaussian_flow_map", "gaussian_w2", "reference_flow_map"]


def gaussian_flow_map(
    mixture: GaussianMixture, schedule: NoiseSchedule, t_from: float | Tensor, t_to: float | Tensor
) -> tuple[Tensor, Tensor]:
    """(M, b) of Eq. (1): the exact probability-flow map x_{t_to} = M x_{t_from} + b of one Gaussian (K = 1).

    Either direction (t_to < t_from: towards the data; t_to > t_from: the encoder). M (d, d), b (d,).
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    if mixture.K != 1:
        raise ValueError(f"the closed-form flow map needs a single Gaussian (K = 1), mixture has K = {mixture.K}")
    v_s, v_t = schedule(schedule.check_t(t_from, "t_from")), schedule(schedule.check_t(t_to, "t_to"))
    l, U, mu = mixture.eigvals[0], mixture.eigvecs[0], mixture.means[0]
    c_s = v_s.alpha.to(l.dtype) ** 2 * l + v_s.sigma.to(l.dtype) ** 2
    c_t = v_t.alpha.to(l.dtype) ** 2 * l + v_t.sigma.to(l.dtype) ** 2
    M = U @ torch.diag(torch.sqrt(c_t / c_s)) @ U.T  # each eigen-coordinate scales by sqrt(c_t / c_s)
    b = v_t.alpha.to(l.dtype) * mu - v_s.alpha.to(l.dtype) * (M @ mu)
    return M, b


def apply_affine(M: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """x -> M x + b for a batch x of shape (B, d); M (d, d), b (d,)."""
    M, b, x = check_tensor(M, "M", ndim=2), check_tensor(b, "b", ndim=1), check_tensor(x, "x", ndim=2)
    d = x.shape[1]
    if M.shape != (d, d) or b.shape != (d,):
        raise ValueError(f"M must be (d, d) and b (d,) for x (B, d), got {tuple(M.shape)}, {tuple(b.shape)}, d = {d}")
    return check_finite_result(x @ M.T + b, "M, b and x (overflow)")


def affine_map_of(fn: Callable[[Tensor], Tensor], d: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """(M, b) of an affine map fn: (B, d) -> (B, d), read off in one batched call at 0 and e_1, ..., e_d.

    Exact up to round-off for affine fn; for a non-affine fn this is its secant at the origin (no error raised).
    """
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    probes = torch.cat([torch.zeros(1, d, dtype=dtype), torch.eye(d, dtype=dtype)])
    out = fn(probes)
    if out.shape != probes.shape:
        raise ValueError(f"fn must map (B, {d}) to (B, {d}), it returned shape {tuple(out.shape)}")
    b = out[0]
    return (out[1:] - b).T, b  # column j = response to e_j


def reference_flow_map(model: DiffusionModel, x: Tensor, t_from: float | Tensor, t_to: float | Tensor) -> Tensor:
    """The reference probability-flow map x_{t_from} -> x_{t_to} of any model (DOP853, float64)."""
    return solve_pf_ode(model, x, t_from, t_to)


def _psd_sqrt(S: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, V = torch.linalg.eigh(0.5 * (S + S.mT))
    return (V * torch.sqrt(w.clamp(min=0))) @ V.mT


def gaussian_w2(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor) -> Tensor:
    """Eq. (2): the 2-Wasserstein distance between N(m1, S1) and N(m2, S2); means (d,), covariances (d, d) PSD."""
    for name, m, S in (("1", m1, S1), ("2", m2, S2)):
        if not isinstance(m, Tensor) or not isinstance(S, Tensor):
            raise TypeError(f"m{name} and S{name} must be tensors")
        if m.ndim != 1 or tuple(S.shape) != (m.shape[0], m.shape[0]) or m.shape != m1.shape:
            raise ValueError(f"m{name} must have shape (d,) and S{name} (d, d), the same d for both laws")
        if not bool(torch.isfinite(m).all() and torch.isfinite(S).all()):
            raise ValueError(f"m{name} and S{name} must be finite")
    root = _psd_sqrt(S2)
    cross = _psd_sqrt(root @ S1 @ root)
    w2_sq = ((m1 - m2) ** 2).sum() + torch.trace(S1 + S2 - 2 * cross)
    return torch.sqrt(w2_sq.clamp(min=0))
