"""Chapter 7b: adjoint gradients of the PF-ODE, MMD, invertible compressed-sensing sampling, gradients through DDIM."""

from __future__ import annotations

import pytest
import torch
from tolerances import FD_DELTA, FD_RTOL, ORDER_TOL, clt_bound, roundoff

from refimpl import grids
from refimpl.differentiable.adjoint import (
    MixtureEps,
    SavedTensorCounter,
    adjoint_gradients,
    autograd_gradients,
    solve_y,
    torchdiffeq_gradients,
)
from refimpl.differentiable.mmd import mmd2_gaussians, mmd2_unbiased, rbf_kernel
from refimpl.differentiable.reversible import (
    coupling_inverse,
    cs_ddim_step,
    range_null_projector,
    reversible_chain,
    reversible_gradients,
)
from refimpl.distillation.flow_maps import gaussian_flow_map
from refimpl.models import FunctionModel
from refimpl.reference import convergence_order
from refimpl.schedules import get_schedule
from toy_models import ExactModel, anisotropic_gaussian, ring

SCHEDULES = ["vp_linear", "edm"]


def _setup(name: str, mixture):
    schedule = get_schedule(name)
    eps = MixtureEps(mixture.covariances, schedule)
    params = [mixture.means.clone(), torch.log(mixture.weights), torch.zeros(mixture.d, dtype=torch.float64)]
    return schedule, eps, params


def _lambdas(schedule, n, trim: float = 0.0):
    """The uniform-lambda grid of n steps, optionally ``trim`` units of lambda inside both ends of the schedule."""
    t_start = float(schedule.t_of_lambda(schedule.lambda_min + trim)) if trim else None
    t_end = float(schedule.t_of_lambda(schedule.lambda_max - trim)) if trim else None
    return schedule.lambda_t(grids.uniform_lambda(schedule, n, t_start, t_end)).to(torch.float64)


def _loss(target):
    return lambda x0: ((x0 - target) ** 2).sum()


def _rel(a, b):
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-300)


@pytest.mark.parametrize("name", SCHEDULES)
def test_mixture_eps_is_the_lab_eps(name):
    schedule, eps, params = _setup(name, ring(K=4))
    model = ExactModel(ring(K=4), schedule)
    x = 3 * torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = grids.uniform_lambda(schedule, 4)[1]
    assert float((eps(x, t, params) - model.eps(x, t)).abs().max()) <= roundoff(200, 1.0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_adjoint_equals_torchdiffeq_on_the_same_grid(name):
    """Same ODE, same RK 3/8 rule on the same grid, same augmented system: equal to round-off, every gradient."""
    schedule, eps, params = _setup(name, ring(K=4))
    x = float(schedule.sigma_t(schedule.t_max)) * torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    lam, loss = _lambdas(schedule, 8), _loss(torch.tensor([1.0, 0.5]))
    ours = adjoint_gradients(eps, schedule, params, x, lam, loss)
    theirs = torchdiffeq_gradients(eps, schedule, params, x, lam, loss)
    n_ops = 8 * 4 * 200  # steps x stages x operations of one eps and its vector-Jacobian product
    for a, b in zip([ours.grad_x, *ours.grad_params], [theirs.grad_x, *theirs.grad_params], strict=True):
        assert float((a - b).abs().max()) <= roundoff(n_ops, float(b.abs().max()) + 1)


@pytest.mark.slow
def test_adjoint_close_to_adaptive_torchdiffeq():
    """dopri5 at rtol = atol = 1e-7 (torchdiffeq's adaptive adjoint) against our RK 3/8 adjoint on 16 steps. The
    interval stops one unit of lambda inside both ends: dopri5 evaluates the field past the ends of its steps."""
    schedule, eps, params = _setup("vp_linear", ring(K=4))
    lam8, lam16 = _lambdas(schedule, 8, trim=1.0), _lambdas(schedule, 16, trim=1.0)
    x = float(schedule.sigma_t(schedule.t_of_lambda(lam16[0]))) * torch.randn(
        1, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    loss = _loss(torch.tensor([1.0, 0.5]))
    fine = adjoint_gradients(eps, schedule, params, x, lam16, loss)
    coarse = adjoint_gradients(eps, schedule, params, x, lam8, loss)
    dopri = torchdiffeq_gradients(eps, schedule, params, x, lam16, loss, method="dopri5", rtol=1e-7, atol=1e-7)
    # fourth order: the 16-step error is about |g_8 - g_16| / 15 (Richardson); allow the difference itself
    bound = float((coarse.grad_x - fine.grad_x).abs().max())
    assert float((fine.grad_x - dopri.grad_x).abs().max()) <= bound


@pytest.mark.parametrize("name", SCHEDULES)
def test_adjoint_converges_to_the_exact_gradient_at_fourth_order(name):
    """One Gaussian: x_0 = M x_T + b exactly, so dL/dx_T = M^T grad L and dL/dmu = (alpha_0 I - alpha_T M)^T grad L.
    The interval is trimmed by one unit of lambda at both ends so that 8-32 steps are near the asymptotic regime."""
    g = anisotropic_gaussian(2, seed=0)
    schedule, eps, params = _setup(name, g)
    steps = [8, 16, 32] if name == "vp_linear" else [8, 16]
    lam0 = _lambdas(schedule, 1, trim=1.0)
    t_a, t_b = schedule.t_of_lambda(lam0[0]), schedule.t_of_lambda(lam0[1])
    M, b = gaussian_flow_map(g, schedule, t_a, t_b)
    x = float(schedule.sigma_t(t_a)) * torch.randn(
        1, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    target = torch.tensor([0.3, -0.2], dtype=torch.float64)
    grad_l = 2 * (x @ M.T + b - target)[0]
    a_0, a_T = float(schedule.alpha_t(t_b)), float(schedule.alpha_t(t_a))
    exact_x, exact_mu = M.T @ grad_l, (a_0 * torch.eye(2) - a_T * M).T @ grad_l
    errors = []
    for n in steps:
        r = adjoint_gradients(eps, schedule, params, x, _lambdas(schedule, n, trim=1.0), _loss(target))
        errors.append(max(_rel(r.grad_x[0], exact_x), _rel(r.grad_params[0][0], exact_mu)))
        assert _rel(r.grad_params[2], r.grad_params[0].sum(0)) <= roundoff(64, 1.0)  # c shifts every mean
    local = convergence_order(steps, errors).local_orders
    # local orders approach 4 as 4 + c 2^-k, so the remaining drift is about the last change (measure_settled_order)
    assert local[-1] >= 4.0 - ORDER_TOL
    if len(local) > 1:
        assert abs(local[-1] - 4.0) <= abs(local[-1] - local[-2]) + ORDER_TOL


def test_adjoint_minus_autograd_shrinks_and_autograd_equals_finite_differences():
    """Autograd through the solver is the exact derivative of the discrete map (= central differences to FD_RTOL); the
    continuous adjoint differs from it by the solver's O(h^4) error on the adjoint equation."""
    schedule, eps, params = _setup("vp_linear", ring(K=4))
    x = float(schedule.sigma_t(schedule.t_max)) * torch.randn(1, 2, generator=torch.Generator().manual_seed(3))
    loss = _loss(torch.tensor([1.0, 0.5]))
    gaps = []
    for n in [8, 16]:
        lam = _lambdas(schedule, n, trim=1.0)
        adj = adjoint_gradients(eps, schedule, params, x, lam, loss)
        auto = autograd_gradients(eps, schedule, params, x, lam, loss)
        gaps.append(_rel(adj.grad_x, auto.grad_x))
    assert gaps[1] <= gaps[0] * 2.0 ** -(4 - ORDER_TOL)
    u = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def f(z):
        return loss(solve_y(eps, schedule, params, z, lam))

    fd = (f(x + FD_DELTA * u) - f(x - FD_DELTA * u)) / (2 * FD_DELTA)
    assert abs(float(fd) - float((auto.grad_x * u).sum())) <= FD_RTOL * float(auto.grad_x.abs().sum())
    # the weights' gradient likewise
    w = torch.randn(4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def f_w(s):
        return loss(solve_y(eps, schedule, [params[0], params[1] + s * w, params[2]], x, lam))

    fd_w = (f_w(FD_DELTA) - f_w(-FD_DELTA)) / (2 * FD_DELTA)
    assert abs(float(fd_w) - float((auto.grad_params[1] * w).sum())) <= FD_RTOL * float(auto.grad_params[1].abs().sum())


def test_adjoint_stores_a_constant_number_of_tensors():
    schedule, eps, params = _setup("vp_linear", ring(K=4))
    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = _loss(torch.zeros(2))
    peaks = {}
    for n in [4, 8]:
        with SavedTensorCounter() as adj:
            adjoint_gradients(eps, schedule, params, x, _lambdas(schedule, n), loss)
        with SavedTensorCounter() as auto:
            autograd_gradients(eps, schedule, params, x, _lambdas(schedule, n), loss)
        peaks[n] = (adj.peak, auto.peak)
    assert peaks[4][0] == peaks[8][0]  # adjoint: one stage's graph at a time
    assert peaks[8][1] >= 2 * peaks[4][1] - peaks[4][0]  # autograd: every stage of every step


def test_adjoint_bad_grid():
    schedule, eps, params = _setup("vp_linear", ring(K=4))
    with pytest.raises(ValueError, match="lambdas"):
        adjoint_gradients(eps, schedule, params, torch.zeros(1, 2), torch.tensor([1.0, 0.0]), _loss(torch.zeros(2)))


# --- MMD -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [0.0, 0.6])
def test_unbiased_mmd_mean_is_the_population_value(shift):
    """Unbiased: the mean over repeats lies within Z standard errors of the closed form (0 for P = Q)."""
    gen = torch.Generator().manual_seed(11)
    m1, S1 = torch.zeros(2, dtype=torch.float64), torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    m2 = torch.tensor([shift, 0.0], dtype=torch.float64)
    S2 = S1 if shift == 0.0 else torch.diag(torch.tensor([1.5, 0.4], dtype=torch.float64))
    L1, L2 = torch.linalg.cholesky(S1), torch.linalg.cholesky(S2)
    repeats = 300
    vals = torch.stack(
        [
            mmd2_unbiased(
                m1 + torch.randn(60, 2, generator=gen, dtype=torch.float64) @ L1.T,
                m2 + torch.randn(80, 2, generator=gen, dtype=torch.float64) @ L2.T,
                0.8,
            )
            for _ in range(repeats)
        ]
    )
    population = float(mmd2_gaussians(m1, S1, m2, S2, 0.8))
    if shift == 0.0:
        assert abs(population) <= roundoff(32, 1.0)
    assert abs(float(vals.mean()) - population) <= float(clt_bound(vals.std(), repeats))


def test_mmd_bad_input():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="bandwidth"):
        rbf_kernel(x, x, 0.0)
    with pytest.raises(ValueError, match="two points"):
        mmd2_unbiased(x[:1], x, 1.0)


# --- invertible sampling for compressed sensing --------------------------------------------------------------


def _cs_setup(name: str, n: int, d: int = 6, m: int = 3):
    schedule = get_schedule(name)
    g = anisotropic_gaussian(d, seed=1)
    eps_fn = MixtureEps(g.covariances, schedule)
    params = [g.means.clone(), torch.zeros(1, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)]
    model = FunctionModel(lambda x, t: eps_fn(x, t, params), schedule)
    gen = torch.Generator().manual_seed(5)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    A = Q[:m]  # orthonormal rows
    proj = range_null_projector(A)
    x0 = g.sample(4, gen)
    y = x0 @ A.T
    ts = grids.uniform_lambda(schedule, n)
    layers = [cs_ddim_step(model, ts, i, proj, y) for i in range(n)]
    x_T = torch.randn(4, d, generator=gen, dtype=torch.float64)
    return A, proj, y, x0, layers, params, x_T


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("v", [0.5, 0.8])
def test_coupling_inverse_is_exact_and_measurements_hold(name, v):
    n = 8
    A, proj, y, _, layers, _, x_T = _cs_setup(name, n)
    vs = [torch.tensor(v, dtype=torch.float64)] * n
    with torch.no_grad():
        y1, y2 = reversible_chain(layers, vs, x_T)
        a1, a2 = y1, y2
        for F, vi in zip(layers[::-1], vs[::-1], strict=True):
            a1, a2 = coupling_inverse(a1, a2, F, vi)
    scale = max(float(y1.abs().max()), float(x_T.abs().max()))
    # each inverse divides the previous rounding by v: amplification v^-n (cf. SamplerSpec.amplification)
    bound = roundoff(16 * n, scale) * v**-n
    assert float((a1 - x_T).abs().max()) <= bound and float((a2 - x_T).abs().max()) <= bound
    assert float((proj(y1, y) @ A.T - y).abs().max()) <= roundoff(32, float(y.abs().max()) + 1)


def test_reversible_backprop_equals_autograd_with_depth_independent_memory():
    peaks = {}
    for n in [4, 8]:
        _, _, _, x0, layers, params, x_T = _cs_setup("vp_linear", n)
        params[0].requires_grad_(True)
        vs = [torch.tensor(0.5, dtype=torch.float64)] * n

        def loss_fn(a, b, x0=x0):
            return ((a - x0) ** 2).sum() + 0.5 * (b**2).sum()

        with SavedTensorCounter() as rev:
            _, gx, gv, gp = reversible_gradients(layers, vs, params[:1], x_T, loss_fn)
        with SavedTensorCounter() as auto:
            xg = x_T.clone().requires_grad_(True)
            vsg = [v.clone().requires_grad_(True) for v in vs]
            grads = torch.autograd.grad(loss_fn(*reversible_chain(layers, vsg, xg)), [xg, *vsg, params[0]])
        peaks[n] = (rev.peak, auto.peak)
        scale = float(grads[0].abs().max()) * 2.0**n  # inverse rounding amplified by v^-n
        assert float((gx - grads[0]).abs().max()) <= roundoff(64 * n, scale)
        for a, b in zip(gv, grads[1 : n + 1], strict=True):
            assert abs(float(a) - float(b)) <= roundoff(64 * n, max(abs(float(b)), 1.0) * 2.0**n)
        assert float(grads[-1].abs().max()) > 0
        assert float((gp[0] - grads[-1]).abs().max()) <= roundoff(64 * n, float(grads[-1].abs().max()) * 2.0**n)
        params[0].requires_grad_(False)
    assert peaks[4][0] == peaks[8][0] and peaks[8][1] > peaks[4][1]


def test_cs_bad_input():
    with pytest.raises(ValueError, match="full row rank"):
        range_null_projector(torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="m <= d"):
        range_null_projector(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="v must be nonzero"):
        coupling_inverse(torch.zeros(1), torch.zeros(1), lambda x: x, 0.0)


def test_general_full_rank_operator_projects_exactly():
    """A^+ = A^T (A A^T)^-1 for rows that are not orthonormal: A proj(x) = y to round-off (conditioned by A A^T)."""
    gen = torch.Generator().manual_seed(9)
    A = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    x, y = torch.randn(3, 5, generator=gen, dtype=torch.float64), torch.randn(3, 2, generator=gen, dtype=torch.float64)
    cond = float(torch.linalg.cond(A @ A.T))
    assert float((range_null_projector(A)(x, y) @ A.T - y).abs().max()) <= roundoff(64, 10.0, condition=cond)


def test_rcond_off_its_default_decides_what_counts_as_singular():
    """rcond is the relative floor on the singular values of A A^T: rows nearly parallel (ratio ~ 1e-8 here) pass the
    default 1e-10 and project exactly (to round-off conditioned by A A^T), and raise with rcond = 1e-6."""
    A = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1e-4, 0.0]], dtype=torch.float64)
    ratio = float(torch.linalg.svdvals(A @ A.T)[-1] / torch.linalg.svdvals(A @ A.T)[0])
    assert 1e-10 < ratio < 1e-6
    x, y = torch.ones(2, 3, dtype=torch.float64), torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    proj = range_null_projector(A, rcond=1e-9)
    assert float((proj(x, y) @ A.T - y).abs().max()) <= roundoff(64, 1e4, condition=1 / ratio)
    with pytest.raises(ValueError, match="full row rank"):
        range_null_projector(A, rcond=1e-6)
