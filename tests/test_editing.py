"""Editing on the exact toys: invert-and-regenerate (1-D exact quantile map), InfEdit/DDCM, counterfactuals on
a linear-Gaussian causal model, and StyleSSP's frequency-filtered start point."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tolerances import ORDER_TOL, REFERENCE_AGREEMENT, U64, roundoff, roundtrip_bound

from refimpl import get_sampler, grids
from refimpl.counterfactual import (
    ConditionalGaussianModel,
    LinearGaussianSCM,
    diffusion_counterfactual,
    ode_counterfactual,
)
from refimpl.editing import (
    edit_by_inversion,
    exact_ode_edit_1d,
    infedit,
    low_frequency_projector,
    ode_map_1d,
    reduce_low_frequencies,
)
from refimpl.guidance import classifier_free_guidance
from refimpl.reference import convergence_order, solve_pf_ode
from refimpl.samplers import invert_edict
from refimpl.schedules import get_schedule
from toy_models import ExactModel, GaussianMixture, labelled_pair
from toy_models.digits import dct_basis

SOURCE = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.0], [1.5]]), torch.tensor([[[0.1]], [[0.3]]]))
TARGET = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-0.5], [2.0]]), torch.tensor([[[0.2]], [[0.05]]]))


def _scm() -> LinearGaussianSCM:
    """c_1 -> c_2 (weight 0.8), both -> x in 2-D."""
    return LinearGaussianSCM(
        weights=torch.tensor([[0.0, 0.0], [0.8, 0.0]]),
        noise_std=torch.tensor([1.0, 0.5]),
        loading=torch.tensor([[1.0, 0.0], [0.3, 1.0]]),
        offset=torch.tensor([0.0, 0.5]),
        covariance=torch.tensor([[0.2, 0.05], [0.05, 0.1]]),
    )


# --- one dimension: exact edits are quantile maps ------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_ode_map_1d_is_the_probability_flow(name: str) -> None:
    """Q_to(F_from(x)) equals the reference ODE solve (DOP853 at 1e-13) from t_min to t_max, and for one
    Gaussian the closed-form flow map to round-off (bisection ends within ulps; 64 operations)."""
    s = get_schedule(name)
    x = torch.linspace(-2.0, 3.0, 9)[:, None]
    v0, vT = s(s.t_min), s(s.t_max)
    ends = [float(v) for v in (v0.alpha, v0.sigma, vT.alpha, vT.sigma)]
    mapped = ode_map_1d(SOURCE, *ends, x[:, 0])
    reference = solve_pf_ode(ExactModel(SOURCE, s), x, s.t_min, s.t_max)[:, 0]
    scale = float(reference.abs().max())
    assert float((mapped - reference).abs().max()) <= REFERENCE_AGREEMENT * scale
    single = GaussianMixture(torch.ones(1), torch.tensor([[0.3]]), torch.tensor([[[0.5]]]))
    exact = ExactModel(single, s).pf_ode_map(x, s.t_min, s.t_max)[:, 0]
    assert float((ode_map_1d(single, *ends, x[:, 0]) - exact).abs().max()) <= roundoff(64, scale)


@pytest.mark.parametrize(
    ("name", "sampler", "order"),
    [("vp_linear", "edict", 1), ("vp_linear", "bdia", 2), ("edm", "bdia", 1), ("vp_linear", "ddim", 1)],
)
def test_editing_by_inversion_converges_to_the_exact_quantile_map(name: str, sampler: str, order: int) -> None:
    """Invert under SOURCE, regenerate under TARGET: the result converges to exact_ode_edit_1d with the
    sampler's order. BDIA (gamma = 1) keeps order 2 under VP but drops to 1 under EDM: decoding under another
    model leaves an O(h) error in its undamped two-step mode, proportional to the models' eps difference at
    the start (alpha_T / sigma_T, tiny for VP)."""
    s = get_schedule(name)
    source, target = ExactModel(SOURCE, s), ExactModel(TARGET, s)
    x0 = source.sample_xt(7, s.t_min, torch.Generator().manual_seed(0))[1]
    exact = exact_ode_edit_1d(SOURCE, TARGET, s, x0[:, 0])
    steps = (64, 128, 256)
    spec = get_sampler(sampler)
    errors = [
        float((edit_by_inversion(spec, source, target, x0, grids.uniform_lambda(s, n))[:, 0] - exact).abs().max())
        for n in steps
    ]
    assert convergence_order(steps, errors).order == pytest.approx(order, abs=ORDER_TOL), errors


def test_edict_inverse_mixing_grows_the_pair_difference_like_p_to_the_minus_2n() -> None:
    """EDICT's encoder multiplies the x - y difference by p^-2 a step (the mixing's inverse): log |x_T - y_T|
    against 2 n log(1/p) has slope 1 (within ORDER_TOL; the O(h^2) excitation's drift is well inside). This is
    why EDICT editing breaks down at many steps: the difference is only undone by the same model."""
    s = get_schedule("vp_linear")
    model = ExactModel(SOURCE, s)
    x0 = model.sample_xt(7, s.t_min, torch.Generator().manual_seed(0))[1]
    steps = (200, 300, 400)
    diffs = []
    for n in steps:
        pair = invert_edict(model, x0, grids.uniform_lambda(s, n))
        diffs.append(float((pair.x - pair.y).abs().max()))
    slope = np.polyfit([2 * n * math.log(1 / 0.93) for n in steps], np.log(diffs), 1)[0]
    assert slope == pytest.approx(1.0, abs=ORDER_TOL), diffs


# --- InfEdit / DDCM ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine", "edm"])
def test_infedit_with_an_unchanged_condition_returns_the_input(name: str) -> None:
    """Virtual inversion: with target = source the calibrated eps is the consistent noise, so x0 comes back.

    Bound: each step forms x0 = (z - sigma eps) / alpha, rounding relative to max |z| / alpha over the grid.
    """
    s = get_schedule(name)
    pair = labelled_pair()
    model = ExactModel(pair.condition(0), s)
    x0 = pair.condition(0).sample(10, torch.Generator().manual_seed(1))
    ts = grids.uniform_lambda(s, 30)
    out = infedit(model, model, x0, ts, generator=torch.Generator().manual_seed(2))
    v = s(ts)
    scale = max(float(x0.abs().max()), float((v.sigma / v.alpha).max()) * 5.0)  # |z| <= |x0| alpha + 5 sigma
    assert float((out - x0).abs().max()) <= roundtrip_bound(31, scale)


def test_infedit_moves_points_to_the_target_class() -> None:
    """Editing class-0 points with the class-1 model (or CFG towards it) ends where class 1 is more likely."""
    s = get_schedule("vp_linear")
    pair = labelled_pair()
    source = ExactModel(pair.condition(0), s)
    targets = [
        ExactModel(pair.condition(1), s),
        classifier_free_guidance(ExactModel(pair.condition(1), s), ExactModel(pair, s), 2.0),
    ]
    x0 = pair.condition(0).sample(40, torch.Generator().manual_seed(3))
    ts = grids.uniform_lambda(s, 20)
    for target in targets:
        out = infedit(source, target, x0, ts, generator=torch.Generator().manual_seed(4))
        responsibility = pair.responsibilities(out, 1.0, 0.0)[:, pair.labels == 1].sum(-1)
        assert bool((responsibility > 0.5).all())


def test_infedit_rejects_models_on_different_schedules() -> None:
    pair = labelled_pair()
    a, b = ExactModel(pair, get_schedule("vp_linear")), ExactModel(pair, get_schedule("vp_linear"))
    with pytest.raises(ValueError, match="share one schedule"):
        infedit(a, b, torch.zeros(2, 2), grids.uniform_lambda(a.schedule, 3))


# --- counterfactuals -----------------------------------------------------------------------------------------
def test_scm_intervention_is_abduction_action_prediction() -> None:
    """do(c_1 = v): c_1 = v, c_2 moves by 0.8 (v - c_1), and Pearl's x' = x + B (c' - c); do(c_1 = c_1) is a no-op."""
    scm = _scm()
    c, x = scm.sample(5, torch.Generator().manual_seed(0))
    c_new = scm.intervene(c, 0, 1.0)
    torch.testing.assert_close(c_new[:, 0], torch.ones(5), rtol=0, atol=0)
    torch.testing.assert_close(c_new[:, 1], c[:, 1] + 0.8 * (1.0 - c[:, 0]), rtol=0, atol=4 * U64 * 4)
    torch.testing.assert_close(scm.counterfactual(x, c, c_new) - x, (c_new - c) @ scm.loading.T)
    for j in range(2):
        torch.testing.assert_close(scm.intervene(c, j, 0.0)[:, j], torch.zeros(5), rtol=0, atol=0)
    with pytest.raises(ValueError, match="index"):
        scm.intervene(c, 2, 0.0)


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_ode_counterfactual_matches_two_reference_solves(name: str) -> None:
    """The closed form x + alpha_end Delta - M^-1(alpha_T Delta) equals solving the ODE up under p(x | c) and
    down under p(x | c') with the reference solver; its gap to Pearl's answer is the prior-mismatch term."""
    s = get_schedule(name)
    scm = _scm()
    c, x = scm.sample(4, torch.Generator().manual_seed(1))
    x = x * s.alpha_t(s.t_min)
    c_new = scm.intervene(c, 0, 1.5)
    up = solve_pf_ode(scm.model(c, s), x, s.t_min, s.t_max)
    down = solve_pf_ode(scm.model(c_new, s), up, s.t_max, s.t_min)
    closed = ode_counterfactual(scm, s, x, c, c_new)
    assert float((closed - down).abs().max()) <= REFERENCE_AGREEMENT * max(1.0, float(up.abs().max()))


@pytest.mark.parametrize(("sampler", "order"), [("edict", 1), ("bdia", 1), ("ddim", 1)])
def test_diffusion_counterfactual_converges_to_the_ode_counterfactual(sampler: str, order: int) -> None:
    """Invert, intervene, regenerate: converges to ode_counterfactual at first order for every sampler here
    (BDIA's model change, as above, costs its second order)."""
    s = get_schedule("vp_linear")
    scm = _scm()
    c, x = scm.sample(6, torch.Generator().manual_seed(2))
    c_new = scm.intervene(c, 0, 1.0)
    exact = ode_counterfactual(scm, s, x, c, c_new)
    steps = (50, 100, 200)
    errors = []
    for n in steps:
        out, c_out = diffusion_counterfactual(get_sampler(sampler), scm, s, x, c, 0, 1.0, grids.uniform_lambda(s, n))
        torch.testing.assert_close(c_out, c_new, rtol=0, atol=0)
        errors.append(float((out - exact).abs().max()))
    assert convergence_order(steps, errors).order == pytest.approx(order, abs=ORDER_TOL), errors


def test_conditional_model_checks_its_batch() -> None:
    s = get_schedule("vp_linear")
    model = ConditionalGaussianModel(torch.eye(2), torch.zeros(3, 2), s)
    with pytest.raises(ValueError, match="shape of the means"):
        model(torch.zeros(4, 2), torch.tensor(0.5))
    with pytest.raises(ValueError, match="lower-triangular"):
        LinearGaussianSCM(torch.ones(2, 2), torch.ones(2), torch.ones(2, 2), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="no encoder"):
        edit_by_inversion(get_sampler("ddpm"), model, model, torch.zeros(3, 2), grids.uniform_t(s, 3))


# --- StyleSSP ------------------------------------------------------------------------------------------------
@given(cutoff=st.floats(0.0, 10.0), keep=st.floats(0.0, 1.0), seed=st.integers(0, 100))
def test_low_frequency_filter_is_a_projection_that_spares_the_high_band(cutoff: float, keep: float, seed: int) -> None:
    """P is the orthogonal projector on the low DCT band; the filter scales that band by ``keep`` and leaves
    the rest exactly (64-dimensional products: 128 operations)."""
    basis, freq = dct_basis(8)
    P = low_frequency_projector(basis, freq, cutoff)
    eye = torch.eye(64)
    bound = roundoff(128, 1.0)
    assert float((P @ P - P).abs().max()) <= bound
    assert float((P - P.T).abs().max()) <= bound
    assert abs(float(torch.trace(P)) - int((freq <= cutoff).sum())) <= 64 * bound
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(seed))
    out = reduce_low_frequencies(z, P, keep)
    scale = float(z.abs().max()) * 8  # |P z| <= sqrt(64) max |z|
    assert float(((out - z) @ (eye - P)).abs().max()) <= roundoff(256, scale)
    assert float((out @ P - keep * z @ P).abs().max()) <= roundoff(256, scale)


def test_frequency_filter_rejects_bad_input() -> None:
    basis, freq = dct_basis(4)
    P = low_frequency_projector(basis, freq, 1.0)
    with pytest.raises(ValueError, match="keep"):
        reduce_low_frequencies(torch.zeros(2, 16), P, 1.5)
    with pytest.raises(ValueError, match="orthonormal"):
        low_frequency_projector(2 * basis, freq, 1.0)
    with pytest.raises(ValueError, match="projector"):
        reduce_low_frequencies(torch.zeros(2, 15), P, 0.5)
