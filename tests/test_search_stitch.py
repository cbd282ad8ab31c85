"""Chapter 4, T-Stitch: r = 0 and r = 1 are the large and the small model's samplers bit for bit, the switch lands on
the grid, and the noised data law approaches its moment-matched Gaussian as t grows."""

from __future__ import annotations

import itertools

import pytest
import torch
from tolerances import Z

from refimpl import grids
from refimpl.registry import get_sampler
from refimpl.schedules import get_schedule
from refimpl.search import StitchedModel, moment_matched_model, noised_kl, stitch_time
from toy_models import ExactModel, ring


@pytest.mark.parametrize(("schedule_name", "sampler"), [("vp_linear", "dpm_solver_pp_2m"), ("vp_cosine", "unipc2_bh1")])
def test_fractions_zero_and_one_are_the_models_alone(schedule_name: str, sampler: str) -> None:
    large = ExactModel(ring(), get_schedule(schedule_name))
    small = moment_matched_model(large)
    spec = get_sampler(sampler)
    ts = grids.uniform_lambda(large.schedule, 8)
    x = large.sample_xt(16, large.schedule.t_max, torch.Generator().manual_seed(0))[1]
    assert torch.equal(spec(StitchedModel(small, large, stitch_time(ts, 0.0)), x, ts), spec(large, x, ts))
    assert torch.equal(spec(StitchedModel(small, large, stitch_time(ts, 1.0)), x, ts), spec(small, x, ts))
    mixed = spec(StitchedModel(small, large, stitch_time(ts, 0.5)), x, ts)
    assert not torch.equal(mixed, spec(large, x, ts)) and not torch.equal(mixed, spec(small, x, ts))


def test_switch_time_counts_steps() -> None:
    ts = grids.uniform_lambda(get_schedule("vp_linear"), 10)
    assert stitch_time(ts, 0.3) == ts[3] and stitch_time(ts, 0.0) == ts[0] and stitch_time(ts, 1.0) == ts[-1]


def test_noised_kl_falls_with_t() -> None:
    """KL(p_t || q_t) estimates at t = 0.1, 0.3, 0.5 (ring, vp_linear) decrease by more than Z standard errors."""
    model = ExactModel(ring(), get_schedule("vp_linear"))
    g = torch.Generator().manual_seed(0)
    kls = [noised_kl(model, t, 8000, g) for t in (0.1, 0.3, 0.5)]
    for (k1, e1), (k2, e2) in itertools.pairwise(kls):
        assert k1 - k2 > Z * (e1**2 + e2**2) ** 0.5


def test_bad_input() -> None:
    ts = grids.uniform_lambda(get_schedule("vp_linear"), 4)
    with pytest.raises(ValueError, match="fraction"):
        stitch_time(ts, 1.5)
    large = ExactModel(ring(), get_schedule("vp_linear"))
    with pytest.raises(ValueError, match="share one schedule"):
        StitchedModel(ExactModel(ring(), get_schedule("vp_cosine")), large, 0.5)
