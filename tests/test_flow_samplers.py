"""Flow-model samplers: equivalences with DDIM, DPM-Solver-2 and EDM-Heun to round-off under the change of
variables y = x / alpha on the EDM path, the order of the t-midpoint rule (2 on mixtures, 3 on a Gaussian on a
path affine in t), and the loss of order on the discrete schedules that their specs exclude (their registered
orders are measured by the shared registry tests, tests/test_registry.py)."""

from __future__ import annotations

import functools

import pytest
import torch
from tolerances import FLOW_GROWTH, FLOW_STEP_OPS, ORDER_TOL, U64

from refimpl import grids
from refimpl.reference import measure_order, measure_settled_order
from refimpl.samplers import sample_ddim, sample_dpm_solver, sample_edm_heun
from refimpl.samplers.flow import sample_flow_euler, sample_flow_heun, sample_flow_midpoint
from refimpl.schedules import EDMSchedule, RectifiedFlow, get_schedule
from toy_models import ExactModel, anisotropic_gaussian, random_mixture, ring

torch.set_default_dtype(torch.float64)


def _bound(n_steps: int, calls: int, scale: float) -> float:
    return FLOW_STEP_OPS * calls * n_steps * U64 * scale * FLOW_GROWTH


@pytest.mark.parametrize("spacing", ["uniform_t", "uniform_lambda", "karras"])
def test_euler_in_t_is_ddim_on_the_straight_path(spacing: str) -> None:
    """x_s + (t - s)(eps - x0) = (1 - t) x0 + t eps: Euler in t on the rectified-flow path is a DDIM step."""
    s = RectifiedFlow()
    model = ExactModel(ring(), s)
    x = model.sample_xt(16, s.t_max, torch.Generator().manual_seed(0))[1]
    ts = grids.timesteps(s, 20, spacing)
    a, b = sample_flow_euler(model, x, ts), sample_ddim(model, x, ts)
    assert float((a - b).abs().max()) <= _bound(20, 1, float(x.abs().max()))


@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine", "rectified_flow"])
@pytest.mark.parametrize(
    ("flow", "other"),
    [
        (sample_flow_euler, sample_ddim),
        (functools.partial(sample_flow_midpoint, midpoint="lambda"), functools.partial(sample_dpm_solver, order=2)),
        (sample_flow_heun, sample_edm_heun),
    ],
    ids=["euler=ddim", "midpoint_lambda=dpm_solver_2", "heun=edm_heun"],
)
def test_flow_samplers_on_the_edm_path_are_the_diffusion_samplers(name: str, flow, other) -> None:
    """Run the flow sampler on the same mixture under the EDM path sigma = rho_t, from y = x / alpha_{t_0} on the grid
    rho_i = rho(t_i): alpha_{t_n} y_n is the diffusion sampler's x_n on the original schedule, to round-off."""
    s = get_schedule(name)
    mix = random_mixture(3, 2, seed=3)
    model = ExactModel(mix, s)
    ts = grids.uniform_lambda(s, 15)
    rho = s.rho_t(ts)
    edm = ExactModel(mix, EDMSchedule(float(rho[-1]), float(rho[0])))
    x = model.sample_xt(16, s.t_max, torch.Generator().manual_seed(1))[1]
    rho_grid = rho.clone()
    rho_grid[0], rho_grid[-1] = edm.schedule.t_max, edm.schedule.t_min
    y = flow(edm, x / s.alpha_t(ts[0]), rho_grid)
    out = other(model, x, ts)
    scale = float(max(x.abs().max(), out.abs().max()))
    assert float((s.alpha_t(ts[-1]) * y - out).abs().max()) <= _bound(15, 2, scale)


@pytest.mark.parametrize("name", ["rectified_flow", pytest.param("vp_linear", marks=pytest.mark.slow)])
def test_t_midpoint_is_second_order_on_a_mixture(name: str) -> None:
    """midpoint="t" (the option away from the registered one) on a two-mode mixture: settled order 2."""
    s = get_schedule(name)
    model = ExactModel(random_mixture(2, 2, seed=5), s)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(2))[1]
    sample = functools.partial(sample_flow_midpoint, midpoint="t")
    result = measure_settled_order(sample, model, x, (16, 32, 64, 128), settle=ORDER_TOL / 3)
    assert result.local_orders[-1] == pytest.approx(2.0, abs=ORDER_TOL), str(result)


def test_t_midpoint_is_third_order_on_a_gaussian_on_the_straight_path() -> None:
    """For Gaussian data on a path affine in t, c(t) = alpha_t^2 l + sigma_t^2 is quadratic and the midpoint rule's
    h^3 local error term vanishes (sympy in chapter 10): order 3, not 2."""
    s = RectifiedFlow()
    model = ExactModel(anisotropic_gaussian(3, seed=1), s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(0))[1]
    sample = functools.partial(sample_flow_midpoint, midpoint="t")
    result = measure_order(sample, model, x, (16, 32, 64, 128), reference=model.pf_ode_map(x, s.t_max, s.t_min))
    assert result.order == pytest.approx(3.0, abs=ORDER_TOL), str(result)


def test_bad_midpoint_option_raises() -> None:
    s = RectifiedFlow()
    with pytest.raises(ValueError, match="midpoint"):
        sample_flow_midpoint(ExactModel(ring(), s), torch.zeros(2, 2), grids.uniform_t(s, 3), midpoint="sigma")


@pytest.mark.parametrize("schedule_name", ["ddpm_linear", "scaled_linear"])
def test_heun_in_t_loses_its_order_on_a_discrete_schedule(schedule_name: str) -> None:
    """Why the flow entries declare ``order_needs_smooth_t`` (the shared mixture test measures their orders on the
    smooth schedules): on a discrete schedule the velocity in t jumps at the knots, and Heun's local orders from 64 to
    512 steps on the closed-form Gaussian leave the band around 2 (on the smooth schedules the registry's Gaussian
    and mixture tests hold them in it)."""
    from refimpl.registry import get_sampler

    spec = get_sampler("flow_heun")
    assert spec.order_needs_smooth_t and spec.order == 2
    s = get_schedule(schedule_name)
    model = ExactModel(anisotropic_gaussian(2, seed=1), s)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(0))[1]
    result = measure_order(spec, model, x, (64, 128, 256, 512), reference=model.pf_ode_map(x, s.t_max, s.t_min))
    assert any(abs(p - spec.order) > ORDER_TOL for p in result.local_orders), str(result)
