"""DPM-Solver (noise prediction): DDIM identities, the pure steps, the DPM-Solver-fast recipe, the adaptive solver,
bad input.

Measured orders of dpm_solver_1/2/3 come from the shared registry tests.
"""

from __future__ import annotations

import pytest
import torch
from tolerances import IDENTITY_RTOL, roundoff

from refimpl import grids
from refimpl.models import CountingModel, predict_x0_eps
from refimpl.samplers import (
    Trajectory,
    dpm_solver_1_step,
    dpm_solver_2_step,
    dpm_solver_3_stage,
    dpm_solver_3_step,
    fast_orders,
    fast_timesteps,
    intermediate_values,
    sample_ddim,
    sample_dpm_solver,
    sample_dpm_solver_adaptive,
)
from refimpl.schedules import get_schedule
from toy_models import ExactModel, anisotropic_gaussian, ring

SCHEDULES = ["vp_linear", "vp_cosine", "ddpm_linear", "edm"]


@pytest.mark.parametrize("name", SCHEDULES)
def test_dpm_solver_1_is_ddim(name: str) -> None:
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    x = model.sample_xt(16, s.t_max, torch.Generator().manual_seed(0))[1]
    ts = grids.uniform_t(s, 12)
    a, b = sample_dpm_solver(model, x, ts, order=1), sample_ddim(model, x, ts)
    assert float((a - b).abs().max()) <= IDENTITY_RTOL * float(b.abs().max())


def _exact_for_linear_eps(x_s, a, b, v_s, v_u):
    """The exact solution at u of the ODE (Eq. 3.4) when eps(lambda) = a + b (lambda - lambda_s):
    x_u = (alpha_u / alpha_s) x_s - sigma_u [(e^h - 1) a + (e^h - 1 - h) b], h = lambda_u - lambda_s."""
    h = v_u.lambda_ - v_s.lambda_
    return v_u.alpha / v_s.alpha * x_s - v_u.sigma * (torch.expm1(h) * a + (torch.expm1(h) - h) * b)


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
@pytest.mark.parametrize(("r1", "r2"), [(1 / 3, 2 / 3), (0.2, 0.9)])
def test_dpm_solver_3_stage_and_step_are_exact_when_eps_is_linear_in_lambda(name: str, r1: float, r2: float) -> None:
    """Fed outputs of an eps linear in lambda, DPM-Solver-3's intermediate state u_2 (``dpm_solver_3_stage``) and
    its step (``dpm_solver_3_step``) are the exact solution at s_2 and at t, for any 0 < r1 < r2 (with
    phi_2(h) h^2 = e^h - 1 - h the expansion of Algorithm 2 integrates a linear eps exactly). DPM-Solver-2 keeps
    the first derivative only to O(h): its defect, sigma_t b ((e^h - 1) h / 2 - (e^h - 1 - h)), is the same
    for every r1.

    Bound: a dozen operations on terms up to alpha_t / alpha_s |x| and sigma_t e^h (1 + h) max(|a|, |b|):
    32 operations with margin.
    """
    s = get_schedule(name)
    ts = grids.uniform_lambda(s, 4)
    g = torch.Generator().manual_seed(7)
    x, a, b = (torch.randn(5, 2, generator=g) for _ in range(3))
    for i in range(4):
        v_s, v_t = s(ts[i]), s(ts[i + 1])
        h = v_t.lambda_ - v_s.lambda_
        v_s1, v_s2 = (s(s.t_of_lambda(v_s.lambda_ + r * h)) for r in (r1, r2))
        eps_s1, eps_s2 = a + b * r1 * h, a + b * r2 * h
        scale = float(max(v_t.alpha / v_s.alpha, v_t.sigma * torch.exp(h) * (1 + h))) * float(
            torch.stack([x, a, b]).abs().max()
        )
        u_2 = dpm_solver_3_stage(x, a, eps_s1, v_s, v_s1, v_s2, v_t)
        assert float((u_2 - _exact_for_linear_eps(x, a, b, v_s, v_s2)).abs().max()) <= roundoff(32, scale)
        x_t = dpm_solver_3_step(x, a, eps_s2, v_s, v_s2, v_t)
        assert float((x_t - _exact_for_linear_eps(x, a, b, v_s, v_t)).abs().max()) <= roundoff(32, scale)
        defect = v_t.sigma * b * (torch.expm1(h) * h / 2 - (torch.expm1(h) - h))
        x_2 = dpm_solver_2_step(x, a, eps_s1, v_s, v_s1, v_t)
        assert float((x_2 - _exact_for_linear_eps(x, a, b, v_s, v_t) + defect).abs().max()) <= roundoff(32, scale)


@pytest.mark.parametrize("name", ["vp_cosine", "edm"])
@pytest.mark.parametrize(("order", "r1"), [(2, 0.5), (2, 0.3), (3, 0.5)])
def test_the_loop_is_the_pure_step_fed_with_the_model_at_its_stages(name: str, order: int, r1: float) -> None:
    """One step of ``sample_dpm_solver`` = the pure step with the model queried at u_1 = DPM-Solver-1 to s_1 and,
    for order 3, at u_2 = ``dpm_solver_3_stage``: the same numbers (how a third party's stages are checked)."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    ts = grids.uniform_lambda(s, 1)
    x = model.sample_xt(4, ts[0], torch.Generator().manual_seed(2))[1]
    v_s, v_t = s(ts[0]), s(ts[1])
    h = v_t.lambda_ - v_s.lambda_
    v_s1, v_s2 = (s(s.t_of_lambda(v_s.lambda_ + r * h)) for r in ((r1, 1.0) if order == 2 else (1 / 3, 2 / 3)))
    eps_s = predict_x0_eps(model, x, v_s.t, v_s)[1]
    eps_s1 = predict_x0_eps(model, dpm_solver_1_step(x, eps_s, v_s, v_s1), v_s1.t, v_s1)[1]
    if order == 2:
        expected = dpm_solver_2_step(x, eps_s, eps_s1, v_s, v_s1, v_t)
    else:
        u_2 = dpm_solver_3_stage(x, eps_s, eps_s1, v_s, v_s1, v_s2, v_t)
        expected = dpm_solver_3_step(x, eps_s, predict_x0_eps(model, u_2, v_s2.t, v_s2)[1], v_s, v_s2, v_t)
    torch.testing.assert_close(sample_dpm_solver(model, x, ts, order=order, r1=r1), expected, rtol=0, atol=0)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_fast_recipe_spends_exactly_the_budget(order: int) -> None:
    """Orders add up to the NFE budget, follow the paper's K and tails, and the sampler makes that many calls."""
    s = get_schedule("vp_linear")
    for nfe in range(order, 31):
        orders = fast_orders(nfe, order)
        assert sum(orders) == nfe
        assert orders == sorted(orders, reverse=True) and set(orders) <= {1, 2, 3}
        if order == 3:
            assert len(orders) == nfe // 3 + 1
            assert orders[-2:] == [2, 1] if nfe % 3 == 0 else orders[-1] == {1: 1, 2: 2}[nfe % 3]
        ts, orders = fast_timesteps(s, nfe, order)
        model = CountingModel(ExactModel(ring(), s))
        sample_dpm_solver(model, torch.randn(3, 2, generator=torch.Generator().manual_seed(901)), ts, orders=orders)
        assert model.calls == nfe


def test_fast_recipe_rejects_a_budget_too_small_for_the_order() -> None:
    with pytest.raises(ValueError, match="too small for order 3"):
        fast_orders(2, 3)
    with pytest.raises(ValueError, match="too small for order 2"):
        fast_orders(1, 2)
    with pytest.raises(TypeError, match="integer"):
        fast_orders(10.0, 3)
    with pytest.raises(ValueError, match="order"):
        fast_orders(10, 4)


def test_bad_orders_raise() -> None:
    s = get_schedule("vp_linear")
    model, ts = ExactModel(ring(), s), grids.uniform_t(s, 4)
    with pytest.raises(ValueError, match="order must be one of"):
        sample_dpm_solver(model, torch.randn(2, 2, generator=torch.Generator().manual_seed(902)), ts, order=4)
    with pytest.raises(ValueError, match="one order in"):
        sample_dpm_solver(model, torch.randn(2, 2, generator=torch.Generator().manual_seed(903)), ts, orders=[3, 3, 3])
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_dpm_solver(model, torch.randn(2, 2, generator=torch.Generator().manual_seed(904)), ts.flip(0))


@pytest.mark.parametrize("order", [2, 3])
def test_adaptive_calls_follow_the_trials(order: int) -> None:
    """The adaptive solver calls the model once at the start and at each accepted point but the last, and
    order - 1 times per trial step (eps at the current point is reused after a rejection): calls - accepted is a
    multiple of order - 1, at least (order - 1) accepted. Its error against the tolerance is the registry's check
    of adaptive samplers (``tests/test_registry.py``)."""
    s = get_schedule("vp_linear")
    model = ExactModel(anisotropic_gaussian(2, seed=3), s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(1))[1]
    traj, counted = Trajectory(), CountingModel(model)
    ends = torch.tensor([s.t_max, s.t_min])
    sample_dpm_solver_adaptive(counted, x, ends, order=order, rtol=1e-3, atol=1e-3, callback=traj)
    trials, rest = divmod(counted.calls - len(traj.steps), order - 1)
    assert rest == 0 and trials >= len(traj.steps), (counted.calls, len(traj.steps))


def test_adaptive_bad_input() -> None:
    s = get_schedule("vp_linear")
    model, x = ExactModel(ring(), s), torch.randn(2, 2, generator=torch.Generator().manual_seed(905))
    ends = torch.tensor([s.t_max, s.t_min])
    with pytest.raises(ValueError, match="rtol"):
        sample_dpm_solver_adaptive(model, x, ends, rtol=-1e-3)
    with pytest.raises(ValueError, match="atol"):
        sample_dpm_solver_adaptive(model, x, ends, atol=-1e-3)
    with pytest.raises(ValueError, match="both be 0"):
        sample_dpm_solver_adaptive(model, x, ends, atol=0.0, rtol=0.0)
    with pytest.raises(ValueError, match="order 2"):
        sample_dpm_solver_adaptive(model, x, ends, order=1)
    with pytest.raises(ValueError, match="takes timesteps"):
        sample_dpm_solver_adaptive(model, x, grids.uniform_t(s, 3))
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_dpm_solver_adaptive(model, x, ends.flip(0))


def test_intermediate_values_takes_r1_and_the_old_name_r_is_deprecated() -> None:
    s = get_schedule("edm")
    values = s(grids.uniform_lambda(s, 5))
    new = intermediate_values(s, values, r1=0.3)
    torch.testing.assert_close(new.lambda_, values.lambda_[:-1] + 0.3 * values.lambda_.diff(), rtol=1e-12, atol=1e-12)
    with pytest.warns(DeprecationWarning, match="use r1="):
        old = intermediate_values(s, values, r=0.3)
    torch.testing.assert_close(old.t, new.t, rtol=0, atol=0)
    with pytest.raises(TypeError, match="r1 only"):
        intermediate_values(s, values, 0.3, r=0.3)
