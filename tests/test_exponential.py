"""phi functions against 50-digit arithmetic (mpmath), across the switch between series and recursion."""

from __future__ import annotations

import mpmath
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from tolerances import phi_rtol

from refimpl.samplers._exponential import SERIES_BELOW, phi


def phi_exact(k: int, h: float) -> float:
    """phi_k(h) = (e^h - sum_{j<k} h^j / j!) / h^k in 50-digit arithmetic; for |h| < 1 its series
    sum_j h^j / (j + k)! to 60 terms (the closed form would cancel all 50 digits at h ~ 1e-300)."""
    with mpmath.workdps(50):
        hh = mpmath.mpf(h)
        if abs(h) < 1:
            return float(sum(hh**j / mpmath.factorial(j + k) for j in range(60)))
        return float((mpmath.exp(hh) - sum(hh**j / mpmath.factorial(j) for j in range(k))) / hh**k)


@given(k=st.integers(1, 4), h=st.floats(-30.0, 10.0))
@example(k=1, h=0.0)
@example(k=3, h=SERIES_BELOW)
@example(k=3, h=-SERIES_BELOW)
@example(k=2, h=1e-300)
def test_phi_matches_high_precision(k: int, h: float) -> None:
    """Relative error within ``phi_rtol(k)``: the recursion's conditions per level, derived in tests/tolerances.py."""
    assert float(phi(k, torch.tensor(h))) == pytest.approx(phi_exact(k, h), rel=phi_rtol(k))


def test_phi_is_elementwise_and_checks_k() -> None:
    h = torch.tensor([-2.0, 0.1, 3.0])
    torch.testing.assert_close(phi(2, h), torch.stack([phi(2, v) for v in h]))
    with pytest.raises(ValueError, match="k >= 1"):
        phi(0, 1.0)
