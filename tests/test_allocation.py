"""Equitable allocation: greedy marginal gain per cost, KKT conditions, sequential allocation with unknown rates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from tolerances import roundoff

from refimpl.selection import allocation as al

TRUTH = al.Curves(np.array([2.0, 1.0, 3.0]), np.array([0.5, 0.3, 0.8]), np.array([0.05, 0.1, 0.02]))
COSTS = np.array([1.0, 2.0, 0.5])


def _objective(n: np.ndarray, w: np.ndarray) -> float:
    return float(w @ TRUTH(n))


@pytest.mark.parametrize("weights", [None, np.array([1.0, 3.0, 0.5])])
def test_with_equal_costs_greedy_is_the_brute_force_optimum(weights: np.ndarray | None) -> None:
    w = np.ones(3) if weights is None else weights
    for budget in (6, 17, 30):
        n = al.greedy_allocation(TRUTH, np.ones(3), budget, weights=weights)
        assert n.sum() == budget
        best = min(
            (np.array(c) for c in itertools.product(range(1, budget), repeat=3) if sum(c) == budget),
            key=lambda c: _objective(c, w),
        )
        assert _objective(n, w) <= _objective(best, w) + roundoff(16)


@pytest.mark.parametrize("budget", [50.0, 400.0, 3000.0])
def test_greedy_meets_the_discrete_kkt_conditions(budget: float) -> None:
    """Every chosen increment's gain per cost is at least every next increment's (convex, separable), and the
    leftover budget is below the cost of the best next sample."""
    w = np.array([1.0, 2.0, 1.0])
    n = al.greedy_allocation(TRUTH, COSTS, budget, weights=w)
    nxt = w * (TRUTH(n) - TRUTH(n + 1)) / COSTS
    last = (w * (TRUTH(n - 1) - TRUTH(n)) / COSTS)[n > 1]
    assert last.min() >= nxt.max() - roundoff(16)
    assert budget - COSTS @ n < COSTS[int(np.argmax(nxt))]


@pytest.mark.parametrize("weights", [None, np.array([1.0, 3.0, 0.5])])
def test_the_continuous_solution_meets_the_kkt_conditions_and_greedy_is_within_g_minus_1(
    weights: np.ndarray | None,
) -> None:
    """Stationarity w a b n^(-b-1) = lambda kappa for groups above n_min, the budget spent exactly; with equal costs
    no group of the greedy allocation is G - 1 or more from it (convexity brackets -e'(n) by the increments)."""
    w = np.ones(3) if weights is None else weights
    n, lam = al.kkt_allocation(TRUTH, COSTS, 800.0, weights=weights)
    assert abs(COSTS @ n - 800.0) <= 1e-9 * 800
    interior = n > 1
    grad = w * TRUTH.a * TRUTH.b * n ** (-TRUTH.b - 1) / COSTS
    assert np.allclose(grad[interior], lam, rtol=1e-9)
    assert (grad[~interior] <= lam * (1 + 1e-9)).all()
    ng = al.greedy_allocation(TRUTH, np.ones(3), 900, weights=weights)
    nk, _ = al.kkt_allocation(TRUTH, np.ones(3), float(ng.sum()), weights=weights)
    assert np.abs(ng - nk).max() < 3 - 1


def test_sequential_allocation_converges_to_the_oracle_as_the_observations_sharpen() -> None:
    """Noise-free observations: exactly the oracle greedy allocation. Noisy: the mean relative L1 distance
    falls with the noise (2 seeds)."""
    B = 400.0
    oracle = al.greedy_allocation(TRUTH, COSTS, B)
    exact = al.sequential_allocation(
        TRUTH, COSTS, B, batch=40.0, noise=0.0, rng=np.random.default_rng(0), pilot_rounds=2
    )
    assert np.array_equal(exact.n, oracle)
    dist = []
    for noise in (0.1, 0.01, 0.001):
        runs = [
            al.sequential_allocation(
                TRUTH, COSTS, B, batch=40.0, noise=noise, rng=np.random.default_rng(s), pilot_rounds=2
            ).n
            for s in range(2)
        ]
        dist.append(np.mean([np.abs(r - oracle).sum() / oracle.sum() for r in runs]))
    assert dist[0] > dist[1] >= dist[2] and dist[2] <= 0.01


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match=r"budget .* is below the cost"):
        al.greedy_allocation(TRUTH, COSTS, 3.0)
    with pytest.raises(ValueError, match=r"budget .* is below the cost"):
        al.kkt_allocation(TRUTH, COSTS, 1.0)
    with pytest.raises(ValueError, match="a > 0"):
        al.Curves(np.array([0.0]), np.array([1.0]), np.array([0.0]))
    with pytest.raises(ValueError, match="costs and weights must be positive"):
        al.greedy_allocation(TRUTH, np.array([1.0, 0.0, 1.0]), 10.0)
    with pytest.raises(ValueError, match="shape"):
        al.greedy_allocation(TRUTH, np.ones(2), 10.0)
    with pytest.raises(ValueError, match="batch"):
        al.sequential_allocation(TRUTH, COSTS, 100.0, batch=0.0, noise=0.1, rng=np.random.default_rng(0))


def test_a_larger_floor_n_min_is_respected_by_greedy_and_kkt() -> None:
    """n_min = 20: every group gets at least 20; the KKT solution clamps at 20 exactly where the free optimum
    falls below it, and spends the budget; greedy stays within one sample's cost of the budget."""
    budget = 100.0  # the second group's free optimum is below 20 here, the others above
    ng = al.greedy_allocation(TRUTH, COSTS, budget, n_min=20)
    assert ng.min() >= 20 and float(COSTS @ ng) <= budget and budget - float(COSTS @ ng) < COSTS.max()
    n, lam = al.kkt_allocation(TRUTH, COSTS, budget, n_min=20.0)
    assert n.min() >= 20.0 - roundoff(8, 20.0)
    assert abs(float(COSTS @ n) - budget) <= roundoff(64, budget)
    free = (TRUTH.a * TRUTH.b / (lam * COSTS)) ** (1.0 / (TRUTH.b + 1.0))
    assert np.allclose(n, np.maximum(20.0, free), rtol=1e-12, atol=0)
    assert (n == 20.0).any() and not np.allclose(n, al.kkt_allocation(TRUTH, COSTS, budget)[0])
