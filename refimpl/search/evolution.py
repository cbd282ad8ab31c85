"""Evolutionary searches on an exact objective: USF/S3's predictor-guided search over whole solvers and
AutoDiffusion's search over time-step subsets.

* ``usf_search`` (Liu et al. 2024, arXiv:2312.07243v2, Sec. 4 [unverified]): candidates are decoded solvers
  (``refimpl.samplers.usf.SolverSchedule``) drawn from the decision space with the probabilities of the official
  ``evo_search.yml`` (Taylor order 1: .2, 2: .4, 3 or more: .4; derivative order 1 or 2; corrector .5; prediction
  type and AFS uniform). Each generation mutates the best candidates into many offspring, a cheap predictor of the
  objective (here ridge regression of log objective on solver features; an MLP in the paper) ranks them, and only
  the most promising are evaluated with the true objective.
* ``autodiffusion_search`` (Li et al. 2023, arXiv:2309.10438v2, Sec. 3.3 and their scripts/search_ea.py): a
  candidate is a sorted set of time steps taken from a fine grid; each epoch keeps the ``select`` best, adds
  ``mutation`` mutants (each step replaced with probability ``m_prob`` by an unused one) and ``crossover`` children
  (uniform crossover, each position from either parent with probability 1/2), and keeps the ``population`` best.

Both are elitist (the best value never rises from one generation to the next) and seeded by a ``torch.Generator``:
the same seed gives the same search. On Gaussian data their objective is ``refimpl.search.objective.exact_kl``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor

from refimpl._validation import as_float_tensor, check_instance, check_integer, check_strictly_decreasing
from refimpl.samplers.usf import AFS_CHOICES, SolverSchedule, StepChoice, sample_usf, steps_for_budget
from refimpl.schedules import NoiseSchedule
from refimpl.search.objective import exact_kl
from toy_models.gmm import ExactModel

__all__ = ["SearchResult", "autodiffusion_search", "random_solver", "usf_objective", "usf_search"]

#: USF's evo_search.yml: Taylor-order probabilities {1: .2, 2: .4, 3: .3, 4: .1}, here with 4 merged into 3.
TAYLOR_PROBS = (0.2, 0.4, 0.4)
#: Features of the predictor: the lambda grid is summarised by its cumulative fraction at this many positions.
GRID_FEATURES = 8
RIDGE = 1e-3
#: Smallest step of a candidate grid in lambda, as a fraction of the uniform step.
MIN_GAP = 0.05


@dataclass
class SearchResult:
    """The best candidate found, its objective value, the best value after each generation, and the evaluations."""

    best: Any
    best_value: float
    history: list[float] = field(default_factory=list)
    n_evaluations: int = 0


def _choice(probs: Sequence[float], generator: torch.Generator) -> int:
    return int(torch.multinomial(torch.tensor(probs, dtype=torch.float64), 1, generator=generator))


def _random_step(generator: torch.Generator, corrector: bool | None = None) -> StepChoice:
    coin = torch.rand(3, generator=generator, dtype=torch.float64)
    return StepChoice(
        prediction="x0" if coin[0] < 0.5 else "eps",
        taylor_order=1 + _choice(TAYLOR_PROBS, generator),
        derivative_order=1 if coin[1] < 0.5 else 2,
        corrector=bool(coin[2] < 0.5) if corrector is None else corrector,
    )


def _lambda_grid(lam0: float, lam1: float, n: int, generator: torch.Generator, jitter: float) -> Tensor:
    """n + 1 increasing lambdas from lam0 to lam1: uniform, each interior point moved by jitter x (a step) x N(0, 1)."""
    lam = torch.linspace(lam0, lam1, n + 1, dtype=torch.float64)
    noise = jitter * (lam1 - lam0) / n * torch.randn(n - 1, generator=generator, dtype=torch.float64)
    lam[1:-1] = (lam[1:-1] + noise).clamp(lam0, lam1).sort().values
    return lam


def _to_times(schedule: NoiseSchedule, lam: Tensor, t_start: Tensor, t_end: Tensor) -> Tensor | None:
    if bool((lam.diff() < MIN_GAP * (lam[-1] - lam[0]) / (len(lam) - 1)).any()):
        return None  # two steps (nearly) collapsed: the interpolation would divide by their distance
    ts = schedule.t_of_lambda(lam)
    ts[0], ts[-1] = t_start, t_end
    return ts if bool((ts[1:] < ts[:-1]).all()) else None


def random_solver(
    schedule: NoiseSchedule, nfe: int, generator: torch.Generator, *, t_start: float | None = None,
    t_end: float | None = None, afs_choices: Sequence[str] = AFS_CHOICES, jitter: float = 0.3,
) -> SolverSchedule:  # fmt: skip
    """A random solver of the USF decision space that spends exactly ``nfe`` model calls (ValueError if none can)."""
    check_instance(schedule, NoiseSchedule, "schedule")
    check_integer(nfe, "nfe", 0)  # a budget no solver meets is steps_for_budget's error
    check_instance(generator, torch.Generator, "generator")
    t0 = schedule.check_t(schedule.t_max if t_start is None else t_start, "t_start")
    t1 = schedule.check_t(schedule.t_min if t_end is None else t_end, "t_end")
    lam0, lam1 = float(schedule.lambda_t(t0)), float(schedule.lambda_t(t1))
    steps_for_budget(nfe)  # fails early for a budget no solver meets
    while True:
        afs = afs_choices[_choice([1.0] * len(afs_choices), generator)]
        last = bool(torch.rand(1, generator=generator) < 0.5)
        if nfe + (afs != "none") - last < 1:
            continue
        n = steps_for_budget(nfe, afs, last)
        ts = _to_times(schedule, _lambda_grid(lam0, lam1, n, generator, jitter), t0, t1)
        if ts is not None:
            steps = tuple(_random_step(generator, last if i == n - 1 else None) for i in range(n))
            return SolverSchedule(ts, steps, afs)


def _mutate(sol: SolverSchedule, schedule: NoiseSchedule, generator: torch.Generator, p: float) -> SolverSchedule:
    """Resample each step's decisions with probability p and move each interior lambda by a little."""
    lam = schedule.lambda_t(sol.timesteps)
    n = len(sol.steps)
    if n > 1:
        gap = float(lam[-1] - lam[0]) / n
        lam[1:-1] = (lam[1:-1] + 0.3 * gap * torch.randn(n - 1, generator=generator, dtype=lam.dtype)).sort().values
        lam[1:-1] = lam[1:-1].clamp(float(lam[0]), float(lam[-1]))
    coin = torch.rand(n, generator=generator, dtype=torch.float64)
    steps = tuple(
        _random_step(generator, c.corrector if i == n - 1 else None) if coin[i] < p else c
        for i, c in enumerate(sol.steps)
    )
    ts = _to_times(schedule, lam, sol.timesteps[0], sol.timesteps[-1])
    return sol if ts is None else SolverSchedule(ts, steps, sol.afs)


def _features(sol: SolverSchedule, schedule: NoiseSchedule) -> Tensor:
    """What the predictor sees: AFS, the last corrector, averages of the step decisions, and the grid's shape."""
    lam = schedule.lambda_t(sol.timesteps)
    frac = (lam - lam[0]) / (lam[-1] - lam[0])
    where = torch.linspace(0, 1, GRID_FEATURES + 2, dtype=torch.float64)[1:-1] * (len(lam) - 1)
    grid = torch.stack(
        [frac[int(w)] + (w - int(w)) * (frac[min(int(w) + 1, len(lam) - 1)] - frac[int(w)]) for w in where]
    )
    steps = sol.steps
    mean = lambda f: sum(f(c) for c in steps) / len(steps)  # noqa: E731
    return torch.cat([
        torch.tensor([1.0, *(float(sol.afs == a) for a in AFS_CHOICES), float(steps[-1].corrector),
                      mean(lambda c: c.prediction == "x0"), mean(lambda c: c.taylor_order),
                      mean(lambda c: c.derivative_order), mean(lambda c: c.corrector)], dtype=torch.float64),
        grid,
    ])  # fmt: skip


def _ridge_predictor(X: Tensor, y: Tensor) -> Tensor:
    """Weights of ridge regression of y on the rows of X (RIDGE x identity added to X^T X)."""
    return torch.linalg.solve(X.T @ X + RIDGE * torch.eye(X.shape[1], dtype=X.dtype), X.T @ y)


def usf_objective(model: ExactModel, data_mean: Tensor | None = None) -> Callable[[SolverSchedule], float]:
    """The exact KL of a decoded solver's output on Gaussian data (``exact_kl`` of ``sample_usf``)."""

    def objective(sol: SolverSchedule) -> float:
        sample = partial(sample_usf, steps=sol.steps, afs=sol.afs, data_mean=data_mean)
        try:
            return exact_kl(sample, model, sol.timesteps)
        except ValueError as err:  # a solver that overflows has no finite output law: infinitely bad
            if "non-finite" not in str(err):
                raise
            return math.inf

    return objective


def usf_search(
    objective: Callable[[SolverSchedule], float],
    schedule: NoiseSchedule,
    nfe: int,
    generator: torch.Generator,
    *,
    population: int = 16,
    generations: int = 8,
    offspring: int = 64,
    evaluated: int = 8,
    mutation_prob: float = 0.3,
    initial: Sequence[SolverSchedule] = (),
    afs_choices: Sequence[str] = AFS_CHOICES,
    t_start: float | None = None,
    t_end: float | None = None,
) -> SearchResult:
    """Predictor-guided evolutionary search over solvers spending exactly ``nfe`` calls (USF/S3, Sec. 4).

    ``population`` candidates are evaluated first (``initial`` ones, e.g. known solvers, then random ones). Each of
    the ``generations`` mutates the ``population`` best into ``offspring`` candidates, ranks them by the predictor
    fitted to every evaluation so far, and evaluates the ``evaluated`` best-ranked. Lower objective is better.
    """
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")
    check_instance(schedule, NoiseSchedule, "schedule")
    check_integer(nfe, "nfe", 0)  # a budget no solver meets is steps_for_budget's error
    check_instance(generator, torch.Generator, "generator")
    for name, value in (("population", population), ("generations", generations), ("offspring", offspring),
                        ("evaluated", evaluated)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if any(sol.nfe != nfe for sol in initial):
        raise ValueError(f"every initial solver must spend nfe = {nfe} calls, got {[s.nfe for s in initial]}")
    archive = [(sol, objective(sol), _features(sol, schedule)) for sol in initial]
    while len(archive) < population:
        sol = random_solver(schedule, nfe, generator, t_start=t_start, t_end=t_end, afs_choices=afs_choices)
        archive.append((sol, objective(sol), _features(sol, schedule)))
    best = min(archive, key=lambda a: a[1])
    history = [best[1]]
    for _ in range(generations):
        parents = sorted(archive, key=lambda a: a[1])[:population]
        picks = torch.randint(len(parents), (offspring,), generator=generator)
        children = [_mutate(parents[int(k)][0], schedule, generator, mutation_prob) for k in picks]
        features = [_features(c, schedule) for c in children]
        y = torch.log(torch.tensor([a[1] for a in archive], dtype=torch.float64).clamp(1e-300, 1e300))
        w = _ridge_predictor(torch.stack([a[2] for a in archive]), y)
        predicted = torch.stack(features) @ w
        for k in torch.argsort(predicted)[:evaluated].tolist():
            archive.append((children[k], objective(children[k]), features[k]))
        best = min(archive, key=lambda a: a[1])
        history.append(best[1])
    return SearchResult(best[0], best[1], history, len(archive))


def autodiffusion_search(
    objective: Callable[[Tensor], float],
    candidates: Tensor,
    n_steps: int,
    generator: torch.Generator,
    *,
    population: int = 50,
    select: int = 10,
    mutation: int = 25,
    crossover: int = 25,
    m_prob: float = 0.1,
    epochs: int = 10,
) -> SearchResult:
    """AutoDiffusion's evolutionary search for the best ``n_steps``-step grid inside ``candidates``.

    ``candidates`` (T,) is a decreasing fine grid; a grid keeps its two ends and n_steps - 1 of the T - 2 interior
    times (a sorted, duplicate-free subset). ``objective(grid)`` is lower-is-better. The defaults are the official
    search_ea.py settings (population 50, select 10, 25 mutants with m_prob 0.1, 25 crossovers, 10 epochs); the
    first population holds the evenly spaced subset and random ones. Returns the best grid (n_steps + 1,).
    """
    fine = check_strictly_decreasing(as_float_tensor(candidates, "candidates", torch.float64), "candidates")
    inner = len(fine) - 2
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or not 1 <= n_steps <= inner + 1:
        raise ValueError(f"n_steps must be an integer in 1..{inner + 1} (the fine grid has {len(fine)} times)")
    if not (select <= population and min(population, select, mutation, crossover, epochs) >= 1 and 0 <= m_prob <= 1):
        raise ValueError("need 1 <= select <= population, mutation, crossover, epochs >= 1 and m_prob in [0, 1]")
    k = n_steps - 1
    cache: dict[tuple[int, ...], float] = {}

    def grid(idx: tuple[int, ...]) -> Tensor:
        return torch.cat([fine[:1], fine[1:-1][list(idx)], fine[-1:]])

    def score(idx: tuple[int, ...]) -> float:
        if idx not in cache:
            cache[idx] = objective(grid(idx))
        return cache[idx]

    def random_subset() -> tuple[int, ...]:
        return tuple(sorted(torch.randperm(inner, generator=generator)[:k].tolist()))

    even = tuple(sorted({round((i + 1) * (inner + 1) / n_steps) - 1 for i in range(k)}))
    pool = {even} if len(even) == k else set()
    for _ in range(100 * population):
        if len(pool) >= population or len(pool) >= math.comb(inner, k):
            break
        pool.add(random_subset())
    ranked = sorted(pool, key=score)
    history = [score(ranked[0])]
    for _ in range(epochs):
        top = ranked[:select]
        new = set()
        for _ in range(mutation):  # each step replaced with probability m_prob by a time not in the subset
            parent = list(top[int(torch.randint(len(top), (1,), generator=generator))])
            for j in range(k):
                if float(torch.rand(1, generator=generator)) < m_prob:
                    unused = [c for c in range(inner) if c not in parent]
                    if unused:
                        parent[j] = unused[int(torch.randint(len(unused), (1,), generator=generator))]
            new.add(tuple(sorted(parent)))
        for _ in range(crossover):  # uniform crossover; a child with a repeated time is dropped (as search_ea.py)
            a, b = (top[int(i)] for i in torch.randint(len(top), (2,), generator=generator))
            coin = torch.rand(k, generator=generator) < 0.5
            child = tuple(sorted(x if c else y for x, y, c in zip(a, b, coin.tolist(), strict=True)))
            if len(set(child)) == k:
                new.add(child)
        ranked = sorted(set(ranked) | new, key=score)[:population]
        history.append(score(ranked[0]))
    return SearchResult(grid(ranked[0]), score(ranked[0]), history, len(cache))
