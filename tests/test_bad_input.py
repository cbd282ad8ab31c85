"""Reproducers of issue 18's bad-input findings: each raises a clear error naming the argument.

Complex and boolean values are not real numbers (casting would drop the imaginary part or read True as 1),
schedule parameters must be finite (NaN fails every comparison silently), Karras' exponent must be finite,
the exact speculative-decoding helpers take laws on the same tokens and refuse enumerations beyond a stated
size, and the projection-DPP sampler stops on degenerate features instead of looping forever.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from refimpl import grids, parameterization
from refimpl._validation import RESOLVABLE_STEP_ULPS
from refimpl.discrete import speculative
from refimpl.samplers import (
    ddim_sigma,
    ddim_step,
    ddpm_posterior,
    sample_ddim,
    sample_dpm_solver,
    sample_dpm_solver_pp_multistep,
)
from refimpl.schedules import EDMSchedule, VPCosine, VPLinear, get_schedule
from refimpl.selection import dpp
from toy_models import ExactModel, GaussianMixture, ring


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
@pytest.mark.parametrize(
    "bad", [torch.tensor([0.5, 0.3], dtype=torch.complex128), torch.tensor([True, False]), 0.5 + 0.1j]
)
def test_complex_and_bool_times_are_refused(name: str, bad: object) -> None:
    s = get_schedule(name)
    with pytest.raises(TypeError, match="real"):
        s.alpha_t(bad)


def test_complex_timesteps_and_mixture_parameters_are_refused() -> None:
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="timesteps"):
        sample_ddim(model, x, torch.tensor([0.5, 0.3], dtype=torch.complex128))
    with pytest.raises(TypeError, match="real"):
        GaussianMixture(torch.tensor([1.0 + 0j]), torch.zeros(1, 1), torch.ones(1, 1, 1))


@pytest.mark.parametrize(
    "build",
    [
        lambda: VPCosine(s=math.nan),
        lambda: VPLinear(beta_0=math.nan),
        lambda: VPLinear(t_max=math.inf),
        lambda: EDMSchedule(sigma_max=math.nan),
    ],
)
def test_schedule_parameters_must_be_finite(build) -> None:
    with pytest.raises(ValueError, match="finite"):
        build()


@pytest.mark.parametrize("rho", [math.inf, math.nan, 0.0, -1.0])
def test_karras_exponent_must_be_positive_and_finite(rho: float) -> None:
    with pytest.raises(ValueError, match="rho"):
        grids.karras(get_schedule("edm"), 10, rho=rho)


def test_speculative_helpers_need_laws_on_the_same_tokens() -> None:
    p, q = np.array([0.5, 0.5]), np.array([0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="same tokens"):
        speculative.optimal_acceptance_subsets(p, q, 2)
    with pytest.raises(ValueError, match="same tokens"):
        speculative.rrs_kernel(p, q, (0, 1))
    with pytest.raises(ValueError, match="method"):
        speculative.rrs_kernel(p, np.array([0.4, 0.6]), (0, 1), method="nope")


def test_exact_enumerations_refuse_sizes_beyond_their_limit() -> None:
    q = np.full(64, 1 / 64)
    with pytest.raises(ValueError, match="max_count"):
        speculative.draft_law(q, 4)  # 64^4 = 2^24 tuples
    tuples, probs = speculative.draft_law(q[:4] * 16, 2, max_count=16)  # the limit is a keyword, not a wall
    assert len(tuples) == 16 and abs(probs.sum() - 1) < 1e-15
    with pytest.raises(ValueError, match="max_count"):
        speculative.optimal_acceptance_subsets(np.full(24, 1 / 24), np.full(24, 1 / 24), 1)


def test_projection_dpp_stops_on_degenerate_features() -> None:
    """Features spanning one dimension cannot host a second point: a clear error instead of an endless loop."""

    def rank_one(x: np.ndarray, m: int) -> np.ndarray:
        return np.ones((np.size(x), m)) / math.sqrt(m)

    with pytest.raises(ValueError, match="degenerate"):
        dpp.sample_projection_dpp(2, np.random.default_rng(0), features=rank_one)


@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine", "ddpm_linear", "edm", "rectified_flow"])
def test_ulp_close_grids_are_refused(name: str) -> None:
    """Issue 18's reproducer: a last step of one ulp in t, and a middle step of one ulp (the EDM multistep case)."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    x = torch.zeros(2, 2, dtype=torch.float64)
    lo, hi = s.t_min, s.t_max
    a, b, c = lo + 0.5 * (hi - lo), lo + 0.3 * (hi - lo), lo + 0.1 * (hi - lo)
    end = torch.tensor([a, b, b * (1 - 2.3e-16)], dtype=torch.float64)
    middle = torch.tensor([a, b, b * (1 - 2.3e-16), c], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"timesteps.*cannot resolve"):
        sample_dpm_solver(model, x, end, order=2)
    with pytest.raises(ValueError, match=r"timesteps.*cannot resolve"):
        sample_dpm_solver_pp_multistep(model, x, middle)


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_steps_just_above_the_resolution_floor_stay_finite(name: str) -> None:
    """Twice the floor (128 ulps of |lambda|): accepted, and the second-order solvers return finite values."""
    s = get_schedule(name)
    model = ExactModel(ring(), s)
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam_b = s.lambda_min + 0.5 * (s.lambda_max - s.lambda_min)
    h = 2 * RESOLVABLE_STEP_ULPS * torch.finfo(torch.float64).eps * max(1.0, abs(lam_b))
    lam = torch.tensor([s.lambda_min + 1.0, lam_b, lam_b + h, s.lambda_max - 1.0], dtype=torch.float64)
    ts = s.t_of_lambda(lam)
    for out in (sample_dpm_solver(model, x, ts[:3], order=2), sample_dpm_solver_pp_multistep(model, x, ts)):
        assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("scale", [1e154, 1e200])
def test_exact_toys_stay_finite_far_from_the_data(scale: float) -> None:
    """|x| ~ 1e154 squared overflows: the responsibilities use differences of scaled quadratic forms instead
    (finite; beyond |x| ~ 1e154 their differences are round-off and the weights only stay a law). The nearest
    component (the first, at angle 0 of the ring) takes the weight where the forms resolve it."""
    mix = ring()
    x = scale * torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    x0, eps = mix.x0_eps(x, 0.8, 0.6)
    r = mix.responsibilities(x, 0.8, 0.6)
    for value in (x0, eps, r, mix.score(x, 0.8, 0.6)):
        assert bool(torch.isfinite(value).all())
    assert not bool(mix.log_prob_t(x, 0.8, 0.6).isnan().any())  # -inf: the log density is below -1.8e308
    assert torch.allclose(r.sum(-1), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-15)
    if scale == 1e154:
        assert int(r[0].argmax()) == 0
    far = GaussianMixture(mix.weights, mix.means * 1e154, mix.covariances)
    assert bool(torch.isfinite(far.x0_eps(torch.zeros(3, 2, dtype=torch.float64), 1.0, 1.0)[0]).all())


def test_samplers_run_from_a_far_start_without_blaming_the_model() -> None:
    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    x = torch.full((2, 2), 1e154, dtype=torch.float64)
    assert bool(torch.isfinite(sample_ddim(model, x, torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64))).all())


@pytest.mark.parametrize(
    ("alpha", "sigma", "match"),
    [
        (math.nan, 1.0, "alpha"),
        (1.0, math.inf, "sigma"),
        (0.0, 0.0, "both zero"),
        (1.0, -0.1, "sigma must be non-negative"),
        (torch.ones(3, dtype=torch.float64), 1.0, "one per row"),
        (1.0, 1 + 0j, "sigma must be real"),
    ],
)
def test_exact_toys_check_the_noise_level(alpha: object, sigma: object, match: str) -> None:
    mix = ring()
    x = torch.zeros(1, 2, dtype=torch.float64)
    with pytest.raises((ValueError, TypeError), match=match):
        mix.x0_eps(x, alpha, sigma)
    with pytest.raises((ValueError, TypeError), match=match):
        mix.log_prob_t(x, alpha, sigma)


def test_noise_levels_of_the_closed_forms_are_checked() -> None:
    mix = ring()
    with pytest.raises(ValueError, match="alpha"):
        mix.noised(math.nan, 1.0)
    with pytest.raises(ValueError, match="sigma_t"):
        mix.reverse_kernel(torch.zeros(1, 2, dtype=torch.float64), 0.5, math.nan, 1.0, 0.0)


def test_mixture_condition_is_checked_in_its_dtype() -> None:
    """eigenvalues (1e-12, 6.1) pass Cholesky in float32 but lie below eigh's round-off (16 d eps max(l))."""
    cov = torch.diag(torch.tensor([1e-12, 6.1]))[None]
    with pytest.raises(ValueError, match="ill-conditioned"):
        GaussianMixture(torch.ones(1, dtype=torch.float32), torch.zeros(1, 2, dtype=torch.float32), cov.float())
    ok = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), cov.double())
    assert bool(torch.isfinite(ok.log_prob(torch.ones(2, 2, dtype=torch.float64))).all())


def test_mixture_keeps_its_own_copies() -> None:
    w, mu, cov = torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), torch.eye(2)[None].double()
    mix = GaussianMixture(w, mu, cov)
    mu[0, 0], cov[0, 0, 0], w[0] = math.nan, -1.0, 2.0
    assert (
        bool(torch.isfinite(mix.means).all()) and float(mix.covariances[0, 0, 0]) == 1.0 and float(mix.weights[0]) == 1
    )


def test_conversions_refuse_integer_states_and_bad_coefficients() -> None:
    x = torch.ones(2, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match="x must be a floating"):
        parameterization.x0_from_eps(x, x, torch.tensor(0.8), torch.tensor(0.6))
    xf = torch.ones(2, 3)
    with pytest.raises(ValueError, match="sigma_t must be non-zero"):
        parameterization.eps_from_x0(xf, xf, torch.tensor(1.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="alpha_t"):
        parameterization.v_from_x0_eps(xf, xf, torch.tensor(math.nan), torch.tensor(0.6))
    with pytest.raises(TypeError, match="sigma_t must be real"):
        parameterization.score_from_eps(xf, torch.tensor(0.6 + 0j))
    with pytest.raises(ValueError, match="both be zero"):
        parameterization.x0_eps_from_v(xf, xf, torch.tensor(0.0), torch.tensor(0.0))


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_step_helpers_refuse_impossible_steps(name: str) -> None:
    s = get_schedule(name)
    ts = torch.tensor([0.6 * s.t_max, 0.3 * s.t_max], dtype=torch.float64)
    v_s, v_t = s(ts)[0], s(ts)[1]
    x = torch.ones(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="sigma_tilde"):
        ddim_step(x, x, v_t, 1.01 * float(v_t.sigma), x)
    with pytest.raises(ValueError, match="sigma_tilde"):
        ddim_step(x, x, v_t, -0.1, x)
    with pytest.raises(ValueError, match="swap"):
        ddim_sigma(0.5, v_t, v_s)
    with pytest.raises(ValueError, match="eta"):
        ddim_sigma(1.5, v_s, v_t)
    with pytest.raises(ValueError, match="swap"):
        ddpm_posterior(x, x, v_t, v_s)
    # at the edge: sigma_tilde = sigma_t (eta = 1) is DDPM's posterior, finite
    assert bool(torch.isfinite(ddim_step(x, x, v_t, ddim_sigma(1.0, v_s, v_t), x)).all())


def test_dpp_helpers_check_their_kernels_and_sizes() -> None:
    with pytest.raises(TypeError, match="K must be an array of real numbers"):
        dpp.check_projection_kernel(np.eye(2) * (1 + 1j))
    with pytest.raises(ValueError, match="K holds"):
        dpp.inclusion_covariance(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="symmetric"):
        dpp.inclusion_covariance(np.array([[1.0, 0.5], [0.0, 1.0]]))
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((20, 10)))
    with pytest.raises(ValueError, match="max_count"):
        dpp.projection_dpp_subset_law(Q @ Q.T, max_count=1000)  # binom(20, 10) = 184756
    law = dpp.projection_dpp_subset_law(np.diag([1.0, 1.0, 0.0]))
    assert abs(sum(law.values()) - 1) < 1e-15
    with pytest.raises(ValueError, match="rho, w"):
        dpp.volume_density(np.ones(3), np.ones(2), np.ones((3, 2)))


def test_exact_enumerations_of_dpp_and_masked_laws_have_limits() -> None:
    from refimpl.discrete import masked

    with pytest.raises(ValueError, match="max_count"):
        dpp.dpp_interpolation_error(lambda x: x**2, 6, n_quad=10)  # 10^6 determinants
    with pytest.raises(ValueError, match="max_count"):
        masked.random_sequence_law(L=30, V=3)
    with pytest.raises(ValueError, match="concentration"):
        masked.random_sequence_law(concentration=math.nan)
    assert masked.random_sequence_law(L=2, V=2).probs.numel() == 4


# --- the spine's helpers and records: each refuses a bad argument by name (issue 18, the fuzzer's findings) ----
def _spine_cases() -> list:
    from refimpl import get_sampler, predict
    from refimpl.papers import resolve
    from refimpl.reference import convergence_order, gaussian_law_error, measure_order, steps_roundoff
    from refimpl.registry import load_module
    from refimpl.samplers import (
        CoupledState,
        NoiseMaps,
        ddim_transfer,
        deis_ab_coefficients,
        dpm_solver_2_step,
        dynamic_thresholding,
        edict_unmix,
        lagrange_integrals,
    )
    from refimpl.samplers.deis import lagrange_integrals_symbolic
    from refimpl.samplers.dpm_solver_v3 import step_integrals
    from refimpl.samplers.multistep import MultistepSetting
    from refimpl.samplers.pndm import plms_direction
    from refimpl.samplers.unipc import unipc_setting
    from refimpl.samplers.usf import SolverSchedule
    from refimpl.schedules import DiscreteVP

    s = get_schedule("vp_linear")
    model = ExactModel(ring(), s)
    v_s, v_t = s(torch.tensor([0.6, 0.4], dtype=torch.float64))[0], s(torch.tensor(0.4, dtype=torch.float64))
    x, nan = torch.zeros(2, 3), torch.full((2, 3), math.nan)
    a, b = torch.tensor(0.0), torch.tensor(1.0)
    return [
        (lambda: dpm_solver_2_step(x, x, x, torch.zeros(3), v_s, v_t), TypeError, "v_s must be a ScheduleValues"),
        (lambda: ddim_transfer(x, x, v_s, "t"), TypeError, "v_t must be a ScheduleValues"),
        (lambda: predict(torch.zeros(3), x, a, "eps"), TypeError, "model must be callable"),
        (lambda: CoupledState(x, nan), ValueError, "y holds"),
        (lambda: NoiseMaps(x, torch.zeros(4, 5)), ValueError, "noise must have shape"),
        (lambda: MultistepSetting("x0", "lambda", None, 9, None, ""), ValueError, "max_order"),
        (lambda: lagrange_integrals(torch.tensor([0.5, 0.5]), a, b), ValueError, "nodes are finite and distinct"),
        (lambda: edict_unmix(nan, x), ValueError, "x_t and y_t are finite"),
        (lambda: plms_direction([nan]), ValueError, "es holds finite"),
        (lambda: dynamic_thresholding(nan), ValueError, "x0 holds"),
        (lambda: parameterization.x0_from_eps(x + 1e300, x + 1e300, 1e-300, 1e300), ValueError, "check x, eps"),
        (lambda: parameterization.x0_from_eps(x, x, torch.ones(5), 1.0), ValueError, "alpha_t must be a scalar"),
        (lambda: parameterization.convert(x, np.zeros(2), "eps", x, v_t), TypeError, "source must be a str"),
        (lambda: get_schedule(np.zeros(2)), TypeError, "name must be a str"),
        (lambda: get_sampler(np.zeros(2)), TypeError, "name must be a str"),
        (lambda: load_module("no_such_module_of_refimpl"), ValueError, "no importable module"),
        (lambda: resolve(1.0), TypeError, "dotted must be a str"),
        (lambda: steps_roundoff(10, 1e300, 1e300), ValueError, "overflows"),
        (lambda: convergence_order([1, 2, 2], [1.0, 0.5, 0.25]), ValueError, "steps .* must increase"),
        (lambda: convergence_order([1.5, 3], [1.0, 0.5]), ValueError, "steps must be a 1-D sequence"),
        (lambda: gaussian_law_error(nan[0], x, x[0], x), ValueError, "mean holds"),
        (lambda: measure_order(torch.zeros(3), model, x), TypeError, "sample must be callable"),
        (lambda: DiscreteVP(torch.tensor([0.5, 2.0])), ValueError, "betas must lie in"),
        (lambda: deis_ab_coefficients(torch.zeros(3), torch.tensor([0.5, 0.3]), 3), TypeError, "schedule must"),
        (lambda: lagrange_integrals_symbolic(20), ValueError, "q must be an integer in"),
        (lambda: unipc_setting(np.zeros(2), "x0", True), TypeError, "variant must be a str"),
        (lambda: SolverSchedule(1.0, ()), TypeError, "timesteps must be a floating"),
        (lambda: step_integrals(None, 0.0, 1.0, [0.0], 1), TypeError, "stats must be a ModelStatistics"),
    ]


@pytest.mark.parametrize("case", range(28))
def test_spine_helpers_and_records_name_the_argument_they_refuse(case: int) -> None:
    call, error, message = _spine_cases()[case]
    with pytest.raises(error, match=message):
        call()


def test_resolve_still_raises_an_import_error_for_callers_that_caught_one() -> None:
    from refimpl.papers import resolve

    with pytest.raises(ImportError):
        resolve("no_such_package.f")
    with pytest.raises(ValueError, match="dotted path"):
        resolve("refimpl.samplers.no_such_function")
