"""DPM-Solver-v3: reductions to DPM-Solver++ / DPM-Solver, exact EMS on Gaussians, exactness, counts, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from numpy.polynomial import chebyshev as C
from tolerances import EMS_SPREAD_FLOOR, IDENTITY_RTOL, ORDER_TOL, ems_form_rtol, roundoff

from refimpl import grids
from refimpl.models import CountingModel, FunctionModel, predict_x0_eps
from refimpl.reference import measure_order
from refimpl.samplers import (
    ModelStatistics,
    dpm_solver_v3,
    empirical_model_statistics,
    sample_ddim,
    sample_dpm_solver_v3,
)
from refimpl.samplers.dpm_solver_v3 import dpm_solver_v3_step
from refimpl.schedules import get_schedule
from toy_models import ExactModel, GaussianMixture, anisotropic_gaussian, random_mixture, ring

OFF = ModelStatistics.constant((2,))  # l = 1, s = b = 0: DPM-Solver++
NOISE = ModelStatistics.constant((2,), l=0.0, s=-1.0)  # l = 0, s = -1, b = 0: DPM-Solver (noise prediction)


def _multistep_taylor(model, x, ts, order: int, kind: str) -> torch.Tensor:
    """The multistep exponential integrator written from the papers, Taylor derivatives from backward differences.

    kind = "x0": DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095v2, Eq. 8):
        x_t = (sigma_t / sigma_s) x_s + alpha_t sum_n h^(n+1) phi_{n+1}(-h) x0^(n)(lambda_s),
    kind = "eps": DPM-Solver (arXiv:2206.00927v3, Eq. 3.4 expanded the same way):
        x_t = (alpha_t / alpha_s) x_s - sigma_t sum_n h^(n+1) phi_{n+1}(h) eps^(n)(lambda_s),
    with x0' = slope through the last two points and, for order 3, x0'' = 2 x the second divided difference
    and x0' the slope of the quadratic through the last three (closed forms of the phi's written out).
    """
    v = model.schedule(ts)
    hist: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in range(len(ts) - 1):
        x0, eps = predict_x0_eps(model, x, ts[i], v[i])
        m = x0 if kind == "x0" else eps
        hist = [(v[i].lambda_, m), *hist][: min(order, i + 1)]
        h = v[i + 1].lambda_ - v[i].lambda_
        if kind == "x0":
            z, base, k = -h, v[i + 1].sigma / v[i].sigma * x, v[i + 1].alpha
        else:
            z, base, k = h, v[i + 1].alpha / v[i].alpha * x, -v[i + 1].sigma
        e = torch.exp(z)
        h_phi = [
            (e - 1) / z * h,
            (e - 1 - z) / z**2 * h**2,
            (e - 1 - z - z**2 / 2) / z**3 * h**3,
        ]  # h^(n+1) phi_{n+1}(z)
        derivs = [hist[0][1]]
        if len(hist) >= 2:
            (l0, m0), (l1, m1) = hist[0], hist[1]
            slope01 = (m0 - m1) / (l0 - l1)
            derivs.append(slope01)
            if len(hist) == 3:
                l2, m2 = hist[2]
                dd2 = (slope01 - (m1 - m2) / (l1 - l2)) / (l0 - l2)  # second divided difference
                derivs = [m0, slope01 + dd2 * (l0 - l1), 2 * dd2]
        x = base + k * sum(c * d for c, d in zip(h_phi, derivs, strict=False))
    return x


@pytest.mark.parametrize(("stats", "kind"), [(OFF, "x0"), (NOISE, "eps")])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_statistics_off_is_dpm_solver_pp_and_l0_s_minus1_is_dpm_solver(stats, kind: str, order: int) -> None:
    """l = 1, s = b = 0 gives g = -x0: the v3 predictor is the DPM-Solver++ multistep update; l = 0, s = -1
    gives g = e^(lambda - lambda_s) e^(-lambda) eps: the noise-prediction DPM-Solver update."""
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x = model.sample_xt(6, s.t_max, torch.Generator().manual_seed(order))[1]
    ts = grids.uniform_lambda(s, 9)
    ours = sample_dpm_solver_v3(model, x, ts, statistics=stats, order=order, corrector=False)
    paper = _multistep_taylor(model, x, ts, order, kind)
    assert float((ours - paper).abs().max()) <= IDENTITY_RTOL * float(paper.abs().max())
    if order == 1:
        assert float((ours - sample_ddim(model, x, ts)).abs().max()) <= IDENTITY_RTOL * float(paper.abs().max())


def test_third_order_update_is_exact_for_a_data_prediction_quadratic_in_lambda() -> None:
    """A model whose x0 is a quadratic in lambda (and ignores x): one order-3 update from three points is exact.

    (The official DPM-Solver / diffusers third-order multistep update weights its D2 term by half the Taylor
    coefficient and misses this; see the chapter.) Exact: x_t = (sigma_t/sigma_s) x_s + sigma_t int e^lam x0.
    """
    s = get_schedule("vp_cosine")
    coef = torch.tensor([[0.3, -0.7], [1.1, 0.4], [-0.5, 0.2]])  # x0(lambda) = c0 + c1 lambda + c2 lambda^2

    def quad(lam: torch.Tensor) -> torch.Tensor:
        return coef[0] + coef[1] * lam + coef[2] * lam**2

    lams = [-0.9, -0.55, -0.2]
    v_s, v_t = s(s.t_of_lambda(lams[-1])), s(s.t_of_lambda(0.25))
    x_s = torch.randn(4, 2, generator=torch.Generator().manual_seed(901))
    points = [(torch.tensor(lam), -quad(torch.tensor(lam)).expand(4, 2)) for lam in reversed(lams)]
    ours = dpm_solver_v3_step(x_s, points, v_s, v_t, OFF)
    a, b = float(v_s.lambda_), float(v_t.lambda_)

    def antideriv(u: float) -> torch.Tensor:  # int e^u (c0 + c1 u + c2 u^2) du
        return math.exp(u) * (coef[0] + coef[1] * (u - 1) + coef[2] * (u**2 - 2 * u + 2))

    exact = v_t.sigma / v_s.sigma * x_s + v_t.sigma * (antideriv(b) - antideriv(a))
    assert float((ours - exact).abs().max()) <= IDENTITY_RTOL * float(exact.abs().max())


def _lambda_nodes(stats: ModelStatistics, n: int) -> torch.Tensor:
    return torch.from_numpy(
        0.5 * (stats.lambda_lo + stats.lambda_hi) + 0.5 * (stats.lambda_hi - stats.lambda_lo) * C.chebpts1(n)
    )


def test_l_of_a_gaussian_is_the_exact_jacobian_diagonal() -> None:
    """For one Gaussian grad_x (sigma eps) = sigma^2 C(t)^{-1} for every x: the Monte Carlo l is exact at each node."""
    s = get_schedule("vp_linear")
    gmm = anisotropic_gaussian(3, seed=2)
    stats = empirical_model_statistics(ExactModel(gmm, s), gmm.sample(3), -3.0, 3.0, n_nodes=12)
    lams = _lambda_nodes(stats, 12)
    v = s(s.t_of_lambda(lams))
    eye = torch.eye(3)
    exact = torch.stack(
        [
            torch.diagonal(sg**2 * torch.linalg.inv(a**2 * gmm.covariances[0] + sg**2 * eye))
            for a, sg in zip(v.alpha, v.sigma, strict=True)
        ]
    )
    l, _, _ = stats(lams.numpy())
    assert float((torch.from_numpy(l) - exact).abs().max()) <= IDENTITY_RTOL


def test_one_step_is_exact_on_a_gaussian_with_diagonal_covariance() -> None:
    """With a diagonal covariance, l = sigma^2 / (alpha^2 Sigma_ii + sigma^2) removes all x-dependence of f, so
    f = -sigma^2 mu / c is deterministic, s = 0, b = f': g is constant and ONE first-order step is exact.

    Tolerance: the statistics are analytic with poles pi/2 from the real lambda axis; on [-2, 2] their 48-point
    Chebyshev interpolants converge like rho^-48, rho = pi/4 + sqrt(1 + pi^2/16) ~ 2.06, i.e. below 1e-15, so
    what is left is round-off of ~1000 operations amplified by at most e^(|L| + |S|) <= e^4.
    """
    s = get_schedule("vp_linear")
    gmm = GaussianMixture(torch.ones(1), torch.tensor([[0.5, -1.0]]), torch.diag(torch.tensor([0.3, 2.0]))[None])
    model = ExactModel(gmm, s)
    stats = empirical_model_statistics(model, gmm.sample(4, torch.Generator().manual_seed(0)), -2.0, 2.0, n_nodes=48)
    t0, t1 = s.t_of_lambda(-2.0), s.t_of_lambda(2.0)
    x = model.sample_xt(5, t0, torch.Generator().manual_seed(1))[1]
    exact = model.pf_ode_map(x, t0, t1)
    one_step = sample_dpm_solver_v3(model, x, torch.stack([t0, t1]), statistics=stats, order=1)
    ddim = sample_ddim(model, x, torch.stack([t0, t1]))
    tol = roundoff(1000, float(exact.abs().max()), condition=math.exp(4))
    assert float((one_step - exact).abs().max()) <= tol < 1e-3 * float((ddim - exact).abs().max())


def test_statistics_of_any_model_depend_only_on_what_it_predicts() -> None:
    """The same exact model answering x0 instead of eps (converted inside) gives the same EMS: the function takes
    any model, as a trained network would be passed. Tolerance: ``ems_form_rtol`` (the conversion's round-off,
    amplified by e^lambda_hi and by the spread of f that s and b divide by)."""
    s = get_schedule("vp_cosine")
    gmm = random_mixture(K=2, d=2, seed=5)
    eps_model = ExactModel(gmm, s)
    x0_model = FunctionModel(ExactModel(gmm, s, "x0"), s, "x0")
    data = gmm.sample(32, torch.Generator().manual_seed(2))
    a, b = (
        empirical_model_statistics(m, data, -2.0, 3.0, n_nodes=8, generator=torch.Generator().manual_seed(3))
        for m in (eps_model, x0_model)
    )
    lams = _lambda_nodes(a, 8).numpy()
    for u, w in zip(a(lams), b(lams), strict=True):
        assert abs(u - w).max() <= ems_form_rtol(3.0, EMS_SPREAD_FLOOR) * max(1.0, abs(u).max())


@pytest.mark.parametrize("nodes_per_call", [1, 4])
def test_statistics_do_not_depend_on_how_the_nodes_are_batched(monkeypatch, nodes_per_call: int) -> None:
    """The Chebyshev nodes go through the forward-mode calls in batches (``JVP_BATCH_ROWS`` model inputs); one node
    per call, or 4 (6 nodes: an uneven last batch), gives the statistics of all 6 in one call, to round-off: every
    node's numbers come from its own rows (IDENTITY_RTOL: a few dozen operations a value)."""
    s = get_schedule("vp_linear")
    gmm = random_mixture(K=2, d=3, seed=4)
    model, data = ExactModel(gmm, s), gmm.sample(8, torch.Generator().manual_seed(0))

    def run() -> ModelStatistics:
        return empirical_model_statistics(model, data, -3.0, 3.0, n_nodes=6, generator=torch.Generator().manual_seed(1))

    together = run()
    monkeypatch.setattr(dpm_solver_v3, "JVP_BATCH_ROWS", nodes_per_call * 3 * 8)  # D N rows a node
    batched = run()
    lams = _lambda_nodes(together, 6).numpy()
    for u, w in zip(together(lams), batched(lams), strict=True):
        assert abs(u - w).max() <= IDENTITY_RTOL * max(1.0, abs(u).max())


def test_the_sampler_follows_the_official_bookkeeping_of_algorithm_2() -> None:
    """The loop, re-stated with the official code's lists: cache (x, f, lambda) per evaluated point; the predictor
    uses the last p_i points (newest first); the corrector re-does the last step from the point before with the
    points [-2, -1, -3, ...] and order p_{i-1}, then replaces the cached x (keeping f)."""
    s = get_schedule("vp_linear")
    gmm = random_mixture(K=3, d=2, seed=7)
    model = ExactModel(gmm, s)
    stats = empirical_model_statistics(model, gmm.sample(16), s.lambda_min, s.lambda_max, n_nodes=16)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(2))[1]
    ts = grids.uniform_lambda(s, 8)
    v = s(ts)
    xs, fs, lams, p_prev, x_cur = [], [], [], 0, x
    for i in range(8):
        _, eps = predict_x0_eps(model, x_cur, ts[i], v[i])
        l_i = torch.from_numpy(stats([float(v.lambda_[i])])[0][0])
        xs.append(x_cur)
        fs.append((v.sigma[i] * eps - l_i * x_cur) / v.alpha[i])
        lams.append(v.lambda_[i])
        if i > 0 and p_prev > 1:
            idx = [-2, -1, *range(-3, -p_prev - 1, -1)]
            xs[-1] = dpm_solver_v3_step(xs[-2], [(lams[j], fs[j]) for j in idx], v[i - 1], v[i], stats)
        p_prev = min(3, i + 1)
        x_cur = dpm_solver_v3_step(xs[-1], [(lams[-j], fs[-j]) for j in range(1, p_prev + 1)], v[i], v[i + 1], stats)
    ours = sample_dpm_solver_v3(model, x, ts, statistics=stats, order=3)
    assert float((ours - x_cur).abs().max()) <= IDENTITY_RTOL * float(ours.abs().max())


def test_corrector_with_pseudo_order_two_is_second_order() -> None:
    """Order-1 predictor + pseudo-order-2 corrector (the official c_pseudo): global order 2, measured."""
    s = get_schedule("vp_linear")
    model = ExactModel(anisotropic_gaussian(3, seed=1), s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(0))[1]
    result = measure_order(
        lambda m, x, ts: sample_dpm_solver_v3(m, x, ts, order=1, pseudo=True), model, x, (32, 64, 128, 256),
        reference=model.pf_ode_map(x, s.t_max, s.t_min),
    )  # fmt: skip
    assert result.order == pytest.approx(2.0, abs=ORDER_TOL), str(result)


def test_one_model_call_per_step_with_statistics_and_corrector() -> None:
    s = get_schedule("vp_linear")
    gmm = ring()
    stats = empirical_model_statistics(ExactModel(gmm, s), gmm.sample(8), s.lambda_min, s.lambda_max, n_nodes=6)
    for n in (1, 2, 3, 6):
        model = CountingModel(ExactModel(gmm, s))
        sample_dpm_solver_v3(
            model,
            torch.randn(3, 2, generator=torch.Generator().manual_seed(902)),
            grids.uniform_lambda(s, n),
            statistics=stats,
            order=3,
        )
        assert model.calls == n


def test_bad_input() -> None:
    s = get_schedule("vp_linear")
    model, x, ts = (
        ExactModel(ring(), s),
        torch.randn(3, 2, generator=torch.Generator().manual_seed(903)),
        grids.uniform_lambda(s, 5),
    )
    for order in (0, 4, 1.5, True):
        with pytest.raises(ValueError, match="order"):
            sample_dpm_solver_v3(model, x, ts, order=order)
    with pytest.raises(ValueError, match="shape"):
        sample_dpm_solver_v3(model, x, ts, statistics=ModelStatistics.constant((3,)))
    narrow = empirical_model_statistics(model, ring().sample(4), -1.0, 1.0, n_nodes=4)
    with pytest.raises(ValueError, match="cover lambda"):
        sample_dpm_solver_v3(model, x, ts, statistics=narrow)
    with pytest.raises(ValueError, match="lambda_lo"):
        empirical_model_statistics(model, ring().sample(4), 1.0, -1.0)
    with pytest.raises(ValueError, match="lambda_lo"):
        empirical_model_statistics(model, ring().sample(4), s.lambda_min - 1.0, 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        empirical_model_statistics(model, ring().sample(1), -1.0, 1.0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_dpm_solver_v3(model, x, ts.flip(0))
