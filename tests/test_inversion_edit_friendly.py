"""Edit-friendly DDPM inversion: exact regeneration at every step, and the non-standard statistics of the maps.

For data N(mu, l) in one dimension everything is affine, so the maps' law is known in closed form (derived
below independently of the package): with the auxiliary path x_i = a_i x + r_i eps_i (a_i = alpha_{t_i|t_n},
r_i = sigma_{t_i|t_n}, eps_i independent, r_n = 0) and the DDPM step mean mu_i(x_t) = A_i x_t + b_i,
variance s_i^2,

    z_i = (x_{i+1} - A_i x_i - b_i) / s_i,
    E z_i = (a_{i+1} x - A_i a_i x - b_i) / s_i,   Var z_i = (r_{i+1}^2 + A_i^2 r_i^2) / s_i^2,
    Cov(z_i, z_{i+1}) = -A_{i+1} r_{i+1}^2 / (s_i s_{i+1}),   Cov(z_i, z_j) = 0 for |i - j| > 1.
"""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import Z, roundtrip_bound

from refimpl import grids
from refimpl.samplers import Trajectory, auxiliary_path, extract_noise_maps, sample_edit_friendly
from refimpl.schedules import get_schedule
from toy_models import ExactModel, GaussianMixture, ring


def _closed_form(l: float, mu: float, x: float, name: str, n: int) -> tuple[list, list, list]:
    """Mean, variance of each z_i and Cov(z_i, z_{i+1}) for data N(mu, l), from the formulas above."""
    s = get_schedule(name)
    v = s(grids.uniform_lambda(s, n))
    alpha, sigma = v.alpha.tolist(), v.sigma.tolist()
    a = [alpha[i] / alpha[n] for i in range(n + 1)]
    r2 = [sigma[i] ** 2 - a[i] ** 2 * sigma[n] ** 2 for i in range(n)] + [0.0]
    A, b, s2 = [], [], []
    for i in range(n):
        a_ts = alpha[i] / alpha[i + 1]
        var_ts = sigma[i] ** 2 - a_ts**2 * sigma[i + 1] ** 2
        c_xt, c_x0 = a_ts * sigma[i + 1] ** 2 / sigma[i] ** 2, alpha[i + 1] * var_ts / sigma[i] ** 2
        g = alpha[i] * l / (alpha[i] ** 2 * l + sigma[i] ** 2)  # Tweedie: x0_hat = mu + g (x_t - alpha_t mu)
        A.append(c_xt + c_x0 * g)
        b.append(c_x0 * (mu - g * alpha[i] * mu))
        s2.append(var_ts * sigma[i + 1] ** 2 / sigma[i] ** 2)
    mean = [(a[i + 1] * x - A[i] * a[i] * x - b[i]) / math.sqrt(s2[i]) for i in range(n)]
    var = [(r2[i + 1] + A[i] ** 2 * r2[i]) / s2[i] for i in range(n)]
    cov = [-A[i + 1] * r2[i + 1] / math.sqrt(s2[i] * s2[i + 1]) for i in range(n - 1)]
    return mean, var, cov


@pytest.mark.parametrize("name", ["vp_linear", "edm", "ddpm_linear"])
def test_regeneration_reproduces_every_step_of_the_auxiliary_path(name: str) -> None:
    """DDPM with the extracted maps passes through every auxiliary state, not only the end (round-off bound)."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    x0 = model.sample_xt(6, s.t_min, torch.Generator().manual_seed(0))[1]
    ts = grids.uniform_lambda(s, 25)
    seen, regen = Trajectory(), Trajectory()
    latent = extract_noise_maps(model, x0, ts, generator=torch.Generator().manual_seed(1), callback=seen)
    out = sample_edit_friendly(model, latent, ts, callback=regen)
    bound = roundtrip_bound(25, float(seen.xs.abs().max()))
    assert float((regen.xs - seen.xs).abs().max()) <= bound
    assert float((out - x0).abs().max()) <= bound


def test_auxiliary_path_has_the_forward_marginals() -> None:
    """x_{t_i} | x is N(alpha_{t_i|t_n} x, sigma_{t_i|t_n}^2): the path's spread matches (CLT bound, z = 5)."""
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    ts = grids.uniform_lambda(s, 10)
    x = torch.full((20000, 2), 0.7)
    path = auxiliary_path(model, x, ts, torch.randn(10, 20000, 2, generator=torch.Generator().manual_seed(2)))
    v = s(ts)
    a = v.alpha / v.alpha[-1]
    var = v.sigma**2 - a**2 * v.sigma[-1] ** 2
    n = x.shape[0]
    for i in range(10):
        assert float((path[i].mean(0) - a[i] * 0.7).abs().max()) <= Z * math.sqrt(var[i] / n)
        assert float((path[i].var(0) - var[i]).abs().max()) <= Z * math.sqrt(2 / n) * var[i]
    torch.testing.assert_close(path[-1], x, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_maps_of_a_gaussian_have_the_closed_form_law_and_are_not_standard(name: str) -> None:
    """Monte Carlo over the auxiliary noise (fixed image) against the closed form: mean, variance, lag-1 and
    lag-2 covariance of the maps (CLT bounds, z = 5). The closed form itself shows what the paper describes:
    every map has variance above 1 (about 1/h for small steps h in lambda) and consecutive maps are negatively
    correlated."""
    l, mu, x, n, draws = 0.3, 0.4, 1.1, 12, 20000
    gmm = GaussianMixture(torch.ones(1), torch.tensor([[mu]]), torch.tensor([[[l]]]))
    s = get_schedule(name)
    model = ExactModel(gmm, s)
    ts = grids.uniform_lambda(s, n)
    maps = extract_noise_maps(model, torch.full((draws, 1), x), ts, generator=torch.Generator().manual_seed(5))
    z = maps.noise[:, :, 0]  # (n, draws)
    mean, var, cov = _closed_form(l, mu, x, name, n)
    for i in range(n):
        assert abs(float(z[i].mean()) - mean[i]) <= Z * math.sqrt(var[i] / draws)
        assert abs(float(z[i].var()) - var[i]) <= Z * math.sqrt(2 / draws) * var[i]
        assert var[i] > 1.0  # not standard normal: every map is over-dispersed
    zc = z - z.mean(1, keepdim=True)
    for i in range(n - 1):
        emp = float((zc[i] * zc[i + 1]).mean())
        assert abs(emp - cov[i]) <= Z * math.sqrt((var[i] * var[i + 1] + cov[i] ** 2) / draws)
        assert cov[i] < 0  # consecutive maps are negatively correlated
    for i in range(n - 2):  # beyond one step apart the maps are uncorrelated
        assert abs(float((zc[i] * zc[i + 2]).mean())) <= Z * math.sqrt(var[i] * var[i + 2] / draws)
