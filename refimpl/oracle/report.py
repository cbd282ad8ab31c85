"""The oracle's report of one configuration: a row per step (deviation, tolerance, order), conventions, a verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from refimpl.oracle.config import Config

__all__ = ["ConventionNote", "Report", "StepReport", "smallest_failure"]


@dataclass(frozen=True)
class StepReport:
    """One row of the table: the state after step i (i = 0: x_T) against the reference and the exact ODE.

    ``tolerance`` is this step's round-off allowance (``tolerance.tolerance``, i + 1 steps' worth, times the measured
    ``amplification``); ``order`` the reference's order for the step that ends here (None for x_T); a state the
    implementation did not report has ``reported`` False and NaN deviations.
    """

    i: int
    t: float
    dev_reference: float
    dev_exact: float
    finite: bool
    amplification: float = 1.0
    tolerance: float = math.inf
    order: int | None = None
    reported: bool = True

    @property
    def ratio(self) -> float:
        """Deviation over tolerance (inf for a non-finite state, NaN for an unreported one)."""
        if not self.reported:
            return math.nan
        return self.dev_reference / self.tolerance if self.finite else math.inf

    @property
    def where(self) -> str:
        return "sigma = 0" if math.isnan(self.t) else f"t = {self.t:.5g}"


@dataclass(frozen=True)
class ConventionNote:
    """A modelled convention and what it changes: the largest state difference it makes, against the tolerance."""

    name: str
    detail: str
    effect: float
    tolerance: float

    @property
    def matters(self) -> bool:
        return self.effect > self.tolerance

    def __str__(self) -> str:
        verdict = "matters" if self.matters else "within tolerance"
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.name}{detail} (changes the states by {self.effect:.1e}: {verdict})"


@dataclass
class Report:
    """The comparison of one configuration, and its verdict.

    ``problems`` are the reasons for a FAIL; ``hints`` name a recognisable pattern behind them (float32-sized
    deviations, a stochastic sampler run without the injected noise); ``traceback`` is the implementation's own
    traceback when it raised; ``skipped`` why the configuration was not compared (it does not apply).
    """

    config: Config
    implementation: str
    steps: list[StepReport] = field(default_factory=list)
    nfe: int = 0
    nfe_expected: int = 0
    query_error: float = 0.0
    tolerance: float = 0.0
    problems: list[str] = field(default_factory=list)
    conventions: list[ConventionNote] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    traceback: str | None = None
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def worst(self) -> StepReport | None:
        """The reported step with the largest deviation-to-tolerance ratio (None if no step was compared)."""
        rows = [s for s in self.steps if s.reported and s.i > 0]
        return max(rows, key=lambda s: s.ratio) if rows else None

    def headline(self) -> str:
        """PASS or FAIL, the worst deviation-to-tolerance ratio and its step, and the first problem."""
        w = self.worst
        worst = (
            f"worst step {w.i} ({w.where}, order {w.order}): deviation {w.dev_reference:.2e} = "
            f"{w.ratio:.3g} x its tolerance {w.tolerance:.1e}"
            if w is not None and w.finite
            else (f"step {w.i} ({w.where}) is not finite" if w is not None else "no step compared")
        )
        if self.skipped:
            return f"SKIPPED: {self.implementation} vs refimpl {self.config}: {self.skipped}"
        verdict = "PASS" if self.passed else f"FAIL ({len(self.problems)} problem{'s' * (len(self.problems) > 1)})"
        return f"{verdict}: {self.implementation} vs refimpl {self.config}; {worst}"

    def table(self) -> str:
        head = (
            f"{'step':>5} {'where':>14} {'order':>5} {'|x - ref|':>10} {'tolerance':>9} {'ratio':>8} "
            f"{'|x - exact|':>11} {'amplif.':>8}"
        )
        rows = []
        for s in self.steps:
            if not s.reported:
                rows.append(f"{s.i:>5} {s.where:>14} {'':>5} {'(not reported: end-to-end comparison)':>48}")
                continue
            order = "" if s.order is None else str(s.order)
            dev = f"{s.dev_reference:>10.2e}" if s.finite else f"{'NaN/inf':>10}"
            rows.append(
                f"{s.i:>5} {s.where:>14} {order:>5} {dev} {s.tolerance:>9.1e} {s.ratio:>8.3g} "
                f"{s.dev_exact:>11.2e} {s.amplification:>8.1f}"
            )
        notes = [f"convention: {c}" for c in self.conventions]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.problems)
        return "\n".join(
            [
                self.headline(),
                head,
                *rows,
                f"model calls {self.nfe} (method declares {self.nfe_expected}); "
                f"query-time error {self.query_error:.1e} (relative)",
                *notes,
                verdict,
                *[f"hint: {h}" for h in self.hints],
                *([f"the implementation's traceback:\n{self.traceback.rstrip()}"] if self.traceback else []),
            ]
        )


def smallest_failure(reports: list[Report]) -> Report | None:
    """The failing report with the smallest configuration (fewest steps, then smallest batch)."""
    failing = [r for r in reports if not r.passed]
    return min(failing, key=lambda r: r.config.size()) if failing else None
