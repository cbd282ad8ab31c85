"""Finding 6 settled in one step, without an order fit: the official third-order multistep update, transcribed
line for line (``refimpl.oracle.official``), is not exact for a quadratic x0(lambda); doubling its D2 term is. And the
zero-length last steps of DPM-Solver with final_sigmas_type="sigma_min", as the oracle reports and classifies them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from scipy.integrate import quad

from refimpl.oracle import Config, check
from refimpl.oracle.adapters import DiffusersScheduler
from refimpl.oracle.explore import Finding
from refimpl.oracle.matrix import KNOWN, known, render
from refimpl.oracle.official import COMMIT, quadratic_step
from refimpl.oracle.running import nonzero_steps
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


# --- zero-length last steps: a final sigma appended to a grid that already ends there (Findings 7 and 8) ----------


def test_a_step_shorter_than_round_off_has_zero_length() -> None:
    t = torch.tensor([1.0, 0.5, 0.5 * (1 + 1e-7), 0.25, math.nan])
    assert nonzero_steps(t) == [0, 1, 2, 3, 4]
    assert nonzero_steps(t, rel=1e-6) == [0, 1, 3, 4]  # NaN (a last step to sigma = 0) is never dropped


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64])
def test_edm_dpm_solver_sigma_min_is_the_zero_length_step_of_finding_8(default_dtype) -> None:
    """Under torch's float32 default (a user's, and ``make oracle``'s) the Karras grid ends 4 ulp below the appended
    sigma_min, so the last step goes up by round-off; under float64 (this test session's) the two are equal. Either
    way the oracle reports the zero-length step it is (not an invalid grid), compares the states, and marks it known."""
    impl = DiffusersScheduler("EDMDPMSolverMultistepScheduler", {"solver_order": 1, "final_sigmas_type": "sigma_min"})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        report = check(impl, Config(impl.method, 2, "edm", batch=4), exact=False)
    finally:
        torch.set_default_dtype(previous)
    rounded = " to round-off" if default_dtype == torch.float32 else " (t = 0.002 to itself)"
    assert report.problems[0].startswith(f"step 1 has zero length{rounded}"), report.table()
    assert report.problems[1:] == ["2 model calls, the method makes 1"]
    assert len(report.steps) == 3 and all(s.dev_reference <= s.tolerance for s in report.steps)
    finding = Finding(impl.name, impl.method, 1, report, {"final_sigmas_type": "sigma_min"})
    assert "(known: Finding 8, findings/diffusers_edm_dpmsolver_sigma_min_zero_step.py)" in render([finding])


@pytest.mark.parametrize("order, n_steps", [(1, 2), (2, 3)])  # the last step first order: always, or n odd
def test_singlestep_dpm_solver_sigma_min_with_karras_sigmas_ends_with_a_zero_length_step(order, n_steps) -> None:
    options = {"solver_order": order, "final_sigmas_type": "sigma_min"}
    impl = DiffusersScheduler("DPMSolverSinglestepScheduler", {**options, "use_karras_sigmas": True})
    report = check(impl, Config(impl.method, n_steps, batch=4), exact=False)
    assert "zero length" in report.problems[0], report.table()
    assert known(Finding(impl.name, impl.method, 1, report, options)) == (
        "Finding 7, findings/diffusers_dpmsolver_singlestep_sigma_min_zero_step.py"
    )
    default_grid = DiffusersScheduler("DPMSolverSinglestepScheduler", options)  # ends above sigma_min: a real step
    assert check(default_grid, Config(default_grid.method, n_steps, batch=4), exact=False).passed


def test_every_known_finding_names_a_reproducer_that_exists() -> None:
    root = Path(__file__).parents[1]
    scripts = [w.rstrip(",") for k in KNOWN for w in k.where.split() if w.startswith("findings/")]
    assert scripts and all((root / s).is_file() for s in scripts), scripts
