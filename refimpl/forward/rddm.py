"""RDDM: residual denoising diffusion (Liu et al. 2024, arXiv:2308.13712v3).

The forward process moves the target image I_0 towards the input I_in along the residual I_res = I_in - I_0 while
adding noise, with two independent schedules (their Eq. 4 [unverified]):

    I_t = I_0 + abar_t I_res + bbar_t eps,   abar_t = sum_{i<=t} alpha_i,   bbar_t^2 = sum_{i<=t} beta_i^2.

In the book's notation I_t = (1 - abar_t) I_0 + abar_t I_in + bbar_t eps: the process of ``refimpl.forward.shifted``
with alpha_t = 1 - abar_t, sigma_t = bbar_t and the shift kappa_t c = abar_t I_in. So every schedule of refimpl is an
RDDM schedule (``rddm_coefficients``); the paper's coefficient transformation abar_t = 1 - sqrt(alphabar_t),
bbar_t = sqrt(1 - alphabar_t) (DDPM's alphabar) is this reading of a VP schedule, and ``ResidualSchedule`` is
RDDM's own decoupled choice (residual linear in t, noise variance sum_scale t).

One sampler step from s to t < s with predictions (I_res, eps) at I_s (their Eq. 7 [unverified]; the official
``scheduling_ddim_our.py``, ``step_res``):

    I_t = I_s - (abar_s - abar_t) I_res - (bbar_s - sqrt(bbar_t^2 - sigma^2)) eps + sigma z.

With I_in = 0 it is the DDIM step (Song et al. 2021, arXiv:2010.02502v4, Eq. 12), to round-off; sigma is DDIM's
(eta) as in the official conversion code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import check_instance, check_number, check_tensor
from refimpl.forward.shifted import ShiftedModel, check_shift, kappa_residual
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.samplers._common import Callback, NoiseSource, StepInfo, check_sampler_inputs
from refimpl.samplers.ddim import ddim_sigma
from refimpl.schedules import NoiseSchedule, ScheduleValues, _check_finite_parameters
from toy_models.gmm import GaussianMixture

__all__ = ["ResidualSchedule", "degraded_posterior", "rddm_coefficients", "rddm_forward", "rddm_step", "sample_rddm"]


def rddm_coefficients(v: ScheduleValues) -> tuple[Tensor, Tensor]:
    """(abar_t, bbar_t) = (1 - alpha_t, sigma_t): the RDDM coefficients of a schedule (Sec. 3 [unverified])."""
    check_instance(v, ScheduleValues, "v")
    return 1.0 - v.alpha, v.sigma


def rddm_forward(I_0: Tensor, I_in: Tensor, v_t: ScheduleValues, eps: Tensor) -> Tensor:
    """I_t = I_0 + abar_t (I_in - I_0) + bbar_t eps (Eq. 4 [unverified])."""
    I_0, I_in, eps = check_tensor(I_0, "I_0"), check_tensor(I_in, "I_in"), check_tensor(eps, "eps")
    check_instance(v_t, ScheduleValues, "v_t")
    abar, bbar = rddm_coefficients(v_t)
    return I_0 + expand_like(abar, I_0) * (I_in - I_0) + expand_like(bbar, eps) * eps


def rddm_step(
    I_s: Tensor,
    I_res: Tensor,
    eps: Tensor,
    v_s: ScheduleValues,
    v_t: ScheduleValues,
    sigma: Tensor | float = 0.0,
    z: Tensor | None = None,
) -> Tensor:
    """I_t = I_s - (abar_s - abar_t) I_res - (bbar_s - sqrt(bbar_t^2 - sigma^2)) eps + sigma z (Eq. 7 [unverified])."""
    I_s, I_res, eps = check_tensor(I_s, "I_s"), check_tensor(I_res, "I_res"), check_tensor(eps, "eps")
    check_instance(v_s, ScheduleValues, "v_s")
    abar_s, bbar_s = rddm_coefficients(v_s)
    check_instance(v_t, ScheduleValues, "v_t")
    abar_t, bbar_t = rddm_coefficients(v_t)
    sigma = check_tensor(sigma, "sigma").to(bbar_t.dtype)
    if bool((sigma < 0).any() or (sigma > bbar_t).any()):
        raise ValueError("sigma must lie in [0, bbar_t] (bbar_t = sigma_t of v_t): sqrt(bbar_t^2 - sigma^2) is real")
    if z is not None:
        z = check_tensor(z, "z")
    I_t = (
        I_s
        - expand_like(abar_s - abar_t, I_s) * I_res
        - expand_like(bbar_s - torch.sqrt(bbar_t**2 - sigma**2), eps) * eps
    )
    if z is not None:
        I_t = I_t + expand_like(sigma, z) * z
    return I_t


def sample_rddm(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    I_in: Tensor | None = None,
    eta: float = 0.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """RDDM sampling from I_T = x at timesteps[0] to timesteps[-1] (their Algorithm 2 [unverified]).

    ``model`` is a network of the residual process: it sees I_t (and knows I_in, as a conditional network does) and
    predicts, in any parameterisation but the velocity, the pair it was trained on; the residual it implies is
    I_res = I_in - x0. ``I_in`` (shape of x, or of one sample) defaults to 0: generation, which is DDIM.
    ``eta`` in [0, 1] scales DDIM's sigma (0: deterministic).
    """
    ts = check_sampler_inputs(model, x, timesteps)
    I_in = check_shift(I_in, x, "I_in")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    view = ShiftedModel(model, -I_in, kappa_residual)  # a model of the unshifted state z_t = I_t - abar_t I_in
    noise_at = NoiseSource(noise, generator, len(ts) - 1, x)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        abar_s, _ = rddm_coefficients(v_s)
        x0, eps = predict_x0_eps(view, x - expand_like(abar_s, x) * I_in, ts[i], v_s)
        I_res = I_in - x0
        if eta > 0:
            x_next = rddm_step(x, I_res, eps, v_s, v_t, ddim_sigma(eta, v_s, v_t), noise_at(i))
        else:
            x_next = rddm_step(x, I_res, eps, v_s, v_t)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


class ResidualSchedule(NoiseSchedule):
    """RDDM's decoupled schedule with constant alpha_i and beta_i^2 ("average" in the official code):
    abar_t = t and bbar_t^2 = sum_scale t, i.e. alpha_t = 1 - t, sigma_t = sqrt(sum_scale t).

    sum_scale = 1 is generation-like; the paper uses a small sum_scale (0.01) for restoration, where I_T is I_in
    plus a little noise. lambda_t = log(1 - t) - log(sum_scale t) / 2; its inverse solves u^2 + b u - 1 = 0 for
    u = sqrt(t), b = e^lambda sqrt(sum_scale), in the cancellation-free form u = 2 / (b + sqrt(b^2 + 4)).
    """

    name = "rddm_residual"

    def __init__(self, sum_scale: float = 0.01, t_min: float = 1e-3, t_max: float = 0.995):
        _check_finite_parameters(sum_scale=sum_scale, t_min=t_min, t_max=t_max)
        if sum_scale <= 0:
            raise ValueError(f"sum_scale must be positive, got {sum_scale}")
        if not 0 < t_min < t_max < 1:
            raise ValueError(f"need 0 < t_min < t_max < 1, got t_min={t_min}, t_max={t_max}")
        self.sum_scale, self.t_min, self.t_max = sum_scale, t_min, t_max

    def _log_alpha(self, t: Tensor) -> Tensor:
        return torch.log1p(-t)

    def _log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log(self.sum_scale * t)

    def _d_log_alpha(self, t: Tensor) -> Tensor:
        return -1.0 / (1.0 - t)

    def _d_log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 / t

    def _t_of_lambda(self, lambda_: Tensor) -> Tensor:
        b = torch.exp(lambda_) * math.sqrt(self.sum_scale)
        return (2.0 / (b + torch.sqrt(b**2 + 4.0))) ** 2


def degraded_posterior(mixture: GaussianMixture, I_in: Tensor, scale: float, tau: float) -> GaussianMixture:
    """The restoration toy's exact target: the law of I_0 given one degraded observation I_in = scale I_0 + tau n.

    For mixture data this posterior is itself a mixture (Bayes' rule per component: ``GaussianMixture.reverse_kernel``
    with alpha_t = scale, sigma_t = tau and alpha_s = 1, sigma_s = 0). I_in has shape (d,).
    """
    check_instance(mixture, GaussianMixture, "mixture")
    if not (check_number(scale, "scale") > 0 and check_number(tau, "tau") > 0):
        raise ValueError(f"scale and tau must be positive, got {scale}, {tau}")
    if check_tensor(I_in, "I_in").shape != (mixture.d,):
        raise ValueError(f"I_in must be a tensor of shape ({mixture.d},)")
    post = mixture.reverse_kernel(I_in[None].to(mixture.dtype), scale, tau, 1.0, 0.0)
    covs = torch.einsum("kij,kj,klj->kil", post.eigvecs, post.variances, post.eigvecs)
    return GaussianMixture(post.weights[0], post.means[0], 0.5 * (covs + covs.mT), mixture.labels)
