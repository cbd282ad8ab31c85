"""The digits sample-quality metric: the Fréchet distance formula, and that the shipped classifier is sane."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from tolerances import CLASSIFIER_MIN_ACCURACY, FD_FLOOR_OVER_CEILING, IDENTITY_RTOL

from toy_models.metrics import ClassifierConfig, frechet_distance, gaussian_stats, load_metric
from toy_models.trained import CHECKPOINT_DIR, load_checkpoint


@pytest.fixture(scope="module")
def metric():
    return load_metric()


def _random_spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    """Against the textbook formula with scipy's general matrix square root (an independent implementation)."""
    d = 12
    g = torch.Generator().manual_seed(0)
    mu_1, mu_2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    c_1, c_2 = _random_spd(d, 1), _random_spd(d, 2)
    cross = scipy.linalg.sqrtm(c_1.numpy() @ c_2.numpy()).real
    oracle = float(((mu_1 - mu_2) ** 2).sum()) + np.trace(c_1.numpy() + c_2.numpy() - 2 * cross)
    assert frechet_distance(mu_1, c_1, mu_2, c_2) == pytest.approx(oracle, rel=1e3 * IDENTITY_RTOL)
    # Symmetric in its two arguments, zero between a Gaussian and itself.
    assert frechet_distance(mu_2, c_2, mu_1, c_1) == pytest.approx(oracle, rel=1e3 * IDENTITY_RTOL)
    assert frechet_distance(mu_1, c_1, mu_1, c_1) == pytest.approx(0.0, abs=1e3 * IDENTITY_RTOL * float(c_1.trace()))


def test_frechet_distance_of_commuting_covariances_is_the_sum_of_squared_root_gaps() -> None:
    """Diagonal covariances: d^2 = |mu_1 - mu_2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    a, b = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64), torch.tensor([1.0, 0.25, 3.0], dtype=torch.float64)
    mu_1, mu_2 = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64)
    expected = 5.0 + float(((a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(mu_1, torch.diag(a), mu_2, torch.diag(b)) == pytest.approx(expected, rel=IDENTITY_RTOL)


def test_frechet_distance_rejects_mismatched_shapes() -> None:
    eye = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="mismatched shapes"):
        frechet_distance(torch.zeros(3), eye, torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match=r"shape \(n >= 2, F\)"):
        gaussian_stats(torch.zeros(1, 3))


def test_classifier_is_accurate_on_the_held_out_split(metric) -> None:
    accuracy = metric.accuracy(metric.heldout_images, metric.heldout_labels)
    assert accuracy > CLASSIFIER_MIN_ACCURACY
    ckpt = load_checkpoint(CHECKPOINT_DIR / "digits_classifier.pt", "classifier", expect=ClassifierConfig())
    assert accuracy == pytest.approx(float(ckpt.log["heldout_accuracy"][-1]), abs=1.5 / len(metric.heldout_labels))


def test_wrong_labels_score_near_chance(metric) -> None:
    """Asking for the next class: the classifier must disagree, so accuracy measures the requested class."""
    shifted = (metric.heldout_labels + 1) % 10
    assert metric.accuracy(metric.heldout_images, shifted) < 1.0 - CLASSIFIER_MIN_ACCURACY


@pytest.mark.parametrize("n", [100, 350])
def test_fd_floor_is_far_below_the_ceiling(metric, n: int) -> None:
    floor, ceiling = metric.floor(n), metric.ceiling(n)
    assert 0 < floor < FD_FLOOR_OVER_CEILING * ceiling, (floor, ceiling)
    assert metric.fd(metric.heldout_images) == pytest.approx(0.0, abs=1e3 * IDENTITY_RTOL * ceiling)


def test_report_and_bad_input(metric) -> None:
    images = metric.heldout_images[:100]
    report = metric.report(images, metric.heldout_labels[:100])
    assert set(report) == {"fd", "fd_floor", "fd_ceiling", "accuracy"}
    with pytest.raises(ValueError, match="multiple of 10"):
        metric.floor(55)
    with pytest.raises(ValueError, match="one label per image"):
        metric.accuracy(images, metric.heldout_labels[:5])
    with pytest.raises(ValueError, match="non-finite"):
        metric.fd(torch.full((10, 64), float("nan")))
    with pytest.raises(TypeError, match="floating tensor"):
        metric.fd(torch.zeros(10, 64, dtype=torch.long))
