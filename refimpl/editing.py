"""Editing by inversion on the exact toys: invert under one condition, regenerate under another.

* ``edit_by_inversion`` -- the editing loop of EDICT, BDIA and DDIM-inversion editors: encode x with the
  source model, decode the latent with the target model (any registered sampler with an encoder).
* ``ode_map_1d`` and ``exact_ode_edit_1d`` -- in one dimension the probability-flow ODE of any Gaussian
  mixture is monotone, so it is the quantile map between the noised laws: F_to(Phi(x)) = F_from(x). Inverting
  under a source law and regenerating under a target law is then exactly
  x_out = Q^tgt_end(F^tgt_T(Q^src_T(F^src_end(x)))): what an edit preserves is the point's quantile, up to the
  (small) difference between the two noised laws at the start time T.
* ``infedit`` -- InfEdit's inversion-free editing (Xu et al. 2024, arXiv:2312.04965): DDCM sampling, whose
  special variance sigma_t = sqrt(1 - abar_{t-1}) makes each step x_s = alpha_s x0_hat + sigma_s z (their
  Prop. 1), so a source branch with known x0 needs no inversion ("virtual inversion", their Algorithm 1), and
  the target branch is calibrated by the source branch's error in eps (their Algorithm 2).
* ``low_frequency_projector`` and ``reduce_low_frequencies`` -- StyleSSP's frequency manipulation of the
  sampling start point (Xu et al. 2025, arXiv:2501.11319): remove part of the low-frequency content of the
  inverted latent.

Everything is checked in ``tests/test_editing.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from refimpl._validation import as_float_tensor, check_finite, check_instance, check_number, check_tensor
from refimpl.models import DiffusionModel, check_model, predict
from refimpl.parameterization import eps_from_x0, x0_from_eps
from refimpl.registry import SamplerSpec
from refimpl.samplers._common import Callback, NoiseSource, StepInfo, check_sampler_inputs
from refimpl.samplers.ddpm import forward_sample
from refimpl.schedules import NoiseSchedule
from toy_models.gmm import GaussianMixture

__all__ = [
    "edit_by_inversion",
    "exact_ode_edit_1d",
    "infedit",
    "low_frequency_projector",
    "mixture_cdf_1d",
    "ode_map_1d",
    "reduce_low_frequencies",
]

_BISECTION_STEPS = 200  # halves a bracket of width < 1e4 far below one float64 ulp of the answer


def edit_by_inversion(
    spec: SamplerSpec,
    source: DiffusionModel,
    target: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    callback: Callback | None = None,
) -> Tensor:
    """Encode x (B, ...) at timesteps[-1] with ``spec.encode`` under ``source``; decode under ``target``.

    With an exact encoder and ``target = source`` this returns x up to round-off. The callback sees the decode.
    """
    check_instance(spec, SamplerSpec, "spec")
    check_instance(source, DiffusionModel, "source")
    check_instance(target, DiffusionModel, "target")
    if spec.encode is None:
        raise ValueError(f"sampler {spec.name!r} has no encoder to invert with")
    return spec(target, spec.encode(source, x, timesteps), timesteps, callback=callback)


# --- one dimension: the ODE flow is the quantile map --------------------------------------------------------
def _check_1d(mixture: GaussianMixture, x: Tensor, name: str = "mixture") -> Tensor:
    check_instance(mixture, GaussianMixture, name)
    if mixture.d != 1:
        raise ValueError(f"the one-dimensional maps need a GaussianMixture with d = 1; {name} has d = {mixture.d}")
    x = as_float_tensor(x, "x")
    return check_finite(x, "x")


def mixture_cdf_1d(mixture: GaussianMixture, alpha: float, sigma: float, x: Tensor) -> tuple[Tensor, Tensor]:
    """The CDF and the survival function (1 - CDF, without cancellation) of the 1-D mixture noised to
    x_t = alpha x_0 + sigma eps, at points x of any shape."""
    x = _check_1d(mixture, x)
    mean = alpha * mixture.means[:, 0]  # (K,)
    std = torch.sqrt(alpha**2 * mixture.covariances[:, 0, 0] + sigma**2)
    z = (x[..., None] - mean) / std
    w = mixture.weights
    # Phi(z) = erfc(-z / sqrt 2) / 2: accurate in both tails (torch.special.ndtr is not in the lower tail).
    cdf = 0.5 * torch.special.erfc(-z / math.sqrt(2.0))
    sf = 0.5 * torch.special.erfc(z / math.sqrt(2.0))
    return (w * cdf).sum(-1), (w * sf).sum(-1)


def ode_map_1d(
    mixture: GaussianMixture, alpha_from: float, sigma_from: float, alpha_to: float, sigma_to: float, x: Tensor
) -> Tensor:
    """The exact probability-flow ODE map of a 1-D mixture between two noise levels: Q_to(F_from(x)).

    The flow is monotone and carries p_from to p_to, so F_to(Phi(x)) = F_from(x). The quantile is found by
    bisection, matching the CDF on the left half and the survival function on the right half (no cancellation).
    """
    cdf, sf = mixture_cdf_1d(mixture, alpha_from, sigma_from, x)
    left = cdf <= 0.5
    std_max = float(torch.sqrt(alpha_to**2 * mixture.covariances[:, 0, 0].max() + sigma_to**2))
    mean = alpha_to * mixture.means[:, 0]
    lo = torch.full_like(cdf, float(mean.min()) - 40.0 * std_max)
    hi = torch.full_like(cdf, float(mean.max()) + 40.0 * std_max)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        c, s = mixture_cdf_1d(mixture, alpha_to, sigma_to, mid)
        below = torch.where(left, c < cdf, s > sf)  # the quantile lies above mid
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def exact_ode_edit_1d(
    source: GaussianMixture,
    target: GaussianMixture,
    schedule: NoiseSchedule,
    x: Tensor,
    t_start: float | None = None,
    t_end: float | None = None,
) -> Tensor:
    """The exact result of ODE inversion under ``source`` from t_end to t_start, then ODE generation under
    ``target`` back to t_end (defaults: the schedule's t_max and t_min), for 1-D mixtures: the limit of every
    exact-inversion editor as its steps shrink."""
    _check_1d(source, x, "source"), _check_1d(target, x, "target")
    check_instance(schedule, NoiseSchedule, "schedule")
    t_start = schedule.t_max if t_start is None else check_number(t_start, "t_start")
    t_end = schedule.t_min if t_end is None else check_number(t_end, "t_end")
    v_start, v_end = schedule(t_start), schedule(t_end)
    a_s, s_s, a_e, s_e = (float(v) for v in (v_start.alpha, v_start.sigma, v_end.alpha, v_end.sigma))
    latent = ode_map_1d(source, a_e, s_e, a_s, s_s, x)
    return ode_map_1d(target, a_s, s_s, a_e, s_e, latent)


# --- InfEdit: DDCM's virtual inversion and the calibrated target branch -------------------------------------
def infedit(
    source: DiffusionModel,
    target: DiffusionModel,
    x0: Tensor,
    timesteps: Tensor,
    *,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """InfEdit (arXiv:2312.04965, Algorithm 2) on the grid t_0 > ... > t_n; 2 model calls per grid time.

    Both branches start at z = alpha_0 x0 + sigma_0 noise[0]. At each t_i the source branch's consistent noise
    eps_cons = (z_src - alpha x0) / sigma (Eq. 10) measures the source model's error eps_cons - eps_src, the
    target's prediction is shifted by it, and both branches take the DDCM step x_s = alpha_s x0 + sigma_s z with
    the same fresh noise (Prop. 1). Returns the target's x0 prediction at t_n (as the official code does);
    with target = source it is x0 up to round-off. noise: (n + 1, B, ...) or drawn from ``generator``.
    """
    check_instance(source, DiffusionModel, "source")
    check_instance(target, DiffusionModel, "target")
    if not isinstance(x0, Tensor) or not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating torch.Tensor, got {type(x0).__name__}")
    ts = check_sampler_inputs(source, x0, timesteps)
    check_model(target)
    if target.schedule is not source.schedule:
        raise ValueError("source and target models must share one schedule object")
    noise_at = NoiseSource(noise, generator, len(ts), x0)
    values = source.schedule(ts)
    z_src = z_tgt = forward_sample(x0, values[0], noise_at(0))  # any start works; this is q(x_{t_0} | x0)
    for i in range(len(ts)):
        v = values[i]
        eps_src = predict(source, z_src, ts[i], "eps")
        eps_cons = eps_from_x0(z_src, x0, v.alpha, v.sigma)  # Eq. 10: the noise that points z_src at x0
        eps_tgt = predict(target, z_tgt, ts[i], "eps") + (eps_cons - eps_src)  # Algorithm 2: calibrate
        x0_tgt = x0_from_eps(z_tgt, eps_tgt, v.alpha, v.sigma)
        if i + 1 < len(ts):
            z = noise_at(i + 1)
            z_src = forward_sample(x0, values[i + 1], z)  # DDCM step, Prop. 1: virtual inversion of the source
            z_next = forward_sample(x0_tgt, values[i + 1], z)
            if callback is not None:
                callback(StepInfo(i, ts[i], ts[i + 1], z_tgt, z_next, x0_tgt))
            z_tgt = z_next
    return x0_tgt


# --- StyleSSP: a frequency-filtered start point ---------------------------------------------------------------
def low_frequency_projector(basis: Tensor, freq: Tensor, cutoff: float) -> Tensor:
    """The orthogonal projector (d, d) onto the span of the orthonormal basis rows (d, d) whose frequency
    freq (d,) is at most ``cutoff``: P = B_low^T B_low."""
    basis, freq = as_float_tensor(basis, "basis"), as_float_tensor(freq, "freq")
    if basis.ndim != 2 or basis.shape[0] != basis.shape[1] or freq.shape != basis.shape[:1]:
        raise ValueError(f"basis must be (d, d) and freq (d,), got {tuple(basis.shape)} and {tuple(freq.shape)}")
    eye = torch.eye(basis.shape[0], dtype=basis.dtype)
    if not bool(torch.allclose(basis @ basis.T, eye, atol=1e-10)):
        raise ValueError("the basis rows must be orthonormal")
    low = basis[freq <= cutoff]
    return low.T @ low


def reduce_low_frequencies(z: Tensor, projector: Tensor, keep: float) -> Tensor:
    """StyleSSP's frequency manipulation of a start point z (B, d): z - (1 - keep) P z (arXiv:2501.11319).

    keep = 1 leaves z unchanged, keep = 0 removes its low band entirely; the high band is never touched.
    """
    check_number(keep, "keep", 0.0, 1.0)
    z, projector = check_tensor(z, "z"), check_tensor(projector, "projector")
    if z.ndim != 2 or projector.shape != (z.shape[1], z.shape[1]):
        raise ValueError(f"z must be (B, d) and the projector (d, d), got {tuple(z.shape)}, {tuple(projector.shape)}")
    return z - (1.0 - keep) * z @ projector.to(z.dtype)
