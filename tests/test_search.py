"""Chapter 4, solver search on an exact objective: the exact KL against Monte Carlo, the USF decision space (NFE
accounting of every decoded solver, DDIM and UniPC as settings), and the two seeded evolutionary searches."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from tolerances import VANDERMONDE_RTOL, Z, clt_bound, roundoff, same_sampler_bound

from refimpl import grids
from refimpl.models import CountingModel
from refimpl.registry import get_sampler
from refimpl.samplers import sample_ddim, sample_unipc
from refimpl.samplers._exponential import phi
from refimpl.samplers.multistep import lagrange_integrals
from refimpl.samplers.usf import SolverSchedule, StepChoice, sample_usf, steps_for_budget, taylor_integrals
from refimpl.schedules import get_schedule
from refimpl.search import autodiffusion_search, exact_kl, output_law, random_solver, usf_objective, usf_search
from toy_models import ExactModel, anisotropic_gaussian, random_mixture

SCHEDULES = ["vp_linear", "vp_cosine"]


def _toy(schedule_name: str = "vp_linear", d: int = 4) -> ExactModel:
    return ExactModel(anisotropic_gaussian(d=d, seed=1, eig_range=(1e-2, 1.0)), get_schedule(schedule_name))


def test_exact_kl_agrees_with_monte_carlo() -> None:
    """KL(q_out || p_tend) = E_q[log q - log p], estimated from 4000 runs of DPM-Solver++(2M) from x_T ~ p_T;
    the estimate's error is within the CLT bound, and so is the sample mean against the exact mean."""
    model = _toy()
    s = model.schedule
    ts = grids.uniform_lambda(s, 4)
    spec = get_sampler("dpm_solver_pp_2m")
    kl = exact_kl(spec, model, ts)
    mean, cov = output_law(spec, model, ts)
    n = 4000
    x_T = model.sample_xt(n, s.t_max, torch.Generator().manual_seed(0))[1]
    out = spec(model, x_T, ts)
    q = torch.distributions.MultivariateNormal(mean, cov)
    target = model.marginal(ts[-1])
    p = torch.distributions.MultivariateNormal(target.means[0], target.covariances[0])
    terms = q.log_prob(out) - p.log_prob(out)
    assert kl > 0.01  # a visible error: the test compares two non-trivial numbers
    assert abs(float(terms.mean()) - kl) < clt_bound(float(terms.std()), n)
    assert bool(((out.mean(0) - mean).abs() < Z * cov.diagonal().sqrt() / math.sqrt(n)).all())


def test_exact_kl_refuses_a_mixture() -> None:
    model = ExactModel(random_mixture(K=2, d=2), get_schedule("vp_linear"))
    with pytest.raises(ValueError, match="single Gaussian"):
        exact_kl(get_sampler("ddim"), model, grids.uniform_lambda(model.schedule, 3))


@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_usf_data_prediction_order_one_is_ddim(schedule_name: str) -> None:
    """(x0, Taylor order 1, no corrector) is DDIM to round-off, on a non-uniform grid."""
    model = _toy(schedule_name)
    x = model.sample_xt(8, model.schedule.t_max, torch.Generator().manual_seed(1))[1]
    ts = grids.quadratic(model.schedule, 7)
    got, want = sample_usf(model, x, ts), sample_ddim(model, x, ts)
    assert float((got - want).abs().max()) <= same_sampler_bound(7, float(x.abs().max()))


@pytest.mark.parametrize("prediction", ["x0", "eps"])
@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_usf_with_correctors_is_unipc_with_solved_coefficients(prediction: str, schedule_name: str) -> None:
    """(Taylor order 2, derivative order 1, corrector on every step but the last) is UniPC-2 with the solved
    coefficients (the same engine rows: bit for bit)."""
    model = _toy(schedule_name)
    x = model.sample_xt(8, model.schedule.t_max, torch.Generator().manual_seed(2))[1]
    ts = grids.uniform_lambda(model.schedule, 6)
    steps = [StepChoice(prediction, 2, 1, True)] * 5 + [StepChoice(prediction, 2, 1, False)]
    want = sample_unipc(model, x, ts, order=2, prediction=prediction, simplified=False)
    assert torch.equal(sample_usf(model, x, ts, steps=steps), want)


@pytest.mark.parametrize("q", [2, 3, 4])
def test_taylor_integrals_untruncated_are_the_lagrange_integrals(q: int) -> None:
    nodes = torch.tensor([0.0, -0.7, -1.9, -3.0][:q], dtype=torch.float64)
    for z in (-1.3, 0.4):
        want = lagrange_integrals(nodes, torch.tensor(0.0), torch.tensor(1.0), z)
        got = taylor_integrals(nodes, torch.tensor(0.0), torch.tensor(1.0), z, q)
        assert float((got - want).abs().max()) <= VANDERMONDE_RTOL * float(want.abs().max())


def test_taylor_integrals_drop_exactly_the_high_powers() -> None:
    """Weights of K terms integrate m(theta) = theta^j exactly for j < K and ignore it for K <= j < q."""
    nodes = torch.tensor([0.0, -0.5, -1.2], dtype=torch.float64)
    z = torch.tensor(-0.8, dtype=torch.float64)
    for K in (1, 2):
        w = taylor_integrals(nodes, torch.tensor(0.0), torch.tensor(1.0), z, K)
        for j in range(3):
            got = float((w * nodes**j).sum())
            want = math.factorial(j) * float(phi(j + 1, z)) if j < K else 0.0
            assert abs(got - want) <= VANDERMONDE_RTOL * math.factorial(2)


@pytest.mark.parametrize("nfe", [1, 2, 3, 5, 8])
def test_every_decoded_solver_spends_exactly_its_budget(nfe: int) -> None:
    """Random solvers of the decision space (AFS, correctors, orders) make exactly nfe model calls."""
    model = _toy()
    g = torch.Generator().manual_seed(nfe)
    x = torch.zeros(2, 4, dtype=torch.float64)
    for _ in range(6):
        sol = random_solver(model.schedule, nfe, g)
        counting = CountingModel(model)
        sample_usf(counting, x, sol.timesteps, steps=sol.steps, afs=sol.afs, data_mean=model.mixture.means[0])
        assert counting.calls == sol.nfe == nfe


@pytest.mark.parametrize("afs", ["zero_x0", "average_x0"])
def test_analytical_first_step_saves_a_call(afs: str) -> None:
    model = _toy("vp_cosine")
    ts = grids.uniform_lambda(model.schedule, 4)
    counting = CountingModel(model)
    x = torch.ones(1, 4, dtype=torch.float64)
    out = sample_usf(counting, x, ts, steps=StepChoice("x0", 2, 2, False), afs=afs, data_mean=model.mixture.means[0])
    assert counting.calls == 3 and torch.isfinite(out).all()
    assert not torch.equal(out, sample_usf(model, x, ts, steps=StepChoice("x0", 2, 2, False)))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="cannot be met"):
        steps_for_budget(1, "none", last_corrector=True)
    with pytest.raises(ValueError, match="cannot be met"):
        random_solver(get_schedule("vp_linear"), 0, torch.Generator())
    with pytest.raises(ValueError, match="taylor_order"):
        StepChoice("x0", 4)
    with pytest.raises(ValueError, match="prediction"):
        StepChoice("v")
    ts = grids.uniform_lambda(get_schedule("vp_linear"), 3)
    with pytest.raises(ValueError, match="one StepChoice per step"):
        SolverSchedule(ts, (StepChoice(),) * 2)
    with pytest.raises(ValueError, match="data_mean"):
        sample_usf(_toy(), torch.zeros(1, 4, dtype=torch.float64), ts, afs="average_x0")
    with pytest.raises(ValueError, match="n_steps"):
        autodiffusion_search(lambda g: 0.0, grids.uniform_lambda(get_schedule("vp_linear"), 5), 6, torch.Generator())


def _tiny_usf(seed: int, nfe: int = 3):
    model = _toy()
    ts = grids.uniform_lambda(model.schedule, nfe)
    init = [SolverSchedule(ts, (StepChoice(),) * nfe)]  # DDIM
    search = partial(usf_search, population=4, generations=2, offspring=8, evaluated=2, initial=init)
    return search(
        usf_objective(model, model.mixture.means[0]), model.schedule, nfe, torch.Generator().manual_seed(seed)
    )


def test_usf_search_is_seeded_elitist_and_never_worse_than_ddim() -> None:
    model = _toy()
    a, b = _tiny_usf(0), _tiny_usf(0)
    assert a.best_value == b.best_value and torch.equal(a.best.timesteps, b.best.timesteps)
    assert all(later <= earlier for earlier, later in zip(a.history, a.history[1:], strict=False))
    ddim = exact_kl(get_sampler("ddim"), model, grids.uniform_lambda(model.schedule, 3))
    assert a.best_value <= ddim and a.best.nfe == 3 and a.n_evaluations == 4 + 2 * 2
    with pytest.raises(ValueError, match="nfe = 4"):
        usf_search(lambda s: 0.0, model.schedule, 4, torch.Generator(), initial=[a.best])


def test_autodiffusion_search_keeps_valid_subsets_and_beats_even_spacing() -> None:
    model = _toy("vp_cosine")
    fine = grids.uniform_lambda(model.schedule, 24)
    objective = partial(exact_kl, sample_ddim, model)
    runs = [
        autodiffusion_search(
            objective, fine, 3, torch.Generator().manual_seed(0), population=6, select=3, mutation=4, crossover=4,
            m_prob=0.5, epochs=2,
        )
        for _ in range(2)
    ]  # fmt: skip
    best = runs[0].best
    assert torch.equal(best, runs[1].best)
    assert len(best) == 4 and bool((best[1:] < best[:-1]).all()) and best[0] == fine[0] and best[-1] == fine[-1]
    assert bool(torch.isin(best, fine).all())
    assert all(later <= earlier for earlier, later in zip(runs[0].history, runs[0].history[1:], strict=False))
    even = torch.cat([fine[:1], fine[1:-1][[7, 14]], fine[-1:]])  # the evenly spaced subset of the first population
    assert runs[0].best_value <= objective(even)


def test_keyword_options_are_one_choice_for_every_step() -> None:
    """The registered keywords (prediction, orders, corrector) equal passing that StepChoice for every step."""
    model = _toy("vp_cosine")
    x = model.sample_xt(3, model.schedule.t_max, torch.Generator().manual_seed(3))[1]
    ts = grids.uniform_lambda(model.schedule, 5)
    got = sample_usf(model, x, ts, prediction="eps", taylor_order=3, derivative_order=2, corrector=True)
    assert torch.equal(got, sample_usf(model, x, ts, steps=StepChoice("eps", 3, 2, True)))


def test_gaussian_kl_is_the_closed_form_per_coordinate_and_the_old_dmd_name_warns() -> None:
    """Diagonal covariances: the KL is the sum of the 1-D ones, log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2."""
    from refimpl.distillation import dmd
    from refimpl.reference import gaussian_kl

    f64 = {"dtype": torch.float64}
    m1, m2 = torch.tensor([0.0, 1.0, -2.0], **f64), torch.tensor([0.5, 1.0, 1.0], **f64)
    s1, s2 = torch.tensor([1.0, 0.3, 2.0], **f64), torch.tensor([2.0, 0.3, 1.5], **f64)
    expected = float((torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum())
    got = float(gaussian_kl(m1, torch.diag(s1**2), m2, torch.diag(s2**2)))
    assert abs(got - expected) < roundoff(64, scale=max(1.0, abs(expected)))  # a Cholesky of 3 x 3 and 3 sums
    with pytest.warns(DeprecationWarning, match="refimpl.reference.gaussian_kl"):
        assert float(dmd.gaussian_kl(m1, torch.diag(s1**2), m2, torch.diag(s2**2))) == got
    with pytest.raises(ValueError, match="S2"):
        gaussian_kl(m1, torch.diag(s1**2), m2, -torch.eye(3, dtype=torch.float64))
