"""Classifier guidance on the digits UNet: a guide classifier that is not the judge, and a UNet autograd flows through.

Classifier guidance needs a clean classifier to guide with, and the samples need a classifier to score them; if one
network did both, guidance would grade its own homework. The judge is the metric's convolutional classifier
(``toy_models.metrics``: two convolutions, trained by Adam on minibatches from seed 0). The guide here is another
model family fitted another way: softmax regression on the 64 pixels, logits = x W^T + b, fitted on the same
training split (``toy_models.digits.digits_split``) by minimising the penalised mean negative log-likelihood

    L(W, b) = -(1/N) sum_n log softmax(x_n W^T + b)_{y_n} + (lam / 2) (|W|^2 + |b|^2)

in float64 by Newton's method (conjugate gradients on Hessian-vector products, Armijo backtracking). L is strictly
convex (a convex NLL plus a strictly convex penalty), so the fit is the unique minimiser, reproduced to the solver's
tolerance on any machine: no checkpoint is needed, and ``fit_guide_classifier()`` regenerates it in about a second
of CPU time (``torch.optim`` is avoided on purpose: importing it pulls in ``torch._dynamo``, seconds of CPU).

``GradientUNet`` is the unconditional UNet (null label) as an eps-model *without* ``torch.no_grad``, so guidance
through Tweedie's x0_hat (EluCD, ``refimpl.guidance.on_denoised``) can differentiate the denoiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from refimpl.schedules import NoiseSchedule
from toy_models.digits import as_images, digits_images, digits_split
from toy_models.trained import TrainedModel, network_time

__all__ = [
    "GUIDE_GRAD_TOL",
    "GUIDE_PENALTY",
    "GradientUNet",
    "GuideClassifier",
    "fit_guide_classifier",
    "guide_objective",
]

#: The L2 penalty lam of the guide's objective.
GUIDE_PENALTY = 1e-3


@dataclass(frozen=True)
class GuideClassifier:
    """Softmax regression on flat digits: ``logits(x) = x W^T + b`` for x (B, 64) or images (B, 1, 8, 8)."""

    W: Tensor  # (10, 64)
    b: Tensor  # (10,)

    def __call__(self, x: Tensor) -> Tensor:
        """Class logits (B, 10), in the dtype of x."""
        flat = x.reshape(x.shape[0], -1)
        return flat @ self.W.to(flat.dtype).T + self.b.to(flat.dtype)


def guide_objective(params: Tensor, x: Tensor, y: Tensor, lam: float = GUIDE_PENALTY) -> Tensor:
    """The penalised mean NLL L(W, b) of the module docstring; ``params`` is (10, 65): W with b as last column."""
    logits = x @ params[:, :-1].T + params[:, -1]
    nll = torch.nn.functional.cross_entropy(logits, y)
    return nll + 0.5 * lam * params.pow(2).sum()


#: Newton's method stops once every entry of grad L is at most this (the first-order condition of the minimum).
GUIDE_GRAD_TOL = 1e-10


@lru_cache(maxsize=1)
def fit_guide_classifier(lam: float = GUIDE_PENALTY) -> GuideClassifier:
    """The unique minimiser of L on the training split, by Newton-CG from zero (deterministic; cached).

    Regenerate with ``python -c "from toy_models.digits_guidance import fit_guide_classifier; fit_guide_classifier()"``.
    """
    if not lam > 0:
        raise ValueError(f"lam must be positive (it makes the objective strictly convex), got {lam}")
    x, y = digits_images()
    train, _ = digits_split()
    X = torch.cat([x[train], torch.ones(len(train), 1, dtype=torch.float64)], 1)  # (N, 65): pixels and a 1
    Y = torch.nn.functional.one_hot(y[train], 10).to(torch.float64)
    N = X.shape[0]

    def loss_grad(theta: Tensor) -> tuple[float, Tensor, Tensor]:
        log_p = torch.log_softmax(X @ theta.T, -1)
        p = log_p.exp()
        loss = float(-(Y * log_p).sum() / N + 0.5 * lam * theta.pow(2).sum())
        return loss, (p - Y).T @ X / N + lam * theta, p

    def hess_vec(p: Tensor, v: Tensor) -> Tensor:  # (1/N) sum_n (diag p_n - p_n p_n^T) (v x_n) x_n^T + lam v
        d = X @ v.T
        return (p * d - p * (p * d).sum(-1, keepdim=True)).T @ X / N + lam * v

    theta = torch.zeros(10, 65, dtype=torch.float64)
    for _ in range(100):
        loss, grad, p = loss_grad(theta)
        if float(grad.abs().max()) <= GUIDE_GRAD_TOL:
            break
        step, r = torch.zeros_like(theta), -grad  # conjugate gradients on H step = -grad
        d, rr = r.clone(), float(r.pow(2).sum())
        for _ in range(500):
            Hd = hess_vec(p, d)
            a = rr / float((d * Hd).sum())
            step, r = step + a * d, r - a * Hd
            rr_new = float(r.pow(2).sum())
            if rr_new <= 1e-6 * min(1.0, rr**0.5) * float(grad.pow(2).sum()):
                break
            d, rr = r + (rr_new / rr) * d, rr_new
        size, slope = 1.0, float((grad * step).sum())
        while loss_grad(theta + size * step)[0] > loss + 1e-4 * size * slope and size > 1e-8:
            size /= 2
        theta = theta + size * step
    return GuideClassifier(theta[:, :-1].clone(), theta[:, -1].clone())


@dataclass
class GradientUNet:
    """The unconditional eps-model of a class-conditional ``TrainedModel`` (its null label), differentiable in x.

    Same network time and float32 network as ``TrainedModel.__call__``, but autograd flows through it.
    """

    model: TrainedModel
    prediction = "eps"

    @property
    def schedule(self) -> NoiseSchedule:
        return self.model.schedule

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        net = self.model.net
        s = network_time(self.schedule, torch.as_tensor(t)).to(torch.float32).expand(x.shape[0]).contiguous()
        labels = torch.full((x.shape[0],), net.null_label, dtype=torch.long)
        return net(as_images(x.to(torch.float32)), s, labels).reshape(x.shape).to(x.dtype)
