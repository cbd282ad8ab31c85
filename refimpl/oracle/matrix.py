"""``make oracle``: explore every third-party sampler the oracle knows and write a report.

Each entry names an implementation, the refimpl method it claims to implement, and the options of that
implementation that hypothesis may vary. The report (printed, and written to ``oracle-report.md`` in the
given folder) lists, per entry, the number of configurations tried, the CPU seconds taken and the smallest failing
configuration with its step-by-step table (an entry whose exploration raises is reported with its traceback, and the
others still run; a failure the chapter has classified is marked "known", with where: ``KNOWN``); then the measured
orders and the ``findings/`` reproducers. The book chapter "What the oracle found" classifies each finding.
"""

from __future__ import annotations

import argparse
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from refimpl.oracle.adapters import DIFFUSERS, KDIFFUSION, KDIFFUSION_ETA, DiffusersScheduler, KDiffusionSampler
from refimpl.oracle.config import Config
from refimpl.oracle.explore import Finding, explore
from refimpl.oracle.order import OrderReport, order_check
from refimpl.oracle.running import Implementation
from refimpl.oracle.space import derived_options

__all__ = [
    "KNOWN",
    "ORDER_STEPS",
    "Entry",
    "KnownFinding",
    "diffusers_entries",
    "known",
    "matrix",
    "order_entries",
    "render",
    "run_matrix",
    "run_orders",
    "run_reproducers",
]


@dataclass(frozen=True)
class Entry:
    """One implementation to explore: how to build it from options, what it claims, what may vary."""

    label: str
    make: Callable[..., Implementation]
    method: str
    impl_options: dict[str, Any] = field(default_factory=dict)
    strategy: dict[str, Any] = field(default_factory=dict)


def _diffusers(name: str, **fixed: Any) -> Callable[..., Implementation]:
    """A diffusers scheduler from drawn options (refused combinations raise ValueError: not drawn); ``float64_tables``
    (float64 coefficients) is the adapter's probe."""

    def make(float64_tables: bool = False, **kw: Any) -> Implementation:
        return DiffusersScheduler(name, {**fixed, **kw}, float64_tables=float64_tables).validate()

    return make


#: The path a flow-matching or EDM scheduler samples (the others: the discrete VP schedules).
_PATHS = {"flow": ("rectified_flow",), "edm": ("edm",)}


def diffusers_entries() -> list[Entry]:
    """One entry per adapted diffusers scheduler (per variant), its options derived from its signatures
    (``space.derived_options``), plus the float64 probe where it applies and what its ``Profile`` adds (step options,
    dtypes); the method is the one the drawn options make it claim."""
    from hypothesis import strategies as st

    entries = []
    for name, profile in DIFFUSERS.items():
        for fixed in profile.variants:
            options = {k: st.sampled_from(v) for k, v in derived_options(name, fixed).items()}
            options["float64_tables"] = st.booleans()
            strategy: dict[str, Any] = {"predictions": profile.predictions, "dtypes": profile.dtypes}
            if profile.kind in _PATHS:
                strategy["schedules"] = _PATHS[profile.kind]
            if profile.step_options:
                strategy["options"] = {k: st.sampled_from(v) for k, v in profile.step_options.items()}
            if DiffusersScheduler(name).encodes:
                strategy["encode"] = True
            extra = f" ({', '.join(f'{k}={v}' for k, v in fixed.items())})" if fixed else ""
            entries.append(Entry(f"diffusers {name}{extra}", _diffusers(name, **fixed), "", options, strategy))
    return entries


def matrix() -> list[Entry]:
    """Every implementation the oracle explores: each diffusers scheduler and k-diffusion sampler with an adapter."""
    from hypothesis import strategies as st

    entries = diffusers_entries()
    for function in KDIFFUSION:
        options = {"final_zero": st.booleans()}
        if function in KDIFFUSION_ETA:  # eta = 0: the deterministic skeleton; eta > 0: compared given its noise
            options["eta"] = st.sampled_from([0.0, 1.0])
        method = "" if function in KDIFFUSION_ETA else KDIFFUSION[function][0]  # "": the one eta makes it claim
        paths = {"schedules": ("edm", "vp_linear")}
        entries.append(Entry(f"k-diffusion {function}", _kdiffusion(function), method, options, paths))
    return entries


def _kdiffusion(function: str) -> Callable[..., Implementation]:
    def make(final_zero: bool = False, **kwargs: Any) -> Implementation:
        return KDiffusionSampler(function, kwargs, final_zero=final_zero)

    return make


@dataclass(frozen=True)
class KnownFinding:
    """A failure the chapter has classified: an implementation (its name up to the options), options the failing
    configuration must have, a phrase of its first problem, and where it is classified (``findings/`` script)."""

    implementation: str
    options: dict[str, Any]
    problem: str
    where: str

    def matches(self, finding: Finding) -> bool:
        """Whether ``finding``'s smallest failure is this one."""
        if finding.failure is None or finding.implementation.split("(")[0] != self.implementation:
            return False
        fits = all(finding.impl_options.get(k) == v for k, v in self.options.items())
        return fits and self.problem in finding.failure.problems[0]


#: The failures of ``make oracle`` that chapter 90 classifies, so that a known one reads as known in the report.
KNOWN = (
    KnownFinding("diffusers.DDPMScheduler", {"variance_type": "fixed_large"}, "first off the reference",
                 "Finding 4, findings/diffusers_ddpm_fixed_large_final_noise.py"),
    KnownFinding("diffusers.PNDMScheduler", {"skip_prk_steps": False}, "operands could not be broadcast",
                 "Finding 7, findings/diffusers_pndm_prk_few_steps.py"),
    KnownFinding("diffusers.DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"}, "zero length",
                 "Finding 7, findings/diffusers_dpmsolver_multistep_sigma_min_zero_step.py"),
    KnownFinding("diffusers.DPMSolverSinglestepScheduler", {"final_sigmas_type": "sigma_min"}, "zero length",
                 "Finding 7, findings/diffusers_dpmsolver_singlestep_sigma_min_zero_step.py"),
    KnownFinding("diffusers.DPMSolverMultistepInverseScheduler", {}, "zero length",
                 "Finding 8, findings/diffusers_dpmsolver_inverse_zero_step.py"),
    KnownFinding("diffusers.EDMDPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"}, "zero length",
                 "Finding 8, findings/diffusers_edm_dpmsolver_sigma_min_zero_step.py"),
    KnownFinding("diffusers.TCDScheduler", {"clip_sample": True}, "first off the reference",
                 "Finding 8, findings/diffusers_tcd_clip_sample_ignored.py"),
    KnownFinding("diffusers.KDPM2AncestralDiscreteScheduler", {}, "non-finite timesteps",
                 "Finding 8, findings/diffusers_kdpm2_ancestral_nan.py"),
    KnownFinding("k_diffusion.sample_dpm_2_ancestral", {}, "first off the reference",
                 "Finding 8, findings/kdiffusion_ancestral_sigma_down_cancellation.py"),
    KnownFinding("k_diffusion.sample_dpmpp_2m_sde", {}, "UnboundLocalError",
                 "Finding 7, findings/kdiffusion_sde_one_step.py"),
    KnownFinding("k_diffusion.sample_dpmpp_3m_sde", {}, "UnboundLocalError",
                 "Finding 7, findings/kdiffusion_sde_one_step.py"),
)  # fmt: skip


def known(finding: Finding) -> str | None:
    """Where chapter 90 classifies ``finding``'s smallest failure (None: not a known one)."""
    return next((k.where for k in KNOWN if k.matches(finding)), None)


#: Step counts of the order checks (uniform in lambda for k-diffusion; diffusers' own "linspace" grids).
ORDER_STEPS = (20, 40, 80, 160)


def order_entries() -> list[tuple[str, Implementation, Config]]:
    """Deterministic implementations whose runs end on a grid time, for the order check: (label, impl, config).

    diffusers runs with float64 tables and a last noise level sigma_min (an error against the exact ODE needs a
    finite end); the toy is the anisotropic Gaussian (its ODE solution is closed-form).
    """
    sigma_min = {"final_sigmas_type": "sigma_min", "lower_order_final": False}
    diffusers = [
        ("DPMSolverMultistepScheduler", {"solver_order": 2, **sigma_min}),
        ("DPMSolverMultistepScheduler", {"solver_order": 3, **sigma_min}),
        ("DPMSolverMultistepScheduler", {"solver_order": 3, "algorithm_type": "dpmsolver", **sigma_min}),
        ("UniPCMultistepScheduler", {"solver_order": 2, **sigma_min}),
        ("DEISMultistepScheduler", {"solver_order": 2, "lower_order_final": False}),
        ("DEISMultistepScheduler", {"solver_order": 3, "lower_order_final": False}),
        ("EulerDiscreteScheduler", {"final_sigmas_type": "sigma_min"}),
    ]
    out = []
    for name, kwargs in diffusers:
        impl = DiffusersScheduler(name, kwargs, float64_tables=True)
        out.append((impl.name, impl, Config(impl.method, 10, toy="gaussian")))
    for function in (
        "sample_euler",
        "sample_heun",
        "sample_lms",
        "sample_dpm_2",
        "sample_dpmpp_2m",
        "sample_dpmpp_3m_sde",
    ):
        impl = KDiffusionSampler(function)
        out.append((impl.name, impl, Config(impl.method, 10, "edm", toy="gaussian")))
    return out


def run_orders(steps: tuple[int, ...] = ORDER_STEPS) -> list[OrderReport]:
    """The order check of every ``order_entries`` implementation (one that raises is reported with its error)."""
    out = []
    for label, impl, config in tqdm(order_entries(), desc="orders"):
        try:
            out.append(order_check(impl, config, steps))
        except Exception as err:  # any error of one entry is that entry's row
            out.append(OrderReport(label, config, math.nan, steps, problem=f"raised {type(err).__name__}: {err}"))
    return out


def run_matrix(max_examples: int = 100, entries: list[Entry] | None = None) -> list[Finding]:
    """Explore every entry; returns one Finding each. An entry whose exploration raises is a Finding with its
    traceback (``crash``), and the others still run."""
    findings = []
    for entry in tqdm(entries or matrix(), desc="oracle"):
        cpu = time.process_time()
        try:
            findings.append(explore(entry.make, entry.method, entry.impl_options, max_examples, **entry.strategy))
        except Exception as err:  # any error of one entry is that entry's row
            crash = f"{type(err).__name__}: {err}"
            tb = traceback.format_exc()
            findings.append(Finding(entry.label, entry.method, 0, None, {}, crash, tb, time.process_time() - cpu))
    return findings


def render(findings: list[Finding], orders: list[OrderReport] | None = None) -> str:
    """The report as Markdown."""
    lines = [
        "# What the oracle found (generated by `make oracle`)",
        "",
        "| implementation | claims | configurations | CPU s | verdict |",
        "|---|---|---|---|---|",
    ]
    for f in findings:
        verdict = "agrees" if f.failure is None else f"FAILS: {f.failure.problems[0]}"
        if (where := known(f)) is not None:
            verdict += f" (known: {where})"
        if f.crash is not None:
            verdict = f"CRASHED: {f.crash}"
        lines.append(f"| {f.implementation} | {f.method} | {f.examples} | {f.cpu_s:.1f} | {verdict} |")
    if orders:
        lines += ["", "## Measured orders (error at the last grid time against the exact ODE)", "",
                  "| implementation | claims | declared | measured | refimpl, same grids | verdict |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for o in orders:
            measured = f"{o.result.order:.2f}" if o.result is not None else "-"
            ref = f"{o.reference.order:.2f}" if o.reference is not None else "-"
            verdict = "agrees" if o.passed else f"FAILS: {o.problem}"
            lines.append(
                f"| {o.implementation} | {o.config.method} | {o.declared:g} | {measured} | {ref} | {verdict} |"
            )
    for f in findings:
        if f.traceback is not None:
            lines += ["", f"## {f.implementation}: the exploration crashed", "", "```text", f.traceback.rstrip(), "```"]
        if f.failure is not None:
            lines += [
                "",
                f"## {f.implementation}: smallest failing configuration",
                "",
                f"implementation options: {f.impl_options}",
                "",
                "```text",
                f.failure.table(),
                "```",
            ]
    return "\n".join(lines)


def run_reproducers(folder: Path = Path("findings")) -> list[tuple[str, bool, str]]:
    """Run every reproducer script in ``folder``: (name, shows the defect (exit 0), its last output line)."""
    import subprocess
    import sys

    out = []
    for script in sorted(folder.glob("*.py")):
        try:
            done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                                  check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            out.append((script.name, False, "timed out after 300 s"))
            continue
        lines = (done.stdout or done.stderr).strip().splitlines()
        out.append((script.name, done.returncode == 0, lines[-1] if lines else ""))
    return out


def main() -> None:
    """Explore the matrix, measure orders, run the reproducers; report them with the wall and CPU time taken."""
    import resource

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    wall, cpu = time.perf_counter(), time.process_time()
    findings = run_matrix(args.max_examples)
    cpu_matrix = time.process_time() - cpu
    orders = run_orders()
    cpu_orders = time.process_time() - cpu - cpu_matrix
    text = render(findings, orders)
    lines = ["", "## Reproducers (`findings/`, against the installed versions)", "",
             "| script | defect shown | output |", "|---|---|---|"]  # fmt: skip
    for name, shown, last in run_reproducers():
        lines.append(f"| {name} | {'yes' if shown else 'NO: gone, or the script failed'} | {last} |")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = time.process_time() - cpu + children.ru_utime + children.ru_stime
    lines += ["", f"`make oracle` took {time.perf_counter() - wall:.0f} s wall, {cpu_s:.0f} s CPU "
              f"(--max-examples {args.max_examples}): exploration {cpu_matrix:.0f} s, orders {cpu_orders:.0f} s, "
              f"the rest (reproducers, in child processes) {cpu_s - cpu_matrix - cpu_orders:.0f} s."]  # fmt: skip
    text += "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "oracle-report.md").write_text(text + "\n")
    print(text)
    print(f"\nreport written to {args.out / 'oracle-report.md'}")


if __name__ == "__main__":
    main()
