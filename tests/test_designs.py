"""DATED sidebar: Latin hypercube strata, centered L2 discrepancy against scipy.stats.qmc."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import qmc
from tolerances import roundoff

from refimpl.selection import designs


@pytest.mark.parametrize("d", [1, 2, 5])
def test_centered_discrepancy_matches_scipy(d: int) -> None:
    rng = np.random.default_rng(d)
    for x in (rng.uniform(size=(40, d)), designs.latin_hypercube(40, d, rng)):
        ours = designs.centered_discrepancy(x)
        assert abs(ours - qmc.discrepancy(x, method="CD")) <= roundoff(8 * 40 * d, scale=(13 / 12) ** d)


def test_latin_hypercube_puts_one_point_in_every_stratum_of_every_coordinate() -> None:
    x = designs.latin_hypercube(25, 4, np.random.default_rng(0))
    for k in range(4):
        assert sorted(np.floor(x[:, k] * 25).astype(int)) == list(range(25))


def test_space_filling_designs_have_lower_discrepancy_than_iid_points() -> None:
    """Mean over 30 designs of 64 points in 3-D: Sobol < Latin hypercube < i.i.d. (expected CD^2 of i.i.d. points
    is of order 1/n; the gaps here are many standard errors)."""
    rng = np.random.default_rng(1)
    iid = np.mean([designs.centered_discrepancy(rng.uniform(size=(64, 3))) for _ in range(30)])
    lhs = np.mean([designs.centered_discrepancy(designs.latin_hypercube(64, 3, rng)) for _ in range(30)])
    sob = np.mean([designs.centered_discrepancy(qmc.Sobol(3, seed=s).random(64)) for s in range(30)])
    assert sob < lhs < iid


def test_uniform_designs_give_non_uniform_performances() -> None:
    """Design diversity is not performance diversity: the performances of a low-discrepancy design are far from
    uniform on [0, 1] (their 1-D discrepancy exceeds that of the design's own coordinates many times)."""
    x = qmc.Sobol(2, seed=0).random(256)
    y = designs.performance_toy(x)
    assert designs.centered_discrepancy(y[:, None]) > 10 * designs.centered_discrepancy(x[:, :1])


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="unit cube"):
        designs.centered_discrepancy(np.array([[1.5]]))
    with pytest.raises(ValueError, match="n must"):
        designs.latin_hypercube(0, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sharpness"):
        designs.performance_toy(np.zeros((2, 2)), sharpness=0.0)
