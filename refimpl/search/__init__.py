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
from refimpl.search.evolution import SearchResult, autodiffusion_search, random_solver, usf_objective, usf_search
from refimpl.search.objective import exact_kl, output_law

__all__ = [
    "AFS_CHOICES",
    "SearchResult",
    "SolverSchedule",
    "StepChoice",
    "autodiffusion_search",
    "exact_kl",
    "output_law",
    "random_solver",
    "sample_usf",
    "steps_for_budget",
    "taylor_integrals",
    "usf_objective",
    "usf_search",
    "usf_step",
]
