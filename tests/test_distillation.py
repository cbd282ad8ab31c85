"""Chapter 8: exact flow maps, progressive distillation, consistency distillation (ODE and SDE teachers), DMD2."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from tolerances import (
    AFFINE_MAP_OPS,
    ORDER_TOL,
    REFERENCE_FLOW_ATOL,
    clt_bound,
    clt_difference_bound,
    lstsq_bound,
    roundoff,
)

from refimpl import grids
from refimpl.differentiable.mmd import mmd2_unbiased
from refimpl.distillation.consistency import (
    AffineConsistencyModel,
    cd_fixed_point,
    cd_loss,
    consistency_coefficients,
    consistency_multistep,
    sde_teacher_covariance,
    sde_teacher_gain,
    teacher_step,
)
from refimpl.distillation.dmd import dmd2_direction, gaussian_denoiser, train_dmd2, train_dmd2_mixture
from refimpl.distillation.flow_maps import (
    affine_map_of,
    apply_affine,
    gaussian_flow_map,
    gaussian_w2,
    reference_flow_map,
)
from refimpl.distillation.progressive import (
    ModelTeacher,
    distill_round,
    distill_round_network,
    progressive_distillation,
    progressive_target,
    progressive_target_map,
)
from refimpl.models import CountingModel
from refimpl.reference import convergence_order, gaussian_kl
from refimpl.registry import get_sampler
from refimpl.samplers import sample_consistency_multistep, sample_ddim, sample_progressive_student
from refimpl.samplers.distilled import TEACHER_GRID, sample_trained_progressive_student
from refimpl.schedules import get_schedule
from toy_models import ExactModel, anisotropic_gaussian, ring

SCHEDULES = ["vp_linear", "edm"]


def _gauss(name: str, seed: int = 0):
    schedule = get_schedule(name)
    g = anisotropic_gaussian(2, seed=seed)
    return schedule, g, ExactModel(g, schedule)


def _map_error(fn, M, b) -> float:
    Ms, bs = affine_map_of(fn, M.shape[0])
    return max(float((Ms - M).abs().max()), float((bs - b).abs().max()))


@pytest.mark.parametrize("name", SCHEDULES)
def test_gaussian_flow_map_is_the_ode_map_both_ways(name):
    schedule, g, model = _gauss(name)
    ts = grids.uniform_lambda(schedule, 4)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t_from, t_to in [(ts[0], ts[-1]), (ts[-1], ts[1]), (ts[1], ts[2])]:
        M, b = gaussian_flow_map(g, schedule, t_from, t_to)
        y = apply_affine(M, b, x)
        scale = float(y.abs().max()) + 1
        assert float((y - model.pf_ode_map(x, t_from, t_to)).abs().max()) <= roundoff(AFFINE_MAP_OPS, scale)
    # the DOP853 reference on one interval (the whole range costs seconds)
    assert float((y - reference_flow_map(model, x, ts[1], ts[2])).abs().max()) <= REFERENCE_FLOW_ATOL * scale


def test_flow_map_bad_input():
    schedule, g, _ = _gauss("vp_linear")
    with pytest.raises(ValueError, match="K = 1"):
        gaussian_flow_map(ring(), schedule, 0.5, 0.1)
    with pytest.raises(ValueError, match="t_to"):
        gaussian_flow_map(g, schedule, 0.5, 2.0)
    with pytest.raises(ValueError, match="d must"):
        affine_map_of(lambda x: x, 0)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("k", [2, 4])
def test_progressive_target_closed_form_equals_teacher_composition(name, k):
    schedule, g, model = _gauss(name)
    ts = grids.uniform_lambda(schedule, 8)
    teacher = ModelTeacher(model, ts)
    z = 3 * torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for i in range(8 // k):
        W, c = progressive_target_map(g, schedule, ts[i * k : (i + 1) * k + 1])
        closed = z @ W.T + c
        scale = float(closed.abs().max()) + float(W.abs().max()) * float(z.abs().max())
        assert float((progressive_target(teacher, z, i, k) - closed).abs().max()) <= roundoff(AFFINE_MAP_OPS, scale)


@pytest.mark.parametrize("name", SCHEDULES)
def test_students_8_4_2_1_reproduce_the_teacher_map(name):
    """Every round's student map equals the 8-step teacher's affine map (least squares on exact affine targets), so
    its distance to the exact flow map is the teacher's discretisation error, round after round."""
    schedule, g, model = _gauss(name)
    ts = grids.uniform_lambda(schedule, 8)
    teacher = ModelTeacher(model, ts)
    data = g.sample(32, torch.Generator().manual_seed(2))
    students = progressive_distillation(teacher, 3, data, torch.Generator().manual_seed(3))
    assert [len(s.timesteps) - 1 for s in students] == [4, 2, 1]
    Mt, bt = affine_map_of(teacher.sample, 2)
    Me, be = gaussian_flow_map(g, schedule, ts[0], ts[-1])
    teacher_gap = max(float((Mt - Me).abs().max()), float((bt - be).abs().max()))
    scale = float(Mt.abs().max()) + float(bt.abs().max())
    # design matrix [z, 1] with z = alpha x + sigma eps: its condition is at most ~ (|z|max + 1) / smallest sd
    bound = lstsq_bound(1e3, scale) * 3  # three rounds of fitting
    for s in students:
        assert _map_error(s.sample, Mt, bt) <= bound
        assert abs(_map_error(s.sample, Me, be) - teacher_gap) <= bound


def test_one_step_student_converges_to_exact_map_at_first_order():
    """The one-step student distilled from an N-step DDIM teacher approaches the exact flow map like 1/N."""
    schedule, g, model = _gauss("vp_linear")
    data = g.sample(32, torch.Generator().manual_seed(2))
    steps, errors = [16, 32, 64], []
    for n in steps:
        ts = grids.uniform_lambda(schedule, n)
        student = distill_round(ModelTeacher(model, ts), 1, data, torch.Generator().manual_seed(3))
        errors.append(_map_error(student.sample, *gaussian_flow_map(g, schedule, ts[0], ts[-1])))
    assert abs(convergence_order(steps, errors).order - 1.0) <= ORDER_TOL


def test_distill_round_bad_input():
    schedule, g, model = _gauss("vp_linear")
    teacher = ModelTeacher(model, grids.uniform_lambda(schedule, 8))
    data = g.sample(8, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="n_student = 3 does not divide"):
        distill_round(teacher, 3, data)
    with pytest.raises(ValueError, match="n_student"):
        distill_round(teacher, 0, data)
    with pytest.raises(ValueError, match="d \\+ 1"):
        distill_round(teacher, 4, data[:2])
    with pytest.raises(ValueError, match="halve"):
        progressive_distillation(teacher, 4, data)


# --- consistency distillation --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
def test_consistency_boundary_condition_is_exact(name):
    schedule = get_schedule(name)
    ts = grids.uniform_lambda(schedule, 6)
    gen = torch.Generator().manual_seed(0)
    cm = AffineConsistencyModel(
        schedule, ts, torch.randn(7, 2, 2, generator=gen, dtype=torch.float64), torch.randn(7, 2, generator=gen)
    )
    x = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    c_skip, c_out = consistency_coefficients(schedule, ts[-1], ts[-1], sigma_data=1.3)
    assert float(c_skip) == 1.0 and float(c_out) == 0.0
    assert torch.equal(cm(x, 6), x)
    with pytest.raises(ValueError, match="sigma_data"):
        consistency_coefficients(schedule, ts[0], ts[-1], sigma_data=0.0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_cd_fixed_point_is_the_exact_flow_map(name):
    """With the exact ODE step as teacher, N least-squares CD updates reach f(., t_n) = exact map t_n -> eps; after
    fewer updates the far grid points are still wrong; the CD loss vanishes at the fixed point."""
    schedule, g, model = _gauss(name)
    N = 6
    ts = grids.uniform_lambda(schedule, N)
    data = g.sample(32, torch.Generator().manual_seed(2))

    def exact_step(x, n):
        return model.pf_ode_map(x, ts[n], ts[n + 1])

    iterates = cd_fixed_point(AffineConsistencyModel.zeros(schedule, ts, 2), exact_step, data, N)

    def error(cm):
        maps = [gaussian_flow_map(g, schedule, ts[n], ts[-1]) for n in range(N)]
        return max(_map_error(lambda x, n=n: cm(x, n), *maps[n]) for n in range(N))

    scale = max(float(gaussian_flow_map(g, schedule, ts[0], ts[-1])[1].abs().max()), 1.0)
    assert error(iterates[-1]) <= lstsq_bound(1e3, scale) * N
    [one_sweep] = cd_fixed_point(AffineConsistencyModel.zeros(schedule, ts, 2), exact_step, data, 1, sweep="backward")
    assert error(one_sweep) <= lstsq_bound(1e3, scale) * N
    assert error(iterates[N // 2 - 1]) > 1e-3  # not there yet: information travels one grid point per update
    x = g.sample(16, torch.Generator().manual_seed(5))
    v = schedule(ts[1])
    x1 = v.alpha * x + v.sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=x.dtype)
    assert float(cd_loss(iterates[-1], iterates[-1], exact_step, x1, 1)) <= lstsq_bound(1e3, scale) ** 2 * N**2 * 16


def test_cd_with_ddim_teacher_converges_at_first_order():
    schedule, g, model = _gauss("vp_linear")
    data = g.sample(32, torch.Generator().manual_seed(2))
    steps, errors = [8, 16, 32], []
    for N in steps:
        ts = grids.uniform_lambda(schedule, N)
        start = AffineConsistencyModel.zeros(schedule, ts, 2)
        [cm] = cd_fixed_point(start, teacher_step(model, ts), data, 1, sweep="backward")
        errors.append(_map_error(lambda x, cm=cm: cm(x, 0), *gaussian_flow_map(g, schedule, ts[0], ts[-1])))
    assert abs(convergence_order(steps, errors).order - 1.0) <= ORDER_TOL


@pytest.mark.parametrize("name", SCHEDULES)
def test_sde_teacher_at_zero_noise_is_the_ode_teacher(name):
    schedule = get_schedule(name)
    model = ExactModel(ring(), schedule)
    ts = grids.uniform_lambda(schedule, 5)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    step = teacher_step(model, ts, eta=0.0, generator=torch.Generator().manual_seed(1))
    for n in range(5):
        assert torch.equal(step(x, n), sample_ddim(model, x, ts[n : n + 2]))
    with pytest.raises(ValueError, match="eta"):
        teacher_step(model, ts, eta=1.5)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_sde_teacher_target_has_the_right_mean(name, eta):
    """x ~ p_{t_n}, one SDE-teacher step: E[x_hat] = alpha_{n+1} E[x0_hat] + c E[eps_hat] = alpha_{n+1} m exactly
    (tower rule, E[eps_hat] = 0), for every eta; checked within the CLT bound on the ring."""
    schedule = get_schedule(name)
    mixture = ring()
    model = ExactModel(mixture, schedule)
    ts = grids.uniform_lambda(schedule, 4)
    n_samples = 20000
    gen = torch.Generator().manual_seed(7)
    step = teacher_step(model, ts, eta=eta, generator=gen)
    mean, _ = mixture.moments()
    for n in [0, 2]:
        x = model.sample_xt(n_samples, ts[n], gen)[1]
        out = step(x, n)
        expected = schedule(ts[n + 1]).alpha * mean
        bound = clt_bound(out.std(0), n_samples)
        assert bool(((out.mean(0) - expected).abs() <= bound).all())


def _second_moments(out: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample variances of out along the rows of u, and their CLT bounds (the mean of the squared deviations)."""
    y = out @ u.T
    sq = (y - y.mean(0)) ** 2
    return sq.mean(0), clt_bound(sq.std(0), out.shape[0])


@pytest.mark.parametrize("name", SCHEDULES)
def test_sde_teacher_covariance_is_the_marginal_minus_the_posterior_spread(name):
    """SCott's SDE teacher: x ~ p_{t_n}, one DDIM step of strength eta with the exact model. Its output covariance is
    Cov(p_{t_{n+1}}) - kappa^2 E Cov[x_0 | x_s] (Eq. SC), *below* the marginal's: right in mean only. On Gaussian
    data it is exact (checked per entry within the CLT bound); at eta = 1 the deficit exceeds the CLT bound, so the
    output is measurably under-dispersed. On the ring every direction u lies between Cov(p_t) - kappa^2 min(u^T Cov
    (x_0) u, rho_s^2) and Cov(p_t) (the posterior covariance is below the prior's and below the error of
    x_s / alpha_s)."""
    schedule, g, model = _gauss(name)
    ts = grids.uniform_lambda(schedule, 4)
    n_samples, gen = 20000, torch.Generator().manual_seed(8)
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.6, -0.8]], dtype=torch.float64)
    n = 1
    for eta in (0.0, 1.0):
        x = model.sample_xt(n_samples, ts[n], gen)[1]
        out = teacher_step(model, ts, eta=eta, generator=gen)(x, n)
        var, bound = _second_moments(out, u)
        exact = ((u @ sde_teacher_covariance(g, schedule, ts[n], ts[n + 1], eta)) * u).sum(-1)
        assert bool(((var - exact).abs() <= bound).all()), (eta, var, exact, bound)
    marginal = ((u @ model.marginal(ts[n + 1]).covariances[0]) * u).sum(-1)
    assert bool((marginal - exact > 2 * bound).all())  # eta = 1: below the marginal by more than the noise
    ring_law = ring()
    ring_model = ExactModel(ring_law, schedule)
    kappa = float(sde_teacher_gain(schedule, ts[n], ts[n + 1], 1.0))
    rho_s = float(schedule.rho_t(ts[n]))
    x = ring_model.sample_xt(n_samples, ts[n], gen)[1]
    var, bound = _second_moments(teacher_step(ring_model, ts, eta=1.0, generator=gen)(x, n), u)
    prior = ((u @ ring_law.moments()[1]) * u).sum(-1)
    marginal = ((u @ ring_model.marginal(ts[n + 1]).moments()[1]) * u).sum(-1)
    lower = marginal - kappa**2 * torch.minimum(prior, torch.full_like(prior, rho_s**2))
    assert bool((var <= marginal + bound).all()) and bool((var >= lower - bound).all()), (var, lower, marginal)
    assert float(sde_teacher_gain(schedule, ts[n], ts[n + 1], 0.0)) < kappa  # the deficit grows with eta


def test_multistep_consistency_sampling_with_exact_model_is_exact_in_law():
    """With the exact consistency function on Gaussian data every stage maps p_{t_n} to p_eps, so the output law of
    multistep sampling is p_eps exactly: checked on the exact mean and covariance of the affine-Gaussian output."""
    schedule, g, model = _gauss("vp_linear")
    N = 6
    ts = grids.uniform_lambda(schedule, N)
    maps = [gaussian_flow_map(g, schedule, ts[n], ts[-1]) for n in range(N + 1)]
    # the exact consistency model: c_skip x + c_out F = M x + b  =>  F = ((M - c_skip I) x + b) / c_out
    W = torch.zeros(N + 1, 2, 2, dtype=torch.float64)
    c = torch.zeros(N + 1, 2, dtype=torch.float64)
    for n in range(N):
        c_skip, c_out = consistency_coefficients(schedule, ts[n], ts[-1])
        W[n], c[n] = (maps[n][0] - c_skip * torch.eye(2)) / c_out, maps[n][1] / c_out
    cm = AffineConsistencyModel(schedule, ts, W, c)
    law = model.marginal(ts[0])
    x = law.sample(1, torch.Generator().manual_seed(0))
    indices = [2, 4]
    noise = torch.zeros(2, 1 + 2 + 4, 2, dtype=torch.float64)
    probes = torch.cat([x, x + torch.eye(2), x.expand(4, 2)])  # response to x_T and to each noise coordinate
    noise[0, 3:5], noise[1, 5:7] = torch.eye(2), torch.eye(2)
    out = consistency_multistep(cm, probes, indices, noise=noise)
    base = out[0]
    # output = base + M_x (x_T - x) + sum_j N_j z_j; only the noise of the last stage matters (f(., t_n) forgets)
    N_last = (out[5:7] - base).T
    target = model.marginal(ts[-1])
    mean_target, cov_target = target.means[0], target.covariances[0]
    # the last stage maps a N(alpha_n/alpha_eps y, s^2 I) point; its output law given y is N(., N_last N_last^T)
    # and the y-dependence composes with the earlier exact stages: check the total law by the tower rule in closed form
    M_last, b_last = maps[indices[-1]]
    v, v_eps = schedule(ts[indices[-1]]), schedule(ts[-1])
    a = v.alpha / v_eps.alpha
    s2 = v.sigma**2 - a**2 * v_eps.sigma**2
    assert float((N_last @ N_last.T - s2 * M_last @ M_last.T).abs().max()) <= roundoff(AFFINE_MAP_OPS, 1.0)
    mean_out = a * (M_last @ mean_target) + b_last
    cov_out = M_last @ (a**2 * cov_target + s2 * torch.eye(2)) @ M_last.T
    assert float((mean_out - mean_target).abs().max()) <= roundoff(AFFINE_MAP_OPS, 1.0)
    assert float((cov_out - cov_target).abs().max()) <= roundoff(AFFINE_MAP_OPS, 1.0)
    with pytest.raises(ValueError, match="indices"):
        consistency_multistep(cm, x, [0])


# --- the registered samplers of the ideal students (refimpl.samplers.distilled) -----------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("rounds", [0, 2])
def test_registered_progressive_student_is_ddim_on_the_finer_grid_refimpl_against_itself(name, rounds):
    """Target (2) makes one student step land where its k = 2^rounds teacher steps land, so the ideal student is DDIM
    on the k-times finer grid to round-off (on the ring: the identity holds for any model)."""
    schedule = get_schedule(name)
    model = ExactModel(ring(), schedule)
    ts = grids.uniform_lambda(schedule, 5)
    k = 2**rounds
    fine = torch.cat([grids.uniform_lambda(schedule, k, float(s), float(t))[:-1] for s, t in itertools.pairwise(ts)])
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample_progressive_student(model, x, ts, rounds=rounds)
    ddim = sample_ddim(model, x, torch.cat([fine, ts[-1:]]))
    scale = max(float(x.abs().max()), float(ddim.abs().max()))
    assert float((out - ddim).abs().max()) <= roundoff(AFFINE_MAP_OPS, scale)
    with pytest.raises(ValueError, match="rounds"):
        sample_progressive_student(model, x, ts, rounds=-1)


@pytest.mark.parametrize("name", SCHEDULES)
def test_registered_consistency_multistep_samples_with_the_cd_fixed_point(name):
    """The registered sampler (f = DDIM teacher along the grid) equals Algorithm 1 run with the consistency model
    that consistency distillation with that teacher reaches (one backward sweep), re-noised at every t_n with the
    same noise: to the least-squares round-off of the fit, amplified by at most N stages."""
    schedule, g, model = _gauss(name)
    N = 5
    ts = grids.uniform_lambda(schedule, N)
    data = g.sample(32, torch.Generator().manual_seed(2))
    [cm] = cd_fixed_point(
        AffineConsistencyModel.zeros(schedule, ts, 2), teacher_step(model, ts), data, 1, sweep="backward"
    )
    x = model.sample_xt(8, ts[0], torch.Generator().manual_seed(3))[1]
    noise = torch.randn(N, 8, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = sample_consistency_multistep(model, x, ts, noise=noise)
    fitted = consistency_multistep(cm, x, list(range(1, N)), noise=noise[:-1])
    scale = max(float(x.abs().max()), float(out.abs().max()), 1.0)
    assert float((out - fitted).abs().max()) <= lstsq_bound(1e3, scale) * N


def test_registered_trained_student_is_the_distilled_student_on_its_fixed_grid():
    """The "fixed" entry runs the 2-step student of two progressive rounds on its grid only: its affine map equals the
    8-step teacher's to the least-squares round-off of two fits, it calls no model, and it refuses another grid."""
    spec = get_sampler("progressive_student_trained")
    schedule_name, grid = spec.fixed_grid
    schedule = get_schedule(schedule_name)
    teacher = ModelTeacher(ExactModel(anisotropic_gaussian(2, seed=0), schedule), TEACHER_GRID)
    ts = torch.tensor(grid, dtype=torch.float64)
    model = CountingModel(ExactModel(ring(), schedule))
    Mt, bt = affine_map_of(teacher.sample, 2)
    scale = float(Mt.abs().max()) + float(bt.abs().max())
    assert _map_error(lambda x: spec(model, x, ts), Mt, bt) <= lstsq_bound(1e3, scale) * 2
    assert model.calls == 0 and torch.equal(ts, TEACHER_GRID[::4])
    with pytest.raises(ValueError, match="timesteps"):
        spec(model, torch.zeros(3, 2, dtype=torch.float64), TEACHER_GRID)
    with pytest.raises(ValueError, match="model"):
        sample_trained_progressive_student(ExactModel(ring(), get_schedule("vp_cosine")), torch.zeros(3, 2), ts[1:])
    with pytest.raises(ValueError, match="x must"):
        spec(model, torch.zeros(3, 3, dtype=torch.float64), ts)


# --- DMD2 ------------------------------------------------------------------------------------------------------


def test_gaussian_kl_and_denoiser_identities():
    _, g, model = _gauss("vp_linear")
    mu, S = g.means[0], g.covariances[0]
    assert abs(float(gaussian_kl(mu, S, mu, S))) <= roundoff(64, 1.0)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = model.schedule(torch.tensor(0.4, dtype=torch.float64))
    a, s = v.alpha * torch.ones(5, 1), v.sigma * torch.ones(5, 1)
    assert float((gaussian_denoiser(mu, S, x, a, s) - model.x0(x, 0.4)).abs().max()) <= roundoff(AFFINE_MAP_OPS, 10.0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_dmd2_with_exact_scores_converges_to_the_data_law(name):
    """Exact real and fake scores: the DMD2 gradient vanishes only at the data law, so the Gaussian generator's exact KL
    falls by orders of magnitude and its moments reach (mu, Sigma) within the issue's 1e-3."""
    schedule, g, _ = _gauss(name)
    history = train_dmd2(g, schedule, steps=300, generator=torch.Generator().manual_seed(0))
    assert history.kl[-1] <= 1e-6 * history.kl[0]
    A, b = history.A, history.b
    assert float((b - g.means[0]).abs().max()) <= 1e-3
    assert float((A @ A.T - g.covariances[0]).abs().max()) <= 1e-3


def test_dmd2_gradient_vanishes_at_the_data_law():
    """A generator with b = mu and A = chol(Sigma) has the data law: real and fake denoisers agree to round-off."""
    _, g, _ = _gauss("vp_linear")
    mu, S = g.means[0], g.covariances[0]
    A = torch.linalg.cholesky(S)
    x_t = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, s = 0.6 * torch.ones(64, 1), 0.8 * torch.ones(64, 1)
    gap = gaussian_denoiser(mu, S, x_t, a, s) - gaussian_denoiser(mu, A @ A.T, x_t, a, s)
    assert float(gap.abs().max()) <= roundoff(AFFINE_MAP_OPS, float(x_t.abs().max()))


def test_dmd2_two_time_scale_fake_score_tracks_the_generator():
    """Two time scales: with 5 fake-denoiser updates per generator step the learned fake law stays closer to the
    generator's exact law than with 1 (mean error over the run), and the generator's KL falls."""
    schedule, g, _ = _gauss("vp_linear")
    runs = {
        k: train_dmd2(
            g, schedule, steps=40, batch=256, fake="learned", fake_updates=k, generator=torch.Generator().manual_seed(0)
        )
        for k in (1, 5)
    }
    mean_error = {k: sum(h.fake_error) / len(h.fake_error) for k, h in runs.items()}
    assert mean_error[5] < mean_error[1]
    assert runs[5].kl[-1] < 0.1 * runs[5].kl[0]
    with pytest.raises(ValueError, match="fake"):
        train_dmd2(g, schedule, fake="neural")
    with pytest.raises(ValueError, match="K = 1"):
        train_dmd2(ring(), schedule)
    with pytest.raises(ValueError, match="t_range"):
        train_dmd2(g, schedule, t_range=(0.5, 0.2))
    assert all(math.isfinite(v) for v in runs[5].kl)


def test_network_student_round_has_the_student_grid_and_checks_its_step_count():
    schedule = get_schedule("vp_linear")
    model = ExactModel(ring(), schedule)
    ts = grids.uniform_lambda(schedule, 4)
    data = ring().sample(64, torch.Generator().manual_seed(0))
    global_state = torch.random.get_rng_state()
    student, again = (
        distill_round_network(
            ModelTeacher(model, ts), 2, data, train_steps=3, batch=16, generator=torch.Generator().manual_seed(1)
        )
        for _ in range(2)
    )
    assert torch.equal(torch.random.get_rng_state(), global_state)  # every draw from the caller's generator
    assert all(torch.equal(p, q) for p, q in zip(student.parameters(), again.parameters(), strict=True))
    assert torch.equal(student.timesteps, ts[::2])
    assert student.sample(data[:5]).shape == (5, 2)
    with pytest.raises(ValueError, match="n_student = 3"):
        distill_round_network(ModelTeacher(model, ts), 3, data)


def test_dmd2_mixture_generator_moves_towards_the_ring():
    """Exact real and fake (mixture) scores on the ring: 150 DMD2 steps lower the held-out MMD of the one-step mixture
    generator by more than the CLT bound of the difference (5 disjoint chunks)."""
    schedule = get_schedule("vp_linear")
    data = ring()
    held = data.sample(1000, torch.Generator().manual_seed(1))
    start = train_dmd2_mixture(data, schedule, 8, steps=1, lr=1e-12, generator=torch.Generator().manual_seed(0))
    trained = train_dmd2_mixture(data, schedule, 8, steps=150, generator=torch.Generator().manual_seed(0))

    def chunks(g):
        x = g.sample(1000, torch.Generator().manual_seed(2))
        return torch.stack([mmd2_unbiased(x[i::5], held[i::5], 0.5) for i in range(5)])

    before, after = chunks(start), chunks(trained)
    bound = clt_difference_bound(float(before.std()), 5, float(after.std()), 5)
    assert float(after.mean()) + bound < float(before.mean())
    with pytest.raises(ValueError, match="n_components"):
        train_dmd2_mixture(data, schedule, 0)
    with pytest.raises(ValueError, match="t_range"):
        train_dmd2_mixture(data, schedule, 2, t_range=(0.9, 0.1))


# --- options off their defaults, on a second schedule family (EDM) ----------------------------------------------


def test_cd_fixed_point_with_another_sigma_data_is_still_the_exact_flow_map():
    """sigma_data only reparameterises f = c_skip x + c_out F: the CD fixed point (the exact map to epsilon) is the
    same for sigma_data = 2 as for the default, while c_skip itself changes (the option takes effect)."""
    schedule, g, model = _gauss("edm")
    N = 4
    ts = grids.uniform_lambda(schedule, N)
    data = g.sample(32, torch.Generator().manual_seed(2))

    def exact_step(x, n):
        return model.pf_ode_map(x, ts[n], ts[n + 1])

    start = AffineConsistencyModel.zeros(schedule, ts, 2, sigma_data=2.0)
    [cm] = cd_fixed_point(start, exact_step, data, 1, sweep="backward")
    assert float(cm.coefficients(0)[0]) != float(consistency_coefficients(schedule, ts[0], ts[-1])[0])
    scale = max(float(gaussian_flow_map(g, schedule, ts[0], ts[-1])[1].abs().max()), 1.0)
    for n in range(N):
        assert (
            _map_error(lambda x, n=n: cm(x, n), *gaussian_flow_map(g, schedule, ts[n], ts[-1]))
            <= lstsq_bound(1e3, scale) * N
        )


def test_dmd2_with_other_lr_batch_and_t_range_converges_on_edm():
    """lr = 0.1, batch = 128, t_range = (0.1, 0.9) on EDM's schedule: exact scores still drive the exact KL down by
    orders of magnitude (the fixed point does not depend on these options, only the path does)."""
    schedule, g, _ = _gauss("edm")
    history = train_dmd2(
        g, schedule, steps=150, batch=128, lr=0.1, t_range=(0.1, 0.9), generator=torch.Generator().manual_seed(0)
    )
    assert history.kl[-1] <= 1e-5 * history.kl[0]


def test_dmd2_direction_is_invariant_to_the_scale_of_the_data():
    """Eq. (1) divides by mean|p_real|: scaling x and both denoisers by c leaves g unchanged (to round-off: three
    subtractions, one mean and one division per entry), so the step does not depend on the data's scale; g = 0 when
    the fake denoiser equals the real one."""
    gen = torch.Generator().manual_seed(0)
    x, d_real, d_fake = (torch.randn(64, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    g = dmd2_direction(x, d_real, d_fake)
    for c in (1e-3, 0.5, 7.0, 1e4):
        scaled = dmd2_direction(c * x, c * d_real, c * d_fake)
        assert float((scaled - g).abs().max()) <= roundoff(16, float(g.abs().max()))
    assert torch.equal(dmd2_direction(x, d_real, d_real), torch.zeros_like(x))


@pytest.mark.parametrize("name", SCHEDULES)
def test_dmd2_fake_lr_off_its_default_still_tracks_and_converges(name):
    """fake_lr = 0.2 (default 0.05) with the learned fake denoiser: the option changes the run (the first fake errors
    differ from the default's), and the generator's exact KL still falls five-fold in 40 steps (2 fake updates each)."""
    schedule, g, _ = _gauss(name)

    def run(steps, fake_lr):
        gen = torch.Generator().manual_seed(0)
        return train_dmd2(
            g, schedule, steps=steps, batch=256, fake="learned", fake_updates=2, fake_lr=fake_lr, generator=gen
        )

    history = run(40, 0.2)
    assert run(2, 0.05).fake_error != history.fake_error[:2]
    assert history.kl[-1] < 0.2 * history.kl[0]


def test_dmd2_mixture_with_other_lr_and_batch_moves_towards_the_ring_on_edm():
    """train_dmd2_mixture with lr = 0.05, batch = 128 (defaults 0.02, 512) on EDM's schedule: the held-out MMD still
    falls by more than the CLT bound of the difference (5 disjoint chunks)."""
    schedule = get_schedule("edm")
    data = ring()
    held = data.sample(1000, torch.Generator().manual_seed(1))
    kw = dict(batch=128, generator=torch.Generator().manual_seed(0))
    start = train_dmd2_mixture(data, schedule, 8, steps=1, lr=1e-12, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    trained = train_dmd2_mixture(data, schedule, 8, steps=60, lr=0.05, **kw)

    def chunks(g):
        x = g.sample(1000, torch.Generator().manual_seed(2))
        return torch.stack([mmd2_unbiased(x[i::5], held[i::5], 0.5) for i in range(5)])

    before, after = chunks(start), chunks(trained)
    assert float(after.mean()) + clt_difference_bound(float(before.std()), 5, float(after.std()), 5) < float(
        before.mean()
    )


@pytest.mark.parametrize("name", SCHEDULES)
def test_network_student_with_other_lr_batch_and_hidden_learns_the_target(name):
    """distill_round_network with hidden = 16, lr = 1e-2, batch = 64 (defaults 64, 3e-3, 256) on Gaussian data, 4 -> 2
    steps: the width takes effect, and training lowers the student's mean squared distance to the teacher's samples
    on held-out starts by more than the CLT bound of the difference."""
    schedule, g, model = _gauss(name)
    teacher = ModelTeacher(model, grids.uniform_lambda(schedule, 4))
    data = g.sample(512, torch.Generator().manual_seed(0))
    x_T = model.sample_xt(500, teacher.timesteps[0], torch.Generator().manual_seed(1))[1]
    aim = teacher.sample(x_T)

    def sq_error(train_steps):
        student = distill_round_network(
            teacher,
            2,
            data,
            train_steps=train_steps,
            batch=64,
            lr=1e-2,
            hidden=16,
            generator=torch.Generator().manual_seed(2),
        )
        assert student.net[0].out_features == 16
        with torch.no_grad():
            return ((student.sample(x_T) - aim) ** 2).sum(-1)

    before, after = sq_error(1), sq_error(60)
    bound = clt_difference_bound(float(before.std()), 500, float(after.std()), 500)
    assert float(after.mean()) + bound < float(before.mean())


def test_gaussian_w2_equals_the_scipy_sqrtm_formula_and_vanishes_on_equal_laws():
    """Eq. (2) against the same formula with scipy's matrix square root (oracle: Schur method, not our eigh) on random
    laws in d = 3, to round-off of the two square roots; zero (to round-off) between a law and itself; the shift alone
    when the covariances agree. (POT's bures_wasserstein_distance agrees too, but importing POT costs seconds.)"""
    from scipy.linalg import sqrtm

    gen = torch.Generator().manual_seed(0)
    B1, B2 = (torch.randn(3, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    m1, m2 = (torch.randn(3, generator=gen, dtype=torch.float64) for _ in range(2))
    S1, S2 = B1 @ B1.T + 0.1 * torch.eye(3), B2 @ B2.T + 0.1 * torch.eye(3)
    ours = float(gaussian_w2(m1, S1, m2, S2))
    root = sqrtm(S2.numpy()).real
    cross = sqrtm(root @ S1.numpy() @ root).real
    theirs = float((((m1 - m2) ** 2).sum() + (S1 + S2).trace() - 2 * cross.trace()) ** 0.5)
    scale = float(S1.abs().max() + S2.abs().max())
    assert abs(ours - theirs) <= roundoff(AFFINE_MAP_OPS, scale) / max(ours, 1e-3)
    assert float(gaussian_w2(m1, S1, m1, S1)) <= roundoff(AFFINE_MAP_OPS, scale) ** 0.5
    assert abs(float(gaussian_w2(m1, S1, m2, S1)) - float((m1 - m2).norm())) <= roundoff(AFFINE_MAP_OPS, scale) ** 0.5
    with pytest.raises(ValueError, match="S2"):
        gaussian_w2(m1, S1, m2, S2[:2])
