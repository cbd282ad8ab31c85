"""Samplers with the shared signature; importing this package registers every one of them."""

from refimpl.samplers._common import StepInfo, Trajectory
from refimpl.samplers.ddim import ddim_sigma, ddim_step, invert_ddim, sample_ddim
from refimpl.samplers.ddpm import ddpm_posterior, forward_sample, posterior_symbolic, sample_ddpm

__all__ = [
    "StepInfo",
    "Trajectory",
    "ddim_sigma",
    "ddim_step",
    "ddpm_posterior",
    "forward_sample",
    "invert_ddim",
    "posterior_symbolic",
    "sample_ddim",
    "sample_ddpm",
]
