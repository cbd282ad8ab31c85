"""Chapter 4, the Time-Shift sampler: the window rule (clipping, per-sample choice, cutoff, its target with an exact
model) and the exposure-bias toy in d = 64, where the shift lowers the output variance error."""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import Z, same_sampler_bound

from refimpl import grids
from refimpl.samplers import sample_ddim
from refimpl.schedules import DiscreteVP
from refimpl.search import ScaledDataModel, sample_time_shift, time_shift, time_shift_target
from toy_models import ExactModel, GaussianMixture

SCHEDULE = DiscreteVP.ddpm_linear()
CANDIDATES = SCHEDULE.t_knots.flip(0)  # the 1000 DDPM times, decreasing


def _isotropic(d: int, v0: float) -> ExactModel:
    eye = torch.eye(d, dtype=torch.float64)[None]
    return ExactModel(
        GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64), v0 * eye), SCHEDULE
    )


def test_window_is_clipped_at_both_ends_and_chosen_per_sample() -> None:
    x = torch.stack([torch.full((8,), 3.0), torch.zeros(8)]) * torch.tensor([1.0, -1.0] * 4)  # variances 9.1, 0
    x = x.to(torch.float64)
    for t, window in ((CANDIDATES[0], 9), (CANDIDATES[-1], 9), (CANDIDATES[500], 5)):
        chosen = time_shift(x, t, CANDIDATES, window, SCHEDULE)
        k = int(torch.argmin((CANDIDATES - t).abs()))
        lo = min(max(k - window // 2, 0), len(CANDIDATES) - window)
        near = CANDIDATES[lo : lo + window]
        assert chosen[0] == near.max() and chosen[1] == near.min()  # the noisiest and the cleanest of the window


def test_rule_with_an_exact_model_aims_at_the_pixel_variance_of_x_t() -> None:
    """x_t exact (d = 4096, v0 = 0.3): the chosen sigma_tau^2 matches alpha_t^2 v0 + sigma_t^2, not sigma_t^2; the
    per-sample variance has relative standard deviation sqrt(2 / (d - 1)), and the candidates' sigma^2 are spaced
    more finely than that, so the median choice is within Z of those standard deviations."""
    d, v0 = 4096, 0.3
    t = CANDIDATES[600]
    v = SCHEDULE(t)
    g = torch.Generator().manual_seed(0)
    x0 = math.sqrt(v0) * torch.randn(64, d, generator=g, dtype=torch.float64)  # x_0 ~ N(0, v0 I), then noised
    x = v.alpha * x0 + v.sigma * torch.randn(64, d, generator=g, dtype=torch.float64)
    chosen = time_shift(x, t, CANDIDATES, 1000, SCHEDULE)
    target = float(time_shift_target(SCHEDULE, t, v0))
    got = float(SCHEDULE.sigma_t(chosen).pow(2).median())
    assert abs(got - target) < Z * math.sqrt(2 / (d - 1)) * target
    assert got > float(SCHEDULE.sigma_t(t) ** 2)  # shifted towards larger t, as v0 > 0


def test_cutoff_above_the_grid_is_ddim() -> None:
    model = _isotropic(16, 0.1)
    x = model.sample_xt(4, SCHEDULE.t_max, torch.Generator().manual_seed(1))[1]
    ts = grids.uniform_t(SCHEDULE, 10)
    got = sample_time_shift(model, x, ts, candidates=CANDIDATES, window=7, cutoff=1.0)
    assert float((got - sample_ddim(model, x, ts)).abs().max()) <= same_sampler_bound(10, float(x.abs().max()))


def test_time_shift_lowers_the_variance_error_under_exposure_bias() -> None:
    """d = 64, v0 = 0.05, a model overshooting x0 by 30 % (variance inflation), 50 DDIM steps: the mean output
    variance misses the exact one by about 0.057 plain and about 0.01 shifted (window 20, cutoff 0). Both runs use
    the same 300 starting points; the Monte Carlo error of each mean variance is about v sqrt(2 / 300) / 8 < 1e-3."""
    model = _isotropic(64, 0.05)
    biased = ScaledDataModel(model, 0.3)
    x = model.sample_xt(300, SCHEDULE.t_max, torch.Generator().manual_seed(0))[1]
    ts = grids.uniform_t(SCHEDULE, 50)
    target = float(time_shift_target(SCHEDULE, ts[-1], 0.05))
    plain = abs(float(sample_ddim(biased, x, ts).var(0).mean()) - target)
    shifted = abs(
        float(sample_time_shift(biased, x, ts, candidates=CANDIDATES, window=20, cutoff=0.0).var(0).mean()) - target
    )
    assert shifted < plain / 2


def test_bad_input() -> None:
    x = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="larger than the grid"):
        time_shift(x, 0.5, CANDIDATES[:10], 11, SCHEDULE)
    with pytest.raises(ValueError, match="window must be a positive integer"):
        time_shift(x, 0.5, CANDIDATES, 0, SCHEDULE)
    with pytest.raises(ValueError, match="larger than the grid"):
        sample_time_shift(
            _isotropic(4, 0.1), x, grids.uniform_t(SCHEDULE, 3), candidates=CANDIDATES[:5], window=6, cutoff=0.0
        )
