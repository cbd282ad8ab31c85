"""Registers DiffuseVAE's formulation-2 ancestral sampler (``refimpl.forward.diffusevae``): with x_hat = 0, the
default, it is DDPM's Algorithm 2 (Pandey et al. 2022, arXiv:2201.00308v3)."""

import torch
from torch import Tensor

from refimpl.models import DiffusionModel
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback


def sample_diffusevae(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    x_hat: Tensor | None = None,
    form: str = "paper",
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """``refimpl.forward.diffusevae.sample_diffusevae`` (this module's own name for it, so a copy registers its own)."""
    from refimpl.forward import diffusevae  # on first call: importing the samplers loads no chapter package

    return diffusevae.sample_diffusevae(
        model, x, timesteps, x_hat=x_hat, form=form, noise=noise, generator=generator, callback=callback
    )


register(
    SamplerSpec(
        name="diffusevae",
        sample=sample_diffusevae,
        order=1,  # weak order
        stochastic=True,
        paper="pandey2022diffusevae",
        equation="arXiv:2201.00308v3 Sec. 3.2 formulation 2 [unverified] with x_hat = 0",
    )
)
