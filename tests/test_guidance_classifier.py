"""Classifier guidance (exact p(y | x_t) and a clean classifier on x0_hat) and its calibration (EluCD).

* with the exact time-dependent classifier and s = 1 the guided model is the conditional model (round-off), so
  DDIM on it reaches p(x | y): W1 shrinks at first order with the steps;
* temperature fitting solves its first-order condition and recovers a planted temperature;
* calibration of the clean classifier on x0_hat lowers the ECE by more than the ECE's own CLT noise and lowers the
  time-integrated guidance error against the exact gradient;
* bad input: negative scale, a label outside the classes, no examples.
"""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import FIRST_ORDER_HALVING, IDENTITY_RTOL, Z

from refimpl import grids
from refimpl.guidance import (
    classifier_guidance,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_table,
    on_denoised,
)
from refimpl.models import predict
from refimpl.samplers import sample_ddim
from refimpl.schedules import get_schedule
from toy_models import ExactModel, labelled_pair
from toy_models.targets import (
    class_log_probs,
    classifier_grad,
    conditional,
    grid_density,
    labelled_line,
    sample_labelled,
    wasserstein_1d,
)


def _exact_log_probs(model: ExactModel):
    return lambda x, t: class_log_probs(model.mixture, x, *model._a_s(t))


@pytest.mark.parametrize("schedule_name", ["vp_linear", "edm"])
def test_exact_classifier_guidance_is_the_conditional_model(schedule_name: str) -> None:
    pair, s = labelled_pair(), get_schedule(schedule_name)
    model = ExactModel(pair, s)
    guided = classifier_guidance(model, _exact_log_probs(model), 1, 1.0)
    t = torch.tensor(0.5 * (s.t_min + s.t_max))
    x = model.sample_xt(16, t, torch.Generator().manual_seed(0))[1]
    cond = predict(ExactModel(conditional(pair, 1), s), x, t, "eps")
    torch.testing.assert_close(guided(x, t), cond, rtol=IDENTITY_RTOL, atol=IDENTITY_RTOL)
    # a scale s multiplies the exact guidance direction
    twice = classifier_guidance(model, _exact_log_probs(model), 1, 2.0)(x, t)
    direction = -s(t).sigma * classifier_grad(pair, x, *model._a_s(t), 1)
    torch.testing.assert_close(twice - model(x, t), 2 * direction, rtol=IDENTITY_RTOL, atol=IDENTITY_RTOL)


def test_exact_classifier_guidance_reaches_the_conditional_law() -> None:
    """W1 (deterministic, through quantile levels) to p(x | y) shrinks at first order with the DDIM steps."""
    line, s = labelled_line(), get_schedule("vp_linear")
    model = ExactModel(line, s)
    u = (torch.arange(200, dtype=torch.float64) + 0.5) / 200
    a, sg = model._a_s(s.t_max)
    x = grid_density(lambda y: conditional(line, 1).log_prob_t(y, a, sg), [-8.0], [8.0], 1600).quantile(u)[:, None]
    target = grid_density(conditional(line, 1).log_prob, [-6.0], [8.0], 2800).quantile(u)
    guided = classifier_guidance(model, _exact_log_probs(model), 1)
    d = [wasserstein_1d(sample_ddim(guided, x, grids.timesteps(s, n))[:, 0].sort().values, target) for n in (8, 16)]
    assert d[1] <= FIRST_ORDER_HALVING * d[0], d


def test_fit_temperature_recovers_a_planted_temperature_and_zeroes_the_nll_slope() -> None:
    g = torch.Generator().manual_seed(1)
    n, T_true = 20000, 3.0
    logits = 4 * torch.randn(n, 3, generator=g)
    labels = torch.multinomial(torch.softmax(logits / T_true, -1), 1, generator=g)[:, 0]
    T = fit_temperature(logits, labels)
    p = torch.softmax(logits / T, -1)
    slope = float(((p * logits).sum(-1) - logits.gather(1, labels[:, None])[:, 0]).mean())
    assert abs(slope) < 1e-8 * float(logits.abs().mean())
    # the NLL-optimal temperature of n draws is within a few standard errors of the planted one (delta method:
    # relative SE ~ 1 / sqrt(n Fisher info) < 1 / sqrt(n / 10) here, a loose policy bound)
    assert abs(T / T_true - 1) < Z / math.sqrt(n / 10)
    with pytest.raises(ValueError, match="logits must not be empty"):
        fit_temperature(logits[:0], labels[:0])


def test_calibration_lowers_ece_and_the_guidance_error() -> None:
    line, s = labelled_line(), get_schedule("vp_linear")
    model = ExactModel(line, s)
    g = torch.Generator().manual_seed(2)
    n, n_bins = 4000, 10

    def draw(t):
        x0, y = sample_labelled(line, n, g)
        a, sg = model._a_s(t)
        return a * x0 + sg * torch.randn(x0.shape, generator=g), y

    def clean(x0):
        return class_log_probs(line, x0, 1.0, 0.0)

    ts = torch.tensor([0.9, 0.79, 0.65])  # where the clean classifier on x0_hat is overconfident
    table = fit_temperature_table(model, clean, ts, draw)
    raw, cal = on_denoised(model, clean, 1.0), on_denoised(model, clean, table)
    # ECE noise: each bin's accuracy has SE <= 0.5 / sqrt(n_b), so the ECE moves by at most
    # Z * 0.5 * sum_b sqrt(n_b) / n <= Z * 0.5 * sqrt(n_bins / n) (Cauchy-Schwarz); twice that for a difference
    ece_noise = 2 * Z * 0.5 * math.sqrt(n_bins / n)
    err = {"raw": 0.0, "cal": 0.0}
    for t in ts:
        x_t, y = draw(t)
        with torch.no_grad():
            gap = expected_calibration_error(raw(x_t, t), y) - expected_calibration_error(cal(x_t, t), y)
        assert gap > ece_noise, (float(t), gap, ece_noise)
        exact = classifier_grad(line, x_t[:400], *model._a_s(t), 1)
        for name, lp in (("raw", raw), ("cal", cal)):
            guided = classifier_guidance(model, lp, 1)
            err[name] += float(((guided.grad_log_prob(x_t[:400], t) - exact) ** 2).sum(-1).mean())
    assert err["cal"] < err["raw"], err


def test_bad_input_is_refused() -> None:
    pair, s = labelled_pair(), get_schedule("vp_linear")
    model = ExactModel(pair, s)
    with pytest.raises(ValueError, match="s must"):
        classifier_guidance(model, _exact_log_probs(model), 1, -1.0)
    for bad in (2, -1, 1.0):
        with pytest.raises(ValueError, match="label y"):
            classifier_guidance(model, _exact_log_probs(model), bad)
    with pytest.raises(TypeError, match="log_probs"):
        classifier_guidance(model, None, 1)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), 0)
