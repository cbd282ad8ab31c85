"""Changing the forward process (chapter 2): residual, mean-shifted, Trojan and recovery-likelihood processes.

* ``shifted``    -- x_t = alpha_t x_0 + kappa_t c + sigma_t eps and the translation of models between coordinates.
* ``rddm``       -- RDDM's residual process, its sampler (DDIM when I_in = 0) and its decoupled schedule.
* ``diffusevae`` -- DiffuseVAE's formulation 2 (paper and code forms) and its ancestral sampler.
* ``trojdiff``   -- TrojDiff's Trojan process, the exact poisoned network and the attacker's sampler.
* ``cdrl``       -- CDRL's recovery likelihood, Langevin refinement and the cooperative initializer fit.
"""

from refimpl.forward.cdrl import (
    fit_initializer,
    kl_to_gaussian_fit_1d,
    langevin,
    langevin_gaussian_moments,
    recovery_coefficients,
    recovery_gaussian,
    recovery_score,
)
from refimpl.forward.diffusevae import FORMS, sample_diffusevae
from refimpl.forward.rddm import (
    ResidualSchedule,
    degraded_posterior,
    rddm_coefficients,
    rddm_forward,
    rddm_step,
    sample_rddm,
)
from refimpl.forward.shifted import ShiftedModel, kappa_one, kappa_residual, shifted_forward
from refimpl.forward.trojdiff import PoisonedModel, sample_trojan, trojan_forward, trojan_marginal

__all__ = [
    "FORMS",
    "PoisonedModel",
    "ResidualSchedule",
    "ShiftedModel",
    "degraded_posterior",
    "fit_initializer",
    "kappa_one",
    "kappa_residual",
    "kl_to_gaussian_fit_1d",
    "langevin",
    "langevin_gaussian_moments",
    "rddm_coefficients",
    "rddm_forward",
    "rddm_step",
    "recovery_coefficients",
    "recovery_gaussian",
    "recovery_score",
    "sample_diffusevae",
    "sample_rddm",
    "sample_trojan",
    "shifted_forward",
    "trojan_forward",
    "trojan_marginal",
]
