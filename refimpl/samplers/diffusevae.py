"""Registers DiffuseVAE's formulation-2 ancestral sampler (``refimpl.forward.diffusevae``): with x_hat = 0, the
default, it is DDPM's Algorithm 2 (Pandey et al. 2022, arXiv:2201.00308v3)."""

from refimpl.forward.diffusevae import sample_diffusevae
from refimpl.registry import SamplerSpec, register

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
