"""The shared property tests: every registered sampler keeps the promises its SamplerSpec declares.

A new method is covered the moment it is registered: measured order (deterministic samplers),
model calls per step, reproducibility with injected noise (stochastic samplers), its encoder
(exact inverses to round-off, approximate ones convergent), the trajectory callback, and bad input.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import mixtures, schedules, times
from tolerances import ORDER_TOL, U64, roundtrip_bound

from refimpl import REGISTRY, grids
from refimpl.models import CountingModel, FunctionModel
from refimpl.reference import measure_order, measure_settled_order
from refimpl.registry import SamplerSpec, get_sampler, register, samplers
from refimpl.samplers import Trajectory
from refimpl.schedules import get_schedule
from toy_models import ExactModel, anisotropic_gaussian, ring

ALL = [s.name for s in samplers()]
DETERMINISTIC = [s.name for s in samplers(stochastic=False)]
STOCHASTIC = [s.name for s in samplers(stochastic=True)]
WITH_ENCODER = [s.name for s in samplers() if s.encode is not None]
INVERTIBLE = [s.name for s in samplers(invertible=True)]
APPROXIMATE = [name for name in WITH_ENCODER if name not in INVERTIBLE]


def steps_for(spec: SamplerSpec) -> tuple[int, ...]:
    """Step counts in the asymptotic regime on the toys, with errors far above round-off (the spec's own if set)."""
    if spec.order_steps is not None:
        return spec.order_steps
    return (32, 64, 128, 256) if spec.order < 1.5 else (16, 32, 64, 128)


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("schedule_name", ["vp_linear", "edm"])
def test_order_on_a_gaussian_against_the_closed_form(name: str, schedule_name: str) -> None:
    """Measured global order = declared order (within 0.15), against the exact single-Gaussian ODE map."""
    spec = get_sampler(name)
    s = get_schedule(schedule_name)
    model = ExactModel(anisotropic_gaussian(3, seed=1), s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(0))[1]
    result = measure_order(spec, model, x, steps_for(spec), reference=model.pf_ode_map(x, s.t_max, s.t_min))
    assert result.order == pytest.approx(spec.order, abs=ORDER_TOL), str(result)


@pytest.mark.slow
@pytest.mark.parametrize("name", DETERMINISTIC)
@settings(max_examples=5)
@given(gmm=mixtures(), s=schedules(), data=st.data(), seed=st.integers(0, 1000))
def test_order_on_mixtures_against_the_reference_solver(name: str, gmm, s, data, seed: int) -> None:
    """Observed order on drawn mixtures, schedules and end times, against DOP853 at 1e-13.

    Where the asymptotic regime begins depends on the draw: local slopes such as 0.12, 1.88, 1.64, 1.16, 1.07
    (DDIM, 32 to 512 steps, two modes of variance 0.05 and a path near the boundary between them), 0.99, 2.44,
    2.78, 2.90 (UniPC-2) or 1.71, 1.87, 1.94 (DEIS rhoAB2) approach the order from below. So the finest step
    count is doubled until the local order settles (``measure_settled_order``) and the order asserted is that
    of the two finest grids, log2(e_n / e_2n), the standard estimate in code verification; the closed-form
    Gaussian test above fits all four.
    """
    spec = get_sampler(name)
    t_end = data.draw(times(s, 0.0, 0.4))
    model = ExactModel(gmm, s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(seed))[1]
    # Settled to a third of the tolerance: the remaining drift is about the last change (see the docstring of
    # measure_settled_order), which leaves two thirds of ORDER_TOL for the order itself.
    result = measure_settled_order(spec, model, x, steps_for(spec), settle=ORDER_TOL / 3, t_end=t_end)
    assert result.local_orders[-1] == pytest.approx(spec.order, abs=ORDER_TOL), str(result)


@pytest.mark.parametrize("name", ALL)
def test_model_calls_match_the_declared_nfe(name: str) -> None:
    spec = get_sampler(name)
    s = get_schedule("vp_cosine")
    for n in sorted({spec.min_steps, spec.min_steps + 1, 7, 20}):
        model = CountingModel(ExactModel(ring(), s))
        spec(model, torch.randn(4, 2), grids.uniform_lambda(s, n))
        assert model.calls == spec.nfe(n), f"{name}: {model.calls} calls for {n} steps, declared {spec.nfe(n)}"


@pytest.mark.parametrize("name", ALL)
def test_callback_sees_every_step(name: str) -> None:
    spec = get_sampler(name)
    s = get_schedule("vp_linear")
    ts = grids.uniform_lambda(s, 6)
    traj = Trajectory()
    out = spec(ExactModel(ring(), s), torch.randn(3, 2), ts, callback=traj)
    assert len(traj.steps) == 6
    torch.testing.assert_close(traj.xs[-1], out, rtol=0, atol=0)
    torch.testing.assert_close(traj.times, ts, rtol=0, atol=0)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_are_reproducible_with_injected_noise(name: str) -> None:
    spec = get_sampler(name)
    s = get_schedule("vp_linear")
    model, x, ts = ExactModel(ring(), s), torch.randn(5, 2), grids.uniform_t(s, 10)
    noise = torch.randn(10, 5, 2)
    torch.testing.assert_close(spec(model, x, ts, noise=noise), spec(model, x, ts, noise=noise), rtol=0, atol=0)
    a = spec(model, x, ts, generator=torch.Generator().manual_seed(1))
    b = spec(model, x, ts, generator=torch.Generator().manual_seed(1))
    c = spec(model, x, ts, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert float((a - c).abs().max()) > 1e-3


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_refuse_noise(name: str) -> None:
    s = get_schedule("vp_linear")
    with pytest.raises(ValueError, match="deterministic"):
        get_sampler(name)(ExactModel(ring(), s), torch.randn(2, 2), grids.uniform_t(s, 3), noise=torch.zeros(3, 2, 2))


def _largest(state: object) -> float:
    """max |entry| over a tensor or a latent made of tensors (CoupledState, NoiseMaps)."""
    tensors = state if isinstance(state, tuple) else (state,)
    return max(float(t.abs().max()) for t in tensors)


@pytest.mark.parametrize("name", INVERTIBLE)
@settings(max_examples=6)
@given(gmm=mixtures(), s=schedules(), n=st.integers(30, 100), seed=st.integers(0, 1000))
@example(gmm=ring(), s=get_schedule("vp_linear"), n=50, seed=3)
@example(gmm=ring(), s=get_schedule("edm"), n=100, seed=4)
def test_encoder_round_trip_is_exact(name: str, gmm, s, n: int, seed: int) -> None:
    """encode then decode returns the input to float64 round-off, amplified as the spec declares.

    Bound (tests/tolerances.py, roundtrip_bound): ROUNDTRIP_OPS_PER_STEP n u S amplification(n), with S the
    largest state computed (the data or the latent: rounding is relative to it). Step counts from 30 up: with
    fewer, the EDICT coupling amplifies rounding by a factor that grows with the step size (chapter 5).
    """
    spec = get_sampler(name)
    model = ExactModel(gmm, s)
    x0 = model.sample_xt(8, s.t_min, torch.Generator().manual_seed(seed))[1]
    ts = grids.uniform_lambda(s, n)
    latent = spec.encode(model, x0, ts)
    error = float((spec(model, latent, ts) - x0).abs().max())
    scale = max(_largest(x0), _largest(latent))
    assert error <= roundtrip_bound(n, scale, U64, spec.amplification(n)), f"{name}: {error:.2e} at {n} steps"


@pytest.mark.parametrize("name", APPROXIMATE)
def test_approximate_encoders_converge(name: str) -> None:
    """An encoder that is not an exact inverse still converges: its round-trip error falls as steps grow."""
    spec = get_sampler(name)
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x0 = model.sample_xt(8, s.t_min, torch.Generator().manual_seed(3))[1]

    def round_trip(n: int) -> float:
        ts = grids.uniform_lambda(s, n)
        return float((spec(model, spec.encode(model, x0, ts), ts) - x0).abs().max())

    assert round_trip(512) < 0.5 * round_trip(128)


@pytest.mark.parametrize("name", ALL)
def test_bad_input_raises_clear_errors(name: str) -> None:
    spec = get_sampler(name)
    s = get_schedule("vp_linear")
    model, x = ExactModel(ring(), s), torch.randn(4, 2)
    ts = grids.uniform_t(s, 5)
    with pytest.raises(ValueError, match="strictly decreasing"):
        spec(model, x, torch.cat([ts[:2], ts[1:]]))
    with pytest.raises(ValueError, match="must lie in"):
        spec(model, x, ts * 2)
    with pytest.raises(ValueError, match="non-finite"):
        spec(model, torch.full((4, 2), float("nan")), ts)
    with pytest.raises(ValueError, match="shape"):
        spec(FunctionModel(lambda x, t: x[:, :1], s), x, ts)
    with pytest.raises(ValueError, match="non-finite"):
        spec(FunctionModel(lambda x, t: x / 0.0, s), x, ts)


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(REGISTRY["ddim"])
    with pytest.raises(ValueError, match="no sampler named"):
        get_sampler("euler_maruyama_9000")
    with pytest.raises(ValueError, match="encode"):
        SamplerSpec("x", REGISTRY["ddim"].sample, 1, False, "p", "e", invertible=True)
