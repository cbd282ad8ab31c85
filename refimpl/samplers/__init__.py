"""Samplers with the shared signature; importing this package registers every one of them."""

from refimpl.samplers import ancestral as ancestral  # registers ancestral DPM-Solver-2
from refimpl.samplers import cfgpp as cfgpp  # registers CFG++ (chapter 6)
from refimpl.samplers import diffusevae as diffusevae  # registers DiffuseVAE (chapter 2)
from refimpl.samplers import flow as flow  # registers the flow-model samplers (Euler, Heun, midpoint in t)
from refimpl.samplers import lcm as lcm  # LCM sampling: no registry entry (a model of diffusers' code for the oracle)
from refimpl.samplers import rddm as rddm  # registers RDDM (chapter 2)
from refimpl.samplers import usf as usf  # registers the USF/S3 decision-space sampler (chapter 4)
from refimpl.samplers._common import StepInfo, Trajectory
from refimpl.samplers._reversible import CoupledState, ddim_transfer, ddim_transfer_inverse
from refimpl.samplers.bdia import bdia_step, bdia_step_inverse, invert_bdia, sample_bdia
from refimpl.samplers.ddim import ddim_sigma, ddim_step, invert_ddim, sample_ddim
from refimpl.samplers.ddpm import ddpm_posterior, forward_sample, posterior_symbolic, sample_ddpm
from refimpl.samplers.deis import deis_ab_coefficients, sample_deis_ab, sample_deis_rhork
from refimpl.samplers.distilled import sample_consistency_multistep, sample_progressive_student
from refimpl.samplers.dpm_solver import (
    dpm_solver_1_step,
    dpm_solver_2_step,
    dpm_solver_3_stage,
    dpm_solver_3_step,
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
from refimpl.samplers.edict import (
    EDICT_P,
    edict_inverse_stage,
    edict_stage,
    edict_step,
    edict_step_inverse,
    edict_unmix,
    invert_edict,
    sample_edict,
)
from refimpl.samplers.edit_friendly import NoiseMaps, auxiliary_path, extract_noise_maps, sample_edit_friendly
from refimpl.samplers.edm import sample_edm_euler, sample_edm_heun, sample_lms
from refimpl.samplers.multistep import lagrange_integrals, multistep_step, sample_multistep, step_orders
from refimpl.samplers.pndm import pndm_transfer, prk_stage, prk_step, run_prk_step, sample_pndm
from refimpl.samplers.unipc import sample_unipc, unipc_corrector_step, unipc_predictor_step

__all__ = [
    "EDICT_P",
    "CoupledState",
    "ModelStatistics",
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
    "deis_ab_coefficients",
    "dpm_solver_1_step",
    "dpm_solver_2_step",
    "dpm_solver_3_stage",
    "dpm_solver_3_step",
    "dynamic_thresholding",
    "edict_inverse_stage",
    "edict_stage",
    "edict_step",
    "edict_step_inverse",
    "edict_unmix",
    "empirical_model_statistics",
    "extract_noise_maps",
    "fast_orders",
    "fast_timesteps",
    "forward_sample",
    "intermediate_values",
    "invert_bdia",
    "invert_ddim",
    "invert_edict",
    "lagrange_integrals",
    "multistep_step",
    "pndm_transfer",
    "posterior_symbolic",
    "prk_stage",
    "prk_step",
    "run_prk_step",
    "sample_bdia",
    "sample_consistency_multistep",
    "sample_ddim",
    "sample_ddpm",
    "sample_deis_ab",
    "sample_deis_rhork",
    "sample_dpm_solver",
    "sample_dpm_solver_adaptive",
    "sample_dpm_solver_pp_2s",
    "sample_dpm_solver_pp_multistep",
    "sample_dpm_solver_v3",
    "sample_edict",
    "sample_edit_friendly",
    "sample_edm_euler",
    "sample_edm_heun",
    "sample_lms",
    "sample_multistep",
    "sample_pndm",
    "sample_progressive_student",
    "sample_sde_dpm_solver_pp",
    "sample_unipc",
    "step_orders",
    "unipc_corrector_step",
    "unipc_predictor_step",
]
