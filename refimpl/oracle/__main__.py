"""Command line: check a sampler against refimpl and print the step-by-step table.

python -m refimpl.oracle --callable mypackage.samplers:my_dpmpp_2m --method dpm_solver_pp_2m
python -m refimpl.oracle diffusers DDIMScheduler --n-steps 7 10
python -m refimpl.oracle diffusers DDPMScheduler --n-steps 10 --prediction v
python -m refimpl.oracle k-diffusion sample_euler --schedule edm --spacing karras --final-zero
python -m refimpl.oracle diffusers EulerDiscreteScheduler --float64-tables   # are float64 states kept?
python -m refimpl.oracle diffusers DDIMScheduler --timestep-spacing linspace   # constructor argument
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from typing import Any

from refimpl.oracle.adapters import DIFFUSERS, KDIFFUSION, DiffusersScheduler, KDiffusionSampler
from refimpl.oracle.config import DTYPES, PREDICTIONS, SPACINGS, TOYS, Config
from refimpl.oracle.own import check, default_configs
from refimpl.oracle.report import smallest_failure

EPILOG = """Flags the oracle does not know are passed on: to the scheduler's constructor (diffusers), to the
sampler function (k-diffusion), or as the method's options to both sides (--callable). Their values are read as
Python literals when they parse (--solver-order 2 gives solver_order=2; a flag alone is True). With --callable
and no --n-steps, the default configurations run (every grid family, three schedules, float32 and float64,
last steps to sigma = 0). Exit status: 0 when every configuration passes, 1 otherwise, 2 on bad arguments."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _extra_kwargs(extra: list[str], parser: argparse.ArgumentParser) -> dict[str, object]:
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
            parser.error(f"unexpected argument {token!r}")
    return kwargs


def _load(target: str, parser: argparse.ArgumentParser) -> Any:
    module, _, name = target.partition(":")
    if not module or not name:
        parser.error(f"--callable needs package.module:function, got {target!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        parser.error(f"--callable {target}: {err}")
    if not callable(fn):
        parser.error(f"--callable {target} is not callable")
    return fn


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m refimpl.oracle",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("library", nargs="?", choices=["diffusers", "k-diffusion"])
    parser.add_argument("name", nargs="?", help="scheduler class (diffusers) or sampler function (k-diffusion)")
    parser.add_argument("--callable", dest="target", help="your own sampler, package.module:function")
    parser.add_argument("--method", help="the refimpl method it implements (libraries: default the known mapping)")
    parser.add_argument("--n-steps", type=_positive, nargs="+", help="step counts (libraries: default 5 10 20)")
    parser.add_argument("--schedule", help="default: ddpm_linear (diffusers), edm (k-diffusion)")
    parser.add_argument("--toy", choices=TOYS)
    parser.add_argument("--prediction", choices=PREDICTIONS)
    parser.add_argument("--dtype", choices=DTYPES)
    parser.add_argument("--no-exact", action="store_true", help="skip the exact ODE column (faster)")
    parser.add_argument("--float64-tables", action="store_true", help="diffusers: float64 coefficient tables (probe)")
    parser.add_argument("--spacing", choices=SPACINGS, help="the refimpl grid (callables, k-diffusion)")
    parser.add_argument("--final-zero", action="store_true", help="append a last step to sigma = 0 to the grid")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    kwargs = _extra_kwargs(extra, parser)
    given = {k: v for k, v in vars(args).items() if k in ("schedule", "toy", "prediction", "dtype", "spacing") and v}
    if args.final_zero:
        given["final_zero"] = True
    if args.target:
        if args.library or args.name:
            parser.error("give either --callable or a library and a name, not both")
        if not args.method:
            parser.error("--callable needs --method NAME (the refimpl method it implements)")
        impl: Any = _load(args.target, parser)
        options = tuple(sorted(kwargs.items()))
        method = args.method
    elif args.library and args.name:
        if args.library == "diffusers":
            impl, known = DiffusersScheduler(args.name, kwargs, args.float64_tables), DIFFUSERS
            given.setdefault("schedule", "ddpm_linear")
        else:
            impl, known = KDiffusionSampler(args.name, kwargs, args.final_zero), KDIFFUSION
            given.setdefault("schedule", "edm")
            given.pop("final_zero", None)  # the adapter appends sigma = 0 itself
        if args.name not in known:
            parser.error(f"the oracle has no adapter for {args.name}; choose one of {sorted(known)}")
        try:
            method = args.method or impl.method
        except ValueError as err:
            parser.error(str(err))
        options = ()
    else:
        parser.error("name a sampler: --callable package.module:function --method NAME, or LIBRARY NAME")
    try:
        if args.n_steps is None and args.target:
            configs = default_configs(method, options=options, **given)
        else:
            configs = [Config(method, n, **given, options=options) for n in args.n_steps or [5, 10, 20]]
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    verdict = check(impl, configs, method=method, exact=not args.no_exact)
    if args.target:  # the verdict: a line per configuration, the table of each failure
        print(verdict, end="\n\n")
    else:
        for report in verdict.reports:
            print(report.table(), end="\n\n")
        print(verdict.headline())
    failure = smallest_failure(verdict.reports)
    print("all configurations pass" if failure is None else f"smallest failing configuration: {failure.config}")
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
