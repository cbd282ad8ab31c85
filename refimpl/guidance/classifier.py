"""Classifier guidance, with a time-dependent classifier or a clean one applied to Tweedie's x0_hat, and calibration.

Classifier guidance (Dhariwal & Nichol 2021, arXiv:2105.05233v4, Sec. 4, Algorithm 2 in its DDIM form) adds
s grad_x log p(y | x_t) to the score, i.e. on eps

    eps_guided = eps - sigma_t s grad_x log p(y | x_t).                                               (1)

With the exact p(y | x_t) and s = 1 this is exactly the conditional model, so any sampler reaches p(x | y).
EluCD (Ma et al. 2023, arXiv:2310.11311v1, Sec. 3-4 [unverified section numbers]) uses instead an off-the-shelf
classifier of *clean* data evaluated on x0_hat(x_t), log p_clean(y | x0_hat(x_t)), differentiated through the
denoiser, and argues that such a classifier must be calibrated on the denoised inputs before its gradient is used.
The calibration here is temperature scaling (Guo et al. 2017, arXiv:1706.04599v2, Sec. 4.2) of the clean
classifier's logits at each time of the sampler's grid, fitted by maximum likelihood on labelled pairs
(x_t, y) -- one concrete reading of the paper's calibration step [unverified: the paper's pre-conditioning
also smooths the classifier's activations, which a mixture classifier does not have].

A classifier here is a function ``log_probs(x, t) -> (B, C)`` of log class probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._validation import as_positive_float, check_integer, check_labels, check_real_tensor
from refimpl.guidance.cfg import check_guidance_weight
from refimpl.models import DiffusionModel, check_model, predict
from refimpl.schedules import NoiseSchedule

__all__ = [
    "ClassifierGuidance",
    "LogProbs",
    "TemperatureTable",
    "classifier_guidance",
    "expected_calibration_error",
    "fit_temperature",
    "fit_temperature_table",
    "on_denoised",
]

LogProbs = Callable[[Tensor, Tensor], Tensor]


def _check_class(y: int | Tensor, n_classes: int) -> int | Tensor:
    """y as an int or a 1-D int64 tensor (one label per sample), or ValueError/TypeError naming y."""
    if isinstance(y, Tensor):
        if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"label y must be an int or a 1-D integer tensor, got {y.dtype} of shape {tuple(y.shape)}")
        if bool(((y < 0) | (y >= n_classes)).any()):
            raise ValueError(f"labels y must lie in [0, {n_classes}), got {y.tolist()}")
        return y.to(torch.long)
    if isinstance(y, bool) or not isinstance(y, int) or not 0 <= y < n_classes:
        raise ValueError(f"label y must be an integer in [0, {n_classes}), got {y!r}")
    return y


@dataclass
class ClassifierGuidance:
    """The eps-model of Eq. (1): ``model``'s eps minus sigma_t s grad log p(y | x_t), gradient by autograd."""

    model: DiffusionModel
    log_probs: LogProbs
    y: int | Tensor
    s: float
    n_classes: int

    prediction = "eps"

    @property
    def schedule(self) -> NoiseSchedule:
        return self.model.schedule

    def log_likelihood(self, x: Tensor, t: Tensor) -> Tensor:
        """log p(y | x_t) from the classifier: (B,)."""
        log_p = self.log_probs(x, t)
        return log_p[:, self.y] if isinstance(self.y, int) else log_p.gather(1, self.y[:, None])[:, 0]

    def grad_log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        """grad_x log p(y | x_t) from the classifier: (B, d)."""
        return grad_log(self.log_likelihood, x, t)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return guided_eps(self.model, x, t, self.s * self.grad_log_prob(x, t))


def grad_log(log_likelihood: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor) -> Tensor:
    """grad_x of a log-likelihood (x, t) -> (B,) by autograd, whatever the caller's grad mode: (B, d)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_likelihood(xg, t).sum(), xg)
    return grad


def guided_eps(model: DiffusionModel, x: Tensor, t: Tensor, score_shift: Tensor) -> Tensor:
    """Eq. (1) for any added score: ``model``'s eps minus sigma_t times ``score_shift`` (B, d)."""
    return predict(model, x, t, "eps") - model.schedule(t).sigma * score_shift


def classifier_guidance(
    model: DiffusionModel, log_probs: LogProbs, y: int | Tensor, s: float = 1.0, n_classes: int = 2
) -> ClassifierGuidance:
    """Guide ``model`` towards class y with scale s >= 0 (Eq. 1); y is one of the n_classes classes, or a (B,) tensor
    of them (one per sample of the batches the guided model is called on)."""
    check_model(model)
    if not callable(log_probs):
        raise TypeError(f"log_probs must be callable (x, t) -> (B, C), got {type(log_probs).__name__}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    return ClassifierGuidance(model, log_probs, _check_class(y, n_classes), check_guidance_weight(s, "s"), n_classes)


def on_denoised(model: DiffusionModel, clean_logits: Callable[[Tensor], Tensor], temperature: object = 1.0) -> LogProbs:
    """The classifier x_t -> log softmax(clean_logits(x0_hat(x_t, t)) / T(t)) (EluCD's off-the-shelf guidance).

    ``temperature`` is a positive number or a callable t -> T(t) (e.g. a fitted ``TemperatureTable``).
    The gradient flows through Tweedie's x0_hat = E[x_0 | x_t], so guidance sees the denoiser's Jacobian.
    """
    check_model(model)

    def log_probs(x: Tensor, t: Tensor) -> Tensor:
        T = temperature(t) if callable(temperature) else temperature
        return torch.log_softmax(clean_logits(predict(model, x, t, "x0")) / T, -1)

    return log_probs


def fit_temperature(logits: Tensor, labels: Tensor, bounds: tuple[float, float] = (1e-2, 1e2)) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on (logits, labels) (Guo et al. 2017, Sec. 4.2).

    The NLL is convex in 1/T, so its derivative in log T changes sign once; bisection on it to 1e-10 relative.
    """
    logits = check_real_tensor(logits, "logits", 2)
    labels = check_labels(labels, "labels", logits.shape[0], logits.shape[1])
    lo_b, hi_b = (as_positive_float(b, "bounds") for b in bounds)
    if not lo_b < hi_b:
        raise ValueError(f"bounds must be increasing, got {bounds}")

    def slope(log_t: float) -> float:  # d NLL / d(1/T) = E_softmax[logit] - logit_y, averaged
        p = torch.softmax(logits / torch.exp(torch.tensor(log_t)), -1)
        return float(((p * logits).sum(-1) - logits.gather(1, labels[:, None])[:, 0]).mean())

    lo, hi = (float(torch.log(torch.tensor(b))) for b in bounds)
    # slope decreases in log T (convexity in 1/T): > 0 means T is still too small.
    if slope(lo) <= 0:
        return bounds[0]
    if slope(hi) >= 0:
        return bounds[1]
    while hi - lo > 1e-10:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) > 0 else (lo, mid)
    return float(torch.exp(torch.tensor(0.5 * (lo + hi))))


@dataclass(frozen=True)
class TemperatureTable:
    """Temperatures fitted at the times of a grid; T(t) is the entry of the nearest grid time."""

    times: Tensor
    temperatures: Tensor

    def __call__(self, t: Tensor) -> Tensor:
        i = torch.argmin((self.times - torch.as_tensor(t, dtype=self.times.dtype).reshape(-1, 1)).abs(), -1)
        out = self.temperatures[i]
        return out.reshape(()) if torch.as_tensor(t).ndim == 0 else out[:, None]


def fit_temperature_table(
    model: DiffusionModel,
    clean_logits: Callable[[Tensor], Tensor],
    timesteps: Tensor,
    draw: Callable[[Tensor], tuple[Tensor, Tensor]],
) -> TemperatureTable:
    """Fit T(t) at each grid time from labelled noisy pairs ``draw(t) -> (x_t, y)``: the NLL-optimal temperature of
    clean_logits(x0_hat(x_t)) (the calibration step of EluCD as read here [unverified])."""
    check_model(model)
    temps = []
    for t in timesteps:
        x_t, y = draw(t)
        with torch.no_grad():
            temps.append(fit_temperature(clean_logits(predict(model, x_t, t, "x0")), y))
    return TemperatureTable(torch.as_tensor(timesteps, dtype=torch.float64), torch.tensor(temps, dtype=torch.float64))


def expected_calibration_error(log_probs: Tensor, labels: Tensor, n_bins: int = 10) -> float:
    """Binned ECE of the top-label confidence (Guo et al. 2017, Eq. 3): sum_b |B_b|/N |acc(B_b) - conf(B_b)|."""
    n_bins = check_integer(n_bins, "n_bins", 1)
    log_probs = check_real_tensor(log_probs, "log_probs", 2, log_weights=True)
    labels = check_labels(labels, "labels", log_probs.shape[0], log_probs.shape[1])
    conf, pred = log_probs.exp().max(-1)
    correct = (pred == labels).to(conf.dtype)
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    ece = torch.zeros((), dtype=conf.dtype)
    for b in range(n_bins):
        sel = bins == b
        if bool(sel.any()):
            ece = ece + sel.to(conf.dtype).mean() * (correct[sel].mean() - conf[sel].mean()).abs()
    return float(ece)
