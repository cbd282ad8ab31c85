"""Finding 6 settled in one step, without an order fit: the official third-order multistep update, transcribed
line for line (``refimpl.oracle.official``), is not exact for a quadratic x0(lambda); doubling its D2 term is."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from refimpl import grids
from refimpl.oracle.core import TOL_OPS
from refimpl.oracle.official import COMMIT, official_3m_update
from refimpl.samplers.dpm_solver_pp import dpm_solver_pp_multistep_step
from refimpl.schedules import get_schedule

C0, C1, C2 = 0.3, -0.7, 0.45  # x0(lambda) = C0 + C1 lambda + C2 lambda^2
U = torch.finfo(torch.float64).eps / 2


def _quadratic_step(name: str, d2_factor: float) -> tuple[float, float, float, float]:
    """(official step with d2_factor, refimpl's step, the exact solution, the predicted miss of the official step).

    Three past points and the target on a Karras grid (unequal steps); the model outputs lie exactly on the
    quadratic, so the history is exact and any difference from the exact solution is the step's own.
    """
    s = get_schedule(name)
    v = s(grids.karras(s, 9)[3:7])
    lam = [float(x) for x in v.lambda_]

    def m(l: float) -> float:
        return C0 + C1 * l + C2 * l**2

    x_s = torch.tensor([[1.3]], dtype=torch.float64)
    ms = [torch.tensor([[m(lam[j])]], dtype=torch.float64) for j in range(3)]  # oldest first
    official = official_3m_update(
        x_s, ms, list(v.lambda_[:3]), v.lambda_[3], torch.log(v.alpha[2]), torch.log(v.alpha[3]), v.sigma[2],
        v.sigma[3], d2_factor=d2_factor,
    )  # fmt: skip
    ours = dpm_solver_pp_multistep_step(x_s, ms[::-1], list(v.lambda_[:3].flip(0)), v[2], v[3], 3)
    integral = quad(lambda l: math.exp(l - lam[3]) * m(l), lam[2], lam[3], epsabs=1e-300, epsrel=1e-13)[0]
    exact = float(v.sigma[3] / v.sigma[2]) * 1.3 + float(v.alpha[3]) * integral
    h = lam[3] - lam[2]
    phi_3 = (math.expm1(-h) / h + 1.0) / h - 0.5
    miss = float(v.alpha[3]) * phi_3 * h**2 * C2  # the official step leaves out alpha_t phi_3 D2, D2 = h^2 C2
    return float(official), float(ours), exact, miss


def _tolerance(name: str) -> float:
    """Round-off of one step: TOL_OPS units of the O(1) values, times 1/h^3 (phi_3 = ((e^-h - 1)/h + 1)/h - 1/2
    cancels like h^3), plus quad's relative 1e-13 on the integral."""
    s = get_schedule(name)
    h = float(s(grids.karras(s, 9)[5:7]).lambda_.diff().abs())
    return TOL_OPS * U * max(1.0, h**-3) * 10 + 1e-12


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_official_3m_step_is_not_exact_for_a_quadratic_and_doubling_d2_makes_it_exact(name: str) -> None:
    official, ours, exact, miss = _quadratic_step(name, 1.0)
    tol = _tolerance(name)
    assert abs(ours - exact) <= tol, "refimpl's third-order step integrates the quadratic exactly"
    assert abs(miss) > 1e3 * tol and official - exact == pytest.approx(miss, rel=1e-6), (official, exact, miss)
    doubled, _, _, _ = _quadratic_step(name, 2.0)
    assert abs(doubled - exact) <= tol and abs(doubled - ours) <= tol


def test_the_transcription_names_its_commit() -> None:
    assert len(COMMIT) == 40 and int(COMMIT, 16) > 0
