"""The multistep engine: its weights against closed forms, each named setting against the paper's own formula, the
settings that are one map (LMS and DEIS rhoAB; UniP-bh2 and DPM-Solver++(2M)), step orders, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from strategies import schedules
from tolerances import IDENTITY_RTOL, multistep_identity_bound

from refimpl import grids
from refimpl.parameterization import eps_from_x0
from refimpl.samplers import (
    Trajectory,
    sample_deis_ab,
    sample_dpm_solver_pp_multistep,
    sample_lms,
    sample_unipc,
    step_orders,
)
from refimpl.samplers._exponential import phi
from refimpl.samplers.dpm_solver_pp import dpm_solver_pp_2s_step, dpm_solver_pp_multistep_step
from refimpl.samplers.multistep import (
    SETTINGS,
    _setting,
    lagrange_integrals,
    multistep_step,
    multistep_weights,
    sample_multistep,
)
from refimpl.samplers.pndm import run_prk_step
from refimpl.schedules import get_schedule
from toy_models import ExactModel, random_mixture, ring


@pytest.mark.parametrize("q", [1, 2, 3, 4])
@given(z=st.floats(-6.0, 6.0), gaps=st.lists(st.floats(0.2, 3.0), min_size=3, max_size=3))
@settings(max_examples=20, deadline=None)
def test_exponential_weights_equal_adaptive_quadrature(q: int, z: float, gaps: list[float]) -> None:
    """(b - a) int_0^1 e^{(1 - theta) z} l_j dtheta, the one weight formula of every exact setting, against scipy."""
    thetas = [0.0, *[-sum(gaps[:k]) for k in range(1, q)]]  # the newest point at 0, older ones behind
    got = lagrange_integrals(torch.tensor(thetas, dtype=torch.float64), torch.tensor(0.0), torch.tensor(1.0), z)

    def basis(u: float, j: int) -> float:
        return math.prod((u - thetas[k]) / (thetas[j] - thetas[k]) for k in range(q) if k != j)

    for j in range(q):
        exact = quad(lambda u, j=j: math.exp((1 - u) * z) * basis(u, j), 0.0, 1.0, epsabs=1e-14, epsrel=1e-13)[0]
        scale = quad(lambda u, j=j: math.exp((1 - u) * z) * abs(basis(u, j)), 0.0, 1.0)[0]  # the integrand's size
        assert float(got[j]) == pytest.approx(exact, abs=IDENTITY_RTOL * scale)


def _points(s, lam_s: float, h: float, ratios: list[float], gen: torch.Generator):
    """Schedule values at s and t = s + h (in lambda), and earlier points lambda_s - sum(ratios[:k]) h with outputs."""
    v_s, v_t = s(s.t_of_lambda(lam_s)), s(s.t_of_lambda(lam_s + h))
    lams = [v_s.lambda_, *[v_s.lambda_ - h * sum(ratios[:k]) for k in range(1, len(ratios) + 1)]]
    ms = [torch.randn(3, 2, generator=gen, dtype=torch.float64) for _ in lams]
    return v_s, v_t, lams, ms


@given(s=schedules(), h=st.floats(0.05, 2.0), ratios=st.lists(st.floats(0.3, 3.0), min_size=2, max_size=2))
@settings(max_examples=30, deadline=None)
def test_dpm_solver_pp_steps_are_the_papers_formulas(s, h: float, ratios: list[float]) -> None:
    """The "dpm_solver_pp" setting, step by step: DPM-Solver++(1) (Eq. 9 with k = 0), 2M in the midpoint form
    D = (1 + 1/(2r)) m0 - 1/(2r) m1 (Algorithm 2), 3M as alpha_t (h phi_1 m0 + h^2 phi_2 x' + h^3 phi_3 x'') with
    divided-difference derivatives (Sec. 4), 2S as D = (1 - 1/(2 r1)) m0 + 1/(2 r1) m1 (Algorithm 1)."""
    lam_s = s.lambda_min + 0.5 * (s.lambda_max - s.lambda_min - h)
    v_s, v_t, lams, ms = _points(s, lam_s, h, ratios, torch.Generator().manual_seed(0))
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(901))
    hh = v_t.lambda_ - v_s.lambda_
    a, c = v_t.alpha, v_t.sigma / v_s.sigma

    def ddim(D):
        return c * x - a * torch.expm1(-hh) * D

    r = (lams[0] - lams[1]) / hh
    dd01 = (ms[0] - ms[1]) / (lams[0] - lams[1])
    dd012 = (dd01 - (ms[1] - ms[2]) / (lams[1] - lams[2])) / (lams[0] - lams[2])
    d1 = dd01 + (lams[0] - lams[1]) * dd012
    papers = {
        1: ddim(ms[0]),
        2: ddim((1 + 1 / (2 * r)) * ms[0] - 1 / (2 * r) * ms[1]),
        3: ddim(ms[0]) + a * hh**2 * phi(2, -hh) * d1 + a * hh**3 * phi(3, -hh) * 2 * dd012,
    }
    for order, expected in papers.items():
        got = dpm_solver_pp_multistep_step(x, ms, lams, v_s, v_t, order)
        bound = multistep_identity_bound(SETTINGS["dpm_solver_pp"], x, ms[:order], lams[:order], v_s, v_t)
        assert float((got - expected).abs().max()) <= bound
    v_mid = s(s.t_of_lambda(lam_s + 0.3 * h))
    r1 = (v_mid.lambda_ - v_s.lambda_) / hh
    expected = ddim((1 - 1 / (2 * r1)) * ms[0] + 1 / (2 * r1) * ms[1])
    got = dpm_solver_pp_2s_step(x, ms[0], ms[1], v_s, v_mid, v_t)
    assert float((got - expected).abs().max()) <= IDENTITY_RTOL * (
        float(x.abs().max()) + 3 * float(expected.abs().max())
    )


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@given(h=st.floats(0.05, 2.0), ratio=st.floats(0.3, 3.0))
@settings(max_examples=20, deadline=None)
def test_simplified_unip_2_is_eq_7_with_a_half(variant: str, h: float, ratio: float) -> None:
    """UniP-2 with the official coefficient: x_t = c x_s - k_t (e^hh - 1) m_s - k_t B(hh) a D_1 / r_1, a = 1/2."""
    s = get_schedule("vp_cosine")
    v_s, v_t, lams, ms = _points(s, -1.0, h, [ratio], torch.Generator().manual_seed(1))
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(902))
    for prediction, suffix in (("x0", ""), ("eps", "_eps")):
        hh, c, k = (
            (-h, v_t.sigma / v_s.sigma, v_t.alpha) if prediction == "x0" else (h, v_t.alpha / v_s.alpha, v_t.sigma)
        )
        hh = v_t.lambda_ - v_s.lambda_ if prediction == "eps" else v_s.lambda_ - v_t.lambda_
        b_h = hh if variant == "bh1" else torch.expm1(hh)
        r_1 = (lams[1] - lams[0]) / (v_t.lambda_ - v_s.lambda_)
        expected = c * x - k * torch.expm1(hh) * ms[0] - k * b_h * 0.5 * (ms[1] - ms[0]) / r_1
        got = multistep_step(x, list(zip(lams, ms, strict=True)), v_s, v_t, SETTINGS[f"unipc_{variant}{suffix}"])
        scale = float(x.abs().max() * c) + float(k * (torch.expm1(hh).abs() + b_h.abs() / abs(r_1))) * 2 * 3.0
        assert float((got - expected).abs().max()) <= IDENTITY_RTOL * scale


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_started_with_lower_orders_is_deis_rhoab(name: str, order: int) -> None:
    """The same map: Adams-Bashforth in rho = sigma / alpha on eps, in the scaled state x / alpha, with the same
    lower-order start. Both are the engine with equal fields (kernel 1, variable rho, eps), so they agree exactly;
    the independent checks are their weights against sympy (test_edm_samplers, test_deis) and LMS against diffusers'
    LMSDiscreteScheduler (test_edm_samplers)."""
    a, b = SETTINGS["lms"], SETTINGS["deis_rhoab"]
    assert (a.prediction, a.variable, a.simplified, a.max_order) == (
        b.prediction,
        b.variable,
        b.simplified,
        b.max_order,
    )
    s = get_schedule(name)
    model = ExactModel(random_mixture(K=3, d=2, seed=4), s)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(2))[1]
    for ts in (grids.karras(s, 9), grids.uniform_t(s, 7)):
        lms = sample_lms(model, x, ts, order=order, warmup="lower_order")
        torch.testing.assert_close(lms, sample_deis_ab(model, x, ts, order=order, variable="rho"), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_lms_with_its_rk4_start_differs_from_rhoab_only_in_the_first_steps(name: str) -> None:
    """The documented difference: with warmup="singlestep" the first order - 1 LMS steps are RK4 in sigma (PNDM's
    pseudo Runge-Kutta step with the sigma midpoint) and every later step is the rhoAB step on the same outputs."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    x = model.sample_xt(3, s.t_max, torch.Generator().manual_seed(3))[1]
    ts, order = grids.karras(s, 8), 4
    traj = Trajectory()
    sample_lms(model, x, ts, order=order, callback=traj)
    v = s(ts)
    eps = [eps_from_x0(st_.x, st_.x0, v.alpha[i], v.sigma[i]) for i, st_ in enumerate(traj.steps)]
    for i, step in enumerate(traj.steps):
        if i < order - 1:
            expected = run_prk_step(model, step.x, ts[i], ts[i + 1], eps[i], midpoint="sigma")[0]
        else:
            points = [(v.rho[i - j], eps[i - j]) for j in range(order)]
            expected = multistep_step(step.x, points, v[i], v[i + 1], SETTINGS["deis_rhoab"])
        scale = float(step.x_next.abs().max()) + float(step.x.abs().max())
        assert float((step.x_next - expected).abs().max()) <= IDENTITY_RTOL * scale


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_unip_bh2_with_a_half_is_dpm_solver_pp_and_solved_unip_ignores_b(name: str) -> None:
    """UniP-p without corrector, bh2 and the official 1/2, is multistep DPM-Solver++ (orders 1-3, lower-order start);
    with solved coefficients B(h) cancels (bh1 = bh2) and the step is the exact setting."""
    s = get_schedule(name)
    model = ExactModel(random_mixture(K=3, d=2, seed=5), s)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(4))[1]
    ts = grids.uniform_t(s, 8)
    for order in (1, 2, 3):
        unip = sample_unipc(model, x, ts, order=order, corrector=False)
        torch.testing.assert_close(unip, sample_dpm_solver_pp_multistep(model, x, ts, order=order), rtol=0, atol=0)
        solved = [sample_unipc(model, x, ts, order=order, variant=b, simplified=False) for b in ("bh1", "bh2")]
        torch.testing.assert_close(solved[0], solved[1], rtol=0, atol=0)
        exact = sample_multistep(model, x, ts, method="dpm_solver_pp_exact", order=order, corrector=True)
        torch.testing.assert_close(solved[0], exact, rtol=0, atol=0)


def test_weights_of_one_point_are_the_first_order_step() -> None:
    """q = 1 in every kernel: x0 in lambda (1 - e^{-h}), eps in lambda (e^h - 1), eps in rho (rho_t - rho_s)."""
    s = get_schedule("vp_linear")
    v_s, v_t = s(0.7), s(0.4)
    h = v_t.lambda_ - v_s.lambda_
    expected = {"dpm_solver_pp": -torch.expm1(-h), "deis_logrho": torch.expm1(h), "deis_rhoab": v_t.rho - v_s.rho}
    for name, w in expected.items():
        node = {"lambda": v_s.lambda_, "rho": v_s.rho}[SETTINGS[name].variable]
        got = multistep_weights(SETTINGS[name], node[None], v_s, v_t)[2]
        assert float(got[0]) == pytest.approx(float(w), rel=IDENTITY_RTOL)


def test_step_orders_builds_the_common_patterns() -> None:
    assert step_orders(5, 3) == [1, 2, 3, 3, 3]
    assert step_orders(5, 3, lower_final=True) == [1, 2, 3, 2, 1]
    assert step_orders(2, 3, lower_final=True) == [1, 1]
    with pytest.raises(ValueError, match="order"):
        step_orders(4, 0)


def test_bad_input() -> None:
    s = get_schedule("vp_linear")
    model, x, ts = (
        ExactModel(ring(), s),
        torch.randn(2, 2, generator=torch.Generator().manual_seed(903)),
        grids.uniform_t(s, 4),
    )
    with pytest.raises(ValueError, match="method"):
        sample_multistep(model, x, ts, method="adams", order=2)
    with pytest.raises(ValueError, match="order"):
        sample_multistep(model, x, ts, method="dpm_solver_pp", order=4)
    with pytest.raises(ValueError, match="warmup"):
        sample_multistep(model, x, ts, method="lms", order=2, warmup="rk4")
    with pytest.raises(ValueError, match="at least the model output"):
        multistep_step(x, [], s(ts[0]), s(ts[1]), SETTINGS["lms"])
    with pytest.raises(ValueError, match="integrate eps exactly"):
        _setting("x0", "rho", None, 4, None, "x0 has no polynomial kernel here")
    with pytest.raises(ValueError, match="simplified"):
        _setting("x0", "lambda", "bh3", 3, None, "no such B(h)")
    with pytest.raises(ValueError, match="needs the schedule"):
        multistep_step(x, [(ts[0], x)], s(ts[0]), s(ts[1]), SETTINGS["deis_tab"])


@pytest.mark.parametrize(("old", "new"), [("prk", "singlestep"), ("improved_euler", "lower_order")])
def test_pndm_warmups_use_the_engine_vocabulary_and_the_old_names_are_deprecated(old: str, new: str) -> None:
    """One warm-up vocabulary: PNDM takes the engine's WARMUPS; its former names warn and give the same samples."""
    from refimpl.samplers.multistep import WARMUPS
    from refimpl.samplers.pndm import DEPRECATED_WARMUPS, sample_pndm

    assert set(DEPRECATED_WARMUPS.values()) == set(WARMUPS) and DEPRECATED_WARMUPS[old] == new
    s = get_schedule("vp_cosine")
    model, ts = ExactModel(ring(), s), grids.uniform_lambda(s, 6)
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(0))[1]
    with pytest.warns(DeprecationWarning, match=f"use warmup='{new}'"):
        before = sample_pndm(model, x, ts, warmup=old)
    torch.testing.assert_close(sample_pndm(model, x, ts, warmup=new), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="warmup must be one of"):
        sample_pndm(model, x, ts, warmup="rk4")
