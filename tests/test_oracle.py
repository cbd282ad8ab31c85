"""The oracle: refimpl passes against itself, third-party adapters run, defects are caught, bad samplers reported."""

from __future__ import annotations

import pytest

from refimpl.oracle import Config, check
from refimpl.oracle.adapters import DiffusersScheduler, KDiffusionSampler, RefimplCallable
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


@pytest.mark.parametrize("n_steps", [1, 2, 10, 50])
def test_diffusers_ddim_and_ddpm_agree_where_conventions_coincide(n_steps: int) -> None:
    """Trailing DDIM with n dividing N, and leading DDPM (its own noise replayed), within float32 round-off."""
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
    assert (
        report.steps[1].dev_reference
        > 20 * check(DiffusersScheduler("DDIMScheduler"), Config("ddim", 10), exact=False).steps[1].dev_reference
    ), "the first step already lands off the grid, far above float32 round-off"


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
    from refimpl.oracle.core import _setup

    config = Config("ddim", 20, "vp_linear", toy="gaussian")
    report = check(RefimplCallable(sample_ddim), config)
    model, x_T, _ = _setup(config)
    ts = grids.uniform_lambda(model.schedule, 20)
    error = float((sample_ddim(model, x_T, ts) - model.pf_ode_map(x_T, ts[0], ts[-1])).abs().max())
    assert report.passed
    assert report.steps[-1].dev_exact == pytest.approx(error, rel=1e-6)
