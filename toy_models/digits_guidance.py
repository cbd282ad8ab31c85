"""Classifier guidance on the digits UNet: a guide classifier that is not the judge, and a UNet autograd flows through.

Classifier guidance needs a clean classifier to guide with, and the samples need a classifier to score them; if one
network did both, guidance would grade its own homework. The judge is the metric's convolutional classifier
(``toy_models.metrics``: two convolutions, trained by Adam on minibatches from seed 0). The guide here is another
model family fitted another way: softmax regression on the 64 pixels, logits = x W^T + b, fitted on the same
training split (``toy_models.digits.digits_split``) by minimising the penalised mean negative log-likelihood

    L(W, b) = -(1/N) sum_n log softmax(x_n W^T + b)_{y_n} + (lam / 2) (|W|^2 + |b|^2)

in float64 with full-batch L-BFGS. L is strictly convex (a convex NLL plus a strictly convex penalty), so the fit is
the unique minimiser, reproduced to the solver's tolerance on any machine: no checkpoint is needed, and
``fit_guide_classifier()`` regenerates it in well under a second of CPU time.

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

__all__ = ["GUIDE_PENALTY", "GradientUNet", "GuideClassifier", "fit_guide_classifier", "guide_objective"]

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


@lru_cache(maxsize=1)
def fit_guide_classifier(lam: float = GUIDE_PENALTY) -> GuideClassifier:
    """The unique minimiser of L on the training split, by L-BFGS from zero (deterministic; cached).

    Regenerate with ``python -c "from toy_models.digits_guidance import fit_guide_classifier; fit_guide_classifier()"``.
    """
    if not lam > 0:
        raise ValueError(f"lam must be positive (it makes the objective strictly convex), got {lam}")
    x, y = digits_images()
    train, _ = digits_split()
    x, y = x[train], y[train]
    params = torch.zeros(10, 65, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [params], lr=1.0, max_iter=1000, tolerance_grad=1e-9, tolerance_change=0.0, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = guide_objective(params, x, y, lam)
        loss.backward()
        return loss

    opt.step(closure)
    p = params.detach()
    return GuideClassifier(p[:, :-1].clone(), p[:, -1].clone())


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
