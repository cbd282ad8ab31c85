"""The oracle's stochastic and consistency schedulers of diffusers 0.42.1 (KDPM2 ancestral, DPMSolverSDE, LCM): each
agrees with its refimpl counterpart given the noise it drew, the comparison has teeth, and the finding it exposed."""

from __future__ import annotations

import pytest
import torch

from refimpl import grids
from refimpl.oracle import Config, check
from refimpl.oracle.adapters import KDiffusionSampler
from refimpl.oracle.diffusers_adapter import NOT_ADAPTED, DiffusersScheduler
from refimpl.oracle.running import reference_run, setup
from refimpl.registry import REGISTRY
from refimpl.samplers.ancestral import sample_dpm_solver_2_ancestral, sample_sde_dpm_solver_pp_2s
from refimpl.samplers.lcm import lcm_scalings, sample_lcm_multistep
from refimpl.schedules import get_schedule
from toy_models import ExactModel, ring

#: (class, constructor / set_timesteps options, config fields): each at its defaults and at non-default options on a
#: second schedule family (ddpm_linear, scaled_linear), with another prediction and dtype.
AGREE = [
    ("KDPM2AncestralDiscreteScheduler", {}, {"n_steps": 3}),
    ("KDPM2AncestralDiscreteScheduler", {"timestep_spacing": "trailing", "steps_offset": 1},
     {"n_steps": 3, "schedule": "scaled_linear", "prediction": "v", "dtype": "float32"}),
    ("DPMSolverSDEScheduler", {}, {"n_steps": 3}),
    ("DPMSolverSDEScheduler", {"use_karras_sigmas": True, "timestep_spacing": "trailing"},
     {"n_steps": 3, "schedule": "scaled_linear", "prediction": "v", "dtype": "float32"}),
    ("LCMScheduler", {}, {"n_steps": 4}),
    # timestep_scaling = 0.01: c_skip = 0.02 at the last timestep (k = 349), far above the tolerance: its value counts
    ("LCMScheduler", {"original_inference_steps": 20, "timestep_spacing": "trailing", "timestep_scaling": 0.01,
                      "clip_sample": True}, {"n_steps": 3, "schedule": "scaled_linear", "prediction": "x0"}),
    ("LCMScheduler", {}, {"n_steps": 3, "dtype": "float32", "toy": "mixture16"}),
]  # fmt: skip


@pytest.mark.parametrize("name, kwargs, fields", AGREE)
def test_stochastic_diffusers_schedulers_agree_given_the_noise_they_drew(name: str, kwargs: dict, fields: dict):
    impl = DiffusersScheduler(name, kwargs)
    report = check(impl, Config(impl.method, batch=4, **fields), exact=False)
    assert report.passed, report.table()


@pytest.mark.parametrize("name", ["KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler", "LCMScheduler"])
def test_without_the_noise_it_drew_or_with_other_options_the_reference_is_far_off(name: str) -> None:
    """The adapter records the scheduler's own draws (replayed generator; DPMSolverSDE: its replaced Brownian noise
    sampler, two draws a step); the reference with other noise is O(1) off, and with other options (a smaller
    ancestral noise, eta = 0.9; LCM's timestep_scaling 10 where the run used 0.01, c_skip 2e-6 against 0.02 at
    k = 339) off by far more than the tolerance."""
    lcm = ({"timestep_scaling": 0.01}, {"timestep_scaling": 10.0})
    kwargs, option = lcm if name == "LCMScheduler" else ({}, {"eta": 0.9})
    impl = DiffusersScheduler(name, kwargs)
    config = Config(impl.method, 3, batch=4)
    model, x_T, noise = setup(config)
    run = impl.run(config, model, x_T, noise)
    shape = {"KDPM2AncestralDiscreteScheduler": (2, 4), "DPMSolverSDEScheduler": (2, 2), "LCMScheduler": (3, 4)}
    assert run.noise is not None and run.noise.shape[:2] == shape[name]  # no draw on a last step to sigma = 0
    other = torch.randn(run.noise.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def deviation(noise: torch.Tensor, options: dict) -> float:
        ref, _ = reference_run(
            config, model, x_T, run.times, noise, run.final, (), {**run.reference_options, **options}
        )
        return max(float((x.double() - r).abs().max()) for x, r in zip(run.states, ref.states, strict=True))

    own = deviation(run.noise, {})  # within the oracle's tolerance (the agreement test above)
    assert deviation(other, {}) > max(1e-2, 100 * own) and deviation(run.noise, option) > max(1e-3, 10 * own)


def test_kdpm2_ancestral_nan_timestep_is_reported() -> None:
    """The finding (findings/diffusers_kdpm2_ancestral_nan.py): DDPM's linear betas at 2 steps, sigma_next / sigma =
    6.4e-5, below float32's sqrt(epsilon): sigma_down rounds to 0 and the midpoint's timestep is NaN."""
    impl = DiffusersScheduler("KDPM2AncestralDiscreteScheduler")
    report = check(impl, Config(impl.method, 2, batch=4), exact=False)
    assert not report.passed and "non-finite timesteps" in report.problems[0], report.table()


#: k-diffusion's samplers with eta > 0, their noise injected through their noise_sampler: (function, eta, final
#: step to sigma = 0, config fields), at eta = 1 and at a non-default eta on a second schedule, in float32.
#: sample_dpm_2_ancestral on EDM takes 8 steps: with fewer, its sigma_down's cancellation (the finding below) is
#: above the float64 tolerance.
KD_NOISE = [
    ("sample_dpm_2_ancestral", 1.0, True, {"n_steps": 8, "schedule": "edm"}),
    ("sample_dpm_2_ancestral", 0.5, False, {"n_steps": 3, "schedule": "vp_linear", "dtype": "float32"}),
    ("sample_dpmpp_sde", 1.0, False, {"n_steps": 4, "schedule": "edm", "spacing": "random"}),
    ("sample_dpmpp_sde", 0.5, True, {"n_steps": 3, "schedule": "vp_linear", "dtype": "float32", "prediction": "v"}),
]


@pytest.mark.parametrize("function, eta, final_zero, fields", KD_NOISE)
def test_kdiffusion_stochastic_samplers_agree_given_the_noise_they_were_given(function, eta, final_zero, fields):
    """sample_dpm_2_ancestral is ancestral DPM-Solver-2 (one draw a step), sample_dpmpp_sde the stochastic
    DPM-Solver++(2S) (a draw for each of its two stages): step by step, the same states, at the same eta."""
    impl = KDiffusionSampler(function, {"eta": eta}, final_zero=final_zero)
    assert impl.method == {"sample_dpm_2_ancestral": "dpm_solver_2_ancestral",
                           "sample_dpmpp_sde": "sde_dpm_solver_pp_2s"}[function]  # fmt: skip
    report = check(impl, Config(impl.method, batch=4, **fields), exact=False)
    assert report.passed, report.table()


@pytest.mark.parametrize("function", ["sample_dpm_2_ancestral", "sample_dpmpp_sde"])
def test_kdiffusion_stochastic_comparison_has_teeth(function: str) -> None:
    """The reference with other noise is O(1) off, with the two draws of a step swapped (sample_dpmpp_sde) or another
    eta (0.9 for 1) far more than the tolerance off: the noise and eta reach k-diffusion as the reference uses them."""
    impl = KDiffusionSampler(function, {"eta": 1.0})
    config = Config(impl.method, 8, "edm", batch=4)  # 8 steps: see KD_NOISE
    model, x_T, noise = setup(config)
    run = impl.run(config, model, x_T, noise)
    assert run.noise is not None and run.noise.shape[:2] == ((8, 2) if function == "sample_dpmpp_sde" else (8, 4))

    def deviation(noise: torch.Tensor, options: dict) -> float:
        options = {**run.reference_options, **options}
        ref, _ = reference_run(config, model, x_T, run.times, noise, run.final, (), options)
        return max(float((x.double() - r).abs().max()) for x, r in zip(run.states, ref.states, strict=True))

    report = check(impl, config, exact=False)
    other = torch.randn(run.noise.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert report.passed and deviation(run.noise, {}) <= report.tolerance, report.table()
    assert deviation(other, {}) > 1e-2 and deviation(run.noise, {"eta": 0.9}) > 1e-3
    if function == "sample_dpmpp_sde":
        assert deviation(run.noise.flip(1), {}) > 1e-2


def test_kdiffusion_ancestral_sigma_down_loses_the_squared_ratio_of_its_sigmas(monkeypatch) -> None:
    """The finding (findings/kdiffusion_ancestral_sigma_down_cancellation.py): k-diffusion's get_ancestral_step
    computes sigma_down = sqrt(sigma_to^2 - sigma_up^2), a difference whose relative round-off grows like
    u (sigma_from / sigma_to)^2; sigma_to sqrt(1 - eta^2 + eta^2 (sigma_to / sigma_from)^2) is the same value to a
    few u. In float32 one step from 80 to 0.002 gives sigma_down = 0 (5e-8 exactly: an Euler step to sigma = 0
    where an ancestral one was asked for), and two EDM steps of sample_dpm_2_ancestral are off the reference by far
    more than the float32 tolerance; with the stable form in its place they agree. In float64 the same loss,
    u e^{2h} relative with h = 2.65 a step, puts four EDM steps above the float64 tolerance; stable, they pass."""
    from refimpl.oracle.adapters import load_kdiffusion_sampling

    sampling = load_kdiffusion_sampling()
    original = sampling.get_ancestral_step
    f32 = torch.tensor([80.0, 0.002], dtype=torch.float32)
    assert float(original(f32[0], f32[1])[0]) == 0.0 and float(f32[1] ** 2 / f32[0]) > 0
    impl = KDiffusionSampler("sample_dpm_2_ancestral", {"eta": 1.0})
    config = Config(impl.method, 2, "edm", batch=4, dtype="float32")
    report = check(impl, config, exact=False)
    assert not report.passed and "first off the reference at step 1" in report.problems[0], report.table()
    assert report.steps[1].dev_reference > 10 * report.steps[1].tolerance, report.table()

    def stable(sigma_from, sigma_to, eta=1.0):
        up = original(sigma_from, sigma_to, eta)[1]
        return sigma_to * (1 - eta**2 + eta**2 * (sigma_to / sigma_from) ** 2) ** 0.5, up

    impl64 = KDiffusionSampler("sample_dpm_2_ancestral", {"eta": 1.0}, final_zero=True)
    config64 = Config(impl.method, 4, "edm", batch=4)
    assert not check(impl64, config64, exact=False).passed
    monkeypatch.setattr(sampling, "get_ancestral_step", stable)
    assert check(impl, config, exact=False).passed and check(impl64, config64, exact=False).passed


@pytest.mark.parametrize("schedule_name", ["vp_linear", "edm"])
def test_refimpl_against_itself_eta_zero_is_the_deterministic_solver(schedule_name: str) -> None:
    """eta = 0 removes the noise and rho_down = rho_t: ancestral DPM-Solver-2 is DPM-Solver-2 (r1 = 1/2) and the
    stochastic DPM-Solver++(2S) is DPM-Solver++(2S), to round-off."""
    s = get_schedule(schedule_name)
    model, ts = ExactModel(ring(), s), grids.uniform_lambda(s, 5)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pairs = [(sample_dpm_solver_2_ancestral, "dpm_solver_2"), (sample_sde_dpm_solver_pp_2s, "dpm_solver_pp_2s")]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours(model, x, ts, eta=0.0), REGISTRY[theirs](model, x, ts), rtol=1e-12, atol=1e-12)


def test_refimpl_against_itself_ancestral_midpoint_is_the_next_time_and_noise_is_ddpms() -> None:
    """With eta = 1, lambda_down = lambda_t + h, so the midpoint is t itself (passing it as a stage changes nothing),
    and the noise added, alpha_t rho_up = sigma_t sqrt(1 - e^{-2h}), is DDPM's posterior standard deviation."""
    s = get_schedule("vp_linear")
    model, ts = ExactModel(ring(), s), grids.uniform_lambda(s, 4)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = torch.randn(4, 6, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = sample_dpm_solver_2_ancestral(model, x, ts, noise=noise)
    torch.testing.assert_close(a, sample_dpm_solver_2_ancestral(model, x, ts, noise=noise, stages=ts[1:].tolist()))
    from refimpl.samplers.ancestral import ancestral_split

    v = s(ts)
    v_down, rho_up = ancestral_split(v[0], v[1])
    abar_s, abar_t = v.alpha[0] ** 2, v.alpha[1] ** 2
    ddpm_var = (1 - abar_t) / (1 - abar_s) * (1 - abar_s / abar_t)  # beta-tilde of Ho et al. 2020, Eq. 7
    torch.testing.assert_close((v_down.alpha * rho_up) ** 2, ddpm_var, rtol=1e-12, atol=0)


def test_lcm_boundary_condition_and_diffusers_scalings() -> None:
    """c_skip = 1, c_out = 0 exactly at t_min (k = 0); at k = 19 the values of diffusers' own function."""
    from diffusers import LCMScheduler

    s = get_schedule("ddpm_linear")
    c_skip, c_out = lcm_scalings(s, torch.tensor([s.t_min, 20 / 1000], dtype=torch.float64))
    assert (float(c_skip[0]), float(c_out[0])) == (1.0, 0.0)
    theirs = LCMScheduler().get_scalings_for_boundary_condition_discrete(19)
    torch.testing.assert_close(torch.stack([c_skip[1], c_out[1]]), torch.tensor(theirs, dtype=torch.float64))
    model, ts = ExactModel(ring(), s), torch.tensor([0.5, s.t_min], dtype=torch.float64)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="timestep_scaling"):
        sample_lcm_multistep(model, x, ts, timestep_scaling=0.0)


def test_sa_solver_stays_out_with_its_reason() -> None:
    assert "tau" in NOT_ADAPTED["SASolverScheduler"]
    assert not {"KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler", "LCMScheduler"} & set(NOT_ADAPTED)


def test_kdiffusion_dpmpp_sde_with_the_same_two_noises_a_step_is_the_same_method() -> None:
    """k-diffusion's sample_dpmpp_sde (eta = 1, r = 1/2), the original of diffusers' DPMSolverSDEScheduler, with its
    noise_sampler returning (z_1, z_2) of each step in turn (in place of its Brownian tree), in the EDM variables
    x~ = x / alpha, sigma = e^{-lambda}: the counterpart's states to round-off."""
    from refimpl.oracle.adapters import load_kdiffusion_sampling

    s = get_schedule("vp_linear")
    model, ts = ExactModel(ring(), s), grids.uniform_lambda(s, 4)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    noise = torch.randn(4, 2, 5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    draws = iter(noise.flatten(0, 1))
    v = s(ts)

    def denoiser(x_tilde: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t = s.t_of_lambda((-torch.log(sigma[0])).clamp(s.lambda_min, s.lambda_max))
        return model.x0(s(t).alpha * x_tilde, t)

    out = load_kdiffusion_sampling().sample_dpmpp_sde(
        denoiser, x / v.alpha[0], v.rho, disable=True, noise_sampler=lambda a, b: next(draws)
    )
    ours = sample_sde_dpm_solver_pp_2s(model, x, ts, noise=noise)
    torch.testing.assert_close(out * v.alpha[-1], ours, rtol=1e-10, atol=1e-10)
