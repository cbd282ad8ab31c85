"""PNDM: the transfer part is DDIM, model-call counts, diffusers' PNDMScheduler, identities and bad input."""

from __future__ import annotations

import pytest
import torch
from diffusers import PNDMScheduler
from hypothesis import given
from hypothesis import strategies as st
from strategies import schedules, times
from tolerances import IDENTITY_RTOL, roundoff

from refimpl import grids
from refimpl.models import CountingModel, predict_x0_eps
from refimpl.samplers import Trajectory, ddim_step, pndm_transfer, sample_lms, sample_pndm
from refimpl.samplers.pndm import PLMS_WEIGHTS, midpoint_time, plms_direction, prk_stage, prk_step
from refimpl.schedules import DiscreteVP, get_schedule
from toy_models import ExactModel, random_mixture, ring


@given(s=schedules(), data=st.data())
def test_transfer_part_is_the_ddim_step(s, data) -> None:
    """phi(x_s, eps, s, t) = alpha_t x0 + sigma_t eps with x0 = (x_s - sigma_s eps) / alpha_s, on every schedule."""
    start = data.draw(times(s, 0.05, 1.0))
    end = data.draw(times(s, 0.0, 1.0).filter(lambda u: s.lambda_t(u) > s.lambda_t(start) + 1e-3))
    v_s, v_t = s(start), s(end)
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 100)))
    x, eps = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    x0 = (x - v_s.sigma * eps) / v_s.alpha
    expected = ddim_step(x0, eps, v_t)
    scale = float(expected.abs().max()) + float((v_t.alpha * x0).abs().max())
    assert float((pndm_transfer(x, eps, v_s, v_t) - expected).abs().max()) <= IDENTITY_RTOL * scale


def test_transfer_part_is_eq_9_in_alpha_bar_form() -> None:
    """For a DDPM schedule the transfer part is Liu et al. (2022), Eq. 9, written with alpha-bar."""
    s = DiscreteVP.ddpm_linear()
    g = torch.Generator().manual_seed(5)
    x, eps = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    for k, k_prev in [(999, 899), (500, 450), (40, 0)]:  # their t -> t - delta is our s -> t
        v_s, v_t = s((k + 1) / 1000), s((k_prev + 1) / 1000)
        a_t, a_s = s.alphas_cumprod[k], s.alphas_cumprod[k_prev]  # Eq. 9's letters: a_t at the start
        eq9 = (a_s / a_t).sqrt() * x - (a_s - a_t) / (
            a_t.sqrt() * (((1 - a_s) * a_t).sqrt() + ((1 - a_t) * a_s).sqrt())
        ) * eps
        assert float((pndm_transfer(x, eps, v_s, v_t) - eq9).abs().max()) <= IDENTITY_RTOL * float(eq9.abs().max())


@pytest.mark.parametrize(
    ("options", "nfe"),
    [
        ({"warmup": "prk"}, lambda n: 4 * min(n, 3) + max(n - 3, 0)),  # F-PNDM
        ({"warmup": "improved_euler"}, lambda n: n + 1),  # diffusers skip_prk_steps
        ({"warmup": "improved_euler", "order": 2}, lambda n: n + 1),  # S-PNDM
        ({"warmup": "prk", "order": 1}, lambda n: n),  # DDIM through the transfer part
    ],
)
def test_model_calls(options: dict, nfe) -> None:
    s = get_schedule("vp_linear")
    for n in (1, 2, 3, 4, 10):
        model = CountingModel(ExactModel(ring(), s))
        sample_pndm(
            model, torch.randn(3, 2, generator=torch.Generator().manual_seed(n)), grids.uniform_lambda(s, n), **options
        )
        assert model.calls == nfe(n), f"{options}: {model.calls} calls for {n} steps"


def _diffusers_run(scheduler: PNDMScheduler, model: ExactModel, x: torch.Tensor, n_calls: int) -> torch.Tensor:
    """Run diffusers' PNDM loop for its first n_calls model calls; the model sees DDPM step k at t = (k + 1) / N."""
    for k in scheduler.timesteps[:n_calls]:
        eps = model(x, torch.tensor((int(k) + 1) / 1000, dtype=torch.float64))
        x = scheduler.step(eps, k, x).prev_sample
    return x


def _scheduler(s: DiscreteVP, **kwargs) -> PNDMScheduler:
    """diffusers' PNDM with the same betas; its float32 alpha-bar is replaced by ours (float64)."""
    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, **kwargs)
    scheduler.alphas_cumprod = s.alphas_cumprod.clone()
    scheduler.final_alpha_cumprod = s.alphas_cumprod[0] if not kwargs.get("set_alpha_to_one") else torch.tensor(1.0)
    scheduler.set_timesteps(10)
    return scheduler


@pytest.mark.parametrize(("skip_prk", "warmup", "calls"), [(False, "prk", 18), (True, "improved_euler", 10)])
def test_agrees_with_diffusers(skip_prk: bool, warmup: str, calls: int) -> None:
    """diffusers' PNDMScheduler (set_timesteps(10), "leading" spacing) on DDPM steps 900, 800, ..., 0.

    Convention: its step k is our t = (k + 1) / N, its PRK midpoint k - 50 is our t-midpoint. Its tenth step
    goes from k = 0 to "k = -100", whose alpha-bar is ``final_alpha_cumprod``; that is our grid's end only
    as a zero-length step, so we compare after the first nine steps (18 model calls for F-PNDM).
    """
    s = DiscreteVP.ddpm_linear()
    model = ExactModel(random_mixture(K=3, d=2, seed=1), s)
    x = model.sample_xt(6, 0.901, torch.Generator().manual_seed(0))[1]
    ts = torch.tensor([(k + 1) / 1000 for k in range(900, -1, -100)], dtype=torch.float64)
    ours = sample_pndm(model, x, ts, warmup=warmup)
    theirs = _diffusers_run(_scheduler(s, skip_prk_steps=skip_prk), model, x, calls)
    assert float((ours - theirs).abs().max()) <= IDENTITY_RTOL * float(ours.abs().max())


def test_diffusers_19_calls_are_3_prk_steps_7_plms_steps_and_the_last_moves_nothing() -> None:
    """set_timesteps(10) gives 12 PRK calls + 7 PLMS calls = 19 = n + 9 for n = 10 steps, as we count; with the
    default set_alpha_to_one=False the tenth step (k = 0 -> final alpha-bar = alpha-bar_0) returns its input."""
    s = DiscreteVP.ddpm_linear()
    scheduler = _scheduler(s)
    assert len(scheduler.prk_timesteps) == 12 and len(scheduler.plms_timesteps) == 7
    assert len(scheduler.timesteps) == 19 == 4 * 3 + (10 - 3)
    model = ExactModel(ring(), s)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(4))
    before_last = _diffusers_run(scheduler, model, x, 18)
    eps = model(before_last, torch.tensor(1 / 1000, dtype=torch.float64))
    last = scheduler.step(eps, scheduler.timesteps[18], before_last).prev_sample
    torch.testing.assert_close(last, before_last, rtol=0, atol=0)


def test_prk_with_the_sigma_midpoint_is_rk4_and_plms_is_lms_on_a_sigma_uniform_grid() -> None:
    """On a grid uniform in sigma = sigma_t / alpha_t the equal-step Adams-Bashforth weights of PLMS are the
    variable-step LMS weights, and PRK with the sigma midpoint is classical RK4 in (sigma, x / alpha): F-PNDM
    and RK4-started LMS are the same method there.

    Bound: the two compute the same numbers by different arithmetic; each of the 12 steps commits at most ~16
    roundings of its largest term, alpha_t x0 or sigma_t eps (both below |x_i| + |x0_i|), not of the output,
    which the terms cancel down to. No step amplifies an earlier error (the flow contracts on this range)."""
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    t0, t1 = float(s.t_of_lambda(-1.0)), float(s.t_of_lambda(2.0))
    ts = grids.karras(s, 12, t0, t1, rho=1.0)
    x = model.sample_xt(5, t0, torch.Generator().manual_seed(3))[1]
    trajectory = Trajectory()
    a = sample_pndm(model, x, ts, warmup="prk", midpoint="sigma", callback=trajectory)
    b = sample_lms(model, x, ts, order=4, warmup="singlestep")
    scale = float(trajectory.xs.abs().max()) + float(trajectory.x0s.abs().max())
    assert float((a - b).abs().max()) <= roundoff(16 * (len(ts) - 1), scale)


def test_first_step_of_plms_order_1_is_ddim() -> None:
    """PLMS-1's step is phi(x_s, eps, s, t) = (alpha_t / alpha_s) x_s - c eps; DDIM's is alpha_t x0 + sigma_t eps.

    Bound: both forms are a few operations whose terms cancel down to the output; the rounding is relative to
    the largest term, max(alpha_t / alpha_s |x_s|, alpha_t |x0|, sigma_t |eps|), 16 operations with margin.
    """
    s = get_schedule("vp_cosine")
    model = ExactModel(ring(), s)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(11))
    ts = grids.uniform_t(s, 1)
    v_s, v_t = s(ts[0]), s(ts[1])
    x0, eps = predict_x0_eps(model, x, ts[0])
    out = sample_pndm(model, x, ts, order=1)
    terms = [float(v_t.alpha / v_s.alpha) * float(x.abs().max()), float((v_t.alpha * x0).abs().max())]
    scale = max(*terms, float((v_t.sigma * eps).abs().max()))
    assert float((out - ddim_step(x0, eps, v_t)).abs().max()) <= roundoff(16, scale)


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
@pytest.mark.parametrize("midpoint", ["t", "sigma"])
def test_prk_loop_is_the_pure_step_fed_with_the_model_at_its_stages(name: str, midpoint: str) -> None:
    """One F-PNDM warm-up step = ``prk_step`` with e_k queried at the stage states of ``prk_stage`` (x_s moved by
    phi with e_{k-1} to the midpoint, the midpoint and t): the same numbers."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    ts = grids.uniform_lambda(s, 1)
    x = model.sample_xt(4, ts[0], torch.Generator().manual_seed(6))[1]
    t_mid = midpoint_time(s, ts[0], ts[1], midpoint)
    v_s, v_mid, v_t = s(ts[0]), s(t_mid), s(ts[1])
    es = [predict_x0_eps(model, x, ts[0], v_s)[1]]
    for v in (v_mid, v_mid, v_t):
        es.append(predict_x0_eps(model, prk_stage(x, es[-1], v_s, v), v.t, v)[1])
    expected, _ = prk_step(x, *es, v_s, v_t)
    out = sample_pndm(model, x, ts, order=2, warmup="prk", midpoint=midpoint)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@given(s=schedules(), data=st.data(), seed=st.integers(0, 100))
def test_prk_step_with_equal_stage_outputs_is_the_transfer_part(s, data, seed: int) -> None:
    """The pseudo-RK4 weights (1, 2, 2, 1) / 6 add up to 1: four equal outputs e give e' = e and phi(x_s, e)."""
    start = data.draw(times(s, 0.05, 1.0))
    end = data.draw(times(s, 0.0, 1.0).filter(lambda u: s.lambda_t(u) > s.lambda_t(start) + 1e-3))
    v_s, v_t = s(start), s(end)
    g = torch.Generator().manual_seed(seed)
    x, e = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    x_t, e_prime = prk_step(x, e, e, e, e, v_s, v_t)
    assert float((e_prime - e).abs().max()) <= roundoff(8, float(e.abs().max()))
    scale = max(float((pndm_transfer(x, e, v_s, v_t)).abs().max()), float(v_t.alpha / v_s.alpha * x.abs().max()))
    assert float((x_t - pndm_transfer(x, e, v_s, v_t)).abs().max()) <= roundoff(16, scale)


def test_bad_input() -> None:
    s = get_schedule("vp_linear")
    model, ts = ExactModel(ring(), s), grids.uniform_t(s, 5)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="order"):
        sample_pndm(model, x, ts, order=5)
    with pytest.raises(ValueError, match="order"):
        sample_pndm(model, x, ts, order=True)
    with pytest.raises(ValueError, match="warmup"):
        sample_pndm(model, x, ts, warmup="euler")
    with pytest.raises(ValueError, match="midpoint"):
        sample_pndm(model, x, ts, midpoint="lambda")
    with pytest.raises(ValueError, match="1 to 4"):
        plms_direction([x] * 5)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_pndm(model, x, ts.flip(0))


def test_every_plms_row_has_its_adams_bashforth_order() -> None:
    """Warm-up rows included: the order-k row integrates 1, u, ..., u^{k-1} exactly over [0, 1] from the nodes
    0, -1, ..., -(k-1) (sum_j w_j (-j)^m = 1 / (m + 1)); each sum has k terms of size <= 3, 8k roundings."""
    for k, weights in PLMS_WEIGHTS.items():
        for m in range(k):
            moment = sum(w * (-j) ** m for j, w in enumerate(weights))
            assert abs(moment - 1 / (m + 1)) <= roundoff(8 * k, 3.0), (k, m, moment)
