"""Every parameterisation conversion round-trips in float64, and the model wrappers check outputs."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import schedules, times
from tolerances import IDENTITY_RTOL

from refimpl import parameterization as P
from refimpl.models import CountingModel, FunctionModel, predict, predict_x0_eps
from refimpl.schedules import get_schedule


def _assert_close(a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
    """Max-abs comparison at the identity tolerance, relative to the values' scale."""
    assert float((a - b).abs().max()) <= IDENTITY_RTOL * scale


@given(s=schedules(), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_every_pair_round_trips(s, data, seed: int) -> None:
    """source -> target -> source is the identity for all 5 x 5 pairs, at any time of any schedule.

    The round-off scale is the largest magnitude that appears in the conversions: the x0 <-> eps
    solve divides by alpha (or sigma), so errors scale with x / alpha and x / sigma.
    """
    t = data.draw(times(s))
    values = s(t)
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    x = values.alpha * x0 + values.sigma * eps
    outputs = {k: P.from_x0_eps(k, x0, eps, values) for k in P.PREDICTIONS}
    a, sg = float(values.alpha), float(values.sigma)
    scale = 10 * max(1.0, *(float(o.abs().max()) for o in outputs.values())) * max(1 / a, 1 / sg, a, sg)
    for source, target in itertools.product(P.PREDICTIONS, repeat=2):
        there = P.convert(outputs[source], source, target, x, values)
        _assert_close(there, outputs[target], scale)
        _assert_close(P.convert(there, target, source, x, values), outputs[source], scale)


def test_named_conversions_are_the_textbook_formulas() -> None:
    """v = alpha eps - sigma x0; score = -eps/sigma; VP: x0 = alpha x - sigma v (Salimans & Ho 2022, Sec. 4)."""
    s = get_schedule("vp_linear")
    v_ = s(0.4)
    x0, eps = (
        torch.randn(5, 2, generator=torch.Generator().manual_seed(901)),
        torch.randn(5, 2, generator=torch.Generator().manual_seed(902)),
    )
    x = v_.alpha * x0 + v_.sigma * eps
    v = P.v_from_x0_eps(x0, eps, v_.alpha, v_.sigma)
    _assert_close(v, v_.alpha * eps - v_.sigma * x0, 10)
    _assert_close(v_.alpha * x - v_.sigma * v, x0, 10)
    _assert_close(P.score_from_eps(eps, v_.sigma), -eps / v_.sigma, 10)
    _assert_close(P.velocity_from_x0_eps(x0, eps, v_.d_alpha, v_.d_sigma), v_.d_alpha * x0 + v_.d_sigma * eps, 100)


def test_per_sample_coefficients_broadcast() -> None:
    """A (B,) vector of times gives the same answer as B separate scalar conversions."""
    s = get_schedule("vp_cosine")
    t = torch.tensor([0.1, 0.5, 0.9])
    x, eps = (
        torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(903)),
        torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(904)),
    )
    batched = P.convert(eps, "eps", "v", x, s(t))
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], P.convert(eps[i : i + 1], "eps", "v", x[i : i + 1], s(t[i])))


def test_unknown_prediction_raises() -> None:
    s = get_schedule("edm")
    with pytest.raises(ValueError, match="unknown prediction"):
        P.convert(torch.zeros(2, 2), "noise", "x0", torch.zeros(2, 2), s(1.0))
    with pytest.raises(ValueError, match="prediction"):
        FunctionModel(lambda x, t: x, s, prediction="sample")


def test_model_outputs_are_checked() -> None:
    """A model returning the wrong shape, NaN, or a non-tensor gets a clear error at the call site."""
    s = get_schedule("vp_linear")
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(905))
    cases = [
        (lambda x, t: x[:, :1], ValueError, "shape"),
        (lambda x, t: x * float("nan"), ValueError, "non-finite"),
        (lambda x, t: x.numpy(), TypeError, "not a tensor"),
    ]
    for fn, err, msg in cases:
        with pytest.raises(err, match=msg):
            predict_x0_eps(FunctionModel(fn, s, "eps"), x, torch.tensor(0.5))


def test_predict_converts_and_counting_model_counts() -> None:
    s = get_schedule("vp_linear")
    model = CountingModel(FunctionModel(lambda x, t: 0.5 * x, s, "x0"))
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(906))
    eps = predict(model, x, torch.tensor(0.3), "eps")
    v = s(0.3)
    _assert_close(eps, (x - v.alpha * 0.5 * x) / v.sigma, 10)
    assert model.calls == 1 and float(model.t_queried[0]) == 0.3
