"""Finding 6 settled in one step, without an order fit: the official third-order multistep update, transcribed
line for line (``refimpl.oracle.official``), is not exact for a quadratic x0(lambda); doubling its D2 term is."""

from __future__ import annotations

import math

import pytest
from scipy.integrate import quad

from refimpl.oracle.official import COMMIT, quadratic_step
from refimpl.oracle.tolerance import TOL_OPS

U = 2.0**-53


def _tolerance(h: float) -> float:
    """Round-off of one step on O(1) values: TOL_OPS units, times 1/h^3 (phi_3 = ((e^-h - 1)/h + 1)/h - 1/2
    cancels like h^3 for small h), times 10 for the closed-form integral's few terms."""
    return 10 * TOL_OPS * U * max(1.0, h**-3)


@pytest.mark.parametrize("schedule", ["vp_linear", "edm"])
def test_official_3m_step_is_not_exact_for_a_quadratic_and_doubling_d2_makes_it_exact(schedule: str) -> None:
    step = quadratic_step(schedule)
    tol = _tolerance(step.h)
    assert abs(step.refimpl - step.exact) <= tol, "refimpl's third-order step integrates the quadratic exactly"
    assert abs(step.predicted_miss) > 1e6 * tol
    assert abs(step.official - step.exact - step.predicted_miss) <= tol, step
    doubled = quadratic_step(schedule, d2_factor=2.0)
    assert abs(doubled.official - step.exact) <= tol and abs(doubled.official - step.refimpl) <= tol


def test_the_closed_form_exact_step_agrees_with_quadrature() -> None:
    """The exact step's closed-form antiderivative, checked once against scipy's quad (rtol 1e-13)."""
    from refimpl import grids
    from refimpl.schedules import get_schedule

    s = get_schedule("edm")
    v = s(grids.karras(s, 9)[3:7])
    lam_s, lam_t = float(v.lambda_[2]), float(v.lambda_[3])
    integral = quad(lambda l: math.exp(l - lam_t) * (0.3 - 0.7 * l + 0.45 * l * l), lam_s, lam_t, epsrel=1e-13)[0]
    expected = float(v.sigma[3] / v.sigma[2]) * 1.3 + float(v.alpha[3]) * integral
    assert quadratic_step("edm").exact == pytest.approx(expected, rel=1e-12)


def test_the_transcription_names_its_commit() -> None:
    assert len(COMMIT) == 40 and int(COMMIT, 16) > 0
