"""Chapter 10, optimal transport: POT plans and the OT-CFM pairing (against torchcfm), and DPM-OT's semi-discrete map
(cell masses, cyclical monotonicity, agreement with POT's discrete solution)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import U64, Z, roundoff

from refimpl.transport import (
    SemiDiscreteOT,
    fit_semidiscrete_ot,
    is_cyclically_monotone,
    minibatch_ot_pairs,
    ot_plan,
)
from toy_models import ring

torch.set_default_dtype(torch.float64)


def test_minibatch_pairing_is_a_permutation_that_beats_every_swap() -> None:
    g = torch.Generator().manual_seed(0)
    x0, x1 = ring().sample(64, g), torch.randn(64, 2, generator=g)
    sigma = minibatch_ot_pairs(x0, x1)
    assert sorted(sigma.tolist()) == list(range(64))
    paired = x1[sigma]
    ok, worst = is_cyclically_monotone(x0, paired, atol=roundoff(16, 16.0))
    assert ok, worst
    cost = ((x0 - paired) ** 2).sum(-1).mean()
    assert float(cost) <= float(((x0 - x1) ** 2).sum(-1).mean())


def test_plan_and_pairs_agree_with_torchcfm() -> None:
    """torchcfm's OTPlanSampler('exact').get_map is our plan; sample_plan(replace=False) gives the same pairs.

    Its default replace=True draws the pairs with replacement from the plan: the same law of one pair, but the batch
    repeats some pairs and drops others (a convention difference, not modelled: refimpl returns the permutation).
    """
    from torchcfm.optimal_transport import OTPlanSampler

    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(32, 2, generator=g), ring().sample(32, g)
    sampler = OTPlanSampler(method="exact")
    plan = ot_plan(torch.cdist(x0, x1) ** 2)
    np.testing.assert_array_equal(sampler.get_map(x0, x1), plan.numpy())
    a, b = sampler.sample_plan(x0, x1, replace=False)
    sigma = minibatch_ot_pairs(x0, x1)
    mine = {tuple(r) for r in torch.cat([x0, x1[sigma]], 1).tolist()}
    theirs = {tuple(r) for r in torch.cat([a, b], 1).tolist()}
    assert mine == theirs


def test_ot_plan_rejects_bad_input() -> None:
    cost = torch.rand(3, 4, generator=torch.Generator().manual_seed(901))
    with pytest.raises(ValueError, match="cost"):
        ot_plan(cost, torch.full((3,), 1 / 3), torch.full((5,), 0.2))
    with pytest.raises(ValueError, match="sum to 1"):
        ot_plan(cost, torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="cost"):
        ot_plan(torch.rand(3, generator=torch.Generator().manual_seed(902)))
    with pytest.raises(ValueError, match="minibatches"):
        minibatch_ot_pairs(torch.zeros(3, 2), torch.zeros(4, 2))


def _targets(n: int, seed: int) -> torch.Tensor:
    return ring().sample(n, torch.Generator().manual_seed(seed))


def test_converged_cell_masses_equal_the_target_weights() -> None:
    """Fitted on n_fit Gaussian draws to tolerance tol, the cells of fresh draws hold nu_i within the CLT bound.

    |mu_eval(W_i) - nu_i| <= tol + Z sqrt(nu_i (1 - nu_i)) (1 / sqrt(n_fit) + 1 / sqrt(n_eval)): the fitting sample's
    own deviation from mu and the evaluation sample's.
    """
    g = torch.Generator().manual_seed(2)
    n_fit, n_eval, tol = 10000, 10000, 2e-3
    y = _targets(8, 3)
    w = torch.tensor([0.05, 0.1, 0.1, 0.15, 0.1, 0.2, 0.15, 0.15])
    sd, steps = fit_semidiscrete_ot(torch.randn(n_fit, 2, generator=g), y, w, tol=tol)
    assert steps < 5000
    masses = sd.cell_masses(torch.randn(n_eval, 2, generator=g))
    bound = tol + Z * torch.sqrt(w * (1 - w)) * (n_fit**-0.5 + n_eval**-0.5)
    assert bool(((masses - w).abs() <= bound).all()), (masses - w).abs().max()


def test_map_is_cyclically_monotone_and_a_random_map_is_not() -> None:
    g = torch.Generator().manual_seed(4)
    y = _targets(6, 5)
    sd = SemiDiscreteOT(y, torch.full((6,), 1 / 6), torch.randn(6, generator=g))  # any heights
    x = torch.randn(400, 2, generator=g)
    ok, worst = is_cyclically_monotone(x, sd(x), atol=roundoff(16, float(x.abs().max() * y.abs().max())))
    assert ok, worst
    shuffled = sd(x)[torch.randperm(400, generator=g)]
    assert not is_cyclically_monotone(x, shuffled)[0]


def test_exact_cell_counts_give_pots_discrete_optimum() -> None:
    """On a sample of n points with n nu_i integer, heights that give exact counts make the map an optimal assignment:
    the same cost as ot.emd and, the optimum being unique for points in general position, the same assignment."""
    g = torch.Generator().manual_seed(6)
    n, N = 400, 4
    x, y = torch.randn(n, 2, generator=g), _targets(N, 7)
    sd, steps = fit_semidiscrete_ot(x, y, tol=0.0, max_iter=20000)
    assert float((sd.cell_masses(x) - 1 / N).abs().max()) == 0.0, steps
    cost = -(x @ y.T)  # the cost -<x, y> of the potential (|x - y|^2 / 2 up to terms that leave the plan unchanged)
    plan = ot_plan(cost, None, torch.full((N,), 1 / N))
    assignment = sd.assign(x)
    theirs = plan.argmax(1)
    assert torch.equal(assignment, theirs)
    mine_cost = cost[torch.arange(n), assignment].sum() / n
    assert abs(float(mine_cost - (plan * cost).sum())) <= roundoff(4 * n, float(cost.abs().max()), U64)


def test_semidiscrete_rejects_bad_input() -> None:
    x, y = (
        torch.randn(10, 2, generator=torch.Generator().manual_seed(903)),
        torch.randn(3, 2, generator=torch.Generator().manual_seed(904)),
    )
    with pytest.raises(ValueError, match="weights"):
        fit_semidiscrete_ot(x, y, torch.tensor([0.5, 0.4, 0.4]))
    with pytest.raises(ValueError, match="weights"):
        fit_semidiscrete_ot(x, y, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="share d"):
        fit_semidiscrete_ot(x, torch.randn(3, 3, generator=torch.Generator().manual_seed(905)))
    with pytest.raises(ValueError, match="lr"):
        fit_semidiscrete_ot(x, y, lr=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        is_cyclically_monotone(x, y)
