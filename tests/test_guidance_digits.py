"""Calibrated classifier guidance on the trained digits UNet, judged by a classifier that does not guide.

* the guide (softmax regression) is the unique minimiser of its strictly convex objective: its gradient vanishes
  to the solver's tolerance, so it is reproducible without a checkpoint;
* ``GradientUNet`` is the shipped unconditional model, with autograd: equal outputs (float32 round-off, none here:
  the same network on the same float32 inputs), and a gradient;
* on held-out noisy digits, per-time temperature scaling of the guide on x0_hat (fitted on training digits) lowers
  the held-out negative log-likelihood: the paired mean difference exceeds Z of its CLT standard errors (the ECE,
  a binned statistic without such a bound at this size, is measured in the notebook);
* calibrated guidance makes the *judge* (the metric's CNN, a different function from the guide) assign guided
  samples to the requested class far more often than chance 1/10: more than Z binomial standard errors above it.
"""

from __future__ import annotations

import math

import torch
from tolerances import Z, clt_bound

from refimpl import grids
from refimpl.guidance import classifier_guidance, fit_temperature_table, on_denoised
from refimpl.samplers import sample_ddim
from toy_models.digits import digits_images, digits_split
from toy_models.digits_guidance import GUIDE_GRAD_TOL, GradientUNet, fit_guide_classifier, guide_objective
from toy_models.metrics import load_metric
from toy_models.trained import load_unet


def _noisy(schedule, idx, n, gen):
    x, y = digits_images()

    def draw(t):
        pick = idx[torch.randint(len(idx), (n,), generator=gen)]
        v = schedule(t)
        return v.alpha * x[pick] + v.sigma * torch.randn(n, 64, generator=gen, dtype=torch.float64), y[pick]

    return draw


def test_guide_is_the_unique_minimiser() -> None:
    guide = fit_guide_classifier()
    x, y = digits_images()
    train, _ = digits_split()
    params = torch.cat([guide.W, guide.b[:, None]], 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(guide_objective(params, x[train], y[train]), params)
    assert float(grad.abs().max()) <= 2 * GUIDE_GRAD_TOL  # the solver stops there; x2 for a recomputed gradient


def test_gradient_unet_is_the_unconditional_model_with_autograd() -> None:
    model = load_unet().model(None)
    grad_model = GradientUNet(model)
    x, t = torch.randn(3, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64), torch.tensor(0.4)
    assert torch.equal(grad_model(x, t), model(x, t))
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(grad_model(xg, t).pow(2).sum(), xg)
    assert bool(torch.isfinite(g).all()) and float(g.abs().max()) > 0


def test_calibration_lowers_the_nll_and_calibrated_guidance_convinces_the_judge() -> None:
    model = load_unet().model(None)
    schedule, guide, judge = model.schedule, fit_guide_classifier(), load_metric()
    train, held_out = digits_split()
    x, _ = digits_images()
    assert bool((judge.predict(x[held_out].float()) != guide(x[held_out]).argmax(1)).any())  # two functions
    gen = torch.Generator().manual_seed(3)
    ts = grids.uniform_t(schedule, 6)
    table = fit_temperature_table(model, guide, ts[:-1], _noisy(schedule, train, 60, gen))
    x_t, y_t = _noisy(schedule, held_out, 300, gen)(ts[1])  # the first guided step
    with torch.no_grad():  # the log-probabilities guidance uses: with the fitted temperature, and raw
        log_p_cal = on_denoised(model, guide, table)(x_t, ts[1])
    # log_softmax(logits / T) times T is log_softmax(logits) up to a constant per row: one UNet pass serves both
    log_p_raw = torch.log_softmax(log_p_cal * table(ts[1]), -1)
    nll_raw = -log_p_raw.gather(1, y_t[:, None])[:, 0]
    nll_cal = -log_p_cal.gather(1, y_t[:, None])[:, 0]
    gain = nll_raw - nll_cal
    assert float(gain.mean()) > clt_bound(float(gain.std()), len(gain))
    n = 30
    labels = torch.arange(n) % 10
    x_T = torch.randn(n, 64, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    guided = classifier_guidance(GradientUNet(model), on_denoised(GradientUNet(model), guide, table), labels, 3.0, 10)
    accuracy = judge.accuracy(sample_ddim(guided, x_T, ts).float(), labels)
    assert accuracy > 0.1 + Z * math.sqrt(0.1 * 0.9 / n)
