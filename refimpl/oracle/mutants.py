"""The mutation catalogue: seeded defects of the kinds real samplers have, applied to copies of refimpl samplers.

A ``Mutant`` names a refimpl module, one exact snippet of its source and its replacement. ``build``
compiles a private copy of the module with that one edit (the package's modules are untouched) and
returns the mutated sampler function. ``make mutants`` then asks two detectors whether they see it:

* the oracle: the mutant, run as an implementation under test, against the refimpl reference on a small
  derandomized matrix of configurations (``oracle_catches``);
* the property suite: the promises of the registry entry it claims to be (measured order within ORDER_TOL of
  the declared one on an exact Gaussian -- strong order of a deterministic sampler, weak order of a stochastic
  one from its exact output law --, model calls per step, a finite state that lands on the last grid time)
  (``properties_catch``).

Each snippet must occur exactly once in its module and change the sampler's output: the catalogue is
itself under test (``tests/test_mutants.py``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from refimpl.models import CountingModel
from refimpl.oracle.core import Config, check
from refimpl.reference import ORDER_TOL, measure_order, measure_weak_order
from refimpl.registry import get_sampler, load_module

__all__ = ["CATALOGUE", "PROPERTY_BLIND_SPOTS", "Mutant", "build", "oracle_catches", "properties_catch"]


@dataclass(frozen=True)
class Mutant:
    """One seeded defect: in ``module``, replace ``old`` (occurring exactly once) by ``new``."""

    name: str
    kind: str
    method: str  # the registry entry the mutated sampler claims to be
    module: str
    function: str
    old: str
    new: str
    stochastic: bool = False
    options: tuple[tuple[str, Any], ...] = ()  # the options that make ``function`` the method (else the spec's)

    def sampler_options(self) -> dict[str, Any]:
        """Keyword options that run the mutated ``function`` as ``method``: its own, or the registered spec's."""
        return dict(self.options) if self.options else dict(get_sampler(self.method).options)


def build(mutant: Mutant) -> Callable[..., torch.Tensor]:
    """Compile a private copy of ``mutant.module`` with the one edit and return its sampler function.

    The copy registers its specs into a registry of its own (``registry.load_module``), not into ``REGISTRY``.
    """
    source = inspect.getsource(importlib.import_module(mutant.module))
    count = source.count(mutant.old)
    if count != 1:
        raise ValueError(f"mutant {mutant.name}: the snippet occurs {count} times in {mutant.module}, not once")
    copy, _ = load_module(mutant.module, source=source.replace(mutant.old, mutant.new))
    return copy.__dict__[mutant.function]


ORACLE_CONFIGS = [
    dict(n_steps=1),
    dict(n_steps=2),
    dict(n_steps=7, schedule="vp_cosine", prediction="v"),
    dict(n_steps=12, schedule="edm", prediction="x0", toy="mixture16"),
    dict(n_steps=10, schedule="ddpm_linear", dtype="float32"),
    dict(n_steps=6, schedule="vp_linear", spacing="uniform_t"),  # step ratios r != 1 (uniform-lambda grids have r = 1)
]

#: Why the property suite misses a mutant that the oracle catches (printed in the table, discussed in the chapter).
PROPERTY_BLIND_SPOTS = {
    "ddim-float32-coefficients": "float32 rounding of the grid: order and NFE unchanged, error 1e-8",
    "ddpm-noise-sign": "-z has the law of z: the sampler's law is unchanged, only the path differs",
    "ddpm-beta-variance": "beta and beta-tilde differ by O(h^2) a step: the law still converges at weak order 1",
    "dpm-solver-midpoint-in-t": "any intermediate point in (s, t) keeps second order; only the query times differ",
    "dpm-solver-pp-2m-step-ratio-inverted": "r = 1/r = 1 on the uniform-lambda grid the order is measured on",
    "sde-dpm-solver-pp-noise-sign": "-z has the law of z: the sampler's law is unchanged, only the path differs",
    "ddpm-posterior-vp-only-variance": "1 - alpha_{s|t}^2 is sigma_{s|t}^2 on VP schedules, where properties run",
    "plms-warmup-row-3": "[unverified] the warm-up runs at the noisiest end, where eps changes slowly in lambda",
    "ddim-eta-squared": "eta^2 for eta is another member of the eta family: the law still converges at order 1",
}


def oracle_catches(mutant: Mutant) -> str | None:
    """The first oracle configuration in which the mutant fails, or None."""
    from refimpl.oracle.adapters import RefimplCallable

    sample = functools.partial(build(mutant), **mutant.sampler_options())
    impl = RefimplCallable(sample, name=mutant.name, stochastic=mutant.stochastic)
    for kwargs in ORACLE_CONFIGS:
        report = check(impl, Config(mutant.method, **kwargs), exact=False)
        if not report.passed:
            return f"{report.config}: {report.problems[0]}"
    return None


def properties_catch(mutant: Mutant) -> str | None:
    """The first registry promise the mutant breaks (order, model calls, final time, finiteness), or None."""
    from refimpl import grids
    from refimpl.schedules import get_schedule
    from toy_models import ExactModel, anisotropic_gaussian

    spec = get_sampler(mutant.method)
    sample = build(mutant)
    s = get_schedule("vp_linear")
    model = ExactModel(anisotropic_gaussian(3, seed=1), s)
    x = model.sample_xt(8, s.t_max, torch.Generator().manual_seed(0))[1]
    try:
        counting = CountingModel(model)
        ts = grids.uniform_lambda(s, 9)
        kwargs = {"generator": torch.Generator().manual_seed(0)} if mutant.stochastic else {}
        out = sample(counting, x, ts, **mutant.sampler_options(), **kwargs)
        if counting.calls != spec.nfe(9):
            return f"{counting.calls} model calls for 9 steps, declared {spec.nfe(9)}"
        if not bool(torch.isfinite(out).all()):
            return "non-finite output"
        run = functools.partial(sample, **mutant.sampler_options())
        if spec.stochastic:  # weak order from the exact output law (as tests/test_registry.py measures it)
            result = measure_weak_order(run, model, lambda t: model.marginal(t).moments(), (32, 64, 128, 256))
        else:
            steps = (32, 64, 128, 256) if spec.order < 1.5 else (16, 32, 64, 128)
            result = measure_order(run, model, x, steps, reference=model.pf_ode_map(x, s.t_max, s.t_min))
        if abs(result.order - spec.order) > ORDER_TOL:
            return f"measured order {result.order:.2f}, declared {spec.order}"
    except (ValueError, RuntimeError, TypeError, IndexError) as err:
        return f"raised {type(err).__name__}: {err}"
    return None


CATALOGUE: list[Mutant] = [
    # --- issue 18: defects that only options off their defaults, non-VP schedules or warm-up rows expose ---
    Mutant(
        "ddim-eta-squared",
        "an option wrong strictly between its default and its extreme",
        "ddim_eta_half",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "return eta * v_t.sigma * torch.sqrt(-torch.expm1(-2.0 * h))",
        "return eta**2 * v_t.sigma * torch.sqrt(-torch.expm1(-2.0 * h))",
        stochastic=True,
    ),
    Mutant(
        "ddpm-posterior-vp-only-variance",
        "a VP-only identity used on every schedule",
        "ddpm",
        "refimpl.samplers.ddpm",
        "sample_ddpm",
        "var_st = s_s**2 - a_st**2 * s_t**2",
        "var_st = 1 - a_st**2",
        stochastic=True,
    ),
    Mutant(
        "plms-warmup-row-3",
        "a wrong warm-up row of a multistep weight matrix",
        "plms",
        "refimpl.samplers.pndm",
        "sample_pndm",
        "3: (23 / 12, -16 / 12, 5 / 12),",
        "3: (23 / 12, -17 / 12, 6 / 12),",
    ),
    Mutant(
        "ddim-wrong-direction-coefficient",
        "a wrong coefficient",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "direction = torch.sqrt((v_t.sigma**2 - sigma_tilde**2).clamp_min(0.0))",
        "direction = torch.sqrt((v_t.sigma**2 - sigma_tilde**2).clamp_min(0.0)) * v_t.alpha",
    ),
    Mutant(
        "ddim-model-at-next-time",
        "an off-by-one timestep",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "x0, eps = predict_x0_eps(model, x, ts[i], v_s)",
        "x0, eps = predict_x0_eps(model, x, ts[i + 1], v_t)",
    ),
    Mutant(
        "ddim-eps-x0-swapped",
        "eps and x0 swapped",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "x_next = ddim_step(x0, eps, v_t)\n",
        "x_next = ddim_step(eps, x0, v_t)\n",
    ),
    Mutant(
        "ddim-skipped-final-step",
        "a skipped final step",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "    for i in range(len(ts) - 1):\n        v_s, v_t = values[i], values[i + 1]",
        "    for i in range(len(ts) - 2):\n        v_s, v_t = values[i], values[i + 1]",
    ),
    Mutant(
        "ddim-float32-coefficients",
        "coefficients computed in low precision",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "    values = model.schedule(ts)\n    for i in range(len(ts) - 1):\n        v_s, v_t",
        "    values = model.schedule(ts.float().double())\n    for i in range(len(ts) - 1):\n        v_s, v_t",
    ),
    Mutant(
        "ddpm-noise-sign",
        "a sign error in the noise term",
        "ddpm",
        "refimpl.samplers.ddpm",
        "sample_ddpm",
        "x_next = mean + expand_like(torch.sqrt(var), x) * noise_at(i)",
        "x_next = mean - expand_like(torch.sqrt(var), x) * noise_at(i)",
        stochastic=True,
    ),
    Mutant(
        "ddpm-beta-variance",
        "a wrong variance (beta for beta-tilde)",
        "ddpm",
        "refimpl.samplers.ddpm",
        "sample_ddpm",
        'if variance == "beta":',
        'if variance != "beta":',
        stochastic=True,
    ),
    Mutant(
        "ddpm-posterior-at-previous-step",
        "history used at the wrong step",
        "ddpm",
        "refimpl.samplers.ddpm",
        "sample_ddpm",
        "mean, var = ddpm_posterior(x, x0, v_s, v_t)",
        "mean, var = ddpm_posterior(x, x0, values[max(i - 1, 0)], v_t)",
        stochastic=True,
    ),
    Mutant(
        "ddim-duplicated-final-step",
        "a duplicated final step",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "    for i in range(len(ts) - 1):\n        v_s, v_t = values[i], values[i + 1]",
        "    for i in [*range(len(ts) - 1), len(ts) - 2]:\n        v_s, v_t = values[i], values[i + 1]",
    ),
    Mutant(
        "dpm-solver-1-exponent-sign",
        "a wrong coefficient (e^-h for e^h)",
        "dpm_solver_2",
        "refimpl.samplers.dpm_solver",
        "sample_dpm_solver",
        "return expand_like(v_t.alpha / v_s.alpha, x_s) * x_s - expand_like(v_t.sigma * torch.expm1(h), x_s) * eps_s",
        "return expand_like(v_t.alpha / v_s.alpha, x_s) * x_s + expand_like(v_t.sigma * torch.expm1(-h), x_s) * eps_s",
    ),
    Mutant(
        "dpm-solver-2-model-at-step-end",
        "a wrong intermediate point (singlestep)",
        "dpm_solver_2",
        "refimpl.samplers.dpm_solver",
        "sample_dpm_solver",
        "eps_s1 = _eps(model, dpm_solver_1_step(x, eps_s, v_s, mid[i]), mid[i])",
        "eps_s1 = _eps(model, dpm_solver_1_step(x, eps_s, v_s, mid[i]), v_t)",
    ),
    Mutant(
        "dpm-solver-midpoint-in-t",
        "a wrong intermediate point (in t, not lambda)",
        "dpm_solver_2",
        "refimpl.samplers.dpm_solver",
        "sample_dpm_solver",
        "    return schedule(schedule.t_of_lambda(lam))",
        "    return schedule(values.t[:-1] + r1 * (values.t[1:] - values.t[:-1]))",
    ),
    Mutant(
        "dpm-solver-3-lambda-as-log-snr",
        "a wrong lambda inverse (lambda read as log-SNR)",
        "dpm_solver_3",
        "refimpl.samplers.dpm_solver",
        "sample_dpm_solver",
        "    return schedule(schedule.t_of_lambda(lam))",
        "    return schedule(schedule.t_of_lambda(lam / 2))",
    ),
    Mutant(
        "dpm-solver-pp-2m-history-reversed",
        "history used in the wrong order",
        "dpm_solver_pp_2m",
        "refimpl.samplers.multistep",
        "sample_multistep",
        "points = [(node(setting, v_s), m), *points][:history]",
        "points = [*points[: history - 1], (node(setting, v_s), m)]",
        options=(("method", "dpm_solver_pp"), ("order", 2)),
    ),
    Mutant(
        "dpm-solver-pp-2m-step-ratio-inverted",
        "a wrong coefficient (r for 1/r)",
        "dpm_solver_pp_2m",
        "refimpl.samplers.multistep",
        "sample_multistep",
        "r1 = (lambda_1 - v_s.lambda_) / h",
        "r1 = h / (lambda_1 - v_s.lambda_)",
        options=(("method", "dpm_solver_pp"), ("order", 2)),
    ),
    Mutant(
        "dpm-solver-pp-2s-model-at-step-end",
        "a wrong intermediate point (singlestep)",
        "dpm_solver_pp_2s",
        "refimpl.samplers.dpm_solver_pp",
        "sample_dpm_solver_pp_2s",
        "x0_s1 = _x0(model, dpm_solver_pp_1_step(x, x0, v_s, mid[i]), mid[i], threshold)",
        "x0_s1 = _x0(model, dpm_solver_pp_1_step(x, x0, v_s, mid[i]), v_t, threshold)",
    ),
    Mutant(
        "sde-dpm-solver-pp-noise-sign",
        "a sign error in the SDE noise term",
        "sde_dpm_solver_pp_2m",
        "refimpl.samplers.dpm_solver_pp",
        "sample_sde_dpm_solver_pp",
        "+ expand_like(v_t.sigma * torch.sqrt(one_minus), x) * z",
        "- expand_like(v_t.sigma * torch.sqrt(one_minus), x) * z",
        stochastic=True,
    ),
    Mutant(
        "sde-dpm-solver-pp-noise-variance",
        "a wrong noise scale (variance for standard deviation)",
        "sde_dpm_solver_pp_2m",
        "refimpl.samplers.dpm_solver_pp",
        "sample_sde_dpm_solver_pp",
        "+ expand_like(v_t.sigma * torch.sqrt(one_minus), x) * z",
        "+ expand_like(v_t.sigma * one_minus, x) * z",
        stochastic=True,
    ),
    Mutant(
        "edm-euler-eps-x0-swapped",
        "eps and x0 swapped",
        "edm_euler",
        "refimpl.samplers.edm",
        "sample_edm_euler",
        "x_next = euler_step(x, eps, values[i], values[i + 1])",
        "x_next = euler_step(x, x0, values[i], values[i + 1])",
    ),
    Mutant(
        "edm-heun-corrector-dropped",
        "a skipped corrector (Euler with Heun's cost)",
        "edm_heun",
        "refimpl.samplers.edm",
        "sample_edm_heun",
        "x_next = euler_step(x, 0.5 * (d + d_prime), v_s, v_t)",
        "x_next = euler_step(x, d + 0 * d_prime, v_s, v_t)",
    ),
    Mutant(
        "edm-heun-corrector-at-start-time",
        "an off-by-one timestep (corrector)",
        "edm_heun",
        "refimpl.samplers.edm",
        "sample_edm_heun",
        "_, d_prime = predict_x0_eps(model, x_euler, ts[i + 1], v_t)",
        "_, d_prime = predict_x0_eps(model, x_euler, ts[i], v_s)",
    ),
    Mutant(
        "lms-history-reversed",
        "history used in the wrong order",
        "lms",
        "refimpl.samplers.multistep",
        "sample_multistep",
        "for w_j, (_, m) in zip(w, points, strict=True)",
        "for w_j, (_, m) in zip(w.flip(0), points, strict=True)",
        options=(("method", "lms"), ("order", 4), ("warmup", "singlestep")),
    ),
    Mutant(
        "plms-weight-sign",
        "a wrong coefficient (sign of an Adams-Bashforth weight)",
        "plms",
        "refimpl.samplers.pndm",
        "sample_pndm",
        "4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),",
        "4: (55 / 24, -59 / 24, 37 / 24, 9 / 24),",
    ),
    Mutant(
        "unipc-history-reversed",
        "history used in the wrong order",
        "unipc2_bh2",
        "refimpl.samplers.multistep",
        "sample_multistep",
        "x = multistep_step(x_prev, [points[0], new, *points[1:p_prev]]",
        "x = multistep_step(x_prev, [new, points[0], *points[1:p_prev]]",
        options=(("method", "unipc_bh2"), ("order", 2), ("corrector", True)),
    ),
    Mutant(
        "unipc-correction-sign",
        "a sign error in the correction term",
        "unipc2_bh2",
        "refimpl.samplers.multistep",
        "sample_multistep",
        "- expand_like(k_t * _b_of(hh, setting.simplified) / (2 * r1), x) * (m1 - m0)",
        "+ expand_like(k_t * _b_of(hh, setting.simplified) / (2 * r1), x) * (m1 - m0)",
        options=(("method", "unipc_bh2"), ("order", 2), ("corrector", True)),
    ),
]


def main() -> None:
    """Print which mutants the oracle and the property suite catch."""
    from tqdm import tqdm

    rows, caught = [], 0
    for mutant in tqdm(CATALOGUE, desc="mutants"):
        by_oracle, by_properties = oracle_catches(mutant), properties_catch(mutant)
        caught += by_oracle is not None or by_properties is not None
        note = "" if by_oracle and by_properties else PROPERTY_BLIND_SPOTS.get(mutant.name, "UNEXPLAINED")
        rows.append(
            f"{mutant.name:<38} {mutant.kind:<56} {'yes' if by_oracle else 'NO':>6} "
            f"{'yes' if by_properties else 'no':>10}  {note}"
        )
    print(f"{'mutant':<38} {'kind':<56} {'oracle':>6} {'properties':>10}  why a detector misses it")
    print("\n".join(rows))
    print(f"caught {caught} of {len(CATALOGUE)} ({100 * caught / len(CATALOGUE):.0f}%)")


if __name__ == "__main__":
    main()
