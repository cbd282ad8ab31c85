"""Chapter 4, DC-Solver: rho = 1 is UniPC bit for bit, the compensation is exact on polynomials, fitted ratios lower
the held-out error, and the cascade polynomial regression is the official model."""

from __future__ import annotations

import pytest
import torch
from tolerances import IDENTITY_RTOL

from refimpl import grids
from refimpl.samplers import Trajectory, sample_unipc
from refimpl.schedules import get_schedule
from refimpl.search import cpr_predict, dynamic_compensation, fit_cpr, fit_dc_ratios, sample_dc_solver
from toy_models import ExactModel, random_mixture, ring


@pytest.mark.parametrize(
    ("schedule_name", "order", "variant", "prediction"),
    [("vp_linear", 2, "bh2", "x0"), ("vp_cosine", 3, "bh1", "eps"), ("edm", 1, "bh1", "x0")],
)
def test_rho_one_is_unipc_bit_for_bit(schedule_name: str, order: int, variant: str, prediction: str) -> None:
    model = ExactModel(random_mixture(K=3, d=3, seed=0), get_schedule(schedule_name))
    x = model.sample_xt(6, model.schedule.t_max, torch.Generator().manual_seed(0))[1]
    ts = grids.uniform_lambda(model.schedule, 7)
    kw = {"order": order, "variant": variant, "prediction": prediction}
    want = sample_unipc(model, x, ts, **kw)
    assert torch.equal(sample_dc_solver(model, x, ts, **kw), want)
    assert torch.equal(sample_dc_solver(model, x, ts, ratios=[1.0] * 7, dc_order=3, **kw), want)


def test_compensation_is_exact_on_polynomials_of_its_degree() -> None:
    """With m_j = p(t_j), p of degree <= q - 1, the compensated output is p(t~); ratio 1 returns m_0 exactly."""
    times = torch.tensor([0.42, 0.55, 0.71], dtype=torch.float64)
    coef = torch.tensor([[0.3, -1.2, 2.5], [1.0, 0.7, -0.4]], dtype=torch.float64)  # two quadratics, (dim, power)
    outputs = [coef @ t ** torch.arange(3, dtype=torch.float64) for t in times]
    for ratio in (0.6, 1.0, 1.3):
        t_tilde = times[1] + ratio * (times[0] - times[1])
        want = coef @ t_tilde ** torch.arange(3, dtype=torch.float64)
        got = dynamic_compensation(outputs, times, ratio)
        assert float((got - want).abs().max()) <= IDENTITY_RTOL * float(want.abs().max())
    assert torch.equal(dynamic_compensation(outputs, times, 1.0), outputs[0])
    cubic = [t**3 * torch.ones(1, dtype=torch.float64) for t in times]  # degree 3 > q - 1: not exact
    assert float((dynamic_compensation(cubic, times, 0.5) - (0.5 * (0.42 + 0.55)) ** 3).abs()) > 1e-4


def test_fitted_ratios_lower_the_held_out_error() -> None:
    """Ratios fitted on 10 starting points (ring, 5 uniform-lambda steps) lower the RMS error at t_min on 100 other
    starting points. Ground truth as the official code's (a many-step solver): UniPC-3 on the 80-step uniform-lambda
    grid that contains the 5-step one; its error (about 3e-5 against DOP853, the search chapter) is far below the 5-step
    errors (about 0.1) being compared."""
    model = ExactModel(ring(), get_schedule("vp_linear"))
    s = model.schedule
    ts = grids.uniform_lambda(s, 5)
    x = model.sample_xt(10, s.t_max, torch.Generator().manual_seed(0))[1]
    held_out = model.sample_xt(100, s.t_max, torch.Generator().manual_seed(1))[1]
    fine = Trajectory()
    sample_unipc(model, torch.cat([x, held_out]), grids.uniform_lambda(s, 5 * 16), order=3, callback=fine)
    reference, truth = fine.xs[::16, :10], fine.xs[-1, 10:]
    ratios = fit_dc_ratios(model, x, ts, reference, iterations=10)
    assert ratios[:2] == [1.0, 1.0] and ratios[2:] != [1.0] * 3
    plain = (sample_dc_solver(model, held_out, ts) - truth).pow(2).mean()
    fitted = (sample_dc_solver(model, held_out, ts, ratios=ratios) - truth).pow(2).mean()
    assert fitted < plain


def test_cpr_fit_recovers_the_cascade() -> None:
    """Ratios made by the cascade with known coefficients, over three CFG scales and six NFEs, give the
    coefficients back (a full-rank linear least-squares problem); steps 1 and 2 keep rho = 1."""
    coefficients = torch.randn(27, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    samples = [
        (cfg, nfe, step, rho)
        for cfg in (1.0, 4.0, 7.5)
        for nfe in range(5, 11)
        for step, rho in enumerate(cpr_predict(coefficients, cfg, nfe), start=1)
    ]
    fitted = fit_cpr(samples)
    assert float((fitted - coefficients).abs().max()) <= 1e-6  # lstsq on a system of condition < 1e9: policy
    assert cpr_predict(fitted, 3.0, 6)[:2] == [1.0, 1.0]


def test_bad_input() -> None:
    model = ExactModel(ring(), get_schedule("vp_linear"))
    ts = grids.uniform_lambda(model.schedule, 4)
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="one rho per step"):
        sample_dc_solver(model, x, ts, ratios=[1.0] * 3)
    with pytest.raises(ValueError, match=r"ratios\[1\] must be 1"):
        sample_dc_solver(model, x, ts, ratios=[1.0, 0.9, 1.0, 1.0])
    with pytest.raises(ValueError, match="reference must have shape"):
        fit_dc_ratios(model, x, ts, torch.zeros(4, 2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="step >= 3"):
        fit_cpr([(1.0, 5, 1, 1.0)])
