"""Exact inversion: the DDIM transfer map, EDICT and BDIA (round trips, conventions, amplification, float32).

The shared round-trip property over every invertible sampler lives in tests/test_registry.py; here are the
method-specific facts. DDIM inversion's first-order round trip is tested in tests/test_ddpm_ddim.py.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import mixtures, schedules, times
from tolerances import IDENTITY_RTOL, ORDER_TOL, U32, U64, roundoff, roundtrip_bound

from refimpl import get_sampler, grids
from refimpl.models import predict_x0_eps
from refimpl.parameterization import x0_from_eps
from refimpl.samplers import (
    CoupledState,
    NoiseMaps,
    bdia_step,
    bdia_step_inverse,
    ddim_step,
    ddim_transfer,
    ddim_transfer_inverse,
    edict_inverse_stage,
    edict_stage,
    edict_step,
    edict_step_inverse,
    edict_unmix,
    extract_noise_maps,
    invert_bdia,
    invert_ddim,
    invert_edict,
    sample_bdia,
    sample_ddim,
    sample_edict,
    sample_edit_friendly,
)
from refimpl.schedules import get_schedule
from toy_models import ExactModel, anisotropic_gaussian, ring


def _largest(*states: object) -> float:
    tensors = [t for s in states for t in (s if isinstance(s, tuple) else (s,))]
    return max(float(t.abs().max()) for t in tensors)


def _data(model: ExactModel, n: int = 8, seed: int = 3) -> torch.Tensor:
    return model.sample_xt(n, model.schedule.t_min, torch.Generator().manual_seed(seed))[1]


# --- the DDIM transfer map -----------------------------------------------------------------------------------
@given(s=schedules(), data=st.data(), seed=st.integers(0, 100))
def test_ddim_transfer_is_the_ddim_step_and_inverts_exactly(s, data, seed: int) -> None:
    """T_{s->t}(x; eps) = ddim_step((x - sigma_s eps) / alpha_s, eps, v_t) (same number, two forms), and
    T^-1(T(x)) = x, in either direction of time.

    Bound: each form is a handful of operations on numbers up to max(|x|, |eps|) alpha_t / alpha_s (the
    cancelling terms), 16 operations with margin.
    """
    start = data.draw(times(s, 0.0, 1.0))
    end = data.draw(times(s, 0.0, 1.0))
    if start == end:
        return
    g = torch.Generator().manual_seed(seed)
    x, eps = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    v_s, v_t = s(start), s(end)
    moved = ddim_transfer(x, eps, v_s, v_t)
    ratio = max(1.0, float(v_t.alpha / v_s.alpha), float(v_s.alpha / v_t.alpha))
    scale = ratio * max(_largest(x, eps), _largest(moved))
    via_x0 = ddim_step(x0_from_eps(x, eps, v_s.alpha, v_s.sigma), eps, v_t)
    assert float((moved - via_x0).abs().max()) <= roundoff(16, scale)
    assert float((ddim_transfer_inverse(moved, eps, v_s, v_t) - x).abs().max()) <= roundoff(16, scale)


# --- EDICT ---------------------------------------------------------------------------------------------------
def _edict_outputs(model, x, y, v_s, v_t, y_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The two model outputs of a generation step, queried where the pure step says (``edict_stage``)."""
    eps_1 = predict_x0_eps(model, x if y_first else y, v_s.t, v_s)[1]
    return eps_1, predict_x0_eps(model, edict_stage(x, y, eps_1, v_s, v_t, y_first), v_s.t, v_s)[1]


@given(p=st.floats(0.5, 1.0), y_first=st.booleans(), s=schedules(), data=st.data(), seed=st.integers(0, 100))
def test_edict_step_inverse_undoes_one_step(p: float, y_first: bool, s, data, seed: int) -> None:
    """One EDICT step and its inverse compose to the identity, for either coupling order and any p in (0, 1].

    Bound: a step does two transfers and two mixings (12 operations) and its inverse the same (12), plus the
    model's eps (a few each): 32 operations, on numbers up to the states times the transfer's alpha ratio.
    Amplification: the inverse mixing's p^-2, and each of the two couplings, which feeds a rounding error
    through b eps / a with |b / a| = sigma_s (1 - e^-h) and, for one Gaussian, |d eps / dx| <= 1 / sigma_s:
    a factor (2 - e^-h) each.
    """
    start = data.draw(times(s, 0.1, 1.0))
    end = data.draw(times(s, 0.0, 0.1))
    model = ExactModel(anisotropic_gaussian(2, seed=2), s)
    g = torch.Generator().manual_seed(seed)
    x, y = s.sigma_t(start) * torch.randn(5, 2, generator=g), s.sigma_t(start) * torch.randn(5, 2, generator=g)
    v_s, v_t = s(start), s(end)
    x1, y1 = edict_step(x, y, *_edict_outputs(model, x, y, v_s, v_t, y_first), v_s, v_t, p, y_first)
    eps_1 = predict_x0_eps(model, edict_unmix(x1, y1, p)[1 if y_first else 0], v_s.t, v_s)[1]
    eps_2 = predict_x0_eps(model, edict_inverse_stage(x1, y1, eps_1, v_s, v_t, p, y_first), v_s.t, v_s)[1]
    x0, y0 = edict_step_inverse(x1, y1, eps_1, eps_2, v_s, v_t, p, y_first)
    scale = _largest(x, y, x1, y1) * max(1.0, float(v_s.alpha / v_t.alpha))
    coupling = (2.0 - math.exp(-float(v_t.lambda_ - v_s.lambda_))) ** 2
    assert _largest(x0 - x, y0 - y) <= roundoff(32, scale, U64, coupling / p**2)


@given(p=st.floats(0.5, 1.0), y_first=st.booleans(), s=schedules(), data=st.data(), seed=st.integers(0, 100))
def test_edict_pure_inverse_queries_the_forward_points_and_undoes_any_outputs(
    p: float, y_first: bool, s, data, seed: int
) -> None:
    """The pure steps with *arbitrary* outputs (e_1, e_2): the inverse's first query point (``edict_unmix``) is the
    forward's second (``edict_stage``) and its second (``edict_inverse_stage``) the forward's first, so feeding
    the inverse (e_2, e_1) undoes the forward exactly (each line of Eq. 14 is an affine coupling).

    Bound: as in the test above without the model (32 operations, the transfer's alpha ratio, the mixing's p^-2).
    """
    start, end = data.draw(times(s, 0.1, 1.0)), data.draw(times(s, 0.0, 0.1))
    v_s, v_t = s(start), s(end)
    g = torch.Generator().manual_seed(seed)
    x, y, e_1, e_2 = (torch.randn(5, 2, generator=g) for _ in range(4))
    x1, y1 = edict_step(x, y, e_1, e_2, v_s, v_t, p, y_first)
    scale = _largest(x, y, x1, y1, e_1, e_2) * max(1.0, float(v_s.alpha / v_t.alpha))
    bound = roundoff(32, scale, U64, 1 / p**2)
    second = edict_stage(x, y, e_1, v_s, v_t, y_first)  # where the forward queries the model the second time
    assert _largest(edict_unmix(x1, y1, p)[1 if y_first else 0] - second) <= bound
    assert _largest(edict_inverse_stage(x1, y1, e_2, v_s, v_t, p, y_first) - (x if y_first else y)) <= bound
    x0, y0 = edict_step_inverse(x1, y1, e_2, e_1, v_s, v_t, p, y_first)
    assert _largest(x0 - x, y0 - y) <= bound


@settings(max_examples=4)
@given(gmm=mixtures(), s=schedules(), seed=st.integers(0, 1000))
@example(gmm=ring(), s=get_schedule("vp_linear"), seed=3)
def test_edict_and_bdia_round_trips_are_below_1e_12_relative_at_50_steps(gmm, s, seed: int) -> None:
    """The issue's headline: EDICT (p = 0.93) and BDIA (gamma = 1) return the data within 1e-12 of the largest
    state at 50 steps (IDENTITY_RTOL: 50 steps x 16 operations x u = 9e-14, times a condition of 10)."""
    model = ExactModel(gmm, s)
    x0 = _data(model, seed=seed)
    ts = grids.uniform_lambda(s, 50)
    for encode, decode in [(invert_edict, sample_edict), (invert_bdia, sample_bdia)]:
        latent = encode(model, x0, ts)
        error = float((decode(model, latent, ts) - x0).abs().max())
        assert error <= IDENTITY_RTOL * _largest(x0, latent), f"{encode.__name__}: {error:.2e}"


@pytest.mark.parametrize("leapfrog", [True, False])
def test_edict_inverts_its_own_generated_pair(leapfrog: bool) -> None:
    """Generate from x_T (x = y = x_T), invert the generated pair: both sequences return to x_T."""
    s = get_schedule("vp_cosine")
    model = ExactModel(ring(), s)
    x_T = model.sample_xt(6, s.t_max, torch.Generator().manual_seed(1))[1]
    ts = grids.uniform_lambda(s, 40)
    pair = sample_edict(model, x_T, ts, leapfrog=leapfrog, return_pair=True)
    back = invert_edict(model, pair, ts, leapfrog=leapfrog)
    bound = roundtrip_bound(40, _largest(x_T, pair), U64, 0.93**-80)
    assert _largest(back.x - x_T, back.y - x_T) <= bound


def test_edict_leapfrog_swaps_the_coupling_order_at_odd_steps() -> None:
    """leapfrog=True is the official code's alternation: step i uses y_first = (i odd); it changes the result."""
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(2))[1]
    ts = grids.uniform_lambda(s, 3)
    values = s(ts)
    manual_x, manual_y = x, x
    for i in range(3):  # the pure step fed with the model's outputs at the points it names
        v_s, v_t = values[i], values[i + 1]
        outputs = _edict_outputs(model, manual_x, manual_y, v_s, v_t, i % 2 == 1)
        manual_x, manual_y = edict_step(manual_x, manual_y, *outputs, v_s, v_t, y_first=i % 2 == 1)
    leap = sample_edict(model, x, ts, return_pair=True)
    torch.testing.assert_close(leap.x, manual_x, rtol=0, atol=0)
    torch.testing.assert_close(leap.y, manual_y, rtol=0, atol=0)
    # the two orders differ by far more than the rounding of three steps
    assert float((sample_edict(model, x, ts, leapfrog=False) - leap.x).abs().max()) > roundtrip_bound(3, _largest(x))


# --- BDIA ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_bdia_with_gamma_zero_is_ddim(name: str) -> None:
    """gamma = 0 drops the backward correction: BDIA is then plain DDIM (two forms of one step, 16 operations)."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(0))[1]
    ts = grids.uniform_lambda(s, 30)
    bdia, ddim = sample_bdia(model, x, ts, gamma=0.0), sample_ddim(model, x, ts)
    assert float((bdia - ddim).abs().max()) <= roundtrip_bound(30, _largest(x))


@given(gamma=st.floats(0.1, 1.0), s=schedules(), data=st.data(), seed=st.integers(0, 100))
def test_bdia_pure_inverse_undoes_the_step_for_any_output(gamma: float, s, data, seed: int) -> None:
    """bdia_step is linear in z_prev with coefficient gamma, so bdia_step_inverse with the same (z_s, eps_s)
    returns z_prev for any eps_s; gamma = 0 drops the bracket (a DDIM transfer).

    Bound: two transfers and the combination (16 operations) each way, on numbers up to the states times the
    transfers' alpha ratios, the inverse's division by gamma as the condition.
    """
    prev, start, end = sorted((data.draw(times(s, 0.0, 1.0)) for _ in range(3)), reverse=True)
    if not prev > start > end:
        return
    v_prev, v_s, v_t = s(prev), s(start), s(end)
    g = torch.Generator().manual_seed(seed)
    z_prev, z_s, eps_s = (torch.randn(5, 2, generator=g) for _ in range(3))
    z_t = bdia_step(z_prev, z_s, eps_s, v_prev, v_s, v_t, gamma)
    ratio = max(1.0, float(v_prev.alpha / v_s.alpha), float(v_s.alpha / v_t.alpha))
    scale = ratio * _largest(z_prev, z_s, eps_s, z_t)
    back = bdia_step_inverse(z_t, z_s, eps_s, v_prev, v_s, v_t, gamma)
    assert _largest(back - z_prev) <= roundoff(16, scale, U64, 1 / gamma)
    ddim = bdia_step(z_prev, z_s, eps_s, v_prev, v_s, v_t, 0.0)
    assert _largest(ddim - ddim_transfer(z_s, eps_s, v_s, v_t)) <= roundoff(16, scale)


def test_bdia_loop_is_the_pure_step_fed_with_the_model() -> None:
    """sample_bdia = a DDIM first step, then bdia_step with eps queried at (z_j, t_j): the same numbers."""
    s = get_schedule("edm")
    model = ExactModel(ring(), s)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(5))[1]
    ts = grids.uniform_lambda(s, 4)
    values = s(ts)
    z_prev = x
    z = ddim_transfer(x, predict_x0_eps(model, x, ts[0], values[0])[1], values[0], values[1])
    for j in range(1, 4):
        eps = predict_x0_eps(model, z, ts[j], values[j])[1]
        z_prev, z = z, bdia_step(z_prev, z, eps, values[j - 1], values[j], values[j + 1], 0.8)
    torch.testing.assert_close(sample_bdia(model, x, ts, gamma=0.8), z, rtol=0, atol=0)


def test_bdia_inverts_its_own_generated_pair() -> None:
    """sample_bdia(return_pair) -> invert_bdia(pair) recovers (z_0, z_1) exactly, with no approximate step."""
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x_T = model.sample_xt(6, s.t_max, torch.Generator().manual_seed(4))[1]
    ts = grids.uniform_lambda(s, 40)
    pair = sample_bdia(model, x_T, ts, gamma=0.9, return_pair=True)
    z_0, z_1 = invert_bdia(model, pair, ts, gamma=0.9)
    first = sample_bdia(model, x_T, ts[:2])  # z_1: one DDIM step
    bound = roundtrip_bound(40, _largest(x_T, pair), U64, 0.9**-40)
    assert _largest(z_0 - x_T, z_1 - first) <= bound


def test_bdia_rounding_grows_like_gamma_to_the_minus_n() -> None:
    """The paper's analysis: the inverse divides by gamma, so the encoder's discrepancy mode, and with it the
    latent and the round-trip error, grow like gamma^-n. At 60 steps the latent's log-size against
    n log(1/gamma) has slope 1 (within ORDER_TOL), the error stays within round-off of the latent, and the
    error rises as gamma falls: exactness is lost once gamma^-n u reaches the accuracy wanted."""
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x0 = _data(model)
    n = 60
    ts = grids.uniform_lambda(s, n)
    gammas = [0.7, 0.6, 0.5, 0.4]
    sizes, errors = [], []
    for gamma in gammas:
        latent = invert_bdia(model, x0, ts, gamma=gamma)
        error = float((sample_bdia(model, latent, ts, gamma=gamma) - x0).abs().max())
        sizes.append(_largest(latent))
        errors.append(error)
        assert error <= roundtrip_bound(n, _largest(x0, latent)), f"gamma {gamma}: {error:.2e}"
    slope = np.polyfit([n * math.log(1 / g) for g in gammas], np.log(sizes), 1)[0]
    assert slope == pytest.approx(1.0, abs=ORDER_TOL)
    assert all(b > a for a, b in itertools.pairwise(errors)), errors


@settings(max_examples=5)
@given(gamma=st.floats(0.9, 1.0), n=st.integers(30, 100))
def test_bdia_near_one_round_trip_is_exact(gamma: float, n: int) -> None:
    """gamma in [0.9, 1]: the round trip is within round-off times the declared amplification gamma^-n."""
    s = get_schedule("vp_cosine")
    model = ExactModel(ring(), s)
    x0 = _data(model)
    ts = grids.uniform_lambda(s, n)
    latent = invert_bdia(model, x0, ts, gamma=gamma)
    error = float((sample_bdia(model, latent, ts, gamma=gamma) - x0).abs().max())
    assert error <= roundtrip_bound(n, _largest(x0, latent), U64, gamma**-n)


# --- float32 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["edict", "bdia", "ddpm_edit_friendly"])
@pytest.mark.parametrize("n", [50, 100])
def test_float32_round_trips_are_within_float32_round_off(name: str, n: int) -> None:
    """The same round trip in float32 (data, model and states; the grid's coefficients are cast) stays within
    the float32 round-off bound: ROUNDTRIP_OPS_PER_STEP n u32 S amplification(n)."""
    spec = get_sampler(name)
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x0 = _data(model).to(torch.float32)
    ts = grids.uniform_lambda(s, n)
    latent = spec.encode(model, x0, ts)
    out = spec(model, latent, ts)
    assert out.dtype == torch.float32
    error = float((out - x0).abs().max())
    assert error <= roundtrip_bound(n, _largest(x0, latent), U32, spec.amplification(n)), f"{error:.2e}"


# --- bad input -----------------------------------------------------------------------------------------------
def test_bad_mixing_weight_gamma_and_shapes_raise_clear_errors() -> None:
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(901))
    ts = grids.uniform_lambda(s, 5)
    for p in [0.0, -0.1, 1.5, float("nan"), True]:
        with pytest.raises(ValueError, match="mixing weight p"):
            sample_edict(model, x, ts, p=p)
        with pytest.raises(ValueError, match="mixing weight p"):
            invert_edict(model, x, ts, p=p)
    for gamma in [-0.1, 1.5, float("inf")]:
        with pytest.raises(ValueError, match="gamma"):
            sample_bdia(model, x, ts, gamma=gamma)
    with pytest.raises(ValueError, match="cannot be inverted"):
        invert_bdia(model, x, ts, gamma=0.0)
    for sampler in [sample_edict, sample_bdia, invert_edict, invert_bdia]:
        with pytest.raises(ValueError, match="must match"):
            sampler(model, CoupledState(x, torch.randn(4, 3, generator=torch.Generator().manual_seed(902))), ts)
        with pytest.raises(TypeError, match="CoupledState"):
            sampler(model, (x, x), ts)
    with pytest.raises(ValueError, match="eps must be"):
        extract_noise_maps(model, x, ts, eps=torch.randn(4, 4, 2, generator=torch.Generator().manual_seed(903)))
    with pytest.raises(ValueError, match="noise must have shape"):
        sample_edit_friendly(
            model, NoiseMaps(x, torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(904))), ts
        )
    with pytest.raises(ValueError, match="no noise or generator"):
        sample_edit_friendly(
            model,
            NoiseMaps(x, torch.randn(5, 4, 2, generator=torch.Generator().manual_seed(905))),
            ts,
            noise=torch.randn(5, 4, 2, generator=torch.Generator().manual_seed(906)),
        )


# --- an independent implementation ---------------------------------------------------------------------------
def test_ddim_inversion_step_matches_diffusers_inverse_scheduler() -> None:
    """diffusers' DDIMInverseScheduler.step(eps, t, x) moves x from t - 100 to t (leading spacing, 10 steps);
    fed our eps at the current point (x, t - 100), as in Dhariwal & Nichol's inversion, it equals one step of
    ``invert_ddim`` on DiscreteVP ddpm_linear (index k sits at t = (k + 1) / 1000). diffusers keeps alpha-bar
    in float32 (1000 products): compared at that resolution, 1000 u32 relative."""
    from diffusers import DDIMInverseScheduler

    sched = DDIMInverseScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=0,
        timestep_spacing="leading",
    )
    sched.set_timesteps(10)
    s = get_schedule("ddpm_linear")
    model = ExactModel(ring(), s)
    x = _data(model)
    for k in sched.timesteps[1:].tolist():
        t_from, t_to = (k - 100 + 1) / 1000, (k + 1) / 1000
        _, eps = predict_x0_eps(model, x, torch.tensor(t_from), s(t_from))
        theirs = sched.step(eps, k, x).prev_sample
        ours = invert_ddim(model, x, torch.tensor([t_to, t_from]))
        scale = max(_largest(x), _largest(ours))
        assert float((theirs - ours).abs().max()) <= roundoff(1000, scale, U32)
        x = ours
