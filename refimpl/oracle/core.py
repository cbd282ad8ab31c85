"""The oracle's core: run an implementation under test and refimpl's reference side by side, step by step.

Both start from the same x_T (exact samples of p_T of an exact toy), walk the same grid (the one the
implementation chose, mapped to continuous time) and, for stochastic methods, inject the same noise.
For every step the report gives the deviation from the reference state, the deviation from the exact
probability-flow ODE solution (deterministic methods), whether the state stayed finite, and where the
model was queried against where the method says it should be; then a verdict.

Conventions of the implementation (a final denoising step, clipped x0 predictions, lower orders in the last
steps, a model time input that differs from the solver's noise level, ...) are modelled explicitly as options
of the reference (``Convention``), never by loosening the tolerance; the report measures what each one
changes (the reference with it against the reference without it).

Tolerance of "agrees with the reference": an implementation whose coefficients are computed in a
format of unit round-off u (float32: 2^-24; float64: 2^-53) makes a relative error of a few u per
coefficient and step, and these add up over the steps; we allow ``TOL_OPS * (n_steps + 1) * u`` times
the state's scale, TOL_OPS = 64 operations' worth a step: the package's round-off model
(``refimpl.reference.OPS_PER_STEP`` roundings a step) for two implementations (x 2), times a condition factor
of 4 for formulas written differently from refimpl's (a third party's coefficients are computed by other,
sometimes less well-conditioned, expressions: ``CONDITION``, a policy). Model query times must agree to the
same relative tolerance.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from refimpl.models import CountingModel, ModelWrapper, predict
from refimpl.oracle.methods import final_step_to_zero, get_method
from refimpl.parameterization import from_x0_eps, to_x0_eps
from refimpl.reference import OPS_PER_STEP, solve_pf_ode
from refimpl.samplers import Trajectory
from refimpl.schedules import get_schedule

__all__ = [
    "Config",
    "Convention",
    "Implementation",
    "Report",
    "Run",
    "check",
    "make_toy",
    "reference_run",
]

#: Condition factor for a third party's differently written formulas (a policy; see the module docstring).
CONDITION = 4
#: Roundings a step allowed between the implementation under test and the reference (= 64).
TOL_OPS = CONDITION * 2 * OPS_PER_STEP
FINALS = ("grid", "x0", "step")


def make_toy(name: str) -> Any:
    """A named exact toy data law (toy_models.zoo)."""
    from toy_models import zoo

    toys = {
        "ring": zoo.ring,
        "labelled_pair": zoo.labelled_pair,
        "mixture16": lambda: zoo.random_mixture(K=4, d=16, seed=0),
        "gaussian": lambda: zoo.anisotropic_gaussian(3, seed=1),
    }
    if name not in toys:
        raise ValueError(f"unknown toy {name!r}; choose one of {sorted(toys)}")
    return toys[name]()


@dataclass(frozen=True)
class Config:
    """One configuration of the matrix: what is run, on which toy, how.

    ``options`` are the method's options as (name, value) pairs, understood by both sides (for example
    ("eta", 1.0)); ``dtype`` is the dtype of the state the implementation sees; ``spacing`` is the refimpl
    grid for implementations that take one (refimpl callables, k-diffusion); ``encode`` runs the method's
    encoder (data to noise) instead of its sampler.
    """

    method: str
    n_steps: int
    schedule: str = "ddpm_linear"
    toy: str = "ring"
    prediction: str = "eps"
    dtype: str = "float64"
    batch: int = 8
    seed: int = 0
    spacing: str = "uniform_lambda"
    encode: bool = False
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def size(self) -> tuple[int, int, int]:
        """Order used to find the smallest failing configuration."""
        return (self.n_steps, self.batch, len(self.options))

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        return (
            f"{self.method}{' (encoder)' if self.encode else ''}: {self.n_steps} steps, {self.schedule}, "
            f"{self.spacing}, {self.toy}, {self.prediction}, {self.dtype}{', ' + opts if opts else ''}"
        )


@dataclass(frozen=True)
class Convention:
    """A convention of the implementation under test, modelled by the reference.

    ``options`` are reference-sampler options that model it (e.g. per-step ``orders``, a ``warmup``);
    ``clip_x0`` clips the model's x0 prediction to [-clip_x0, clip_x0] (eps recomputed from it);
    ``queries`` are (solver noise level t, model time input t') pairs: the reference's model is evaluated at
    t' whenever its solver is at t.
    """

    name: str
    detail: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    clip_x0: float | None = None
    queries: tuple[tuple[float, float], ...] = ()


@dataclass
class Run:
    """What one sampler did: the grid it walked (continuous times), its states, and its model queries.

    ``times`` has one entry per state. ``final`` says how the last state is reached: "grid" (a step to the
    grid time times[-1]), "x0" (a last step to alpha = 1, sigma = 0 that returns the x0 prediction at
    times[-2]) or "step" (the method's own step to sigma = 0); times[-1] is NaN for the last two.
    ``queries`` are the model's time inputs in call order and ``levels`` the solver's noise level at each
    call (where the implementation says it evaluates; None: the same as ``queries``); ``landings`` where each
    step's coefficients take the state (None: times[1:]), which must be where the next step starts.
    ``noise`` is the noise the implementation really used, when it could not take the injected one;
    ``coefficient_dtype`` the precision of its step coefficients (diffusers keeps alpha-bar in float32
    whatever the state's dtype), which sets the tolerance together with the state's dtype.
    ``reference_options`` select the variant of the method the implementation runs (not a convention).
    """

    times: Tensor
    states: list[Tensor]
    queries: list[float]
    final: str = "grid"
    conventions: tuple[Convention, ...] = ()
    reference_options: dict[str, Any] = field(default_factory=dict)
    levels: list[float] | None = None
    landings: list[float] | None = None
    error: str | None = None
    noise: Tensor | None = None
    coefficient_dtype: torch.dtype | None = None


class Implementation(Protocol):
    """An implementation under test: ``run`` walks its own grid on the exact model and records a Run."""

    name: str

    def run(self, config: Config, model: Any, x_T: Tensor, noise: Tensor | None) -> Run: ...


@dataclass(frozen=True)
class StepReport:
    i: int
    t: float
    dev_reference: float
    dev_exact: float
    finite: bool
    amplification: float = 1.0


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
    """The comparison of one configuration, and its verdict."""

    config: Config
    implementation: str
    steps: list[StepReport] = field(default_factory=list)
    nfe: int = 0
    nfe_expected: int = 0
    query_error: float = 0.0
    tolerance: float = 0.0
    problems: list[str] = field(default_factory=list)
    conventions: list[ConventionNote] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def table(self) -> str:
        head = f"{'step':>5} {'t':>10} {'|x - ref|':>11} {'|x - exact|':>12} finite {'amplif.':>8}"
        rows = [
            f"{s.i:>5} {s.t:>10.5f} {s.dev_reference:>11.2e} {s.dev_exact:>12.2e} {s.finite!s:>6} "
            f"{s.amplification:>8.1f}"
            for s in self.steps
        ]
        notes = [f"convention: {c}" for c in self.conventions]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.problems)
        return "\n".join(
            [
                f"{self.implementation} vs refimpl {self.config}",
                head,
                *rows,
                f"model calls {self.nfe} (method declares {self.nfe_expected}); "
                f"query-time error {self.query_error:.1e}; tolerance {self.tolerance:.1e}",
                *notes,
                verdict,
            ]
        )


# --- model wrappers that model conventions --------------------------------------------------------------


@dataclass
class _ClippedModel(ModelWrapper):
    """The model with its x0 prediction clipped to [-c, c] and the output re-derived from (x, clipped x0)."""

    c: float

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        values = self.model.schedule(t)
        x0, _ = to_x0_eps(self.prediction, self.model(x, t), x, values)
        x0 = x0.clamp(-self.c, self.c)
        eps = (x - values.alpha * x0) / values.sigma
        return from_x0_eps(self.prediction, x0, eps, values)


@dataclass
class _RetimedModel(ModelWrapper):
    """The model evaluated at t' whenever it is asked at a solver level t of the pairs (t, t')."""

    pairs: tuple[tuple[float, float], ...]

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        level = float(t)
        for t_level, t_query in self.pairs:
            if abs(level - t_level) <= 1e-9 * abs(t_level):
                return self.model(x, torch.as_tensor(t_query, dtype=torch.float64))
        return self.model(x, t)


# --- the reference ------------------------------------------------------------------------------------


def _setup(config: Config) -> tuple[Any, Tensor, Tensor]:
    from toy_models import ExactModel

    schedule = get_schedule(config.schedule)
    model = ExactModel(make_toy(config.toy), schedule, config.prediction)
    g = torch.Generator().manual_seed(config.seed)
    x_start = model.sample_xt(config.batch, schedule.t_min if config.encode else schedule.t_max, g)[1]
    noise = torch.randn(config.n_steps, *x_start.shape, generator=g, dtype=torch.float64)
    return model, x_start, noise


def reference_run(
    config: Config,
    model: Any,
    x_T: Tensor,
    times: Tensor,
    noise: Tensor | None,
    final: str = "grid",
    conventions: tuple[Convention, ...] = (),
    reference_options: dict[str, Any] | None = None,
) -> tuple[Run, int]:
    """refimpl's method on the grid ``times`` with the given conventions modelled; returns (run, NFE).

    ``final`` as in ``Run``: "x0" ends with the x0 prediction at times[-2], "step" with the method's own step to
    sigma = 0 (``methods.final_step_to_zero``).
    """
    if final not in FINALS:
        raise ValueError(f"final must be one of {FINALS}, got {final!r}")
    spec = get_method(config.method)
    options = {**dict(spec.options), **(reference_options or {}), **dict(config.options)}
    for convention in conventions:
        options.update(dict(convention.options))
        if convention.clip_x0 is not None:
            model = _ClippedModel(model, convention.clip_x0)
        if convention.queries:
            model = _RetimedModel(model, convention.queries)
    counting = CountingModel(model)
    grid = times if final == "grid" else times[:-1]
    out, states, traj = x_T, [x_T], Trajectory()
    if config.encode:
        if spec.encode is None:
            raise ValueError(f"{config.method} has no encoder")
        out = spec.encode(counting, x_T, grid.flip(0), callback=traj)
        states += [s.x_next for s in traj.steps]
    elif len(grid) > 1:  # a one-step run with a final denoise has no regular step
        takes_noise = "noise" in inspect.signature(spec.sample).parameters  # also DDIM with eta > 0
        kwargs = {"noise": noise[: len(grid) - 1]} if noise is not None and takes_noise else {}
        out = spec.sample(counting, x_T, grid, callback=traj, **options, **kwargs)
        states += [s.x_next for s in traj.steps]
    if final == "x0":  # the last step to alpha = 1, sigma = 0 returns the x0 prediction
        states.append(predict(counting, out, grid[-1], "x0"))
    elif final == "step":
        states.append(final_step_to_zero(config.method, counting, out, grid, traj, options))
    return Run(times, states, [float(t) for t in counting.t_queried], final), counting.calls


def _exact_states(model: Any, x_T: Tensor, times: Tensor) -> list[Tensor | None]:
    """The probability-flow ODE solution at each grid time, chained from x_T (None where t is not in the domain)."""
    out: list[Tensor | None] = [x_T]
    x, t_prev = x_T, times[0]
    for t in times[1:]:
        if not math.isfinite(float(t)):
            out.append(None)
            continue
        x = solve_pf_ode(model, x, t_prev, t, rtol=1e-10, atol=1e-10)
        out.append(x)
        t_prev = t
    return out


def _run_checked(impl: Implementation, config: Config, model: Any, x_T: Tensor, noise: Tensor) -> Run | str:
    """The implementation's run, or a sentence saying why it is not usable (crash, non-tensor, shape)."""
    dtype = getattr(torch, config.dtype)
    try:
        run = impl.run(config, model, x_T.to(dtype), noise.to(dtype))
    except Exception as err:  # the implementation under test crashed: report it, do not crash the oracle
        return f"raised {type(err).__name__}: {err}"
    if run.error:
        return run.error
    bad = [i for i, s in enumerate(run.states) if not isinstance(s, Tensor)]
    if bad:
        return f"step {bad[0]} returned {type(run.states[bad[0]]).__name__}, not a tensor"
    if len(run.states) != len(run.times):
        return f"reported {len(run.states)} states for a grid of {len(run.times)} times"
    wrong = [i for i, s in enumerate(run.states) if s.shape != x_T.shape]
    if wrong:
        return f"step {wrong[0]} returned shape {tuple(run.states[wrong[0]].shape)}, expected {tuple(x_T.shape)}"
    return run


def _nonzero_steps(times: Tensor) -> list[int]:
    """Indices of the grid times that end a step of non-zero length (and 0)."""
    return [0] + [i + 1 for i in range(len(times) - 1) if not times[i + 1] == times[i]]


def _tolerance(config: Config, run: Run, scale: float) -> tuple[float, float]:
    """(tolerance on the states, unit round-off) for this run's precision."""
    dtype = getattr(torch, config.dtype)
    unit = max(torch.finfo(d).eps / 2 for d in (dtype, run.coefficient_dtype or dtype))
    return TOL_OPS * (config.n_steps + 1) * unit * scale, unit


def _alpha_growth(model: Any, times: Tensor) -> float:
    """max(1, max_j alpha_{j+1} / alpha_j) over the grid (sigma = 0: alpha = 1).

    Every solver form recovers x0 = (x_t - sigma_t eps) / alpha_t (or works in x~ = x_t / alpha_t) and takes it to
    the next level with a factor alpha_{j+1}: a rounding error of a few units relative to x~ lands as one of
    alpha_{j+1} / alpha_j relative to x_t. One step from T to t_min on ddpm_linear makes this ~160.
    """
    t = times[torch.isfinite(times)]
    alphas = [*model.schedule(t).alpha.tolist(), *([1.0] * int((~torch.isfinite(times)).sum()))]
    ratios = [b / a for a, b in itertools.pairwise(alphas)]
    return max([1.0, *ratios])


#: Relative size of the probe perturbation of x_T that measures how the reference amplifies an error (2^-20:
#: far above float64 round-off, small enough for the linear regime).
PROBE = 2.0**-20


def _perturbed(x_T: Tensor, scale: float, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed + 7919)
    signs = torch.randint(0, 2, x_T.shape, generator=g, dtype=torch.int64).to(x_T.dtype) * 2 - 1
    return x_T + PROBE * scale * signs


def _amplification(ref: Run, probe: Run, scale: float) -> list[float]:
    """How much a rounding error committed at one step can grow by step i, measured on the reference itself.

    a_i = |probe_i - ref_i| / (PROBE * scale) is the growth of a perturbation of x_T by step i; an error made at
    step j <= i grows by about a_i / a_j, so the factor is max(1, a_i / min_{j <= i} a_j). The round-off tolerance
    of step i is multiplied by it: the forward-error bound of a computation whose steps are each accurate to
    a few units of round-off (this counts round-off, it does not absorb a defect: a wrong coefficient makes an
    O(h^p) error, not an amplified O(u) one).
    """
    growth = [max(float((p.double() - r.double()).abs().max()) / (PROBE * scale), 1e-300)
              for r, p in zip(ref.states, probe.states, strict=True)]  # fmt: skip
    out, smallest = [], math.inf
    for a in growth:
        smallest = min(smallest, a)
        out.append(max(1.0, a / smallest))
    return out


def _max_dev(a: list[Tensor], b: list[Tensor]) -> float:
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b, strict=True))


def check(impl: Implementation, config: Config, exact: bool = True) -> Report:
    """Run ``impl`` and the reference on ``config`` and compare them step by step."""
    model, x_T, noise = _setup(config)
    report = Report(config, impl.name)
    run = _run_checked(impl, config, model, x_T, noise)
    if isinstance(run, str):
        report.problems.append(run)
        return report
    spec = get_method(config.method)
    # A zero-length step (t -> t) spends a model call and cannot move the state: report it, and compare the
    # rest against the reference on the grid without it (the state must then stay where it was).
    keep = _nonzero_steps(run.times)
    for i in range(len(run.times) - 1):
        if run.times[i + 1] == run.times[i]:
            report.problems.append(
                f"step {i} has zero length (t = {float(run.times[i]):.5g} to itself): "
                "a model call that cannot move the state"
            )
    size = max(1.0, float(x_T.abs().max()))
    scale = size * _alpha_growth(model, run.times[keep])
    report.tolerance, unit = _tolerance(config, run, scale)
    for i, landing in enumerate((run.landings or [])[:-1]):
        start = float(run.times[i + 1])
        if not abs(landing - start) <= TOL_OPS * unit * abs(start):
            report.problems.append(
                f"step {i} lands at t = {landing:.6g} but the next step starts from t = {start:.6g}: "
                "off the scheduler's own grid"
            )
            break
    conventions = list(run.conventions)
    levels = run.levels if run.levels is not None else run.queries
    off = [(lv, q) for lv, q in zip(levels, run.queries, strict=False) if abs(q - lv) > TOL_OPS * unit * abs(lv)]
    if off:  # the model's time input does not map back to the solver's noise level: model it, measure it
        worst = max(abs(q - lv) / abs(lv) for lv, q in off)
        detail = f"the model's time input differs from the solver's noise level by up to {worst:.1e} (relative)"
        conventions.append(
            Convention("model time off the noise level", detail, queries=tuple(zip(levels, run.queries, strict=False)))
        )
    used = noise if run.noise is None else run.noise

    def reference(conv: list[Convention], x_start: Tensor = x_T) -> tuple[Run, int]:
        return reference_run(
            config, model, x_start, run.times[keep], used, run.final, tuple(conv), run.reference_options
        )

    try:
        ref, report.nfe_expected = reference(conventions)
    except ValueError as err:
        report.problems.append(f"its grid is not a valid grid for {config.method}: {err}")
        return report
    for k, convention in enumerate(conventions):  # what each convention changes
        without, _ = reference(conventions[:k] + conventions[k + 1 :])
        note = ConventionNote(
            convention.name, convention.detail, _max_dev(ref.states, without.states), report.tolerance
        )
        report.conventions.append(note)
        if note.matters and convention.queries:
            report.problems.append(
                f"the model is not queried at the solver's noise level ({convention.detail}); this changes the "
                f"states by {note.effect:.1e} > {report.tolerance:.1e}"
            )
    expand = [len([k for k in keep if k <= i]) - 1 for i in range(len(run.times))]
    amplification = _amplification(ref, reference(conventions, _perturbed(x_T, size, config.seed))[0], size)
    amplification = [amplification[j] for j in expand]
    if _max_dev(ref.states, reference(conventions)[0].states) > 0:  # the probe needs a deterministic reference
        report.problems.append(
            f"refimpl's {config.method} is not deterministic given the injected noise (does it take `noise`?): "
            "no step-by-step comparison is possible"
        )
        amplification = [1.0] * len(amplification)
    ref_states = [ref.states[j] for j in expand]
    ode = _exact_states(model, x_T, run.times[keep]) if exact and not spec.stochastic else [None] * len(keep)
    ode = [ode[j] for j in expand]
    first_dev = None
    for i, (x, x_ref, x_ode) in enumerate(zip(run.states, ref_states, ode, strict=True)):
        finite = bool(torch.isfinite(x).all())
        dev = float((x.double() - x_ref).abs().max()) if finite else math.inf
        dev_exact = float((x.double() - x_ode).abs().max()) if x_ode is not None and finite else math.nan
        report.steps.append(StepReport(i, float(run.times[i]), dev, dev_exact, finite, amplification[i]))
        if first_dev is None and not dev <= report.tolerance * amplification[i]:
            first_dev = i
    report.nfe = len(run.queries)
    if first_dev is not None:
        s = report.steps[first_dev]
        bound = report.tolerance * s.amplification
        what = "non-finite state" if not s.finite else f"deviation {s.dev_reference:.2e} > {bound:.1e}"
        report.problems.append(f"first off the reference at step {first_dev} (t = {s.t:.5f}): {what}")
    if report.nfe != report.nfe_expected:
        report.problems.append(f"{report.nfe} model calls, the method makes {report.nfe_expected}")
    elif report.nfe:
        q, q_ref = torch.tensor(levels, dtype=torch.float64), torch.tensor(ref.queries, dtype=torch.float64)
        rel = (q - q_ref).abs() / q_ref.abs().clamp_min(1e-12)
        report.query_error = float(rel.max())
        if report.query_error > TOL_OPS * unit:
            k = int(rel.argmax())
            report.problems.append(
                f"model call {k} is made at noise level t = {float(q[k]):.6g}, the method evaluates at "
                f"t = {float(q_ref[k]):.6g}"
            )
    return report


def smallest_failure(reports: list[Report]) -> Report | None:
    """The failing report with the smallest configuration (fewest steps, then smallest batch)."""
    failing = [r for r in reports if not r.passed]
    return min(failing, key=lambda r: r.config.size()) if failing else None


def with_options(config: Config, **options: Any) -> Config:
    """``config`` with options added or replaced."""
    return replace(config, options=tuple(sorted({**dict(config.options), **options}.items())))
