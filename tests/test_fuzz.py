"""Fuzz the public API: every function and class a package exports in ``__all__`` gets bad values of each kind.

The promise checked (README, "Bad input"): a call either raises ``ValueError`` or ``TypeError`` whose message
names one of the callable's parameters, or returns finite values. Anything else is a finding: a silent NaN or
inf, another exception type (an ``IndexError`` from deep inside is not a clear error), a message that names no
argument, a hang or a memory blow-up. A function exported tomorrow is fuzzed the moment it is in ``__all__``.

Each call runs in a forked worker process under a time limit (``CALL_SECONDS``) and an address-space limit
(``MEMORY_BYTES`` beyond what the worker already maps); a worker that overruns is killed and replaced.

Two passes: a sweep that gives every callable every kind (deterministic), and a hypothesis search that gives each
required parameter its own kind and magnitude (derandomized under the ``ci`` profile). ``FUZZ_EXAMPLES`` sets
the number of hypothesis examples per package (``make fuzz`` runs it long and prints the table of counts).

A ratchet: ``tests/fuzz_baseline.txt`` lists the findings still open (one ``name [kind]: outcome`` per line,
for modules whose owners have not closed them yet). The suite fails on any finding not listed there, so a new
public function, or a regression in a clean one, fails at once; known hangs are not re-run in the suite (they
would spend its time budget), only under ``make fuzz`` (``FUZZ_ALL=1``). Delete a line when its fix lands;
``FUZZ_WRITE_BASELINE=1`` rewrites the file from a run.
"""

from __future__ import annotations

import collections
import importlib
import inspect
import math
import multiprocessing
import os
import pkgutil
import resource
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import refimpl

CALL_SECONDS = float(os.environ.get("FUZZ_CALL_SECONDS", "10"))
MEMORY_BYTES = 2 << 30
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
RUN_ALL = os.environ.get("FUZZ_ALL", "") == "1"
WRITE_BASELINE = os.environ.get("FUZZ_WRITE_BASELINE", "") == "1"
BASELINE_FILE = os.path.join(os.path.dirname(__file__), "fuzz_baseline.txt")
#: Imported once in the parent: a first import inside a call (POT, sympy, torch.optim's compiler stack take seconds
#: each on a loaded machine) would count against CALL_SECONDS and read as a hang of the function called.
SLOW_IMPORTS = ("ot", "sympy", "torch.optim")
#: Not fuzzed: the oracle drives third-party code and the command line; plotting and bench only draw and print.
SKIP_MODULES = ("refimpl.oracle", "refimpl.plotting", "refimpl.bench")
#: Cases whose outcome is right although the fuzzer cannot tell, each with its reason (``name [kind]``, exact).
#: They are counted as "allowed", not as findings. Add one only where the callable behaves as it should.
ALLOWED: dict[str, str] = {
    "refimpl.schedules.NoiseSchedule [defaults]": "an abstract base class: Python's own TypeError (can't instantiate "
    "an abstract class) is the right error, and the class has no parameter for the message to name",
    "refimpl.schedules.VPSchedule [defaults]": "an abstract base class (as NoiseSchedule)",
}


def _public_api() -> list[tuple[str, str, Callable]]:
    """(package, name, callable) for every function or class in a public module's ``__all__``, each once."""
    names = ["refimpl", *(m.name for m in pkgutil.walk_packages(refimpl.__path__, "refimpl.")), "toy_models"]
    seen: dict[int, tuple[str, str, Callable]] = {}
    for module_name in names:
        if module_name.startswith(SKIP_MODULES) or any(p.startswith("_") for p in module_name.split(".")):
            continue
        module = importlib.import_module(module_name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            protocol = inspect.isclass(obj) and getattr(obj, "_is_protocol", False)  # cannot be instantiated
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not protocol and id(obj) not in seen:
                package = module_name if module_name.count(".") < 1 else ".".join(module_name.split(".")[:2])
                seen[id(obj)] = (package, attr, obj)
    return sorted(seen.values(), key=lambda item: (item[0], item[1]))


API = _public_api()


def _parameters(fn: Callable) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []


def _required(fn: Callable) -> list[inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p for p in _parameters(fn) if p.kind in kinds and p.default is inspect.Parameter.empty]


def _bad_value(kind: str, magnitude: float = 1.0) -> object:
    """A fresh bad value of ``kind`` (a fresh one per call: callables may modify their input)."""
    nan = math.nan
    values: dict[str, Callable[[], object]] = {
        "nan": lambda: torch.full((3,), nan),
        "inf": lambda: torch.tensor([1.0, math.inf, 0.5]),
        "huge": lambda: torch.full((3,), 1e300 * magnitude),
        "complex": lambda: torch.tensor([0.5 + 0.1j, 0.3, 0.1]),
        "bool": lambda: torch.tensor([True, False, True]),
        "integer": lambda: torch.arange(3),
        "wrong_shape": lambda: torch.zeros(2, 3, 4, 5),
        "empty": lambda: torch.zeros(0),
        "ulp_grid": lambda: torch.tensor([0.5, 0.3, 0.3 * (1 - 2.3e-16)]),
        "negative": lambda: -1.0 * magnitude,
        "nan_number": lambda: nan,
        "nan_array": lambda: np.full(3, nan),
        "string": lambda: "nope",
    }
    return values[kind]()


KINDS = (
    "nan",
    "inf",
    "huge",
    "complex",
    "bool",
    "integer",
    "wrong_shape",
    "empty",
    "ulp_grid",
    "negative",
    "nan_number",
    "nan_array",
    "string",
)


def _finite(value: object, depth: int = 0) -> bool:
    """Whether every number in a result (tensors, arrays, numbers, containers of them) is finite."""
    if depth > 4:
        return True
    if isinstance(value, torch.Tensor):
        return not (value.is_floating_point() or value.is_complex()) or bool(torch.isfinite(value.detach()).all())
    if isinstance(value, np.ndarray):
        return value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
    if isinstance(value, float | complex):
        return bool(np.isfinite(value))
    if isinstance(value, tuple | list):
        return all(_finite(v, depth + 1) for v in value[:50])
    if isinstance(value, dict):
        return all(_finite(v, depth + 1) for v in list(value.values())[:50])
    return True


def _call(index: int, kinds: tuple[tuple[str, float], ...]) -> tuple[str, str]:
    """Run API[index] with its required parameters set to bad values; classify (outcome, detail)."""
    _, name, fn = API[index]
    required = _required(fn)
    args, kwargs = [], {}
    for p, (kind, magnitude) in zip(required, kinds, strict=False):
        value = _bad_value(kind, magnitude)
        if p.kind == inspect.Parameter.KEYWORD_ONLY:
            kwargs[p.name] = value
        else:
            args.append(value)
    if len(args) + len(kwargs) < len(required):
        return "skipped", "fewer kinds than parameters"
    try:
        with np.errstate(all="ignore"):
            result = fn(*args, **kwargs)
    except (ValueError, TypeError) as err:
        # the argument named: a parameter's name, or the noun of the callable's name ("unknown schedule 'nope'")
        names = [p.name for p in _parameters(fn)] + [w for w in name.lower().split("_") if len(w) > 3]
        if any(n in str(err) for n in names):
            return "clear", ""
        return "unclear", f"{type(err).__name__}: {str(err)[:160]}"
    except Exception as err:  # the kind of any other exception is the finding
        return "unclear", f"{type(err).__name__}: {str(err)[:160]}"
    if _finite(result):
        return "finite", ""
    return "nonfinite", "returned NaN or inf"


def _limit_worker() -> None:
    """In the worker: cap the address space at what it maps now plus MEMORY_BYTES."""
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + MEMORY_BYTES, resource.RLIM_INFINITY))
    torch.set_num_threads(1)


class Runner:
    """One forked worker at a time; a call that overruns CALL_SECONDS (or dies) kills and replaces it."""

    def __init__(self) -> None:
        for name in SLOW_IMPORTS:  # before the workers fork, so that they inherit the modules
            importlib.import_module(name)
        self.context = multiprocessing.get_context("fork")
        self.pool = self._start()

    def _start(self):
        return self.context.Pool(1, initializer=_limit_worker, maxtasksperchild=200)

    def __call__(self, index: int, kinds: tuple[tuple[str, float], ...]) -> tuple[str, str]:
        job = self.pool.apply_async(_call, (index, kinds))
        try:
            return job.get(timeout=CALL_SECONDS)
        except multiprocessing.TimeoutError:
            self.restart()
            return "hang", f"no answer within {CALL_SECONDS:g} s (or out of memory)"
        except MemoryError:
            return "hang", "MemoryError"

    def restart(self) -> None:
        self.pool.terminate()
        self.pool.join()
        self.pool = self._start()

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def _read_baseline() -> set[str]:
    if not os.path.exists(BASELINE_FILE):
        return set()
    with open(BASELINE_FILE) as f:
        return {line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")}


BASELINE = _read_baseline()
OPEN_CALLABLES = {line.split(" [")[0] for line in BASELINE}
OPEN_CASES = {line.split(": ")[0] for line in BASELINE}
HANGS = {line.split(": ")[0] for line in BASELINE if line.endswith(": hang")}
FOUND: list[str] = []

COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module")
def runner():
    r = Runner()
    yield r
    r.close()
    if COUNTS:
        print("\nfuzz counts per package: cases, clear errors, finite results, allowed, findings (open in baseline)")
        for package, c in sorted(COUNTS.items()):
            row = (c["cases"], c["clear"], c["finite"], c["allowed"], c["findings"])
            print(f"  {package:28s} " + " ".join(f"{n:6d}" for n in row) + f" ({c['open']})")
    if WRITE_BASELINE:
        with open(BASELINE_FILE, "w") as f:
            f.write(
                "# Open fuzz findings (tests/test_fuzz.py): name [kind]: outcome. Delete a line when it is fixed.\n"
            )
            f.writelines(line + "\n" for line in sorted(set(FOUND)))


def _key(package: str, name: str, kind: str, outcome: str, detail: str) -> str:
    """The baseline line of a finding: the exception's type stands for its detail (messages hold values)."""
    what = detail.split(":")[0] if outcome == "unclear" else ""
    return f"{package}.{name} [{kind}]: {outcome}" + (f" {what}" if what else "")


def _record(package: str, name: str, kind: str, outcome: str, detail: str, findings: list[str], exact=True) -> None:
    c = COUNTS[package]
    c["cases"] += 1
    if outcome in ("clear", "finite", "skipped"):
        c[outcome] += 1
        return
    if f"{package}.{name} [{kind}]" in ALLOWED:
        c["allowed"] += 1
        return
    c["findings"] += 1
    key = _key(package, name, kind, outcome, detail)
    FOUND.append(key if exact else f"{package}.{name} [*]: open")
    # a timeout on a loaded machine is the same open case whatever it was recorded as
    known = key in BASELINE or (outcome == "hang" and key.split(": ")[0] in OPEN_CASES)
    if not exact:
        known = f"{package}.{name}" in OPEN_CALLABLES
    if known:
        c["open"] += 1
    elif not WRITE_BASELINE:
        findings.append(f"{key}  ({detail})")


PACKAGES = sorted({package for package, _, _ in API})
_HANGING = {line.split(" [")[0] for line in HANGS}


def _searchable(package: str) -> list[int]:
    """Indices into API of the callables of ``package`` the search can feed: with required parameters, and not
    known to hang (those only under ``make fuzz``)."""
    return [
        i
        for i, (pkg, name, fn) in enumerate(API)
        if pkg == package and _required(fn) and (RUN_ALL or f"{pkg}.{name}" not in _HANGING)
    ]


#: Packages with something to search (a package of constructors without required parameters has nothing).
SEARCHED = [package for package in PACKAGES if _searchable(package)]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_callable_gets_every_kind_of_bad_value(runner, package: str) -> None:
    """The sweep: each callable of ``package``, each kind in every required parameter at once."""
    findings: list[str] = []
    for index, (pkg, name, fn) in enumerate(API):
        if pkg != package:
            continue
        n_required = len(_required(fn))
        for kind in KINDS if n_required else ("defaults",):
            if f"{pkg}.{name} [{kind}]" in HANGS and not RUN_ALL:
                continue
            kinds = tuple((kind, 1.0) for _ in range(n_required))
            outcome, detail = runner(index, kinds)
            _record(pkg, name, kind, outcome, detail, findings)
    assert not findings, "\n".join(findings)


@pytest.mark.parametrize("package", SEARCHED)
def test_mixed_bad_values_found_by_hypothesis(runner, package: str) -> None:
    """The search: each required parameter its own kind and magnitude, so a later parameter's check is reached."""
    indices = _searchable(package)
    findings: list[str] = []

    @settings(max_examples=EXAMPLES, database=None)
    @given(data=st.data())
    def search(data) -> None:
        index = data.draw(st.sampled_from(indices))
        _, name, fn = API[index]
        kinds = tuple(
            (data.draw(st.sampled_from(KINDS)), data.draw(st.sampled_from([1e-300, 1e-8, 1.0, 1e8])))
            for _ in _required(fn)
        )
        outcome, detail = runner(index, kinds)
        _record(package, name, "+".join(k for k, _ in kinds), outcome, detail, findings, exact=False)

    search()
    assert not findings, "\n".join(sorted(set(findings)))
