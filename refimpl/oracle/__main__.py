"""Command line: check one third-party sampler against refimpl and print the step-by-step table.

    python -m refimpl.oracle diffusers DDIMScheduler --n-steps 7 10
    python -m refimpl.oracle diffusers DDPMScheduler --n-steps 10 --prediction v
    python -m refimpl.oracle k-diffusion sample_euler --schedule edm --spacing karras --final-zero
    python -m refimpl.oracle diffusers EulerDiscreteScheduler --float64-tables   # are float64 states kept?
    python -m refimpl.oracle diffusers DDIMScheduler --timestep-spacing linspace   # constructor argument

Flags the oracle does not know are passed to the scheduler's constructor (diffusers), with values
read as Python literals when they parse (``--solver-order 2`` gives ``solver_order=2``).
"""

from __future__ import annotations

import argparse
import ast
import sys

from refimpl.oracle.adapters import DIFFUSERS, KDIFFUSION, DiffusersScheduler, KDiffusionSampler
from refimpl.oracle.core import Config, check, smallest_failure


def _extra_kwargs(extra: list[str]) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    key = None
    for token in extra:
        if token.startswith("--"):
            key = token[2:].replace("-", "_")
            kwargs[key] = True
        elif key is not None:
            try:
                kwargs[key] = ast.literal_eval(token)
            except (ValueError, SyntaxError):
                kwargs[key] = token
            key = None
        else:
            raise SystemExit(f"unexpected argument {token!r}")
    return kwargs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refimpl.oracle", description=__doc__.splitlines()[0])
    parser.add_argument("library", choices=["diffusers", "k-diffusion"])
    parser.add_argument("name", help="scheduler class (diffusers) or sampler function (k-diffusion)")
    parser.add_argument("--method", help="the refimpl method it claims to implement (default: the known mapping)")
    parser.add_argument("--n-steps", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--schedule", default=None, help="default: ddpm_linear (diffusers), edm (k-diffusion)")
    parser.add_argument("--toy", default="ring")
    parser.add_argument("--prediction", default="eps", choices=["eps", "x0", "v"])
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--no-exact", action="store_true", help="skip the exact ODE column (faster)")
    parser.add_argument("--float64-tables", action="store_true", help="diffusers: float64 coefficient tables (probe)")
    parser.add_argument(
        "--spacing", default="uniform_lambda", help="k-diffusion: the refimpl grid (default: %(default)s)"
    )
    parser.add_argument("--final-zero", action="store_true", help="k-diffusion: append sigma = 0 to the grid")
    args, extra = parser.parse_known_args(argv)
    kwargs = _extra_kwargs(extra)
    if args.library == "diffusers":
        impl: DiffusersScheduler | KDiffusionSampler = DiffusersScheduler(args.name, kwargs, args.float64_tables)
        known = DIFFUSERS
        schedule = args.schedule or "ddpm_linear"
    else:
        impl, known = KDiffusionSampler(args.name, kwargs, args.final_zero), KDIFFUSION
        schedule = args.schedule or "edm"
    if args.name not in known:
        parser.error(f"the oracle has no adapter for {args.name}; choose one of {sorted(known)}")
    try:
        method = args.method or impl.method
    except ValueError as err:
        parser.error(str(err))
    reports = []
    for n in args.n_steps:
        config = Config(method, n, schedule, args.toy, args.prediction, args.dtype, spacing=args.spacing)
        report = check(impl, config, exact=not args.no_exact)
        reports.append(report)
        print(report.table(), end="\n\n")
    failure = smallest_failure(reports)
    print("all configurations pass" if failure is None else f"smallest failing configuration: {failure.config}")
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
