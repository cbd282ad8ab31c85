"""The oracle's coverage of diffusers 0.42.1: the newer adapters on a fixed slice, their findings, the derived
configuration space, and the list of schedulers left out (each with its reason)."""

from __future__ import annotations

import inspect
import typing

import pytest

from refimpl.oracle import Config, check
from refimpl.oracle.adapters import KDiffusionSampler
from refimpl.oracle.diffusers_adapter import DIFFUSERS, NOT_ADAPTED, DiffusersScheduler
from refimpl.oracle.space import NOT_DRAWN, derived_options, option_values

#: (class, constructor / set_timesteps options, config fields): each new adapter at its defaults and at non-default
#: options on a second schedule family (VP: ddpm_linear and scaled_linear; the flow and EDM paths are fixed). KDPM2
#: only once here (its constructor alone takes ~3 s: 2,000 sigma-to-t searches); its Karras run is in the findings.
AGREE = [
    ("EulerAncestralDiscreteScheduler", {}, {"n_steps": 4}),
    ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"},
     {"n_steps": 3, "schedule": "scaled_linear", "prediction": "v"}),
    ("KDPM2DiscreteScheduler", {"timestep_spacing": "trailing"}, {"n_steps": 3, "schedule": "scaled_linear",
                                                                  "prediction": "v"}),
    ("FlowMatchEulerDiscreteScheduler", {}, {"n_steps": 4, "schedule": "rectified_flow"}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "use_karras_sigmas": True},
     {"n_steps": 3, "schedule": "rectified_flow", "dtype": "float32"}),
    ("FlowMatchHeunDiscreteScheduler", {}, {"n_steps": 3, "schedule": "rectified_flow"}),
    ("FlowMatchHeunDiscreteScheduler", {"shift": 3.0}, {"n_steps": 2, "schedule": "rectified_flow"}),
    ("EDMEulerScheduler", {}, {"n_steps": 4, "schedule": "edm"}),
    ("EDMEulerScheduler", {"sigma_schedule": "exponential"}, {"n_steps": 3, "schedule": "edm", "prediction": "v"}),
    ("EDMDPMSolverMultistepScheduler", {}, {"n_steps": 4, "schedule": "edm"}),
    ("EDMDPMSolverMultistepScheduler", {"solver_type": "heun", "sigma_schedule": "exponential"},
     {"n_steps": 4, "schedule": "edm", "prediction": "v"}),
    ("TCDScheduler", {}, {"n_steps": 4}),
    ("TCDScheduler", {"original_inference_steps": 20, "timestep_spacing": "trailing"},
     {"n_steps": 3, "schedule": "scaled_linear", "prediction": "x0"}),
    # 5 steps: at 3 the first step from k = 0 is 1.4 x its float32 tolerance (its float32 sigma_0 carries the
    # cancellation of 1 - alpha-bar_0 ~ 1e-4: a relative error ~1e-4, beyond the tolerance's round-off model)
    ("DPMSolverMultistepInverseScheduler", {"solver_order": 1}, {"n_steps": 5, "encode": True}),
    ("DPMSolverMultistepInverseScheduler", {"solver_order": 1, "algorithm_type": "dpmsolver"},
     {"n_steps": 3, "encode": True, "schedule": "scaled_linear"}),
]  # fmt: skip


@pytest.mark.parametrize("name, kwargs, fields", AGREE)
def test_new_diffusers_adapters_agree_where_the_method_is_the_same(name: str, kwargs: dict, fields: dict) -> None:
    impl = DiffusersScheduler(name, kwargs)
    report = check(impl, Config(impl.method, batch=4, **fields), exact=False)
    assert report.passed, report.table()


def test_euler_ancestral_is_compared_with_the_noise_it_drew() -> None:
    """The ancestral step draws its own noise: the adapter replays the generator, one draw per step; without the
    replayed noise (the reference's own, independent noise) the same run is far off (the comparison has teeth)."""
    impl, config = DiffusersScheduler("EulerAncestralDiscreteScheduler"), Config("ddpm", 3, batch=4)
    from refimpl.oracle.running import reference_run, setup

    model, x_T, noise = setup(config)
    run = impl.run(config, model, x_T, noise)
    assert run.noise is not None and len(run.noise) == 3
    own, _ = reference_run(config, model, x_T, run.times, noise, run.final)
    assert float((run.states[1].double() - own.states[1]).abs().max()) > 1e-2
    assert check(impl, config, exact=False).passed


#: Findings of the newer adapters, each at its smallest configuration, and the problem the oracle reports.
FINDINGS = [
    ("DPMSolverMultistepInverseScheduler", {"solver_order": 1, "timestep_spacing": "trailing"}, {"encode": True},
     "zero length"),
    ("EDMDPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"}, {"schedule": "edm"}, "not a valid grid"),
    ("TCDScheduler", {"clip_sample": True}, {"toy": "mixture16"}, "first off the reference"),
    ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}, {"n_steps": 3, "schedule": "scaled_linear"},
     "not queried at the solver's noise level"),  # Karras timesteps rounded to integers, as Heun's with "linspace"
    ("EDMDPMSolverMultistepScheduler", {"solver_order": 3, "lower_order_final": False},
     {"schedule": "edm", "n_steps": 5},
     "first off the reference at step 3"),
]  # fmt: skip


@pytest.mark.parametrize("name, kwargs, fields, problem", FINDINGS)
def test_the_oracle_reports_each_finding_of_the_newer_adapters(name, kwargs, fields, problem) -> None:
    impl = DiffusersScheduler(name, kwargs)
    report = check(impl, Config(impl.method, **{"n_steps": 2, "batch": 4, **fields}), exact=False)
    assert not report.passed and problem in " ".join(report.problems), report.table()


def test_edm_dpm_solver_third_order_is_the_official_half_term_step() -> None:
    """The failure above is the known one: EDM's copy of DPM-Solver++(3M) is the official step (half its D2 term)."""
    impl = DiffusersScheduler("EDMDPMSolverMultistepScheduler", {"solver_order": 3, "lower_order_final": False})
    assert check(impl, Config("dpm_solver_pp_3m_official", 5, "edm", batch=4), exact=False).passed


def test_the_configuration_space_is_derived_from_the_signatures() -> None:
    space = derived_options("DPMSolverMultistepScheduler")
    assert space["algorithm_type"] == ("dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++")
    assert space["solver_order"] == (1, 2, 3) and space["use_karras_sigmas"] == (False, True)
    assert "final_sigmas_type" in space and "use_lu_lambdas" in space
    assert not {"thresholding", "prediction_type", "beta_schedule", "num_train_timesteps"} & set(space)
    assert "original_inference_steps" in derived_options("TCDScheduler")  # a set_timesteps option
    assert derived_options("DDPMScheduler")["variance_type"] == ("fixed_small", "fixed_large")
    # an option a future version adds is drawn without a code change
    K = inspect.Parameter.KEYWORD_ONLY
    assert option_values(inspect.Parameter("new_switch", K, annotation=bool)) == (False, True)
    assert option_values(inspect.Parameter("new_mode", K, annotation=typing.Literal["a", "b"])) == ("a", "b")
    assert option_values(inspect.Parameter("thresholding", K, annotation=bool)) is None


def test_refused_combinations_and_the_float64_probe_outside_its_domain_are_not_drawn() -> None:
    both = DiffusersScheduler("EulerDiscreteScheduler", {"use_karras_sigmas": True, "use_exponential_sigmas": True})
    with pytest.raises(ValueError, match="diffusers refuses"):
        both.validate()
    with pytest.raises(ValueError, match="float64 probe"):
        DiffusersScheduler("KDPM2DiscreteScheduler", float64_tables=True).validate()
    assert DiffusersScheduler("DDIMScheduler", {"timestep_spacing": "trailing"}).validate()
    # singlestep SDE-DPM-Solver++ draws its noise inside step (no variance_noise): no counterpart, not drawn
    with pytest.raises(ValueError, match="no counterpart"):
        _ = DiffusersScheduler(
            "DPMSolverSinglestepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 1}
        ).method


@pytest.mark.parametrize("name, method", [("LCMScheduler", "lcm_multistep"), ("TCDScheduler", "ddim")])
def test_more_steps_than_the_distillation_grid_is_skipped_not_failed(name: str, method: str) -> None:
    """LCM and TCD sample a subset of their original_inference_steps grid; set_timesteps refuses more steps."""
    impl = DiffusersScheduler(name, {"original_inference_steps": 20})
    report = check(impl, Config(method, 21), exact=False)
    assert report.passed and "original_inference_steps = 20" in report.skipped, report.table()
    assert check(impl, Config(method, 20), exact=False).skipped is None


def test_every_exported_scheduler_is_adapted_or_left_out_with_a_reason() -> None:
    import diffusers

    exported = {n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("Scheduler")}
    assert exported == set(DIFFUSERS) | set(NOT_ADAPTED), exported ^ (set(DIFFUSERS) | set(NOT_ADAPTED))
    assert not set(DIFFUSERS) & set(NOT_ADAPTED)
    assert all(reason for reason in [*NOT_ADAPTED.values(), *NOT_DRAWN.values()])


@pytest.mark.parametrize("kwargs, schedule", [({}, "edm"), ({"order": 2, "rtol": 0.01}, "vp_linear")])
def test_kdiffusion_dpm_adaptive_steps_are_singlestep_dpm_solver_on_its_accepted_grid(kwargs, schedule) -> None:
    """sample_dpm_adaptive: every accepted step is DPM-Solver-3 (points 1/3, 2/3) or -2 (point 1/2) in lambda; its
    controller (PID, batch-wide norm) is not refimpl's and is not compared (see the adapter's docstring)."""
    impl = KDiffusionSampler("sample_dpm_adaptive", kwargs)
    report = check(impl, Config(impl.method, 1, schedule, batch=4), exact=False)
    assert report.passed and len(report.steps) > 5, report.table()


def test_a_float32_sized_failure_is_set_beside_a_first_order_method_in_float32() -> None:
    """The float32 verdict is compared with what float32 rounding alone does to DDIM on the same grid."""
    impl = DiffusersScheduler("DPMSolverMultistepScheduler", {"solver_order": 1}, float64_tables=True)
    report = check(impl, Config("ddim", 2, batch=4), exact=False)
    hint = [h for h in report.hints if h.startswith("what float32 rounding alone does")]
    assert not report.passed and len(hint) == 1, report.table()
    assert check(DiffusersScheduler("DDIMScheduler"), Config("ddim", 2, batch=4), exact=False).hints == []


def test_the_float32_yardstick_of_an_encoder_walks_its_grid_upwards() -> None:
    """An encoder's grid increases: the yardstick is DDIM inversion on it (it raised inside ``make oracle``)."""
    kwargs = {"timestep_spacing": "trailing", "set_alpha_to_one": False, "clip_sample": True}
    report = check(DiffusersScheduler("DDIMInverseScheduler", kwargs), Config("ddim", 1, spacing="uniform_t",
                   encode=True, batch=4), exact=False)  # fmt: skip
    hint = [h for h in report.hints if h.startswith("what float32 rounding alone does")]
    assert not report.passed and len(hint) == 1, report.table()
