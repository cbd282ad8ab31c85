"""The oracle's tolerances: round-off of the implementation under test, and how the reference amplifies it.

An implementation whose coefficients are computed in a format of unit round-off u (float32: 2^-24; float64: 2^-53)
makes a relative error of a few u per coefficient and step, and these add up over the steps; after i steps we allow
``TOL_OPS * (i + 1) * u`` times the state's scale (a tolerance per step), TOL_OPS = 64 operations' worth a step: the
package's round-off model (``refimpl.reference.OPS_PER_STEP`` roundings a step) for two implementations (x 2), times
a condition factor of 4 for formulas written differently from refimpl's (a third party's coefficients are computed by
other, sometimes less well-conditioned, expressions: ``CONDITION``, a policy). Two factors that round-off really has
are measured, never fitted to a disagreement: the growth of alpha between levels (``alpha_growth``) and the
reference's own amplification of a perturbation of x_T (``amplification_factors``). Model query times must agree to
TOL_OPS u times the measured condition number of the conversion from the implementation's noise level to t
(``query_tolerance``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from refimpl.oracle.config import Config
from refimpl.oracle.running import Run
from refimpl.reference import OPS_PER_STEP

__all__ = [
    "CONDITION",
    "PROBE",
    "TOL_OPS",
    "alpha_growth",
    "amplification_factors",
    "max_deviation",
    "perturbed",
    "query_tolerance",
    "tolerance",
    "unit_roundoff",
]  # fmt: skip

#: Condition factor for a third party's differently written formulas (a policy; see the module docstring).
CONDITION = 4
#: Roundings a step allowed between the implementation under test and the reference (= 64).
TOL_OPS = CONDITION * 2 * OPS_PER_STEP


def unit_roundoff(config: Config, run: Run) -> float:
    """The unit round-off of the run: the larger of the state's and the coefficients'."""
    dtype = getattr(torch, config.dtype)
    return max(torch.finfo(d).eps / 2 for d in (dtype, run.coefficient_dtype or dtype))


def tolerance(config: Config, run: Run, scale: float) -> tuple[float, float]:
    """(tolerance on the state after all n_steps steps, unit round-off) for this run's precision."""
    unit = unit_roundoff(config, run)
    return TOL_OPS * (config.n_steps + 1) * unit * scale, unit


def query_tolerance(schedule: Any, levels: Tensor, unit: float) -> Tensor:
    """Relative tolerance of each model query time: TOL_OPS u times the conditioning of the time conversion.

    An implementation reports its noise level in its own variable (sigma = e^-lambda, an integer timestep, t);
    the adapter maps it to t through lambda. A relative error u in sigma is an error u in lambda and of
    u / |t lambda'(t)| relative in t; lambda itself is rounded to u |lambda|; and the schedule's t(lambda) formula
    may cancel (VP schedules near t_min subtract nearly equal numbers). The condition number is measured on the
    schedule's own conversion: kappa(t) = max(1, |t(lambda(t) +- delta) - t| / (t u)) with delta = u (1 + |lambda|),
    which contains all three (a query at the wrong step is off by O(h), many orders above).
    """
    finite = torch.isfinite(levels) & (levels > 0)
    kappa = torch.ones_like(levels)
    if bool(finite.any()):
        t = levels[finite].clamp(schedule.t_min, schedule.t_max)
        lam = schedule(t).lambda_
        delta = unit * (1 + lam.abs())
        lo, hi = schedule.lambda_min, schedule.lambda_max
        moved = schedule.t_of_lambda(torch.cat([lam - delta, lam + delta]).clamp(lo, hi)).reshape(2, -1)
        spread = (moved - t).abs().amax(0) / (t * unit)
        kappa[finite] = spread.clamp_min(1.0)
    return TOL_OPS * unit * kappa


def alpha_growth(model: Any, times: Tensor) -> float:
    """max(1, max_j alpha_{j+1} / alpha_j) over the grid (sigma = 0: alpha = 1).

    Every solver form recovers x0 = (x_t - sigma_t eps) / alpha_t (or works in x~ = x_t / alpha_t) and takes it to
    the next level with a factor alpha_{j+1}: a rounding error of a few units relative to x~ lands as one of
    alpha_{j+1} / alpha_j relative to x_t. One step from T to t_min on ddpm_linear makes this ~160.
    """
    t = times[torch.isfinite(times)]
    alphas = [*model.schedule(t).alpha.tolist(), *([1.0] * int((~torch.isfinite(times)).sum()))]
    ratios = [b / a for a, b in itertools.pairwise(alphas)]
    return max([1.0, *ratios])


#: Relative size of the probe perturbation of x_T that measures how the reference amplifies an error (2^-20:
#: far above float64 round-off, small enough for the linear regime).
PROBE = 2.0**-20


def perturbed(x_T: Tensor, scale: float, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed + 7919)
    signs = torch.randint(0, 2, x_T.shape, generator=g, dtype=torch.int64).to(x_T.dtype) * 2 - 1
    return x_T + PROBE * scale * signs


def amplification_factors(ref: Run, probe: Run, scale: float) -> list[float]:
    """How much a rounding error committed at one step can grow by step i, measured on the reference itself.

    a_i = |probe_i - ref_i| / (PROBE * scale) is the growth of a perturbation of x_T by step i; an error made at
    step j <= i grows by about a_i / a_j, so the factor is max(1, a_i / min_{j <= i} a_j). The round-off tolerance
    of step i is multiplied by it: the forward-error bound of a computation whose steps are each accurate to
    a few units of round-off (this counts round-off, it does not absorb a defect: a wrong coefficient makes an
    O(h^p) error, not an amplified O(u) one).
    """
    growth = [max(float((p.double() - r.double()).abs().max()) / (PROBE * scale), 1e-300)
              for r, p in zip(ref.states, probe.states, strict=True)]  # fmt: skip
    out, smallest = [], math.inf
    for a in growth:
        smallest = min(smallest, a)
        out.append(max(1.0, a / smallest))
    return out


def max_deviation(a: list[Tensor], b: list[Tensor]) -> float:
    """The largest max-abs difference between corresponding states."""
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b, strict=True))
