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
coefficient and step, and these add up over the steps; after i steps we allow ``TOL_OPS * (i + 1) * u`` times
the state's scale (a tolerance per step; the report's headline gives the worst deviation-to-tolerance ratio and
its step), TOL_OPS = 64 operations' worth a step: the package's round-off model
(``refimpl.reference.OPS_PER_STEP`` roundings a step) for two implementations (x 2), times a condition factor
of 4 for formulas written differently from refimpl's (a third party's coefficients are computed by other,
sometimes less well-conditioned, expressions: ``CONDITION``, a policy). Model query times must agree to
TOL_OPS u times the measured condition number of the conversion from the implementation's noise level to t
(``_query_tolerance``).
"""

from __future__ import annotations

import inspect
import itertools
import math
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from refimpl import grids
from refimpl.grids import GRIDS
from refimpl.models import CountingModel, ModelWrapper, predict
from refimpl.oracle.methods import final_step_to_zero, get_method
from refimpl.parameterization import from_x0_eps, to_x0_eps
from refimpl.reference import OPS_PER_STEP, solve_pf_ode
from refimpl.samplers import Trajectory
from refimpl.schedules import SCHEDULES, get_schedule

__all__ = [
    "Config",
    "Convention",
    "Implementation",
    "Report",
    "Run",
    "Unusable",
    "check",
    "config_grid",
    "make_toy",
    "reference_run",
]

#: Condition factor for a third party's differently written formulas (a policy; see the module docstring).
CONDITION = 4
#: Roundings a step allowed between the implementation under test and the reference (= 64).
TOL_OPS = CONDITION * 2 * OPS_PER_STEP
FINALS = ("grid", "x0", "step")


TOYS = ("ring", "labelled_pair", "mixture16", "gaussian")


def make_toy(name: str) -> Any:
    """A named exact toy data law (toy_models.zoo)."""
    from toy_models import zoo

    toys = {
        "ring": zoo.ring,
        "labelled_pair": zoo.labelled_pair,
        "mixture16": lambda: zoo.random_mixture(K=4, d=16, seed=0),
        "gaussian": lambda: zoo.anisotropic_gaussian(3, seed=1),
    }
    _check_choice(name, "toy", TOYS)
    return toys[name]()


PREDICTIONS = ("eps", "x0", "v")
DTYPES = ("float64", "float32")
#: Grids a Config may name: refimpl's (``grids.GRIDS``) and "random", a seeded non-uniform grid (``config_grid``).
SPACINGS = (*GRIDS, "random")


def _check_int(value: Any, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


@dataclass(frozen=True)
class Config:
    """One configuration of the matrix: what is run, on which toy, how (validated when made).

    ``options`` are the method's options as (name, value) pairs, understood by both sides (for example
    ("eta", 1.0)); ``dtype`` is the dtype of the state the implementation sees; ``spacing`` is the refimpl
    grid for implementations that take one (refimpl callables, k-diffusion; "random": a seeded grid uniformly
    random in lambda, so that neighbouring step ratios differ); ``final_zero`` makes the last of the
    ``n_steps`` steps go to sigma = 0 (alpha = 1; a callable sees it as a last timestep 0.0); ``encode`` runs
    the method's encoder (data to noise) instead of its sampler.
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
    final_zero: bool = False

    def __post_init__(self) -> None:
        get_method(self.method)  # raises ValueError naming the known methods
        _check_int(self.n_steps, "n_steps", 1)
        _check_int(self.batch, "batch", 1)
        _check_int(self.seed, "seed", 0)
        _check_choice(self.schedule, "schedule", tuple(SCHEDULES))
        _check_choice(self.toy, "toy", TOYS)
        _check_choice(self.prediction, "prediction", PREDICTIONS)
        _check_choice(self.dtype, "dtype", DTYPES)
        _check_choice(self.spacing, "spacing", SPACINGS)
        if not isinstance(self.options, tuple) or not all(
            isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str) for o in self.options
        ):
            raise TypeError(f"options must be a tuple of (name, value) pairs, got {self.options!r}")

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def size(self) -> tuple[int, int, int]:
        """Order used to find the smallest failing configuration."""
        return (self.n_steps, self.batch, len(self.options))

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        zero = " (the last to sigma = 0)" if self.final_zero else ""
        return (
            f"{self.method}{' (encoder)' if self.encode else ''}: {self.n_steps} steps{zero}, {self.schedule}, "
            f"{self.spacing}, {self.toy}, {self.prediction}, {self.dtype}{', ' + opts if opts else ''}"
        )


def config_grid(schedule: Any, config: Config) -> Tensor:
    """The continuous-time grid of ``config`` before any step to sigma = 0 (n_steps - 1 steps with ``final_zero``).

    "random" draws the interior points uniformly in lambda with the configuration's seed (a grid whose step ratios
    r = h_{i-1} / h_i vary; on a uniform-lambda grid r = 1 and a formula with r and 1/r swapped passes).
    """
    n = config.n_steps - 1 if config.final_zero else config.n_steps
    if n == 0:
        return torch.tensor([schedule.t_max], dtype=torch.float64)
    if config.spacing != "random":
        return grids.timesteps(schedule, n, config.spacing)
    ends = schedule(torch.tensor([schedule.t_max, schedule.t_min], dtype=torch.float64)).lambda_
    g = torch.Generator().manual_seed(config.seed + 104729)
    inner = ends[0] + (ends[1] - ends[0]) * torch.rand(n - 1, generator=g, dtype=torch.float64).sort().values
    lam = torch.cat([ends[:1], inner, ends[1:]]).clamp(schedule.lambda_min, schedule.lambda_max)
    ts = schedule.t_of_lambda(lam)
    ts[0], ts[-1] = schedule.t_max, schedule.t_min
    return ts


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
    A state may be None where the implementation did not report it (an end-to-end run reports only the last);
    ``noise_ignored`` says that the method is stochastic here but the implementation could not take the noise;
    ``skipped`` why the configuration does not apply to the implementation (it takes no last step to sigma = 0).
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
    noise_ignored: bool = False
    skipped: str | None = None


class Implementation(Protocol):
    """An implementation under test: ``run`` walks its own grid on the exact model and records a Run."""

    name: str

    def run(self, config: Config, model: Any, x_T: Tensor, noise: Tensor | None) -> Run: ...


@dataclass(frozen=True)
class StepReport:
    """One row of the table: the state after step i (i = 0: x_T) against the reference and the exact ODE.

    ``tolerance`` is this step's round-off allowance (``_tolerance`` with i + 1 steps' worth, times the measured
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


@dataclass(frozen=True)
class Unusable:
    """Why an implementation's run cannot be compared (it raised, returned a non-tensor, a wrong shape ...)."""

    reason: str
    traceback: str | None = None
    skipped: str | None = None


def _run_checked(impl: Implementation, config: Config, model: Any, x_T: Tensor, noise: Tensor) -> Run | Unusable:
    """The implementation's run, or why it is not usable (crash, with its traceback; non-tensor; shape)."""
    dtype = getattr(torch, config.dtype)
    try:
        run = impl.run(config, model, x_T.to(dtype), noise.to(dtype))
    except Exception as err:  # the implementation under test crashed: report it, do not crash the oracle
        return Unusable(f"raised {type(err).__name__}: {err}", traceback.format_exc())
    if run.error or run.skipped:
        return Unusable(run.error or "", skipped=run.skipped)
    if len(run.states) != len(run.times):
        return Unusable(f"reported {len(run.states)} states for a grid of {len(run.times)} times")
    bad = [
        i
        for i, s in enumerate(run.states)
        if not isinstance(s, Tensor) and not (s is None and 0 < i < len(run.states) - 1)
    ]
    if bad:
        return Unusable(f"step {bad[0]} returned {type(run.states[bad[0]]).__name__}, not a tensor")
    wrong = [i for i, s in enumerate(run.states) if s is not None and s.shape != x_T.shape]
    if wrong:
        return Unusable(
            f"step {wrong[0]} returned shape {tuple(run.states[wrong[0]].shape)}, expected {tuple(x_T.shape)}"
        )
    return run


def _nonzero_steps(times: Tensor) -> list[int]:
    """Indices of the grid times that end a step of non-zero length (and 0)."""
    return [0] + [i + 1 for i in range(len(times) - 1) if not times[i + 1] == times[i]]


def _unit(config: Config, run: Run) -> float:
    """The unit round-off of the run: the larger of the state's and the coefficients'."""
    dtype = getattr(torch, config.dtype)
    return max(torch.finfo(d).eps / 2 for d in (dtype, run.coefficient_dtype or dtype))


def _tolerance(config: Config, run: Run, scale: float) -> tuple[float, float]:
    """(tolerance on the state after all n_steps steps, unit round-off) for this run's precision."""
    unit = _unit(config, run)
    return TOL_OPS * (config.n_steps + 1) * unit * scale, unit


def _query_tolerance(schedule: Any, levels: Tensor, unit: float) -> Tensor:
    """Relative tolerance of each model query time: TOL_OPS u times the conditioning of the time conversion.

    An implementation reports its noise level in its own variable (sigma = e^-lambda, an integer timestep, t);
    the adapter maps it to t through lambda. A relative error u in sigma is an error u in lambda and of
    u / |t lambda'(t)| relative in t; lambda itself is rounded to u |lambda|; and the schedule's t(lambda) formula
    may cancel (VP schedules near t_min subtract nearly equal numbers). The condition number is measured on the
    schedule's own conversion: kappa(t) = max(1, |t(lambda(t) +- delta) - t| / (t u)) with delta = u (1 + |lambda|),
    which contains all three (a query at the wrong step is off by O(h), many orders above).
    """
    finite = torch.isfinite(levels) & (levels > 0)
    kappa = torch.ones_like(levels)
    if bool(finite.any()):
        t = levels[finite].clamp(schedule.t_min, schedule.t_max)
        lam = schedule(t).lambda_
        delta = unit * (1 + lam.abs())
        lo, hi = schedule.lambda_min, schedule.lambda_max
        moved = [schedule.t_of_lambda((lam + k * delta).clamp(lo, hi)) for k in (-1, 1)]
        spread = torch.stack([(m - t).abs() for m in moved]).amax(0) / (t * unit)
        kappa[finite] = spread.clamp_min(1.0)
    return TOL_OPS * unit * kappa


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


def _step_orders(config: Config, options: dict[str, Any], n: int) -> list[int | None]:
    """The reference's order for each of the n steps: per-step ``orders`` where the method takes them (multistep
    methods start lower: ``step_orders``), else the declared order. Index 0 is x_T (no step)."""
    from refimpl.samplers.multistep import step_orders

    spec = get_method(config.method)
    order = math.ceil(options.get("order", spec.order))
    if "orders" in options:
        orders = list(options["orders"])
    elif "orders" in inspect.signature(spec.sample).parameters:
        orders = step_orders(n, order)
    else:
        orders = [order] * n
    return [None, *orders, *[order] * (n - len(orders))][: n + 1]


# --- the stages of a check ----------------------------------------------------------------------------------


@dataclass
class _Context:
    """What the stages of ``check`` share: the configuration, the exact model, the run and its precision."""

    config: Config
    model: Any
    x_T: Tensor
    noise: Tensor
    run: Run
    report: Report
    keep: list[int]
    size: float
    unit: float


def _grid_stage(c: _Context) -> None:
    """Zero-length steps (a model call that cannot move the state) and landings off the implementation's own grid."""
    times = c.run.times
    for i in range(len(times) - 1):
        if times[i + 1] == times[i]:
            c.report.problems.append(
                f"step {i} has zero length (t = {float(times[i]):.5g} to itself): "
                "a model call that cannot move the state"
            )
    for i, landing in enumerate((c.run.landings or [])[:-1]):
        start = float(times[i + 1])
        if not abs(landing - start) <= TOL_OPS * c.unit * abs(start):
            c.report.problems.append(
                f"step {i} lands at t = {landing:.6g} but the next step starts from t = {start:.6g}: "
                "off the scheduler's own grid"
            )
            break


def _levels(c: _Context) -> list[float]:
    return c.run.levels if c.run.levels is not None else c.run.queries


def _query_convention(c: _Context) -> list[Convention]:
    """The run's conventions, plus "model time off the noise level" when the model's time input differs from the
    solver's noise level by more than the conversion's round-off."""
    conventions = list(c.run.conventions)
    levels, queries = _levels(c), c.run.queries
    if not queries:
        return conventions
    tol = _query_tolerance(c.model.schedule, torch.tensor(levels[: len(queries)], dtype=torch.float64), c.unit)
    off = [(lv, q) for lv, q, tl in zip(levels, queries, tol.tolist(), strict=False) if abs(q - lv) > tl * abs(lv)]
    if off:  # the model's time input does not map back to the solver's noise level: model it, measure it
        worst = max(abs(q - lv) / abs(lv) for lv, q in off)
        detail = f"the model's time input differs from the solver's noise level by up to {worst:.1e} (relative)"
        conventions.append(
            Convention("model time off the noise level", detail, queries=tuple(zip(levels, queries, strict=False)))
        )
    return conventions


def _reference_stage(c: _Context, conventions: list[Convention]) -> tuple[Run, list[float]] | None:
    """The reference on the implementation's grid with its conventions, what each convention changes, and the
    measured amplification of the reference (per state of the run). None if the grid is not valid for the method."""
    run, config = c.run, c.config
    used = c.noise if run.noise is None else run.noise

    def reference(conv: list[Convention], x_start: Tensor = c.x_T) -> tuple[Run, int]:
        return reference_run(
            config, c.model, x_start, run.times[c.keep], used, run.final, tuple(conv), run.reference_options
        )

    try:
        ref, c.report.nfe_expected = reference(conventions)
    except ValueError as err:
        c.report.problems.append(f"its grid is not a valid grid for {config.method}: {err}")
        return None
    for k, convention in enumerate(conventions):  # what each convention changes
        without, _ = reference(conventions[:k] + conventions[k + 1 :])
        note = ConventionNote(
            convention.name, convention.detail, _max_dev(ref.states, without.states), c.report.tolerance
        )
        c.report.conventions.append(note)
        if note.matters and convention.queries:
            c.report.problems.append(
                f"the model is not queried at the solver's noise level ({convention.detail}); this changes the "
                f"states by {note.effect:.1e} > {c.report.tolerance:.1e}"
            )
    amplification = _amplification(ref, reference(conventions, _perturbed(c.x_T, c.size, config.seed))[0], c.size)
    if _max_dev(ref.states, reference(conventions)[0].states) > 0:  # the probe needs a deterministic reference
        c.report.problems.append(
            f"refimpl's {config.method} is not deterministic given the injected noise (does it take `noise`?): "
            "no step-by-step comparison is possible"
        )
        amplification = [1.0] * len(amplification)
    return ref, amplification


def _state_stage(c: _Context, ref: Run, amplification: list[float], scale: float, exact: bool) -> None:
    """Each reported state against the reference (per-step tolerance) and the exact ODE solution."""
    run, config, report = c.run, c.config, c.report
    expand = [len([k for k in c.keep if k <= i]) - 1 for i in range(len(run.times))]
    spec = get_method(config.method)
    options = {**dict(spec.options), **run.reference_options, **dict(config.options)}
    for convention in run.conventions:
        options.update(dict(convention.options))
    orders = _step_orders(config, options, len(c.keep) - 1)
    ode = _exact_states(c.model, c.x_T, run.times[c.keep]) if exact and not spec.stochastic else [None] * len(c.keep)
    first = None
    for i, x in enumerate(run.states):
        j = expand[i]
        tol = TOL_OPS * (j + 1) * c.unit * scale * amplification[j]
        order = orders[j] if j > 0 and expand[i - 1] != j else None
        if x is None:
            report.steps.append(StepReport(i, float(run.times[i]), math.nan, math.nan, True, amplification[j], tol,
                                           order, reported=False))  # fmt: skip
            continue
        finite = bool(torch.isfinite(x).all())
        dev = float((x.double() - ref.states[j]).abs().max()) if finite else math.inf
        dev_exact = float((x.double() - ode[j]).abs().max()) if ode[j] is not None and finite else math.nan
        report.steps.append(StepReport(i, float(run.times[i]), dev, dev_exact, finite, amplification[j], tol, order))
        if first is None and not dev <= tol:
            first = report.steps[-1]
    if first is not None:
        what = (
            "non-finite state" if not first.finite else f"deviation {first.dev_reference:.2e} > {first.tolerance:.1e}"
        )
        report.problems.append(f"first off the reference at step {first.i} ({first.where}): {what}")


def _call_stage(c: _Context, ref: Run) -> None:
    """The number of model calls, and where each is made against where the method evaluates."""
    report, levels = c.report, _levels(c)
    report.nfe = len(c.run.queries)
    if report.nfe != report.nfe_expected:
        report.problems.append(f"{report.nfe} model calls, the method makes {report.nfe_expected}")
        return
    if not report.nfe:
        return
    q, q_ref = torch.tensor(levels, dtype=torch.float64), torch.tensor(ref.queries, dtype=torch.float64)
    rel = (q - q_ref).abs() / q_ref.abs().clamp_min(1e-12)
    report.query_error = float(rel.max())
    excess = rel / _query_tolerance(c.model.schedule, q_ref, c.unit)
    if float(excess.max()) > 1:
        k = int(excess.argmax())
        report.problems.append(
            f"model call {k} is made at noise level t = {float(q[k]):.8g}, the method evaluates at "
            f"t = {float(q_ref[k]):.8g} (relative difference {float(rel[k]):.1e})"
        )


def _hint_stage(c: _Context) -> None:
    """Name the pattern behind the problems where one is recognisable."""
    report, run, config = c.report, c.run, c.config
    if run.noise_ignored:
        report.hints.append(
            f"{config.method} is stochastic with these options, but the implementation takes no `noise` argument: "
            "it draws its own noise, so its path cannot be compared; accept `noise` (shape (n_steps, *x.shape), "
            "step i uses noise[i])"
        )
    failing = [s for s in report.steps if s.reported and s.finite and s.i > 0 and s.dev_reference > s.tolerance]
    f32 = torch.finfo(torch.float32).eps / 2
    if failing and c.unit < f32 and all(s.dev_reference <= s.tolerance * f32 / c.unit for s in failing):
        report.hints.append(
            "every deviation is within float32 round-off (it would pass a float32 tolerance): is a coefficient, "
            "the time or the state cast to float32 somewhere (torch.tensor(...) without dtype, a float32 table)?"
        )
    zero = [s for s in report.steps if not s.finite and math.isnan(s.t)]
    if zero and all(s.finite for s in report.steps if not math.isnan(s.t)):
        report.hints.append(
            "only the step to sigma = 0 is not finite: there alpha = 1, sigma = 0 and h = lambda_t - lambda_s = +inf; "
            "a multistep formula with ratios of step sizes breaks, and the usual last step is first order "
            "(it returns the x0 prediction, as the reference does)"
        )
    if report.nfe > report.nfe_expected > 0:
        report.hints.append(
            f"{report.nfe - report.nfe_expected} model call(s) more than the method makes: a repeated evaluation, "
            "or a stage the method does not have (each call is the expensive part of a sampler)"
        )


def check(impl: Implementation, config: Config, exact: bool = True) -> Report:
    """Run ``impl`` and the reference on ``config`` and compare them step by step (the stages above, in order)."""
    model, x_T, noise = _setup(config)
    report = Report(config, impl.name)
    run = _run_checked(impl, config, model, x_T, noise)
    if isinstance(run, Unusable):
        if run.skipped:
            report.skipped = run.skipped
        else:
            report.problems.append(run.reason)
            report.traceback = run.traceback
        return report
    keep = _nonzero_steps(run.times)
    size = max(1.0, float(x_T.abs().max()))
    scale = size * _alpha_growth(model, run.times[keep])
    report.tolerance, unit = _tolerance(config, run, scale)
    c = _Context(config, model, x_T, noise, run, report, keep, size, unit)
    _grid_stage(c)
    staged = _reference_stage(c, _query_convention(c))
    if staged is not None:
        ref, amplification = staged
        _state_stage(c, ref, amplification, scale, exact)
        _call_stage(c, ref)
    _hint_stage(c)
    return report


def smallest_failure(reports: list[Report]) -> Report | None:
    """The failing report with the smallest configuration (fewest steps, then smallest batch)."""
    failing = [r for r in reports if not r.passed]
    return min(failing, key=lambda r: r.config.size()) if failing else None


def with_options(config: Config, **options: Any) -> Config:
    """``config`` with options added or replaced."""
    return replace(config, options=tuple(sorted({**dict(config.options), **options}.items())))
