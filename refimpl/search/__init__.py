"""Chapter 4: solver and time-step search on an exact objective, DC-Solver, time shift, stitching."""

from refimpl.samplers.usf import (
    AFS_CHOICES,
    SolverSchedule,
    StepChoice,
    sample_usf,
    steps_for_budget,
    taylor_integrals,
    usf_step,
)
from refimpl.search.dc_solver import (
    cpr_features,
    cpr_predict,
    dynamic_compensation,
    fit_cpr,
    fit_dc_ratios,
    sample_dc_solver,
)
from refimpl.search.evolution import SearchResult, autodiffusion_search, random_solver, usf_objective, usf_search
from refimpl.search.objective import exact_kl, output_law
from refimpl.search.stitch import StitchedModel, moment_matched_model, noised_kl, stitch_time
from refimpl.search.time_shift import ScaledDataModel, sample_time_shift, time_shift, time_shift_target

__all__ = [
    "AFS_CHOICES",
    "ScaledDataModel",
    "SearchResult",
    "SolverSchedule",
    "StepChoice",
    "StitchedModel",
    "autodiffusion_search",
    "cpr_features",
    "cpr_predict",
    "dynamic_compensation",
    "exact_kl",
    "fit_cpr",
    "fit_dc_ratios",
    "moment_matched_model",
    "noised_kl",
    "output_law",
    "random_solver",
    "sample_dc_solver",
    "sample_time_shift",
    "sample_usf",
    "steps_for_budget",
    "stitch_time",
    "taylor_integrals",
    "time_shift",
    "time_shift_target",
    "usf_objective",
    "usf_search",
    "usf_step",
]
