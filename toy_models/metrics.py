"""Sample quality on the 8x8 digits: a small shipped classifier, its accuracy and "digits-FD".

The idea is FID's (Heusel et al. 2017, arXiv:1706.08500, the "Fréchet Inception Distance" of its experiments) at the
scale of the digits: a convolutional classifier trained on the training split of
``toy_models.digits.digits_split`` supplies (a) labels, so a class-conditional sample can be checked
against the class it was asked for, and (b) features (its penultimate layer), whose mean and covariance
on generated images are compared with those on the held-out images by the Fréchet distance between
Gaussians (Dowson & Landau 1982, "The Fréchet distance between multivariate normal distributions"):

    d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}).

The number only means something next to its reference points, so ``DigitsMetric`` also gives the
*floor* (real training images, as many as generated and class-balanced like them, against the held-out
ones: what a generator that reproduced the data law exactly would score, sampling noise included) and the
*ceiling* (images of uniform noise). All three depend on the number n of images: the Fréchet distance of
finite samples is biased upwards by a term that shrinks with n and depends on the generator (Chong & Forsyth
2020, "Effectively Unbiased FID and Inception Score and where to find them", arXiv:1911.07023), so compare
only figures at equal n; ``report`` gives all three at the n of its input.
Generated images are clipped to [-1, 1], the data range, before they are scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "FLOOR_DRAWS",
    "ClassifierConfig",
    "DigitsClassifier",
    "DigitsMetric",
    "frechet_distance",
    "gaussian_stats",
    "load_metric",
]

#: The floor is the mean over this many random training subsets (one subset of 200 varies by about 20%).
FLOOR_DRAWS = 5


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and training recipe of the digits classifier; stored in its checkpoint."""

    channels: int = 16
    features: int = 32
    heldout_every: int = 5
    steps: int = 1500
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    eval_every: int = 100


class DigitsClassifier(nn.Module):
    """Two 3x3 convolutions (8x8 -> 4x4), a ``features``-wide ReLU layer (the FD features), 10 logits."""

    def __init__(self, config: ClassifierConfig, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        f = {"dtype": dtype}  # float32 weights, whatever the caller's default dtype
        c = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1, **f),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, **f),  # 8x8 -> 4x4
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * c * 16, config.features, **f),
            nn.ReLU(),
        )
        self.head = nn.Linear(config.features, 10, **f)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, features) of images (B, 1, 8, 8)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, 10)."""
        return self.head(self.body(x))


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean (F,) and unbiased covariance (F, F) of features (n, F), in float64."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (n >= 2, F), got {tuple(features.shape)}")
    f = features.to(torch.float64)
    return f.mean(0), torch.cov(f.T)


def _sqrt_psd(a: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix, through its eigendecomposition."""
    eigvals, eigvecs = torch.linalg.eigh(0.5 * (a + a.mT))
    return (eigvecs * eigvals.clamp_min(0).sqrt()) @ eigvecs.mT


def frechet_distance(mu_1: Tensor, cov_1: Tensor, mu_2: Tensor, cov_2: Tensor) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu_1, cov_1) and N(mu_2, cov_2).

    |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}) (Dowson & Landau 1982; the FID of
    Heusel et al. 2017, arXiv:1706.08500, writes the cross term tr((S_1 S_2)^{1/2}), the same number since
    S_1 S_2 is similar to S_1^{1/2} S_2 S_1^{1/2}). The cross term's matrix is symmetric PSD, so both roots
    come from ``eigh`` in float64 (no complex ``sqrtm``); the trace of its root is the sum of the square roots
    of its eigenvalues.
    """
    mu_1, cov_1, mu_2, cov_2 = (v.to(torch.float64) for v in (mu_1, cov_1, mu_2, cov_2))
    if mu_1.shape != mu_2.shape or cov_1.shape != cov_2.shape or cov_1.shape != (*mu_1.shape, *mu_1.shape):
        raise ValueError(
            f"mismatched shapes: means {tuple(mu_1.shape)}, {tuple(mu_2.shape)}, covariances "
            f"{tuple(cov_1.shape)}, {tuple(cov_2.shape)}"
        )
    root_1 = _sqrt_psd(cov_1)
    cross = torch.linalg.eigvalsh(root_1 @ cov_2 @ root_1).clamp_min(0).sqrt().sum()
    d2 = (mu_1 - mu_2).pow(2).sum() + torch.trace(cov_1) + torch.trace(cov_2) - 2.0 * cross
    return float(d2.clamp_min(0))


@dataclass
class DigitsMetric:
    """The shipped classifier with the digits split: accuracy, digits-FD and its floor and ceiling."""

    classifier: DigitsClassifier
    train_images: Tensor  # (1442, 1, 8, 8)
    train_labels: Tensor
    heldout_images: Tensor  # (355, 1, 8, 8)
    heldout_labels: Tensor

    def __post_init__(self) -> None:
        self.classifier.eval()
        self.heldout_stats = gaussian_stats(self.features(self.heldout_images))
        self.train_features = self.features(self.train_images)

    def _prepare(self, images: Tensor) -> Tensor:
        from toy_models.digits import as_images

        if not isinstance(images, Tensor) or not images.is_floating_point():
            raise TypeError(f"images must be a floating tensor, got {type(images).__name__}")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("images hold non-finite values")
        return as_images(images).to(torch.float32).clamp(-1.0, 1.0)

    def features(self, images: Tensor) -> Tensor:
        """Classifier features (n, F) of images (n, 1, 8, 8) or (n, 64), clipped to [-1, 1]."""
        with torch.no_grad():
            return self.classifier.features(self._prepare(images))

    def predict(self, images: Tensor) -> Tensor:
        """The classifier's labels (n,) for images."""
        with torch.no_grad():
            return self.classifier(self._prepare(images)).argmax(1)

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        """The fraction of images the classifier assigns to their requested class ``labels`` (n,)."""
        labels = torch.as_tensor(labels)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"need one label per image: {tuple(labels.shape)} labels, {images.shape[0]} images")
        return float((self.predict(images) == labels.to(torch.long)).to(torch.float64).mean())

    def fd(self, images: Tensor) -> float:
        """digits-FD of images against the held-out images."""
        return frechet_distance(*gaussian_stats(self.features(images)), *self.heldout_stats)

    def floor_draws(self, n: int, draws: int = FLOOR_DRAWS, seed: int = 0) -> Tensor:
        """digits-FD of ``draws`` class-balanced random sets of n training images (n // 10 of each class, drawn
        without replacement from a seeded generator) against the held-out ones: (draws,) float64."""
        per_class = n // 10
        counts = torch.bincount(self.train_labels, minlength=10)
        if n % 10 or not 2 <= per_class <= int(counts.min()):
            raise ValueError(f"n must be a multiple of 10 between 20 and {10 * int(counts.min())}, got {n}")
        g = torch.Generator().manual_seed(seed)
        members = [torch.nonzero(self.train_labels == c).squeeze(1) for c in range(10)]
        out = torch.zeros(draws, dtype=torch.float64)
        for i in range(draws):
            pick = torch.cat([m[torch.randperm(m.numel(), generator=g)[:per_class]] for m in members])
            out[i] = frechet_distance(*gaussian_stats(self.train_features[pick]), *self.heldout_stats)
        return out

    def floor(self, n: int, draws: int = FLOOR_DRAWS, seed: int = 0) -> float:
        """The floor of digits-FD at n images: the mean of ``floor_draws`` (real training images vs held-out)."""
        return float(self.floor_draws(n, draws, seed).mean())

    def ceiling(self, n: int, seed: int = 0) -> float:
        """digits-FD of n images of i.i.d. uniform [-1, 1] pixels against the held-out ones."""
        g = torch.Generator().manual_seed(seed)
        return self.fd(2.0 * torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float32) - 1.0)

    def report(self, images: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """accuracy (if labels are given), fd, and the floor and ceiling at the same sample size."""
        n = images.shape[0]
        out = {"fd": self.fd(images), "fd_floor": self.floor(n), "fd_ceiling": self.ceiling(n)}
        if labels is not None:
            out["accuracy"] = self.accuracy(images, labels)
        return out


def load_metric(path: str | None = None) -> DigitsMetric:
    """The digits metric with the classifier at ``path``, by default the committed one
    (``toy_models/checkpoints/digits_classifier.pt``, which must hold the recipe ``ClassifierConfig()``)."""
    from toy_models.digits import as_images, digits_images, digits_split
    from toy_models.trained import CHECKPOINT_DIR, load_checkpoint

    if path is None:  # the committed classifier must hold the code's recipe
        ckpt = load_checkpoint(CHECKPOINT_DIR / "digits_classifier.pt", "classifier", expect=ClassifierConfig())
    else:
        ckpt = load_checkpoint(path, "classifier")
    x, y = digits_images()
    train, held_out = digits_split()
    images = as_images(x.to(torch.float32))
    return DigitsMetric(ckpt.net, images[train], y[train], images[held_out], y[held_out])
