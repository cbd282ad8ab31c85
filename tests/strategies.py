"""Hypothesis strategies restricted to the real domain of each quantity."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from refimpl.schedules import SCHEDULES, NoiseSchedule, get_schedule
from toy_models import GaussianMixture

SCHEDULE_NAMES = sorted(SCHEDULES)

finite = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)


def schedules() -> st.SearchStrategy[NoiseSchedule]:
    """Every schedule of ``refimpl.schedules`` with its default settings."""
    return st.sampled_from(SCHEDULE_NAMES).map(get_schedule)


@st.composite
def times(draw: st.DrawFn, schedule: NoiseSchedule, lo: float = 0.0, hi: float = 1.0) -> float:
    """A time inside [t_min, t_max]: uniform in lambda between the fractions lo..hi of its range."""
    frac = draw(st.floats(lo, hi))
    lam = schedule.lambda_max + frac * (schedule.lambda_min - schedule.lambda_max)
    return float(schedule.t_of_lambda(lam))


@st.composite
def mixtures(draw: st.DrawFn, max_k: int = 3, max_d: int = 3, d: int | None = None) -> GaussianMixture:
    """Random mixtures: means in [-2, 2], covariances A A^T + 0.05 I with |A_ij| <= 1, weights >= 0.05/K."""
    K = draw(st.integers(1, max_k))
    d = d if d is not None else draw(st.integers(1, max_d))
    raw_w = draw(st.lists(st.floats(0.05, 1.0), min_size=K, max_size=K))
    means = draw(st.lists(finite, min_size=K * d, max_size=K * d))
    a = draw(st.lists(st.floats(-1.0, 1.0), min_size=K * d * d, max_size=K * d * d))
    A = torch.tensor(a).reshape(K, d, d)
    covs = A @ A.mT + 0.05 * torch.eye(d)
    w = torch.tensor(raw_w)
    return GaussianMixture(w / w.sum(), torch.tensor(means).reshape(K, d), covs, torch.arange(K) % 2)
