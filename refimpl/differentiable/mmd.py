"""MMD-DDM: the unbiased MMD^2 estimator, its population value between Gaussians, and fine-tuning through DDIM.

Aiello et al. (2023, arXiv:2301.07969v1, Sec. 3, Eq. 6-7) fine-tune a diffusion model so that samples of a T'-step
sampler match the data in maximum mean discrepancy, backpropagating through the sampler. The unbiased estimator of
MMD^2 between samples x (m points) and y (n points) is (Gretton et al. 2012, JMLR 13, Lemma 6)

    MMD_u^2 = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
              - 2 sum_{i,j} k(x_i, y_j) / (m n).

For the RBF kernel k(x, y) = exp(-|x - y|^2 / (2 l^2)) and X ~ N(m_1, S_1), Y ~ N(m_2, S_2) independent,
X - Y ~ N(delta, S), delta = m_1 - m_2, S = S_1 + S_2, and a Gaussian integral gives

    E k(X, Y) = det(I + S / l^2)^(-1/2) exp(-delta^T (S + l^2 I)^(-1) delta / 2),                            (1)

so the population MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y) is closed-form. The paper's kernel is KID's
polynomial (gamma <x, y> + 1)^3 on Inception features; here the RBF kernel on raw 2-D coordinates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from refimpl._validation import as_finite_float, check_finite_result, check_tensor
from refimpl.differentiable._optim import Adam
from refimpl.models import DiffusionModel
from refimpl.samplers import sample_ddim

__all__ = ["finetune_mmd", "gaussian_rbf_expectation", "mmd2_gaussians", "mmd2_unbiased", "rbf_kernel"]


def _check_bandwidth(bandwidth: float) -> float:
    """``bandwidth`` as a positive finite float whose square (the kernel's denominator) neither overflows nor
    underflows."""
    value = as_finite_float(bandwidth.detach() if isinstance(bandwidth, Tensor) else bandwidth, "bandwidth")
    if not 1e-150 < value < 1e150:
        raise ValueError(f"bandwidth must be positive, with a finite nonzero square, got {value}")
    return value


def _check_points(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """x (m, d) and y (n, d) as finite real floating tensors with the same d."""
    x, y = check_tensor(x, "x", ndim=2), check_tensor(y, "y", ndim=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (m, d) and (n, d) with one d, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


def rbf_kernel(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    """k(x_i, y_j) = exp(-|x_i - y_j|^2 / (2 l^2)): (m, n)."""
    bandwidth = _check_bandwidth(bandwidth)
    x, y = _check_points(x, y)
    return check_finite_result(torch.exp(-(torch.cdist(x, y) ** 2) / (2 * bandwidth**2)), "x and y (overflow)")


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    """Gretton et al. (2012), Lemma 6: the unbiased MMD^2 of samples x (m, d) and y (n, d), m, n >= 2."""
    x, y = _check_points(x, y)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"x and y need at least two points each, got {m} and {n}")
    k_xx, k_yy = rbf_kernel(x, x, bandwidth), rbf_kernel(y, y, bandwidth)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * rbf_kernel(x, y, bandwidth).mean()


def gaussian_rbf_expectation(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor, bandwidth: float) -> Tensor:
    """Eq. (1): E k(X, Y) for independent X ~ N(m1, S1), Y ~ N(m2, S2) under the RBF kernel.

    m1, m2 (d,); S1, S2 (d, d) symmetric positive semi-definite (a point mass has S = 0)."""
    bandwidth = _check_bandwidth(bandwidth)
    for m_name, m, S_name, S in (("m1", m1, "S1", S1), ("m2", m2, "S2", S2)):
        check_tensor(m, m_name, ndim=1)
        check_tensor(S, S_name, ndim=2)
        if S.shape != (m1.shape[0], m1.shape[0]) or m.shape != m1.shape or m1.shape[0] < 1:
            raise ValueError(f"{m_name} must be (d,) and {S_name} (d, d), one d >= 1 for both laws")
        scale = float(S.abs().max())
        if float((S - S.T).abs().max()) > 1e-10 * scale or float(torch.linalg.eigvalsh(S)[0]) < -1e-10 * scale:
            raise ValueError(f"{S_name} must be a symmetric positive semi-definite covariance")
    d = m1.shape[-1]
    eye = torch.eye(d, dtype=m1.dtype)
    S, delta = S1 + S2, m1 - m2
    quad = delta @ torch.linalg.solve(S + bandwidth**2 * eye, delta)
    value = torch.exp(-0.5 * quad) / torch.sqrt(torch.linalg.det(eye + S / bandwidth**2))
    return check_finite_result(value, "m1, S1, m2, S2 and bandwidth (overflow)")


def mmd2_gaussians(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor, bandwidth: float) -> Tensor:
    """The population MMD^2 between N(m1, S1) and N(m2, S2) under the RBF kernel, from Eq. (1)."""
    return (
        gaussian_rbf_expectation(m1, S1, m1, S1, bandwidth)
        + gaussian_rbf_expectation(m2, S2, m2, S2, bandwidth)
        - 2 * gaussian_rbf_expectation(m1, S1, m2, S2, bandwidth)
    )


def finetune_mmd(
    model: DiffusionModel,
    params: list[Tensor],
    data: Tensor,
    timesteps: Tensor,
    *,
    steps: int,
    lr: float,
    batch: int,
    bandwidth: float,
    generator: torch.Generator,
) -> list[float]:
    """MMD-DDM's loop: draw x_T, run DDIM on ``timesteps`` with gradients, minimise MMD_u^2 to a data batch with Adam
    over ``params`` (the model's parameters); returns the training losses. x_T is drawn from
    N(0, (alpha_T^2 + sigma_T^2) I), the terminal law of unit-variance data."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    v_T = model.schedule(timesteps[0])
    scale = torch.sqrt(v_T.alpha**2 + v_T.sigma**2)
    opt = Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        x_T = scale * torch.randn(batch, data.shape[1], generator=generator, dtype=data.dtype)
        idx = torch.randint(0, data.shape[0], (batch,), generator=generator)
        loss = mmd2_unbiased(sample_ddim(model, x_T, timesteps), data[idx], bandwidth)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
