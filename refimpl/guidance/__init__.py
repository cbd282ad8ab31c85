"""Guidance, MCMC and sequential Monte Carlo (chapter 6): models built from other models, and samplers that aim at
targets built from several laws.

* ``cfg``        -- classifier-free guidance (Ho & Salimans 2022); CFG++ lives in ``refimpl.samplers.cfgpp``.
* ``classifier`` -- classifier guidance, off-the-shelf classifiers on x0_hat, temperature calibration (EluCD).
* ``smc``        -- Feynman-Kac correctors: weighted reverse SDEs with systematic resampling.

The exact targets (conditional, tilted, annealed, product, p(y | x_t)) are in ``toy_models.targets``.
"""

from refimpl.guidance.cfg import ClassifierFreeGuidance, check_guidance_weight, classifier_free_guidance
from refimpl.guidance.classifier import (
    ClassifierGuidance,
    TemperatureTable,
    classifier_guidance,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_table,
    on_denoised,
)
from refimpl.guidance.smc import (
    FKResult,
    effective_sample_size,
    fk_log_weight_rate,
    prior_particles,
    sample_fk,
    systematic_resample,
)
from refimpl.samplers.cfgpp import cfg_equivalent_weight, cfgpp_inverse_step, cfgpp_step, invert_cfgpp, sample_cfgpp

__all__ = [
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "FKResult",
    "TemperatureTable",
    "cfg_equivalent_weight",
    "cfgpp_inverse_step",
    "cfgpp_step",
    "check_guidance_weight",
    "classifier_free_guidance",
    "classifier_guidance",
    "effective_sample_size",
    "expected_calibration_error",
    "fit_temperature",
    "fit_temperature_table",
    "fk_log_weight_rate",
    "invert_cfgpp",
    "on_denoised",
    "prior_particles",
    "sample_cfgpp",
    "sample_fk",
    "systematic_resample",
]
