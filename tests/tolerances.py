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


#: Rounding operations per step of an encode-then-decode round trip that act on state-sized numbers: each
#: direction evaluates one or two DDIM transfers a x + b eps (3 operations each), a combination or mixing of
#: states (3) and the model's eps (its rounding is a couple of units relative to the state): about 8 per
#: direction, 16 per round-trip step. Rounding is relative to the largest state computed (the data or the
#: latent), and the method's amplification factor multiplies the bound (see SamplerSpec.amplification).
ROUNDTRIP_OPS_PER_STEP = 16


def roundtrip_bound(n_steps: int, scale: float, unit: float = U64, amplification: float = 1.0) -> float:
    """Round-off bound of an n-step exact round trip: ROUNDTRIP_OPS_PER_STEP n u scale amplification."""
    return roundoff(ROUNDTRIP_OPS_PER_STEP * n_steps, scale, unit, amplification)
