"""The five-minute path: a plain function checked with the defaults, and the five engineer defects it must catch."""

from __future__ import annotations

import warnings

import pytest
import torch

from refimpl.models import predict
from refimpl.oracle import Config, Verdict, assert_agrees, check, default_configs
from refimpl.oracle.own import DEFAULT_CONFIGS
from refimpl.samplers import StepInfo

DEFECTS = ("r_inverted", "query_last", "float32", "nan_to_zero", "extra_call")


def engineer_2m(defect: str | None = None, report_steps: bool = True):
    """DPM-Solver++(2M) as an engineer writes it from Lu et al. 2022 (arXiv:2211.01095v3, Algorithm 2), with a
    last step to sigma = 0 (the x0 prediction), and optionally one of the five seeded defects of issue 12."""

    def my_2m(model, x, timesteps, *, callback=None):
        x0_prev = h_prev = None
        n = len(timesteps) - 1
        for i in range(n):
            t, t_next = timesteps[i], timesteps[i + 1]
            last = i == n - 1
            x0 = predict(model, x, timesteps[i - 1] if defect == "query_last" and last and i else t, "x0")
            if defect == "extra_call":
                predict(model, x, t, "x0")
            if t_next == 0:
                if defect == "nan_to_zero" and x0_prev is not None:  # the multistep formula with h = inf: r = 0
                    x_next = x0 + (x0 - x0_prev) * torch.tensor(float("inf")) / (2 * h_prev)
                else:
                    x_next = x0
            else:
                v, w = model.schedule(t), model.schedule(t_next)
                h = w.lambda_ - v.lambda_
                r = h_prev / h if h_prev is not None else None
                if defect == "r_inverted" and r is not None:
                    r = 1 / r
                d = x0 if r is None else x0 + (x0 - x0_prev) / (2 * r)
                coefficient = w.alpha * torch.expm1(-h)
                if defect == "float32":
                    coefficient = coefficient.float().double()
                x_next = (w.sigma / v.sigma) * x - coefficient * d
                x0_prev, h_prev = x0, h
            if callback is not None and report_steps:
                callback(StepInfo(i, t, t_next, x, x_next, x0))
            x = x_next
        return x

    return my_2m


@pytest.mark.parametrize("report_steps", [True, False], ids=["per-step", "end-to-end"])
def test_a_plain_function_passes_with_the_defaults(report_steps: bool) -> None:
    """``check`` (end to end) and ``assert_agrees`` (per step: it returns the verdict, it does not raise)."""
    fn = engineer_2m(report_steps=report_steps)
    verdict = assert_agrees(fn, "dpm_solver_pp_2m") if report_steps else check(fn, method="dpm_solver_pp_2m")
    assert isinstance(verdict, Verdict) and verdict.passed and not verdict.skipped, str(verdict)
    reported = [s.reported for r in verdict.reports for s in r.steps]
    assert all(reported) if report_steps else not all(reported)
    assert verdict.headline().startswith("PASS") and "worst deviation" in verdict.headline()


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_engineer_defect_is_caught_by_the_defaults(defect: str) -> None:
    """Issue 12's five seeded defects, each caught by ``check`` with its defaults, with the pattern named."""
    verdict = check(engineer_2m(defect), method="dpm_solver_pp_2m")
    assert not verdict.passed, str(verdict)
    problems = " ".join(p for r in verdict.failures for p in r.problems)
    hints = " ".join(h for r in verdict.failures for h in r.hints)
    expected = {
        "r_inverted": ("first off the reference", None),
        "query_last": ("model call", None),
        "float32": ("first off the reference", "float32 round-off"),
        "nan_to_zero": ("(sigma = 0): non-finite state", "only the step to sigma = 0"),
        "extra_call": ("model calls, the method makes", "more than the method makes"),
    }[defect]
    assert expected[0] in problems, str(verdict)
    assert expected[1] is None or expected[1] in hints, str(verdict)


def test_r_inverted_passes_on_uniform_lambda_grids_only() -> None:
    """Why the defaults need non-uniform grids: on a uniform-lambda grid r = 1 = 1/r."""
    cfg = Config("dpm_solver_pp_2m", 6, "vp_linear", spacing="uniform_lambda")
    assert check(engineer_2m("r_inverted"), cfg).passed
    assert not check(engineer_2m("r_inverted"), Config("dpm_solver_pp_2m", 6, "vp_linear", spacing="random")).passed


def test_the_defaults_cover_every_grid_family_precision_and_sigma_zero() -> None:
    spacings = {c.get("spacing") for c in DEFAULT_CONFIGS}
    assert {"uniform_t", "uniform_lambda", "karras", "quadratic", "random"} <= spacings
    configs = default_configs("dpm_solver_pp_3m")
    assert {c.dtype for c in configs} == {"float32", "float64"} and any(c.final_zero for c in configs)
    assert {c.prediction for c in configs} == {"eps", "x0", "v"} and min(c.n_steps for c in configs) == 1


def test_the_random_grid_has_varying_step_ratios() -> None:
    from refimpl.oracle.config import config_grid
    from refimpl.schedules import get_schedule

    s = get_schedule("vp_linear")
    lam = s(config_grid(s, Config("ddim", 6, "vp_linear", spacing="random"))).lambda_
    h = lam.diff()
    assert (h > 0).all() and float((h[1:] / h[:-1]).max() / (h[1:] / h[:-1]).min()) > 2


@pytest.mark.parametrize(
    "method", ["ddim", "dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc2_bh2", "edm_heun", "dpm_solver_2"]
)
def test_refimpl_against_itself_passes_every_default_configuration(method: str) -> None:
    """refimpl's own samplers as implementations under test: every default configuration passes (those with a last
    step to sigma = 0 are skipped: refimpl's samplers refuse a grid outside the schedule, before any model call)."""
    import functools

    from refimpl.oracle.methods import get_method

    spec = get_method(method)
    verdict = check(functools.partial(spec.sample, **dict(spec.options)), method=method)
    assert verdict.passed, str(verdict)
    assert all(r.config.final_zero for r in verdict.skipped) and len(verdict.skipped) < len(verdict.reports)


def test_a_stochastic_sampler_without_noise_gets_a_hint() -> None:
    from refimpl.samplers import sample_ddpm

    def own_noise(model, x, timesteps, *, callback=None):
        return sample_ddpm(model, x, timesteps, callback=callback, generator=torch.Generator().manual_seed(5))

    report = check(own_noise, Config("ddpm", 4, "vp_linear"))
    assert not report.passed and any("takes no `noise` argument" in h for h in report.hints), report.table()
    assert check(sample_ddpm_with_noise, Config("ddpm", 4, "vp_linear")).passed


def sample_ddpm_with_noise(model, x, timesteps, *, noise=None, callback=None):
    from refimpl.samplers import sample_ddpm

    return sample_ddpm(model, x, timesteps, noise=noise, callback=callback)


def test_a_crash_is_reported_with_its_traceback() -> None:
    def adapter_bug(model, x, timesteps):
        cache = None
        return cache[0]

    report = check(adapter_bug, Config("ddim", 2))
    assert "raised TypeError" in report.problems[0] and "cache[0]" in report.traceback, report.table()
    assert "Traceback" in report.table()


def test_sigma_zero_is_shown_as_such() -> None:
    report = check(engineer_2m("nan_to_zero"), Config("dpm_solver_pp_2m", 3, "edm", final_zero=True))
    table = report.table()
    assert "sigma = 0" in table and "nan" not in report.problems[0].lower().replace("non-finite", ""), table


def test_assert_agrees_raises_with_the_headline_and_the_failing_table() -> None:
    """(Its passing side is in ``test_a_plain_function_passes_with_the_defaults``.)"""
    with pytest.raises(AssertionError, match=r"FAIL: .* disagrees with refimpl's dpm_solver_pp_2m") as err:
        assert_agrees(engineer_2m("r_inverted"), "dpm_solver_pp_2m")
    assert "|x - ref|" in str(err.value) and "ratio" in str(err.value)


def test_check_needs_a_method_or_a_config() -> None:
    with pytest.raises(TypeError, match="method="):
        check(engineer_2m())
    with pytest.raises(ValueError, match="no method named"):
        check(engineer_2m(), method="dpm_solver_pp_2n")


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(n_steps=-2), "n_steps"),
        (dict(n_steps=True), "n_steps"),
        (dict(toy="nope"), "toy"),
        (dict(spacing="geometric"), "spacing"),
        (dict(dtype="int64"), "dtype"),
        (dict(prediction="score"), "prediction"),
        (dict(schedule="vp_quadratic"), "schedule"),
        (dict(batch=0), "batch"),
        (dict(options={"eta": 1.0}), "options"),
    ],
)
def test_config_is_validated_before_a_run(fields: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        Config(**{"method": "ddim", "n_steps": 3, **fields})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--callable", "refimpl.samplers:sample_ddim", "--method", "ddim", "--n-steps", "-2"], "--n-steps"),
        (["--callable", "refimpl.samplers:sample_ddim", "--method", "ddim", "--toy", "nope"], "--toy"),
        (["--callable", "refimpl.samplers:sample_ddim", "--method", "ddim", "--spacing", "geometric"], "--spacing"),
        (["--callable", "refimpl.samplers:sample_ddim", "--method", "ddim", "--dtype", "int64"], "--dtype"),
        (["--callable", "refimpl.samplers:no_such_fn", "--method", "ddim"], "no_such_fn"),
        (["--callable", "refimpl.samplers:sample_ddim"], "--method"),
        (["--callable", "refimpl.samplers:sample_ddim", "--method", "ddim", "stray"], "stray"),
        (["--callable", "refimpl.samplers:sample_ddim", "--method", "nope"], "no method named"),
    ],
)
def test_the_command_line_rejects_bad_arguments_without_a_traceback(argv, message, capsys) -> None:
    from refimpl.oracle.__main__ import main

    with pytest.raises(SystemExit) as err:
        main(argv)
    text = capsys.readouterr().err
    assert err.value.code == 2 and message in text and "Traceback" not in text, text


def test_the_command_line_checks_a_callable_and_says_where_unknown_flags_go(capsys) -> None:
    from refimpl.oracle.__main__ import _parser, main

    code = main(["--callable", "refimpl.samplers:sample_ddim", "--method", "ddim", "--n-steps", "3", "--no-exact",
                 "--spacing", "karras"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "PASS: sample_ddim agrees with refimpl's ddim" in out, out
    assert "passed on: to the scheduler's constructor" in _parser().format_help()


def test_kdiffusion_query_times_are_not_a_false_positive_of_the_sigma_to_t_conversion() -> None:
    """Issue 19: k-diffusion's Euler on vp_cosine queries at t(lambda(sigma)); near t_min the conversion's relative
    round-off is ~1e-13, above 64 u; the tolerance now carries the conversion's measured condition number."""
    from refimpl.oracle.adapters import KDiffusionSampler

    report = check(KDiffusionSampler("sample_euler"), Config("edm_euler", 10, "vp_cosine"))
    assert report.passed and report.query_error > 64 * 2.0**-53, report.table()
    wrong = check(engineer_2m("query_last"), Config("dpm_solver_pp_2m", 10, "vp_cosine"))
    assert not wrong.passed and "model call 9" in " ".join(wrong.problems), wrong.table()


def test_singlestep_data_prediction_is_a_deprecated_alias_of_prediction() -> None:
    from refimpl import grids
    from refimpl.oracle.methods import sample_dpm_solver_singlestep
    from refimpl.oracle.running import setup

    model, x, _ = setup(Config("ddim", 2, "vp_linear"))
    ts = grids.uniform_lambda(model.schedule, 2)
    kw = dict(orders=[2, 2], stages=[[float(ts[:2].mean())], [float(ts[1:].mean())]])
    new = sample_dpm_solver_singlestep(model, x, ts, prediction="x0", **kw)
    with pytest.warns(DeprecationWarning, match="prediction="):
        old = sample_dpm_solver_singlestep(model, x, ts, data_prediction=True, **kw)
    assert torch.equal(new, old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not torch.equal(sample_dpm_solver_singlestep(model, x, ts, prediction="eps", **kw), new)
