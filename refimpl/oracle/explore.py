"""Explore the configuration space with hypothesis, and let it shrink a failure to the smallest configuration.

The property explored is "the implementation agrees with refimpl" (``core.check`` passes). hypothesis
draws step counts (1 and 2 always included), schedules, grids (every family), prediction types, dtypes, toys
and the implementation's own options; when a draw fails it shrinks it, so the configuration reported is a
smallest one that still fails. Runs are seeded (``EXPLORE_SEED``: the same examples every time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from refimpl.oracle.config import SPACINGS, Config
from refimpl.oracle.core import check
from refimpl.oracle.report import Report
from refimpl.oracle.running import Implementation

__all__ = ["EXPLORE_SEED", "Finding", "config_strategy", "explore"]

#: The seed of every exploration: the same examples on every run. (hypothesis's ``derandomize`` would seed from the
#: test function's source, so that editing a comment in ``explore`` changed which configurations were drawn.)
EXPLORE_SEED = 12


@dataclass
class Finding:
    """The outcome of exploring one implementation: examples tried and the smallest failure, if any; ``crash`` the
    error, and ``traceback`` its traceback, when the exploration itself raised (outside the implementation's run,
    whose errors ``check`` reports); ``cpu_s`` the CPU seconds it took."""

    implementation: str
    method: str
    examples: int
    failure: Report | None
    impl_options: dict[str, Any]
    crash: str | None = None
    traceback: str | None = None
    cpu_s: float = math.nan


def config_strategy(
    method: str,
    schedules: tuple[str, ...] = ("ddpm_linear",),
    max_steps: int = 25,
    predictions: tuple[str, ...] = ("eps", "x0", "v"),
    dtypes: tuple[str, ...] = ("float64", "float32"),
    toys: tuple[str, ...] = ("ring", "mixture16"),
    options: dict[str, Any] | None = None,
    spacings: tuple[str, ...] = SPACINGS,
    encode: bool = False,
) -> Any:
    """A hypothesis strategy of ``Config`` for ``method``; ``options`` maps option names to strategies.

    The grids default to every family (uniform in t and in lambda, Karras, quadratic, random): on uniform-lambda grids
    alone the step ratios are all 1 and a multistep formula with r and 1/r swapped passes.
    """
    from hypothesis import strategies as st

    options = options or {}
    return st.builds(
        Config,
        method=st.just(method),
        n_steps=st.one_of(st.sampled_from([1, 2]), st.integers(1, max_steps)),
        schedule=st.sampled_from(schedules),
        toy=st.sampled_from(toys),
        prediction=st.sampled_from(predictions),
        dtype=st.sampled_from(dtypes),
        spacing=st.sampled_from(spacings),
        encode=st.just(encode),
        options=st.fixed_dictionaries(options).map(lambda d: tuple(sorted(d.items()))),
    )


def explore(
    make_impl: Callable[..., Implementation],
    method: str,
    impl_options: dict[str, Any] | None = None,
    max_examples: int = 40,
    **strategy_kwargs: Any,
) -> Finding:
    """Run hypothesis over configurations (and the implementation's options) and shrink the first failure.

    An empty ``method`` means the one the implementation claims (``impl.method``), which may depend on its options
    (a diffusers solver order); options for which refimpl has no counterpart are not drawn.
    """
    from dataclasses import replace

    from hypothesis import HealthCheck, Phase, assume, given, seed, settings
    from hypothesis import strategies as st

    cpu = time.process_time()
    impl_options = impl_options or {}
    seen: dict[str, Any] = {"examples": 0, "failure": None, "impl_options": {}}

    @seed(EXPLORE_SEED)
    @settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        # no "explain" phase: it re-runs variations of the shrunk failure to say which parts of it matter (two thirds
        # of an exploration's time), where the report gives the smallest failure and its step-by-step table
        phases=[phase for phase in Phase if phase is not Phase.explain],
    )
    @given(config=config_strategy(method or "ddim", **strategy_kwargs), chosen=st.fixed_dictionaries(impl_options))
    def agrees(config: Config, chosen: dict[str, Any]) -> None:
        try:
            impl = make_impl(**chosen)
        except ValueError:  # options the implementation refuses (diffusers: a combination its constructor rejects)
            assume(False)
        if not method:
            try:
                config = replace(config, method=impl.method)
            except ValueError:
                assume(False)
        report = check(impl, config, exact=False)
        assume(report.skipped is None)  # a configuration the implementation does not take (documented refusal)
        seen["examples"] += 1
        if not report.passed:
            seen["failure"], seen["impl_options"] = report, chosen  # the last failure seen is the shrunk one
            raise AssertionError(report.problems[0])

    try:
        agrees()
    except AssertionError:
        pass
    impl_name = make_impl(**seen["impl_options"]).name
    claimed = method or getattr(make_impl(**seen["impl_options"]), "method", "")
    found = seen["failure"], seen["impl_options"]
    return Finding(impl_name, claimed, seen["examples"], *found, cpu_s=time.process_time() - cpu)
