"""The mutation catalogue: seeded defects of the kinds real samplers have, applied to copies of refimpl samplers.

A ``Mutant`` names a refimpl module, one exact snippet of its source and its replacement. ``build``
compiles a private copy of the module with that one edit (the package's modules are untouched) and
returns the mutated sampler function. ``make mutants`` then asks two detectors whether they see it:

* the oracle: the mutant, run as an implementation under test, against the refimpl reference on a small
  derandomized matrix of configurations (``oracle_catches``);
* the property suite: the promises of the registry entry it claims to be (measured order within 0.15 of
  the declared one on an exact Gaussian, model calls per step, a finite state that lands on the last
  grid time) (``properties_catch``).

Each snippet must occur exactly once in its module and change the sampler's output: the catalogue is
itself under test (``tests/test_mutants.py``).
"""

from __future__ import annotations

import importlib
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch

from refimpl import registry
from refimpl.models import CountingModel
from refimpl.oracle.core import Config, check
from refimpl.reference import measure_order
from refimpl.registry import get_sampler

__all__ = ["CATALOGUE", "Mutant", "build", "oracle_catches", "properties_catch"]


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


def build(mutant: Mutant) -> Callable[..., torch.Tensor]:
    """Compile a private copy of ``mutant.module`` with the one edit and return its sampler function."""
    source = inspect.getsource(importlib.import_module(mutant.module))
    count = source.count(mutant.old)
    if count != 1:
        raise ValueError(f"mutant {mutant.name}: the snippet occurs {count} times in {mutant.module}, not once")
    copy = types.ModuleType(f"{mutant.module}__mutant_{mutant.name}")
    code = compile(source.replace(mutant.old, mutant.new), f"<mutant {mutant.name}>", "exec")
    original, registry.register = registry.register, lambda spec: spec  # the copy must not re-register
    try:
        exec(code, copy.__dict__)  # the package's own source, edited by one snippet
    finally:
        registry.register = original
    return copy.__dict__[mutant.function]


ORACLE_CONFIGS = [
    dict(n_steps=1),
    dict(n_steps=2),
    dict(n_steps=7, schedule="vp_cosine", prediction="v"),
    dict(n_steps=12, schedule="edm", prediction="x0", toy="mixture16"),
    dict(n_steps=10, schedule="ddpm_linear", dtype="float32"),
]


def oracle_catches(mutant: Mutant) -> str | None:
    """The first oracle configuration in which the mutant fails, or None."""
    from refimpl.oracle.adapters import RefimplCallable

    impl = RefimplCallable(build(mutant), name=mutant.name, stochastic=mutant.stochastic)
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
        out = sample(counting, x, ts, **dict(spec.options), **kwargs)
        if counting.calls != spec.nfe(9):
            return f"{counting.calls} model calls for 9 steps, declared {spec.nfe(9)}"
        if not bool(torch.isfinite(out).all()):
            return "non-finite output"
        if spec.stochastic:
            return None  # the order of a stochastic sampler needs a Monte Carlo test, not in this quick suite
        steps = (32, 64, 128, 256) if spec.order < 1.5 else (16, 32, 64, 128)
        result = measure_order(
            lambda m, x_, t_: sample(m, x_, t_, **dict(spec.options)),
            model,
            x,
            steps,
            reference=model.pf_ode_map(x, s.t_max, s.t_min),
        )
        if abs(result.order - spec.order) > 0.15:
            return f"measured order {result.order:.2f}, declared {spec.order}"
    except (ValueError, RuntimeError, TypeError, IndexError) as err:
        return f"raised {type(err).__name__}: {err}"
    return None


CATALOGUE: list[Mutant] = [
    Mutant(
        "ddim-wrong-direction-coefficient",
        "a wrong coefficient",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "direction = torch.sqrt(values_s.sigma_t**2 - sigma_tilde**2)",
        "direction = torch.sqrt(values_s.sigma_t**2 - sigma_tilde**2) * values_s.alpha_t",
    ),
    Mutant(
        "ddim-model-at-next-time",
        "an off-by-one timestep",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "x0, eps = predict_x0_eps(model, x, ts[i], v_t)",
        "x0, eps = predict_x0_eps(model, x, ts[i + 1], v_s)",
    ),
    Mutant(
        "ddim-eps-x0-swapped",
        "eps and x0 swapped",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "x_next = ddim_step(x0, eps, v_s)\n",
        "x_next = ddim_step(eps, x0, v_s)\n",
    ),
    Mutant(
        "ddim-skipped-final-step",
        "a skipped final step",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "    for i in range(len(ts) - 1):\n        v_t, v_s = values[i], values[i + 1]",
        "    for i in range(len(ts) - 2):\n        v_t, v_s = values[i], values[i + 1]",
    ),
    Mutant(
        "ddim-float32-coefficients",
        "coefficients computed in low precision",
        "ddim",
        "refimpl.samplers.ddim",
        "sample_ddim",
        "    values = model.schedule(ts)\n    for i in range(len(ts) - 1):\n        v_t, v_s",
        "    values = model.schedule(ts.float().double())\n    for i in range(len(ts) - 1):\n        v_t, v_s",
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
        "mean, var = ddpm_posterior(x, x0, v_t, v_s)",
        "mean, var = ddpm_posterior(x, x0, values[max(i - 1, 0)], v_s)",
        stochastic=True,
    ),
]


def main() -> None:
    """Print which mutants the oracle and the property suite catch."""
    from tqdm import tqdm

    rows, caught = [], 0
    for mutant in tqdm(CATALOGUE, desc="mutants"):
        by_oracle, by_properties = oracle_catches(mutant), properties_catch(mutant)
        caught += by_oracle is not None or by_properties is not None
        rows.append(
            f"{mutant.name:<40} {mutant.kind:<42} {'yes' if by_oracle else 'NO':>6} "
            f"{'yes' if by_properties else 'no':>10}"
        )
    print(f"{'mutant':<40} {'kind':<42} {'oracle':>6} {'properties':>10}")
    print("\n".join(rows))
    print(f"caught {caught} of {len(CATALOGUE)} ({100 * caught / len(CATALOGUE):.0f}%)")


if __name__ == "__main__":
    main()
