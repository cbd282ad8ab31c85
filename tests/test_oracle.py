"""The oracle: refimpl passes against itself, third-party adapters run, defects are caught, bad samplers reported."""

from __future__ import annotations

import functools

import pytest
import torch

from refimpl.oracle import Config, check
from refimpl.oracle.adapters import KDIFFUSION, DiffusersScheduler, KDiffusionSampler, RefimplCallable
from refimpl.oracle.methods import MODELS, get_method
from refimpl.oracle.tolerance import TOL_OPS
from refimpl.registry import samplers
from refimpl.samplers import sample_ddim, sample_ddpm


@pytest.mark.parametrize("schedule", ["vp_linear", "ddpm_linear", "edm"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_refimpl_passes_against_itself(schedule: str, prediction: str) -> None:
    """The same exact model written three ways gives the same trajectory, in float64 and float32."""
    for dtype in ["float64", "float32"]:
        report = check(
            RefimplCallable(sample_ddim), Config("ddim", 6, schedule, prediction=prediction, dtype=dtype), exact=False
        )
        assert report.passed, report.table()


def test_stochastic_refimpl_passes_with_injected_noise() -> None:
    report = check(RefimplCallable(sample_ddpm, stochastic=True), Config("ddpm", 8, "vp_cosine"), exact=False)
    assert report.passed, report.table()


@pytest.mark.parametrize("n_steps", [1, 2, 8])
def test_diffusers_ddim_and_ddpm_agree_where_conventions_coincide(n_steps: int) -> None:
    """Trailing DDIM with n dividing N (a power of ten or not), and leading DDPM (its own noise replayed), within
    float32 round-off."""
    ddim = check(DiffusersScheduler("DDIMScheduler"), Config("ddim", n_steps), exact=False)
    assert ddim.passed, ddim.table()
    ddpm = check(DiffusersScheduler("DDPMScheduler"), Config("ddpm", n_steps), exact=False)
    assert ddpm.passed, ddpm.table()


def test_the_oracle_catches_diffusers_ddim_landing_off_its_own_grid() -> None:
    """diffusers 0.42 DDIM steps to t - N // n, not to its next timestep: with trailing spacing and n = 7 the
    first step lands at k = 857 while the next model call is at k = 856 (diffusers issues #11347, #12633)."""
    report = check(DiffusersScheduler("DDIMScheduler"), Config("ddim", 7), exact=False)
    assert not report.passed and "off the scheduler's own grid" in report.problems[0]
    assert any("first off the reference" in p for p in report.problems), report.problems
    on_grid = _diffusers_report("DDIMScheduler", (), 10)  # the agreeing run of AGREE
    assert report.steps[1].dev_reference > 20 * on_grid.steps[1].dev_reference, (
        "the first step already lands off the grid, far above float32 round-off"
    )


@pytest.mark.parametrize("schedule", ["edm", "vp_linear"])
def test_kdiffusion_euler_is_ddim(schedule: str) -> None:
    """k-diffusion's real sample_euler, loaded without torchvision, is DDIM in the EDM variables."""
    report = check(KDiffusionSampler("sample_euler"), Config("ddim", 12, schedule), exact=False)
    assert report.passed, report.table()


def _broken(kind: str):
    def sample(model, x, timesteps, *, callback=None):
        return sample_ddim(model, x, timesteps, callback=lambda info: callback(_corrupt(info, kind)))

    return sample


def _corrupt(info, kind):
    from dataclasses import replace

    bad = {"shape": info.x_next[:, :1], "nan": info.x_next * float("nan"), "type": info.x_next.numpy()}[kind]
    return replace(info, x_next=bad)


@pytest.mark.parametrize("kind, message", [("shape", "shape"), ("nan", "non-finite"), ("type", "not a tensor")])
def test_bad_samplers_get_a_clear_report(kind: str, message: str) -> None:
    report = check(RefimplCallable(_broken(kind)), Config("ddim", 4), exact=False)
    assert not report.passed and message in " ".join(report.problems), report.problems


def test_a_crashing_sampler_is_reported_not_raised() -> None:
    def crash(model, x, timesteps, *, callback=None):
        raise RuntimeError("kaboom")

    report = check(RefimplCallable(crash), Config("ddim", 3), exact=False)
    assert not report.passed and "kaboom" in report.problems[0]


def test_report_measures_distance_to_the_exact_ode() -> None:
    """On one Gaussian, the report's distance to the exact ODE equals DDIM's error against the closed form."""
    from refimpl import grids
    from refimpl.oracle.running import setup

    config = Config("ddim", 6, "vp_linear", toy="gaussian")
    report = check(RefimplCallable(sample_ddim), config, exact=True)
    model, x_T, _ = setup(config)
    ts = grids.uniform_lambda(model.schedule, 6)
    error = float((sample_ddim(model, x_T, ts) - model.pf_ode_map(x_T, ts[0], ts[-1])).abs().max())
    assert report.passed
    assert report.steps[-1].dev_exact == pytest.approx(error, rel=1e-6)


# --- the whole registry against itself -------------------------------------------------------------------------

SELF_METHODS = sorted(s.name for s in samplers()) + sorted(
    k for k in MODELS if not k.startswith(("dpm_solver_singlestep", "dpm_solver_pp_s"))
)


@pytest.mark.parametrize("name", SELF_METHODS)
def test_every_method_passes_against_itself(name: str) -> None:
    """Each registered method and named setting, run as an implementation under test: 1, 2 and 5 steps, three
    parameterisations of the same exact model, float64 and float32 states (NFE, query times, landings all agree)."""
    spec = get_method(name)
    impl = RefimplCallable(functools.partial(spec.sample, **dict(spec.options)), stochastic=spec.stochastic)
    for n, schedule, prediction, dtype in [(1, "vp_linear", "eps", "float64"), (2, "edm", "x0", "float32"),
                                           (5, "vp_cosine", "v", "float64")]:  # fmt: skip
        config = Config(name, max(n, spec.min_steps), schedule, prediction=prediction, dtype=dtype)
        report = check(impl, config, exact=False)
        assert report.passed, report.table()


# --- diffusers and k-diffusion on a fixed slice of the matrix ---------------------------------------------------

AGREE = [
    ("DDIMScheduler", {}, 10),
    ("DDPMScheduler", {}, 10),
    ("DDIMParallelScheduler", {"timestep_spacing": "leading", "steps_offset": 1}, 4),
    ("DDPMParallelScheduler", {}, 3),
    ("PNDMScheduler", {"skip_prk_steps": True}, 5),
    ("PNDMScheduler", {}, 5),
    ("DEISMultistepScheduler", {"solver_order": 3}, 10),
    ("UniPCMultistepScheduler", {"solver_order": 3}, 10),
    ("DPMSolverMultistepScheduler", {}, 10),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver"}, 10),
    ("DPMSolverMultistepScheduler", {"solver_type": "heun"}, 10),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, 10),
    ("DPMSolverSinglestepScheduler", {}, 10),
    ("EulerDiscreteScheduler", {}, 10),
    ("HeunDiscreteScheduler", {}, 10),
    ("LMSDiscreteScheduler", {}, 10),
]


@pytest.mark.parametrize("name, kwargs, n_steps", AGREE)
def test_diffusers_schedulers_agree_where_the_method_is_the_same(name: str, kwargs: dict, n_steps: int) -> None:
    """Every diffusers adapter on a fixed configuration where diffusers 0.42.1 implements refimpl's method."""
    report = _diffusers_report(name, tuple(kwargs.items()), n_steps)
    assert report.passed, report.table()
    assert torch.get_default_dtype() == torch.float64  # diffusers' float32 default lived only inside its steps


@functools.cache
def _diffusers_report(name: str, kwargs: tuple, n_steps: int):
    """The report of a diffusers scheduler on its method's default configuration, computed once (read only)."""
    impl = DiffusersScheduler(name, dict(kwargs))
    return check(impl, Config(impl.method, n_steps), exact=False)


#: The findings of the chapter "What the oracle found", each at its smallest configuration, and the problem reported.
FINDINGS = [
    ("DDIMScheduler", {"timestep_spacing": "linspace"}, False, 2, "off the scheduler's own grid", "eps"),
    ("DDIMScheduler", {"timestep_spacing": "leading"}, False, 1, "zero length", "eps"),
    ("PNDMScheduler", {"timestep_spacing": "leading"}, False, 5, "zero length", "eps"),
    ("PNDMScheduler", {}, False, 1, "raised ValueError", "eps"),
    ("PNDMScheduler", {"skip_prk_steps": True}, False, 1, "took no step", "eps"),
    ("UniPCMultistepScheduler", {"timestep_spacing": "leading", "lower_order_final": False}, False, 2, "non-finite",
     "eps"),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "lower_order_final": False, "timestep_spacing": "leading"},
     False, 4, "first off the reference at step 3", "eps"),
    ("EulerDiscreteScheduler", {}, True, 1, "first off the reference at step 1", "eps"),
    ("DPMSolverMultistepScheduler", {"solver_order": 1}, True, 2, "first off the reference at step 1", "eps"),
    ("DDPMScheduler", {"timestep_spacing": "trailing"}, True, 1, "first off the reference at step 1", "eps"),
    ("DDPMScheduler", {"timestep_spacing": "trailing", "variance_type": "fixed_large"}, False, 1,
     "first off the reference at step 1 (sigma = 0)", "eps"),
    ("DDIMInverseScheduler", {}, False, 1, "not queried at the solver's noise level", "eps"),
    ("HeunDiscreteScheduler", {"timestep_spacing": "linspace"}, True, 3, "not queried at the solver's noise level",
     "eps"),
    ("PNDMScheduler", {"skip_prk_steps": True}, False, 2, "first off the reference at step 1", "v"),
]  # fmt: skip


@pytest.mark.parametrize("name, kwargs, float64_tables, n_steps, problem, prediction", FINDINGS)
def test_the_oracle_reports_each_diffusers_finding(name, kwargs, float64_tables, n_steps, problem, prediction) -> None:
    impl = DiffusersScheduler(name, kwargs, float64_tables=float64_tables)
    report = check(impl, Config(impl.method, n_steps, prediction=prediction, encode=impl.encodes), exact=False)
    assert not report.passed and problem in " ".join(report.problems), report.table()


@pytest.mark.parametrize("function", sorted(KDIFFUSION))
def test_kdiffusion_samplers_agree_or_show_their_finding(function: str) -> None:
    """All of k-diffusion's mapped samplers agree with refimpl on 10 EDM steps, except 3M (its third-order term)."""
    impl = KDiffusionSampler(function)
    report = check(impl, Config(impl.method, 10, "edm"), exact=False)
    if function == "sample_dpmpp_3m_sde":
        assert not report.passed and "first off the reference at step 3" in report.problems[0], report.table()
    else:
        assert report.passed, report.table()


@pytest.mark.parametrize("schedule", ["edm", "vp_linear"])
@pytest.mark.parametrize("nfe", [1, 2, 3, 7])
def test_kdiffusion_dpm_fast_is_singlestep_dpm_solver_with_its_orders_and_points(schedule: str, nfe: int) -> None:
    """sample_dpm_fast with n model calls: orders 3, ..., [2, 1] or [n % 3] on a uniform-lambda grid, intermediate
    points at 1/3, 2/3 (order 3) and 1/2 (order 2) of each step; every n % 3 case, on two schedule families."""
    report = check(KDiffusionSampler("sample_dpm_fast"), Config("dpm_solver_singlestep_3", nfe, schedule))
    assert report.passed and report.nfe == nfe, report.table()


def test_kdiffusion_sde_samplers_crash_on_a_one_step_schedule_and_the_oracle_reports_it() -> None:
    for function in ("sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"):
        report = check(KDiffusionSampler(function, final_zero=True), Config(KDIFFUSION[function][0], 1, "edm"))
        assert not report.passed and "UnboundLocalError" in report.problems[0], report.problems


def test_the_command_line_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    from refimpl.oracle.__main__ import main

    assert (
        main(["diffusers", "DPMSolverMultistepScheduler", "--solver-order", "2", "--n-steps", "3", "--no-exact"]) == 0
    )
    out = capsys.readouterr().out
    assert "dpm_solver_pp_2m" in out and "|x - ref|" in out and "all configurations pass" in out


def test_explore_shrinks_to_the_smallest_failing_configuration() -> None:
    """hypothesis finds diffusers' DDIM failing with linspace spacing and shrinks it to one step (timestep 0: a step
    of zero length)."""
    from hypothesis import strategies as st

    from refimpl.oracle.explore import explore

    make = lambda **kw: DiffusersScheduler("DDIMScheduler", kw)  # noqa: E731
    finding = explore(
        make,
        "ddim",
        {"timestep_spacing": st.just("linspace")},
        max_examples=3,
        max_steps=4,
        predictions=("eps",),
        dtypes=("float64",),
        toys=("ring",),
        spacings=("uniform_lambda",),
    )
    assert finding.failure is not None and finding.failure.config.n_steps == 1, finding.failure
    assert "zero length" in finding.failure.problems[0]


def test_a_crashing_matrix_entry_is_reported_with_its_traceback_and_the_others_still_run() -> None:
    """An entry whose exploration raises (here its constructor, outside the run that ``check`` guards) is its row of
    the report, CRASHED with its traceback; the entries after it are explored."""
    from refimpl.oracle.matrix import Entry, render, run_matrix

    def broken() -> RefimplCallable:
        raise RuntimeError("adapter out of date")

    small = {"max_steps": 2, "predictions": ("eps",), "dtypes": ("float64",), "toys": ("ring",)}
    entries = [Entry("broken", broken, "ddim", strategy=small),
               Entry("refimpl ddim", lambda: RefimplCallable(sample_ddim), "ddim", strategy=small)]  # fmt: skip
    crashed, passed = run_matrix(max_examples=2, entries=entries)
    assert crashed.crash is not None and "RuntimeError: adapter out of date" in crashed.crash
    assert passed.crash is None and passed.failure is None and passed.examples == 2
    text = render([crashed, passed])
    assert f"| broken | ddim | 0 | {crashed.cpu_s:.1f} | CRASHED: RuntimeError: adapter out of date |" in text
    assert "Traceback (most recent call last)" in text and "| refimpl ddim" not in text  # named by its impl


@pytest.mark.parametrize("n_steps", [4, 10])
def test_diffusers_third_order_multistep_is_the_official_formula_with_half_the_last_term(n_steps: int) -> None:
    """The disagreement of Finding 5 is exactly the lost half of the third-order Taylor term: diffusers agrees, to
    float32 round-off, with refimpl's 3M step minus alpha_t h^3 phi_3(-h) [m0, m1, m2] (``official_3m_update``)."""
    kwargs = {"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min"}
    impl = DiffusersScheduler("DPMSolverMultistepScheduler", kwargs)
    assert check(impl, Config("dpm_solver_pp_3m_official", n_steps), exact=False).passed
    assert not check(impl, Config("dpm_solver_pp_3m", n_steps), exact=False).passed


@pytest.mark.parametrize("n_steps", [4, 10])
def test_noise_prediction_3m_and_kdiffusion_3m_are_the_official_formula_too(n_steps: int) -> None:
    kwargs = {"solver_order": 3, "algorithm_type": "dpmsolver", "lower_order_final": False}
    impl = DiffusersScheduler("DPMSolverMultistepScheduler", kwargs)
    assert check(impl, Config("dpm_solver_3m_official", n_steps), exact=False).passed
    assert not check(impl, Config("dpm_solver_3m", n_steps), exact=False).passed
    kd = KDiffusionSampler("sample_dpmpp_3m_sde")
    assert check(kd, Config("dpm_solver_pp_3m_exact_official", n_steps, "edm"), exact=False).passed


def test_lower_order_final_applies_below_15_steps_only_and_is_modelled() -> None:
    """diffusers lowers the last steps' order only when fewer than 15 steps are taken; the oracle models it as a
    convention (per-step orders of the reference), measures what it changes, and then agrees."""
    impl = DiffusersScheduler("DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"})
    for n_steps, modelled in [(14, True), (15, False)]:
        report = check(impl, Config(impl.method, n_steps), exact=False)
        names = [c.name for c in report.conventions]
        assert report.passed and ("lower-order final steps" in names) == modelled, report.table()


@pytest.mark.parametrize("method", ["ddim", "dpm_solver_pp_2m", "unipc2_bh2"])
def test_the_same_exact_model_written_three_ways_gives_the_same_trajectory(method: str) -> None:
    """eps, x0 and v parameterisations of one exact model: the states of a refimpl run agree to round-off."""
    from refimpl import grids
    from refimpl.oracle.running import setup

    spec = get_method(method)
    finals = []
    for prediction in ["eps", "x0", "v"]:
        model, x_T, _ = setup(Config(method, 8, "vp_cosine", prediction=prediction))
        finals.append(spec.sample(model, x_T, grids.uniform_lambda(model.schedule, 8), **dict(spec.options)))
    tol = TOL_OPS * 9 * torch.finfo(torch.float64).eps * max(1.0, float(finals[0].abs().max()))
    assert float((finals[1] - finals[0]).abs().max()) <= tol and float((finals[2] - finals[0]).abs().max()) <= tol


def test_round_off_factors_are_needed_and_the_float64_probe_confirms_round_off() -> None:
    """One k-diffusion Euler step from T to t_min on vp_linear works at the x~ = x / alpha scale (alpha_T ~ 0.006):
    its float64 round-off exceeds the plain 64 (n + 1) u |x| and is within the alpha-growth factor. diffusers' Heun
    with "linspace" spacing takes one step from T to t_min: with float32 tables it deviates by 1e-2 (the exact model
    amplifies the rounding of its Euler point near t_min, as the reference's own probe measures), with float64
    tables by 4e-11: round-off, and the amplification factor is what admits it."""
    report = check(KDiffusionSampler("sample_euler"), Config("edm_euler", 1, "vp_linear"), exact=False)
    plain = TOL_OPS * 2 * torch.finfo(torch.float64).eps / 2 * 3.0
    assert report.passed and report.steps[-1].dev_reference > plain, report.table()
    kwargs = {"timestep_spacing": "linspace"}
    f32 = check(DiffusersScheduler("HeunDiscreteScheduler", kwargs), Config("edm_heun", 2), exact=False)
    f64 = check(DiffusersScheduler("HeunDiscreteScheduler", kwargs, float64_tables=True), Config("edm_heun", 2),
                exact=False)  # fmt: skip
    assert f32.passed and f32.steps[1].dev_reference > f32.tolerance, f32.table()
    assert f64.passed and f64.steps[1].dev_reference < 1e-9, f64.table()


def test_stochastic_ddim_gets_the_injected_noise_and_agrees() -> None:
    """diffusers' DDIM with eta = 1 takes the oracle's noise (variance_noise); refimpl's DDIM gets the same noise,
    so the two agree path by path. Without it the reference would be another path, and the oracle says so."""
    config = Config("ddim", 10, options=(("eta", 1.0),))
    report = check(DiffusersScheduler("DDIMScheduler"), config, exact=False)
    assert report.passed and max(s.amplification for s in report.steps) < 100, report.table()

    def ddim_own_noise(model, x, timesteps, *, callback=None, eta=0.0):
        return sample_ddim(model, x, timesteps, eta=eta, callback=callback)  # draws its own noise

    report = check(RefimplCallable(ddim_own_noise), config, exact=False)
    assert not report.passed, report.table()


def test_kdiffusion_heun_one_step_deviation_is_round_off_at_its_euler_point() -> None:
    """The one unclassified float64 disagreement (k-diffusion's Heun, one EDM step from sigma = 80 to 0.002) is the
    size of one rounding of the Euler point (computed at the scale |x_T| ~ 140) carried through the second model
    call: refimpl's own Heun moves by as much when that point is perturbed by u |x_T|."""
    from refimpl import grids
    from refimpl.oracle.running import setup
    from refimpl.samplers import sample_edm_heun

    config = Config("edm_heun", 1, "edm")
    report = check(KDiffusionSampler("sample_heun"), config, exact=False)
    model, x_T, _ = setup(config)
    ts = grids.uniform_lambda(model.schedule, 1)
    kick = torch.finfo(torch.float64).eps / 2 * float(x_T.abs().max())
    sign = torch.sign(torch.randn(x_T.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    calls = []

    def kicked(x, t):
        calls.append(t)
        return model(x + kick * sign if len(calls) == 2 else x, t)

    kicked.schedule, kicked.prediction = model.schedule, model.prediction
    moved = float((sample_edm_heun(kicked, x_T, ts) - sample_edm_heun(model, x_T, ts)).abs().max())
    deviation = report.steps[-1].dev_reference
    assert not report.passed and report.tolerance < deviation <= 4 * moved, (deviation, moved, report.tolerance)


def test_loading_k_diffusion_leaves_sys_modules_as_it_was() -> None:
    """The placeholder package k_diffusion (and torchvision's) is removed after loading sampling.py."""
    import sys

    from refimpl.oracle.adapters import load_kdiffusion_sampling

    before = set(sys.modules)
    sampling = load_kdiffusion_sampling()
    assert callable(sampling.sample_euler) and callable(sampling.utils.append_dims)
    added = {name for name in set(sys.modules) - before if name.split(".")[0] in ("k_diffusion", "torchvision")}
    assert added == set() and load_kdiffusion_sampling() is sampling
