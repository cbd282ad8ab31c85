"""Samplers with the shared signature; importing this package registers every one of them."""

from refimpl.samplers._common import StepInfo, Trajectory
from refimpl.samplers.ddim import ddim_sigma, ddim_step, invert_ddim, sample_ddim
from refimpl.samplers.ddpm import ddpm_posterior, forward_sample, posterior_symbolic, sample_ddpm
from refimpl.samplers.deis import deis_ab_coefficients, lagrange_integrals, sample_deis_ab, sample_deis_rhork
from refimpl.samplers.dpm_solver import (
    fast_orders,
    fast_timesteps,
    intermediate_values,
    sample_dpm_solver,
    sample_dpm_solver_adaptive,
)
from refimpl.samplers.dpm_solver_pp import (
    dynamic_thresholding,
    sample_dpm_solver_pp_2s,
    sample_dpm_solver_pp_multistep,
    sample_sde_dpm_solver_pp,
)
from refimpl.samplers.dpm_solver_v3 import ModelStatistics, empirical_model_statistics, sample_dpm_solver_v3
from refimpl.samplers.edm import sample_edm_euler, sample_edm_heun, sample_lms
from refimpl.samplers.pndm import pndm_transfer, sample_pndm
from refimpl.samplers.unipc import sample_unipc, unipc_corrector, unipc_predictor

__all__ = [
    "ModelStatistics",
    "StepInfo",
    "Trajectory",
    "ddim_sigma",
    "ddim_step",
    "ddpm_posterior",
    "deis_ab_coefficients",
    "dynamic_thresholding",
    "empirical_model_statistics",
    "fast_orders",
    "fast_timesteps",
    "forward_sample",
    "intermediate_values",
    "invert_ddim",
    "lagrange_integrals",
    "pndm_transfer",
    "posterior_symbolic",
    "sample_ddim",
    "sample_ddpm",
    "sample_deis_ab",
    "sample_deis_rhork",
    "sample_dpm_solver",
    "sample_dpm_solver_adaptive",
    "sample_dpm_solver_pp_2s",
    "sample_dpm_solver_pp_multistep",
    "sample_dpm_solver_v3",
    "sample_edm_euler",
    "sample_edm_heun",
    "sample_lms",
    "sample_pndm",
    "sample_sde_dpm_solver_pp",
    "sample_unipc",
    "unipc_corrector",
    "unipc_predictor",
]
