"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov & Michaeli 2024, arXiv:2304.06140).

DDPM's ancestral sampler (``refimpl.samplers.ddpm``, posterior variance) turns x_{t_0} and one Gaussian map
z_i per step into a sample: x_{t_{i+1}} = mu_i(x_{t_i}) + s_i z_i, with mu_i and s_i^2 the mean and variance
of q(x_{t_{i+1}} | x_{t_i}, x0_hat). Any image x at the last time t_n has noise maps that regenerate it
exactly. The paper's choice: draw an auxiliary path with *independent* noise at every time,

    x_{t_i} = alpha_{t_i | t_n} x + sigma_{t_i | t_n} eps_i,   eps_i ~ N(0, I) independent,   x_{t_n} = x,

(their x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps_t, written here from the last time t_n instead of from 0:
alpha_{t|s} = alpha_t / alpha_s, sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2; the two agree when
alpha_{t_n} = 1, sigma_{t_n} = 0), then solve each DDPM step for its noise:

    z_i = (x_{t_{i+1}} - mu_i(x_{t_i})) / s_i.

Regenerating with these maps reproduces every x_{t_i}, hence x, up to round-off. Because consecutive path
points are independent, the maps are neither standard normal nor independent across time: each z_i mixes
eps_i and eps_{i+1}, so Var z_i is much larger than 1 for small steps and z_i, z_{i+1} are negatively
correlated (the paper's observation; exact formulas for one Gaussian are derived in the book's chapter 5 and
checked in ``tests/test_editing.py``).

Disagreement with the official code (inbarhub/DDPM_inversion, ``inversion_forward_process``): after extraction
it sets the last map to zero (``zs[-1] = 0``), so its regeneration reproduces x only up to the last step's
s_{n-1} z_{n-1}; here every map is kept and the round trip is exact.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import check_finite, check_float_tensors
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.samplers.ddpm import ddpm_posterior, sample_ddpm

__all__ = ["NoiseMaps", "auxiliary_path", "extract_noise_maps", "sample_edit_friendly"]


class _Maps(NamedTuple):
    x: Tensor
    noise: Tensor


class NoiseMaps(_Maps):
    """An edit-friendly latent: the start x at timesteps[0] (B, ...) and the noise of every step (n, B, ...).

    Checked when made: finite floating tensors, ``noise`` of shape (n, *x.shape) (``TypeError``/``ValueError``)."""

    __slots__ = ()

    def __new__(cls, x: Tensor, noise: Tensor) -> NoiseMaps:
        check_float_tensors(x=x, noise=noise)
        if x.ndim < 1 or noise.shape[1:] != x.shape:
            raise ValueError(
                f"noise must have shape (n, *x.shape) = (n, {', '.join(map(str, x.shape))}), got {tuple(noise.shape)}"
            )
        check_finite(x, "x")
        check_finite(noise, "noise")
        return super().__new__(cls, x, noise)


def auxiliary_path(model: DiffusionModel, x: Tensor, timesteps: Tensor, eps: Tensor) -> Tensor:
    """The paper's auxiliary sequence: x_{t_i} = alpha_{t_i|t_n} x + sigma_{t_i|t_n} eps_i, x_{t_n} = x.

    x: (B, ...) at timesteps[-1]; eps: (n, B, ...) independent standard normals. Returns (n + 1, B, ...).
    """
    ts = check_sampler_inputs(model, x, timesteps)
    n = len(ts) - 1
    if not isinstance(eps, Tensor) or tuple(eps.shape) != (n, *x.shape):
        raise ValueError(f"eps must be a tensor of shape {(n, *x.shape)}, got {getattr(eps, 'shape', type(eps))}")
    check_finite(eps, "eps")
    values = model.schedule(ts)
    v_n = values[n]
    alpha = values.alpha[:n] / v_n.alpha  # alpha_{t_i | t_n}
    # sigma_{t_i|t_n} = sigma_{t_i} sqrt(1 - exp(-2 (lambda_{t_n} - lambda_{t_i}))), without cancellation
    sigma = values.sigma[:n] * torch.sqrt(-torch.expm1(-2.0 * (v_n.lambda_ - values.lambda_[:n])))
    shape = (n, *([1] * x.ndim))
    path = alpha.to(x.dtype).reshape(shape) * x + sigma.to(x.dtype).reshape(shape) * eps.to(x.dtype)
    return torch.cat([path, x[None]])


def extract_noise_maps(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    generator: torch.Generator | None = None,
    eps: Tensor | None = None,
    callback: Callback | None = None,
) -> NoiseMaps:
    """Edit-friendly inversion of x (B, ...) at timesteps[-1]; one model call a step.

    eps (n, B, ...): the auxiliary path's noise (drawn from ``generator`` if None). Returns ``NoiseMaps`` with
    which ``sample_edit_friendly`` (DDPM with the posterior variance) regenerates the path, and x, exactly.
    The callback sees each step of the auxiliary path, x0 being the model's prediction at its start.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    n = len(ts) - 1
    if eps is None:
        eps = torch.randn((n, *x.shape), generator=generator, dtype=x.dtype)
    path = auxiliary_path(model, x, ts, eps)
    values = model.schedule(ts)
    maps = torch.empty((n, *x.shape), dtype=x.dtype)
    for i in range(n):
        x0, _ = predict_x0_eps(model, path[i], ts[i], values[i])
        mean, var = ddpm_posterior(path[i], x0, values[i], values[i + 1])  # the DDPM step's mu_i and s_i^2
        maps[i] = (path[i + 1] - mean) / expand_like(torch.sqrt(var), x)  # z_i, solved from the step
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], path[i], path[i + 1], x0))
    return NoiseMaps(path[0], maps)


def sample_edit_friendly(
    model: DiffusionModel,
    x: Tensor | NoiseMaps,
    timesteps: Tensor,
    *,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DDPM (posterior variance) from x, or from an edit-friendly latent ``NoiseMaps`` (its maps as the noise).

    With a plain tensor this is ``sample_ddpm``; with ``NoiseMaps`` no other noise may be given.
    """
    if isinstance(x, NoiseMaps):
        if noise is not None or generator is not None:
            raise ValueError("the noise comes from the NoiseMaps latent: pass no noise or generator with it")
        return sample_ddpm(model, x.x, timesteps, noise=x.noise, callback=callback)
    if isinstance(x, tuple):
        raise TypeError("pass an edit-friendly latent as NoiseMaps(x, noise), not a plain tuple")
    return sample_ddpm(model, x, timesteps, noise=noise, generator=generator, callback=callback)


register(
    SamplerSpec(
        name="ddpm_edit_friendly",
        sample=sample_edit_friendly,
        order=1,
        stochastic=True,
        encode=extract_noise_maps,
        invertible=True,
        paper="hubermanspiegelglas2024edit",
        equation="arXiv:2304.06140, edit-friendly noise maps for DDPM (posterior variance, arXiv:2006.11239v2 Eq. 6-7)",
    )
)
