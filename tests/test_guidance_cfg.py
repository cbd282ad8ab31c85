"""Classifier-free guidance against its tilted target, and CFG++ (Chung et al. 2024) with its inversion.

* CFG with exact scores at w = 3 does not sample p_c^w p_u^(1 - w): W1 to the tilt shrinks with the steps at first
  order to a limit far above the same construction's error at w = 1 (where the target is p_c and reached);
* CFG++: lambda = 0 is unconditional DDIM, x0_hat is affine in lambda, and each step (and inversion step) is a
  CFG-DDIM step at the weight ``cfg_equivalent_weight`` (refimpl against itself, to round-off, two schedules);
* bad input: negative weights, lambda outside [0, 1].
"""

from __future__ import annotations

import pytest
import torch
from tolerances import FIRST_ORDER_HALVING, IDENTITY_RTOL, U64, steps_roundoff

from refimpl import grids
from refimpl.guidance import (
    cfg_equivalent_weight,
    cfgpp_step,
    classifier_free_guidance,
    invert_cfgpp,
    sample_cfgpp,
)
from refimpl.models import predict
from refimpl.samplers import ddim_step, invert_ddim, sample_ddim
from refimpl.schedules import get_schedule
from toy_models import ExactModel, labelled_pair
from toy_models.targets import conditional, grid_density, labelled_line, tilted, wasserstein_1d

SCHEDULES = ["vp_linear", "edm"]


def _guided(mix, s, w: float):
    return classifier_free_guidance(ExactModel(conditional(mix, 1), s), ExactModel(mix, s), w)


def test_cfg_misses_the_tilted_target_by_a_nonzero_limit() -> None:
    """Deterministic W1 (quantile levels through the monotone 1-D flow) between CFG-DDIM's output and the tilt."""
    line, s = labelled_line(), get_schedule("vp_linear")
    u = (torch.arange(200, dtype=torch.float64) + 0.5) / 200
    a, sg = s.alpha_t(s.t_max), s.sigma_t(s.t_max)
    start = grid_density(lambda x: conditional(line, 1).log_prob_t(x, a, sg), [-8.0], [8.0], 1600)
    x = start.quantile(u)[:, None]
    limits, gaps = {}, {}
    for w in (1.0, 3.0):
        target = tilted(conditional(line, 1), line, w, [-6.0], [8.0], 2800).quantile(u)
        d = [
            wasserstein_1d(sample_ddim(_guided(line, s, w), x, grids.timesteps(s, n))[:, 0].sort().values, target)
            for n in (8, 16, 32)
        ]
        assert abs(d[2] - d[1]) <= FIRST_ORDER_HALVING * abs(d[1] - d[0]), d  # first-order convergence in the steps
        limits[w], gaps[w] = 2 * d[2] - d[1], abs(d[2] - d[1])  # Richardson limit and a bound on its error
    assert limits[3.0] - gaps[3.0] > 10 * (abs(limits[1.0]) + gaps[1.0]), (limits, gaps)


@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_cfgpp_at_lambda_zero_is_unconditional_ddim(schedule_name: str) -> None:
    pair, s = labelled_pair(), get_schedule(schedule_name)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0)) * s.sigma_t(s.t_max)
    ts = grids.timesteps(s, 10)
    out = sample_cfgpp(_guided(pair, s, 0.0), x, ts)
    ref = sample_ddim(ExactModel(pair, s), x, ts)
    scale = float(x.abs().max())
    torch.testing.assert_close(out, ref, rtol=0, atol=steps_roundoff(10, scale, U64, passes=2))


def test_cfgpp_on_an_unguided_model_is_ddim_refimpl_against_itself() -> None:
    """The registered entry's path: a model without cond/uncond parts is its own unconditional model."""
    pair, s = labelled_pair(), get_schedule("edm")
    model = ExactModel(pair, s)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(4)) * s.t_max
    ts = grids.timesteps(s, 8, "karras")
    torch.testing.assert_close(
        sample_cfgpp(model, x, ts), sample_ddim(model, x, ts), rtol=0, atol=steps_roundoff(8, s.t_max, U64, passes=2)
    )


@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_cfgpp_x0_hat_is_affine_in_lambda(schedule_name: str) -> None:
    pair, s = labelled_pair(), get_schedule(schedule_name)
    t = torch.tensor(0.5 * (s.t_min + s.t_max))
    x = ExactModel(pair, s).sample_xt(8, t, torch.Generator().manual_seed(1))[1]
    x0 = {lam: (x - s(t).sigma * _eps_lambda(pair, s, lam, x, t)) / s(t).alpha for lam in (0.0, 0.3, 1.0)}
    torch.testing.assert_close(x0[0.3], 0.7 * x0[0.0] + 0.3 * x0[1.0], rtol=IDENTITY_RTOL, atol=IDENTITY_RTOL)


def _eps_lambda(pair, s, lam, x, t):
    return predict(_guided(pair, s, lam), x, t, "eps")


@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_cfgpp_step_and_inverse_step_are_cfg_ddim_at_the_equivalent_weight_refimpl_against_itself(
    schedule_name: str,
) -> None:
    """One CFG++ step (and inversion step) equals a CFG-DDIM step (inversion step) with w = lambda / (1 - e^{-h})."""
    pair, s, lam = labelled_pair(), get_schedule(schedule_name), 0.6
    ts = grids.timesteps(s, 6)
    v_s, v_t = s(ts[2]), s(ts[3])
    x = ExactModel(pair, s).sample_xt(8, ts[2], torch.Generator().manual_seed(2))[1]
    guided = _guided(pair, s, lam)
    eps_c, eps_u = predict(guided.cond, x, ts[2], "eps"), predict(guided.uncond, x, ts[2], "eps")
    w = float(cfg_equivalent_weight(lam, v_s, v_t))
    assert w == pytest.approx(lam / -float(torch.expm1(-(v_t.lambda_ - v_s.lambda_))), rel=IDENTITY_RTOL)
    eps_w = eps_u + w * (eps_c - eps_u)
    cfgpp = cfgpp_step(x, eps_u + lam * (eps_c - eps_u), eps_u, v_s, v_t)
    cfg = ddim_step((x - v_s.sigma * eps_w) / v_s.alpha, eps_w, v_t)
    scale = float(x.abs().max()) * w
    torch.testing.assert_close(cfgpp, cfg, rtol=0, atol=steps_roundoff(1, scale, U64, passes=2))
    # inversion: from the less noisy v_t up to v_s
    up = invert_cfgpp(guided, x, torch.stack([ts[2], ts[3]]))
    up_cfg = invert_ddim(classifier_free_guidance(guided.cond, guided.uncond, w), x, torch.stack([ts[2], ts[3]]))
    torch.testing.assert_close(up, up_cfg, rtol=0, atol=steps_roundoff(1, scale, U64, passes=2))


def test_cfg_round_trip_shrinks_with_the_steps_but_cfgpp_does_not() -> None:
    """CFG-DDIM inversion at a fixed weight is first order (doubling the steps shrinks the round trip by
    FIRST_ORDER_HALVING or more); CFG++'s equivalent weight grows like lambda / h, so its round trip does not shrink.
    The points are drawn from the conditional law the guidance aims at."""
    pair, s = labelled_pair(), get_schedule("vp_linear")
    cfgpp, cfg = _guided(pair, s, 0.3), _guided(pair, s, 2.0)
    x0 = conditional(pair, 1).sample(8, torch.Generator().manual_seed(3))
    errors: dict[str, list[float]] = {"cfg": [], "cfgpp": []}
    for n in (20, 40):  # from the data up to lambda = 0 (alpha = sigma) and back
        ts = grids.timesteps(s, n, t_start=float(s.t_of_lambda(0.0)))
        errors["cfgpp"].append(float((sample_cfgpp(cfgpp, invert_cfgpp(cfgpp, x0, ts), ts) - x0).abs().max()))
        errors["cfg"].append(float((sample_ddim(cfg, invert_ddim(cfg, x0, ts), ts) - x0).abs().max()))
    assert errors["cfg"][1] <= FIRST_ORDER_HALVING * errors["cfg"][0], errors
    assert errors["cfgpp"][1] > FIRST_ORDER_HALVING * errors["cfgpp"][0], errors


def test_negative_weights_and_lambda_outside_the_unit_interval_are_refused() -> None:
    pair, s = labelled_pair(), get_schedule("vp_linear")
    cond, uncond = ExactModel(conditional(pair, 1), s), ExactModel(pair, s)
    for bad in (-1.0, float("inf")):
        with pytest.raises(ValueError, match="w must"):
            classifier_free_guidance(cond, uncond, bad)
    with pytest.raises(TypeError, match="w must"):
        classifier_free_guidance(cond, uncond, "2")
    with pytest.raises(ValueError, match="lambda"):
        sample_cfgpp(classifier_free_guidance(cond, uncond, 1.5), torch.zeros(2, 2), grids.timesteps(s, 2))
