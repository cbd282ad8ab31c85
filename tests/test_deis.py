"""DEIS: exact Lagrange weights against sympy, quadrature weights against scipy, DDIM identities, bad input.

Measured orders of deis_tab2/3, deis_rhoab2/3, dpm_solver_2m_exact (log-rho AB) and deis_rhork3 come from the
shared registry tests.
"""

from __future__ import annotations

import itertools
import warnings
from functools import cache, partial

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad_vec
from tolerances import (
    AB_WEIGHT_OPS,
    IDENTITY_RTOL,
    ORDER_TOL,
    QUAD_ESTIMATE_SAFETY,
    float_sum_bound,
    lagrange_weights_bound,
    roundoff,
)

from refimpl import grids
from refimpl.reference import measure_order
from refimpl.samplers import deis_ab_coefficients, lagrange_integrals, sample_ddim, sample_deis_ab, sample_deis_rhork
from refimpl.samplers.deis import RK_TABLEAUS, lagrange_integrals_symbolic
from refimpl.samplers.multistep import GAUSS_LEGENDRE_NODES
from refimpl.schedules import get_schedule
from toy_models import ExactModel, anisotropic_gaussian, ring

SCHEDULES = ["vp_linear", "vp_cosine", "ddpm_linear", "scaled_linear", "edm"]


@pytest.mark.parametrize("q", [1, 2, 3, 4])
@settings(max_examples=6)  # each example is a sympy integration
@given(data=st.data())
def test_lagrange_integrals_equal_sympy(q: int, data) -> None:
    """Distinct rational nodes anywhere (also far from the interval): the weights agree with sympy's exact
    integrals within ``lagrange_weights_bound``, the round-off of the terms that cancel (the monomial coefficients
    of the basis numerator, of size prod (1 + |theta_k|)) and of the node differences, derived there."""
    ints = st.integers(-4000, 4000)
    nodes = data.draw(st.lists(ints, min_size=q, max_size=q, unique=True))
    a, b = data.draw(st.lists(ints, min_size=2, max_size=2, unique=True))
    u = sp.Symbol("u")
    exact = []
    for j in range(q):
        basis = sp.Mul(
            *[(u - sp.Rational(nodes[k], 100)) / sp.Rational(nodes[j] - nodes[k], 100) for k in range(q) if k != j]
        )
        exact.append(float(sp.integrate(basis, (u, sp.Rational(a, 100), sp.Rational(b, 100)))))
    ours = lagrange_integrals(torch.tensor(nodes) / 100.0, torch.tensor(a / 100.0), torch.tensor(b / 100.0))
    bounds = lagrange_weights_bound([n / 100 for n in nodes], a / 100, b / 100)
    for j in range(q):
        assert abs(float(ours[j]) - exact[j]) <= bounds[j], (j, ours, exact, bounds)


@pytest.mark.parametrize("q", [2, 3, 4])
def test_symbolic_weights_are_the_adams_bashforth_coefficients_on_equal_steps(q: int) -> None:
    """theta_k = -k: the classical AB weights (3/2, -1/2), (23, -16, 5)/12, (55, -59, 37, -9)/24."""
    sym = lagrange_integrals_symbolic(q)
    weights = [w.subs({t: -(k + 1) for k, t in enumerate(sym["thetas"])}) for w in sym["weights"]]
    expected = {
        2: [sp.Rational(3, 2), sp.Rational(-1, 2)],
        3: [sp.Rational(n, 12) for n in (23, -16, 5)],
        4: [sp.Rational(n, 24) for n in (55, -59, 37, -9)],
    }[q]
    assert weights == expected


@cache
def _symbolic_weights_3() -> tuple:
    sym = lagrange_integrals_symbolic(3)
    return tuple(sp.lambdify(sym["thetas"], w) for w in sym["weights"])


@given(theta=st.tuples(st.floats(-8.0, -0.05), st.floats(-8.0, -0.05)).filter(lambda th: abs(th[0] - th[1]) >= 0.05))
def test_symbolic_and_numeric_weights_agree(theta: tuple[float, float]) -> None:
    exact = [float(w(*theta)) for w in _symbolic_weights_3()]
    ours = lagrange_integrals(torch.tensor([0.0, *theta]), torch.tensor(0.0), torch.tensor(1.0))
    assert np.allclose(ours.numpy(), exact, rtol=IDENTITY_RTOL, atol=IDENTITY_RTOL * max(map(abs, exact)))


@pytest.mark.parametrize(
    "name",
    [
        "vp_linear",
        "vp_cosine",
        "edm",
        # a discrete schedule's steps hold ~100 knots each, one scipy quad per piece: slow
        pytest.param("ddpm_linear", marks=pytest.mark.slow),
        pytest.param("scaled_linear", marks=pytest.mark.slow),
    ],
)
def test_tab_weights_equal_adaptive_quadrature(name: str) -> None:
    """tAB weights int l_j(t(rho)) drho (Gauss-Legendre, cut at a discrete schedule's knots) against scipy's
    adaptive quadrature (``quad_vec``, all weights of a step at once) on the same pieces, within twice quad's own
    error estimate plus the round-off of the Gauss-Legendre sum (24 nodes a piece, exact to degree 47 on an analytic
    integrand, so truncation is below round-off; about 4 roundings a term: t(rho) to a few ulps and a product of at
    most 3 factors, on terms of size max |weight|)."""
    s = get_schedule(name)
    ts = grids.uniform_lambda(s, 8)
    C = deis_ab_coefficients(s, ts, 3, "t")
    knots = getattr(s, "t_knots", None)

    def rho(t: float) -> float:
        return float(torch.exp(-s.lambda_t(torch.tensor(t))))

    @cache
    def t_of_rho(r: float) -> float:  # quad meets the same nodes for every j: one t(rho) each
        return float(s.t_of_lambda(torch.tensor(-np.log(r)).clamp(s.lambda_min, s.lambda_max)))

    for i in [0, 1, 4, 7]:
        q = min(3, i + 1)
        nodes = [float(ts[i - k]) for k in range(q)]
        cuts = [float(ts[i]), float(ts[i + 1])]
        if knots is not None:
            cuts = sorted({*cuts, *(float(k) for k in knots if ts[i + 1] < k < ts[i])}, reverse=True)

        def basis(r: float, q: int = q, nodes: list = nodes) -> np.ndarray:
            """(l_0, ..., l_{q-1}) at t(rho): every weight of the step from one evaluation of t(rho)."""
            tau = t_of_rho(r)
            return np.array(
                [np.prod([(tau - nodes[k]) / (nodes[j] - nodes[k]) for k in range(q) if k != j]) for j in range(q)]
            )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quad's round-off notices near 1e-13
            pieces = [quad_vec(basis, rho(a), rho(b), epsabs=1e-300, epsrel=1e-13) for a, b in itertools.pairwise(cuts)]
        value, estimate = sum(p[0] for p in pieces), sum(p[1] for p in pieces)
        n_terms = GAUSS_LEGENDRE_NODES * len(pieces)
        tol = QUAD_ESTIMATE_SAFETY * estimate + roundoff(4 * n_terms, float(np.abs(value).max()))
        for j in range(q):
            assert abs(value[j] - float(C[i, j])) <= tol, (name, i, j, value[j], float(C[i, j]), tol)


@pytest.mark.parametrize("name", SCHEDULES)
def test_lowest_order_deis_is_ddim(name: str) -> None:
    """tAB1 = rhoAB1 = rhoRK-Euler = DDIM: Euler's method for dy/drho = eps is DDIM's update."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    x = model.sample_xt(16, s.t_max, torch.Generator().manual_seed(0))[1]
    ts = grids.uniform_t(s, 12)
    ddim = sample_ddim(model, x, ts)
    outputs = [sample_deis_ab(model, x, ts, order=1, variable=v) for v in ("t", "rho")]
    for out in [*outputs, sample_deis_rhork(model, x, ts, method="euler")]:
        assert float((out - ddim).abs().max()) <= IDENTITY_RTOL * float(ddim.abs().max())


@pytest.mark.parametrize("name", SCHEDULES)
def test_per_step_orders_override_the_order(name: str) -> None:
    """``orders`` decides each step's order: all ones is DDIM (as order 1 is), and the warm-up pattern of order 2
    given to an order-3 run is the order-2 run (the official codes' lower orders at the last steps use this)."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    x = model.sample_xt(16, s.t_max, torch.Generator().manual_seed(0))[1]
    ts = grids.uniform_t(s, 8)
    for variable in ("t", "rho"):
        ones = sample_deis_ab(model, x, ts, order=3, variable=variable, orders=[1] * 8)
        ddim = sample_ddim(model, x, ts)
        assert float((ones - ddim).abs().max()) <= IDENTITY_RTOL * float(ddim.abs().max())
        two = sample_deis_ab(model, x, ts, order=2, variable=variable)
        given = sample_deis_ab(model, x, ts, order=3, variable=variable, orders=[1, 2, 2, 2, 2, 2, 2, 2])
        assert torch.equal(given, two)
        three = sample_deis_ab(model, x, ts, order=3, variable=variable)
        assert float((three - two).abs().max()) > 1e3 * IDENTITY_RTOL * float(two.abs().max())  # the option matters


@pytest.mark.parametrize("variable", ["t", "rho"])
def test_ab_weights_integrate_polynomials_exactly(variable: str) -> None:
    """Sum_j C_ij p(node_j) = int p drho for every polynomial p of degree < q in the interpolation variable."""
    s = get_schedule("vp_linear")
    ts = grids.uniform_lambda(s, 6)
    rho = torch.exp(-s.lambda_t(ts))
    C = deis_ab_coefficients(s, ts, 3, variable)
    for i in range(2, 6):
        nodes = (ts if variable == "t" else rho)[[i, i - 1, i - 2]]
        # p = 1: the weights add up to the step's rho length in either variable
        atol = roundoff(AB_WEIGHT_OPS, float(C[i].abs().sum()))
        assert abs(float(C[i].sum()) - float(rho[i + 1] - rho[i])) <= atol
        if variable == "rho":  # p(rho) = rho: int rho drho (the squares and their difference: 3 more roundings)
            exact = 0.5 * float(rho[i + 1] ** 2 - rho[i] ** 2)
            atol = roundoff(AB_WEIGHT_OPS, float((C[i] * nodes).abs().sum())) + roundoff(
                3, float(max(rho[i], rho[i + 1]) ** 2)
            )
            assert abs(float((C[i] * nodes).sum()) - exact) <= atol


def test_rk_tableaus_are_consistent() -> None:
    """Row sums of A equal c and the weights add up to 1 (first-order conditions of every explicit RK method)."""
    for c, A, b in RK_TABLEAUS.values():
        assert abs(sum(b) - 1.0) <= float_sum_bound(b)
        for ck, row in zip(c[1:], A[1:], strict=True):
            assert abs(sum(row) - ck) <= float_sum_bound(row)


def test_deis_bad_input() -> None:
    s = get_schedule("vp_linear")
    model, x, ts = (
        ExactModel(ring(), s),
        torch.randn(2, 2, generator=torch.Generator().manual_seed(901)),
        grids.uniform_t(s, 4),
    )
    with pytest.raises(ValueError, match="order must be"):
        sample_deis_ab(model, x, ts, order=5)
    with pytest.raises(ValueError, match="variable"):
        sample_deis_ab(model, x, ts, variable="lambda")
    with pytest.raises(ValueError, match="method"):
        sample_deis_rhork(model, x, ts, method="rk45")
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_deis_ab(model, x, ts.flip(0))


@pytest.mark.parametrize(
    ("variable", "order", "name"),
    [("t", 2, "vp_cosine"), ("t", 3, "vp_linear"), ("t", 3, "vp_cosine"), ("rho", 3, "vp_linear"), ("rho", 3, "edm")],
)
def test_ab_orders_on_more_schedules(variable: str, order: int, name: str) -> None:
    """tAB2/3 and rhoAB3 (registered with order_check="gaussian", see deis.py) reach their orders on smooth schedules
    beyond the registry's two: against the closed-form Gaussian map, equal lambda steps from t_max to lambda = 1."""
    s = get_schedule(name)
    model = ExactModel(anisotropic_gaussian(3, seed=1), s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(0))[1]
    t_end = float(s.t_of_lambda(1.0))
    steps = (32, 64, 128, 256) if order == 2 else (64, 128, 256, 512)
    sample = partial(sample_deis_ab, order=order, variable=variable)
    result = measure_order(sample, model, x, steps, t_end=t_end, reference=model.pf_ode_map(x, s.t_max, t_end))
    assert result.order == pytest.approx(order, abs=ORDER_TOL), str(result)
