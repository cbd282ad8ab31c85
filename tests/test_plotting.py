"""Plotting helpers draw labelled axes and reject malformed input; digits helpers are exact."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from refimpl.plotting import density_grid, plot_convergence, plot_density, plot_trajectories, sized
from refimpl.reference import convergence_order
from toy_models.digits import dct_basis, gaussian_fit


def test_density_grid_integrates_a_gaussian_to_one() -> None:
    """A standard 2-D Gaussian on [-8, 8]^2: the Riemann sum of the grid is 1 to quadrature accuracy."""
    log_p = lambda p: -0.5 * (p**2).sum(-1) - torch.log(torch.tensor(2 * torch.pi))  # noqa: E731
    X, _, P = density_grid(log_p, (-8, 8, -8, 8), n=201)
    h = X[0, 1] - X[0, 0]
    assert P.sum() * h * h == pytest.approx(1.0, abs=1e-6)


def test_plots_label_their_axes() -> None:
    fig, axes = plt.subplots(1, 3)
    plot_density(axes[0], lambda p: -(p**2).sum(-1), (-1, 1, -1, 1), n=10)
    plot_trajectories(axes[1], torch.randn(5, 3, 2))
    steps = (8, 16, 32)
    line = plot_convergence(axes[2], convergence_order(steps, [n**-2.0 for n in steps]), "toy")
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel()
    assert axes[2].get_xscale() == "log" and "slope -2.00" in line.get_label()
    plt.close(fig)


def test_plot_trajectories_rejects_bad_shapes() -> None:
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="shape"):
        plot_trajectories(ax, torch.randn(5, 3))
    plt.close(fig)


def test_sized_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFIMPL_QUICK", "1")
    assert sized(1000, 10) == 10
    monkeypatch.delenv("REFIMPL_QUICK")
    assert sized(1000, 10) == 1000


def test_dct_basis_is_orthonormal_and_gaussian_fit_has_the_sample_moments() -> None:
    basis, freq = dct_basis(8)
    torch.testing.assert_close(basis @ basis.T, torch.eye(64), rtol=0, atol=64 * 2.3e-16 * 8)
    assert float(freq[0]) == 0.0 and freq.shape == (64,)
    x = torch.randn(500, 3)
    fit = gaussian_fit(x, ridge=1e-3)
    torch.testing.assert_close(fit.means[0], x.mean(0))
    torch.testing.assert_close(fit.covariances[0], torch.cov(x.T) + 1e-3 * torch.eye(3))
    with pytest.raises(ValueError, match="ridge"):
        gaussian_fit(x, ridge=0.0)
