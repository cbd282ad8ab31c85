"""Samplers with the shared signature; importing this package registers every one of them."""

from refimpl.samplers._common import StepInfo, Trajectory
from refimpl.samplers._reversible import CoupledState, ddim_transfer, ddim_transfer_inverse
from refimpl.samplers.bdia import bdia_step, bdia_step_inverse, invert_bdia, sample_bdia
from refimpl.samplers.ddim import ddim_sigma, ddim_step, invert_ddim, sample_ddim
from refimpl.samplers.ddpm import ddpm_posterior, forward_sample, posterior_symbolic, sample_ddpm
from refimpl.samplers.edict import EDICT_P, edict_step, edict_step_inverse, invert_edict, sample_edict
from refimpl.samplers.edit_friendly import NoiseMaps, auxiliary_path, extract_noise_maps, sample_edit_friendly

__all__ = [
    "EDICT_P",
    "CoupledState",
    "NoiseMaps",
    "StepInfo",
    "Trajectory",
    "auxiliary_path",
    "bdia_step",
    "bdia_step_inverse",
    "ddim_sigma",
    "ddim_step",
    "ddim_transfer",
    "ddim_transfer_inverse",
    "ddpm_posterior",
    "edict_step",
    "edict_step_inverse",
    "extract_noise_maps",
    "forward_sample",
    "invert_bdia",
    "invert_ddim",
    "invert_edict",
    "posterior_symbolic",
    "sample_bdia",
    "sample_ddim",
    "sample_ddpm",
    "sample_edict",
    "sample_edit_friendly",
]
