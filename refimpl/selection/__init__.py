"""Choosing samples: determinantal point processes and volume sampling for weighted least squares.

* ``refimpl.selection.dpp`` -- projection DPPs (on [-1, 1] for a Legendre basis, and on finite ground sets),
  generalised volume sampling, optimal weighted least squares.
"""

from refimpl.selection import dpp

__all__ = ["dpp"]
