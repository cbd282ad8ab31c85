"""Every tolerance the tests use, with its derivation, in one place.

* Round-off: an expression evaluated with k floating-point operations on values of size S has error
  below about k * u * S, u the unit round-off (2^-53 ~ 1.1e-16 in float64, 2^-24 ~ 6e-8 in float32).
  We allow a safety factor for the condition number of the formula and say which.
* Monte Carlo: with a fixed seed, an average of n i.i.d. terms of standard deviation s deviates from
  its mean by less than z s / sqrt(n); z = 5 gives a one-sided false-alarm probability under 3e-7
  for each check, if the seed were drawn at random (CLT; Berry-Esseen corrections are O(1/sqrt n)).
"""

from __future__ import annotations

import math

import torch

U64 = torch.finfo(torch.float64).eps / 2  # unit round-off, float64
U32 = torch.finfo(torch.float32).eps / 2  # unit round-off, float32

#: Identities between two float64 formulas of a few dozen operations on O(1) values:
#: 64 ops x 1.1e-16 x condition number <= ~100 gives ~7e-13; we use 1e-12, the issues' figure.
IDENTITY_RTOL = 1e-12

#: Z score of every CLT bound.
Z = 5.0

#: Order of convergence: measured slope within this of the declared order (house rule 12).
ORDER_TOL = 0.15


def roundoff(n_ops: int, scale: float = 1.0, unit: float = U64, condition: float = 1.0) -> float:
    """k * u * S * condition: the forward error bound of a k-operation formula (see module docstring)."""
    return n_ops * unit * scale * condition


def clt_bound(std: float | torch.Tensor, n: int, z: float = Z) -> float | torch.Tensor:
    """z * std / sqrt(n): the deviation a mean of n i.i.d. terms stays within (see module docstring)."""
    return z * std / math.sqrt(n)


#: Floating-point operations per solver step on state-sized values, for comparisons with float32 code
#: (diffusers keeps its schedule and state in float32): each step's rounding, about this many U32 relative
#: to the state's scale, is carried forward by a non-expanding step, so n steps differ by at most
#: roundoff(SOLVER_OPS_PER_STEP * n, scale, U32).
SOLVER_OPS_PER_STEP = 10


def gaussian_covariance_clt(cov: torch.Tensor, n: int, z: float = Z) -> torch.Tensor:
    """z * sd of each entry of a sample covariance of n Gaussian draws: sd(S_ij) = sqrt((C_ii C_jj + C_ij^2) / n)."""
    var = torch.diagonal(cov)
    return z * torch.sqrt((var[:, None] * var[None, :] + cov**2) / n)
