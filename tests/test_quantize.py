"""PTQ4DM's quantiser and calibration set, and A-SDM's feature caching (chapter 4, issue 13 item 9).

Bounds: the uniform quantiser's error is at most Delta / 2 inside its range (plus one rounding of x / Delta, a few
units of the float's precision times |x|), and the quantiser is idempotent; per-channel weight quantisation obeys the
same bound per channel. The first-order error of a fake-quantised network is linear in the rounding errors, all of
which scale with Delta ~ 2^-b at fixed ranges, so two more bits divide it by 4 (QUANT_TWO_BITS_BAND around it).
"""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import (
    QUANT_NDTC_MARGIN,
    QUANT_TWO_BITS_BAND,
    QUANT_WEIGHT_RTOL,
    QUANT_WITHIN_FULL,
    clt_bound,
    roundoff,
)

from refimpl import grids
from refimpl.samplers import sample_ddim
from toy_models import ExactModel, ring
from toy_models.caching import CachedUNet, cached_model
from toy_models.quantize import (
    calibration_set,
    calibration_steps,
    quantization_step,
    quantize_model,
    uniform_quantize,
)
from toy_models.trained import load_mlp, load_unet


@pytest.fixture(scope="module")
def mlp():
    return load_mlp().model()


@pytest.fixture(scope="module")
def unet():
    return load_unet().model(torch.arange(6) % 10)


@pytest.mark.parametrize("n_bits", [2, 4, 8])
def test_uniform_quantiser_error_is_at_most_half_a_step_inside_the_range_and_it_is_idempotent(n_bits):
    g = torch.Generator().manual_seed(0)
    lo, hi = torch.tensor(-1.3, dtype=torch.float64), torch.tensor(2.1, dtype=torch.float64)
    x = lo + (hi - lo) * torch.rand(10_000, generator=g, dtype=torch.float64)
    delta = quantization_step(lo, hi, n_bits)
    q = uniform_quantize(x, lo, hi, n_bits)
    assert float((q - x).abs().max()) <= float(delta) / 2 * (1 + roundoff(4)) + float(delta) / 2  # grid shift lo'
    inner = (x > lo + delta) & (x < hi - delta)  # away from the ends the grid covers x on both sides
    assert float((q - x)[inner].abs().max()) <= float(delta) / 2 + roundoff(4, scale=2.1)
    assert torch.equal(uniform_quantize(q, lo, hi, n_bits), q)
    assert bool((q == 0).any() or (x.abs() > delta / 2).all())  # 0 is a grid point
    assert len(torch.unique(q)) <= 2**n_bits
    far = uniform_quantize(torch.tensor([-100.0, 100.0], dtype=torch.float64), lo, hi, n_bits)
    assert float(far[0]) >= float(lo) - float(delta) and float(far[1]) <= float(hi) + float(delta)  # clipped


def test_quantised_weights_are_within_half_a_channel_step_and_the_original_is_untouched(mlp):
    x = torch.zeros(4, 2, dtype=torch.float64)
    q = quantize_model(mlp, x, torch.full((4,), 0.5, dtype=torch.float64), n_bits_w=4, n_bits_a=16)
    for (name, w), (_, wq) in zip(mlp.net.named_parameters(), q.net.named_parameters(), strict=True):
        if not name.endswith("weight") or w.ndim < 2:
            continue
        bound = w.detach().abs().reshape(w.shape[0], -1).amax(1) / (2**4 - 1)  # Delta_c / 2 = 2 max|w_c| / 15 / 2
        err = (wq - w).detach().abs().reshape(w.shape[0], -1).amax(1)
        assert bool((err <= bound * (1 + QUANT_WEIGHT_RTOL)).all()), name
        assert not torch.equal(w, wq), name  # 4 bits do move the weights (a broken quantiser would not)


def test_two_more_bits_divide_the_quantisation_error_by_about_four(mlp):
    """Calibrated on the inputs it is evaluated on, so no activation is clipped and only rounding remains."""
    x = ExactModel(ring(), mlp.schedule).sample_xt(512, 0.3, torch.Generator().manual_seed(2))[1]
    t = torch.full((512,), 0.3, dtype=torch.float64)
    ref = mlp(x, t)
    quantised = [quantize_model(mlp, x, t, n_bits_w=b, n_bits_a=b) for b in (8, 10)]
    errs = [float((q(x, t) - ref).pow(2).mean().sqrt()) for q in quantised]
    lo, hi = QUANT_TWO_BITS_BAND
    assert lo < errs[0] / errs[1] < hi, errs


def test_calibration_at_a_single_step_is_worse_against_the_exact_toy_than_ndtc(mlp):
    """Measured on the ring with its exact eps: single-step calibration clips the activations of the other steps."""
    schedule = mlp.schedule
    exact = ExactModel(ring(), schedule)
    K = 10
    ts = grids.uniform_lambda(schedule, K)
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def error(model) -> float:
        total = 0.0
        for t in torch.linspace(0.9, 0.05, 4, dtype=torch.float64):
            x = exact.sample_xt(500, float(t), torch.Generator().manual_seed(5))[1]
            total += float((model(x, t) - exact.eps(x, t)).pow(2).mean())
        return math.sqrt(total / 4)

    errors = {}
    for mode in ("normal", "single"):
        steps = calibration_steps(128, K, mode, torch.Generator().manual_seed(1))
        errors[mode] = error(quantize_model(mlp, *calibration_set(mlp, x_T, ts, steps)))
    full = error(mlp)
    assert errors["normal"] < errors["single"] / QUANT_NDTC_MARGIN, errors
    assert errors["normal"] < QUANT_WITHIN_FULL * full, (errors, full)  # notes.md: within k x full precision


def test_calibration_steps_follow_their_modes():
    g = torch.Generator().manual_seed(0)
    k = calibration_steps(20_000, 50, "normal", g, mean=0.2, std=0.3)  # PTQ4DM's script: 0.4, 0.4 (the defaults)
    # floor(N(0.2, 0.3) 50) clipped to [0, 49]: P(k = 0) = P(z < 1/50) with z ~ N(0.2, 0.3); CLT bound
    p0 = 0.5 * math.erfc(-(0.02 - 0.2) / (0.3 * math.sqrt(2)))
    assert abs(float((k == 0).double().mean()) - p0) < clt_bound(math.sqrt(p0 * (1 - p0)), 20_000)
    assert int(k.min()) == 0 and int(k.max()) == 49
    u = calibration_steps(20_000, 50, "uniform", g)
    assert abs(float(u.double().mean()) - 24.5) < clt_bound(math.sqrt((50**2 - 1) / 12), 20_000)
    assert torch.equal(calibration_steps(3, 50, "single", g, single=7), torch.full((3,), 7))


def test_calibration_set_holds_the_denoising_states_at_their_steps(mlp):
    ts = grids.uniform_lambda(mlp.schedule, 6)
    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cx, ct = calibration_set(mlp, x_T, ts, torch.tensor([0, 5, 2]))
    assert torch.equal(cx[0], x_T[0]) and torch.equal(ct, ts[[0, 5, 2]])
    assert torch.equal(cx[1], sample_ddim(mlp, x_T, ts[:6])[1])


def test_bad_input_raises_naming_the_argument(mlp, unet):
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="calib_t"):
        quantize_model(mlp, x, torch.zeros(3, dtype=torch.float64))  # a calibration set of the wrong shape
    with pytest.raises(ValueError, match="n_bits_a"):
        quantize_model(mlp, x, torch.zeros(4, dtype=torch.float64), n_bits_a=1)
    with pytest.raises(ValueError, match="mode"):
        calibration_steps(4, 10, "lognormal", torch.Generator())
    with pytest.raises(ValueError, match="interval"):
        cached_model(unet, 0)
    with pytest.raises(ValueError, match="hi"):
        quantization_step(torch.tensor(1.0), torch.tensor(0.0), 8)


def test_caching_interval_one_is_the_uncached_unet_bit_for_bit(unet):
    ts = grids.uniform_t(unet.schedule, 6)
    x_T = torch.randn(6, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cached = cached_model(unet, 1)
    assert torch.equal(sample_ddim(cached, x_T, ts), sample_ddim(unet, x_T, ts))
    assert cached.net.deep_calls == 6


def test_cached_error_grows_with_the_interval_and_the_branch_runs_ceil_n_over_interval_times(unet):
    """Measured: reusing older features moves the output further from the uncached one."""
    n = 8
    ts = grids.uniform_t(unet.schedule, n)
    x_T = torch.randn(6, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = sample_ddim(unet, x_T, ts)
    errors = []
    for interval in (2, 4):
        model = cached_model(unet, interval)
        errors.append(float((sample_ddim(model, x_T, ts) - ref).pow(2).mean().sqrt()))
        assert model.net.deep_calls == math.ceil(n / interval)
        assert isinstance(model.net, CachedUNet)
    assert 0 < errors[0] < errors[1], errors
    model.net.reset()  # a second run after reset() repeats the first (interval 4) bit for bit
    assert model.net.calls == 0
    assert torch.equal(sample_ddim(model, x_T, ts), sample_ddim(cached_model(unet, 4), x_T, ts))
