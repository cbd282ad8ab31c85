"""The ground-truth helpers: the reference ODE solver and the order measurement."""

from __future__ import annotations

import pytest
import torch
from tolerances import FIRST_ORDER_HALVING, IDENTITY_RTOL, ORDER_TOL, REFERENCE_ATOL

from refimpl import grids
from refimpl.reference import convergence_order, measure_order, measure_settled_order, solve_pf_ode
from refimpl.samplers import sample_ddim
from refimpl.schedules import get_schedule
from toy_models import ExactModel, GaussianMixture, anisotropic_gaussian, ring


def test_convergence_order_recovers_an_exact_power_law() -> None:
    steps = (10, 20, 40, 80)
    result = convergence_order(steps, [3.0 * n**-2.5 for n in steps])
    assert result.order == pytest.approx(2.5, abs=IDENTITY_RTOL)
    assert all(p == pytest.approx(2.5, abs=IDENTITY_RTOL) for p in result.local_orders)
    assert "order 2.500" in str(result)


def test_convergence_order_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="increase"):
        convergence_order((20, 10), (1e-2, 1e-3))
    with pytest.raises(ValueError, match="positive"):
        convergence_order((10, 20), (1e-2, 0.0))
    with pytest.raises(ValueError, match="at least two"):
        convergence_order((10,), (1e-2,))


def test_measure_order_refuses_errors_at_round_off() -> None:
    """An 'error' at the level of the reference's accuracy says nothing about the order."""
    s = get_schedule("vp_linear")
    model = ExactModel(anisotropic_gaussian(2), s)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(0))[1]
    exact = model.pf_ode_map(x, s.t_max, s.t_min)

    def perfect(model, x, ts):  # a "sampler" that returns the exact answer
        return exact + 1e-14

    with pytest.raises(ValueError, match="round-off"):
        measure_order(perfect, model, x, (8, 16), reference=exact)


def test_reference_solve_runs_backwards_and_forwards() -> None:
    """Solving from t_max to t_min and back returns the start to the solver's tolerance."""
    s = get_schedule("vp_cosine")
    model = ExactModel(ring(), s)
    x = model.sample_xt(6, 0.8, torch.Generator().manual_seed(2))[1]
    there = solve_pf_ode(model, x, 0.8, 0.05)
    back = solve_pf_ode(model, there, 0.05, 0.8)
    assert float((back - x).abs().max()) <= REFERENCE_ATOL * max(1.0, float(x.abs().max()))


def test_reference_agrees_with_ddim_in_the_limit() -> None:
    """DDIM with many steps approaches the reference (first order): a sanity check of both directions."""
    s = get_schedule("edm")
    model = ExactModel(ring(), s)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(1))[1]
    ref = solve_pf_ode(model, x, s.t_max, s.t_min)
    err = [float((sample_ddim(model, x, grids.uniform_lambda(s, n)) - ref).abs().max()) for n in (200, 400)]
    assert err[1] < FIRST_ORDER_HALVING * err[0]


def test_reference_rejects_bad_input() -> None:
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    with pytest.raises(ValueError, match="must lie in"):
        solve_pf_ode(model, torch.zeros(2, 2), 1.5, 0.1)
    with pytest.raises(ValueError, match="non-finite"):
        solve_pf_ode(model, torch.full((2, 2), float("inf")), 1.0, 0.1)
    with pytest.raises(ValueError, match="positive"):
        solve_pf_ode(model, torch.zeros(2, 2), 1.0, 0.1, rtol=0.0)


def test_settled_order_doubles_until_the_local_order_settles() -> None:
    """A path near the boundary between two sharp modes keeps DDIM pre-asymptotic up to hundreds of steps: the
    finest pair of 32..256 steps is off its order 1 by more than the tolerance, the settled order is not."""
    mixture = GaussianMixture(
        weights=torch.tensor([0.2812, 0.7188]),
        means=torch.tensor([[1.0], [-1.0]]),
        covariances=torch.full((2, 1, 1), 0.05),
    )
    s = get_schedule("ddpm_linear")
    model = ExactModel(mixture, s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(12))[1]
    plain = measure_order(sample_ddim, model, x, (32, 64, 128, 256))
    settled = measure_settled_order(sample_ddim, model, x, (32, 64, 128, 256), settle=ORDER_TOL)
    assert abs(plain.local_orders[-1] - 1) > ORDER_TOL, str(plain)
    assert len(settled.steps) > 4 and settled.steps[:4] == (32, 64, 128, 256)
    assert abs(settled.local_orders[-1] - settled.local_orders[-2]) < ORDER_TOL, str(settled)
    assert settled.local_orders[-1] == pytest.approx(1, abs=ORDER_TOL), str(settled)


def test_settled_order_keeps_the_steps_when_already_settled() -> None:
    s = get_schedule("vp_linear")
    model = ExactModel(anisotropic_gaussian(2, seed=0), s)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(0))[1]
    result = measure_settled_order(sample_ddim, model, x, (32, 64, 128, 256), settle=ORDER_TOL)
    assert result.steps == (32, 64, 128, 256), str(result)


def test_the_spine_imports_neither_toy_models_nor_chapter_packages() -> None:
    """ARCHITECTURE.md: arrows point down. Importing the spine (and the samplers, the registry, the reference)
    loads no module of toy_models, of a chapter package or of the oracle (checked in a fresh interpreter)."""
    import subprocess
    import sys

    spine = "grids models parameterization reference registry samplers schedules".split()
    code = (
        f"import sys, refimpl; [__import__('refimpl.' + m) for m in {spine!r}]; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'toy_models' or m.startswith(('refimpl.oracle', "
        "'refimpl.editing', 'refimpl.counterfactual', 'refimpl.discrete', 'refimpl.selection', 'refimpl.bench')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("schedule_name", ["vp_cosine", "edm"])
def test_weak_order_of_deterministic_ddim_on_a_span_and_another_spacing(schedule_name: str) -> None:
    """measure_weak_order with stochastic=False, t_start/t_end inside the range and uniform-t grids: DDIM's law
    (the push-forward of the exact start law) converges at order 1 to the exact marginal at t_end."""
    from refimpl.reference import measure_weak_order

    s = get_schedule(schedule_name)
    model = ExactModel(anisotropic_gaussian(2, seed=3), s)
    t_start, t_end = float(s.t_of_lambda(s.lambda_min + 1.0)), float(s.t_of_lambda(s.lambda_max - 1.0))
    result = measure_weak_order(
        sample_ddim,
        model,
        lambda t: model.marginal(t).moments(),
        (32, 64, 128, 256),
        stochastic=False,
        spacing="uniform_t",
        t_start=t_start,
        t_end=t_end,
    )
    assert result.order == pytest.approx(1, abs=ORDER_TOL), str(result)


def test_weak_order_refuses_a_law_that_is_exact_to_round_off() -> None:
    from refimpl.reference import gaussian_law_error, measure_weak_order

    s = get_schedule("vp_linear")
    model = ExactModel(anisotropic_gaussian(2, seed=3), s)

    def exact_flow(model, x, timesteps):  # the exact ODE map: its law is the exact marginal
        return model.pf_ode_map(x, timesteps[0], timesteps[-1])

    with pytest.raises(ValueError, match="round-off"):
        measure_weak_order(exact_flow, model, lambda t: model.marginal(t).moments(), (8, 16), stochastic=False)
    m, C = torch.zeros(2), torch.eye(2)
    assert gaussian_law_error(m + 0.1, C, m, C) == pytest.approx(0.1) and gaussian_law_error(m, 2 * C, m, C) == 1.0
