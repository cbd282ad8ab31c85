"""Allocating a sampling budget across groups with learning curves (numpy, float64).

Cai et al., Adaptive Sampling Strategies to Construct Equitable Training Datasets (arXiv:2202.01327v2, Sec. 3-4):
group g's error after n_g training samples follows a learning curve e_g(n) = a_g n^(-b_g) + c_g (a, b > 0); a
sample of group g costs kappa_g; with budget B choose n to

    minimise sum_g w_g e_g(n_g)   subject to   sum_g kappa_g n_g <= B,   n_g >= n_min,

a convex problem (maximising the concave -sum w e). Its KKT conditions: w_g a_g b_g n_g^(-b_g - 1) = lambda kappa_g for
every group above n_min (equal marginal error reduction per unit cost), <= lambda kappa_g at n_min.

* ``kkt_allocation``: the continuous solution by bisection on lambda.
* ``greedy_allocation``: integer samples one at a time to the group of largest marginal gain per cost
  w_g (e_g(n_g) - e_g(n_g + 1)) / kappa_g, until that sample no longer fits. The increments of a convex separable
  objective are decreasing, so the chosen increments all beat the unchosen ones (the discrete KKT conditions);
  with equal costs this greedy is exactly optimal.
* ``sequential_allocation``: the rates are unknown; each round observes noisy errors of every group at its current
  size, fits (a, b, c) by bounded least squares, and spends the next batch greedily on the fitted curves (the
  paper's adaptive strategy in its simplest form). It converges to the allocation of the true curves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from refimpl._validation import check_array, check_generator, check_instance, check_integer, check_number

__all__ = [
    "Curves",
    "SequentialResult",
    "greedy_allocation",
    "kkt_allocation",
    "learning_curve",
    "sequential_allocation",
]


@dataclass(frozen=True)
class Curves:
    """Learning curves e_g(n) = a_g n^(-b_g) + c_g of G groups (arrays of shape (G,)).

    Paper: Cai et al., arXiv:2202.01327v2, Sec. 3-4, learning curves a n^-b + c, eq. [unverified].
    """

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray

    def __post_init__(self) -> None:
        a, b, c = (check_array(v, name) for v, name in ((self.a, "a"), (self.b, "b"), (self.c, "c")))
        if not (a.shape == b.shape == c.shape and a.ndim == 1 and a.size >= 1):
            raise ValueError(f"a, b, c must be 1-D arrays of one length, got {a.shape}, {b.shape}, {c.shape}")
        if bool((a <= 0).any() or (b <= 0).any() or (c < 0).any()):
            raise ValueError("learning curves need a > 0, b > 0 and c >= 0")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)

    def __call__(self, n: np.ndarray) -> np.ndarray:
        return _curve(np.asarray(n, dtype=np.float64), self.a, self.b, self.c)


def learning_curve(n: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a n^(-b) + c (Cai et al. Sec. 4), for sample sizes n > 0 and curves with a > 0, b > 0, c >= 0.

    Paper: Cai et al., arXiv:2202.01327v2, Sec. 3-4, the learning curve a n^-b + c, eq. [unverified].
    """
    n = check_array(n, "n", nonempty=False)
    if bool((n <= 0).any()):
        raise ValueError("n (sample sizes) must be positive: e(0) is infinite")
    curves = Curves(a, b, c)
    return _curve(n, curves.a, curves.b, curves.c)


def _curve(n: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return a * n ** (-b) + c


# Greedy adds one sample per step: at most budget / min(cost) steps, each O(G). Beyond this many it would run for
# minutes; pass larger costs (a sample unit of several items) to allocate a larger budget.
MAX_GREEDY_STEPS = 10**6


def _check(
    curves: Curves, costs: np.ndarray, budget: float, weights: np.ndarray | None, n_min: int, greedy: bool = True
) -> tuple:
    check_instance(curves, Curves, "curves")
    costs = check_array(costs, "costs", 1)
    w = np.ones_like(costs) if weights is None else check_array(weights, "weights", 1)
    budget = check_number(budget, "budget")
    if costs.shape != curves.a.shape or w.shape != costs.shape:
        raise ValueError(f"costs and weights must have shape {curves.a.shape}")
    if bool((costs <= 0).any() or (w <= 0).any()):
        raise ValueError("costs and weights must be positive")
    if n_min < 1:
        raise ValueError(f"n_min must be at least 1 (e(0) is infinite), got {n_min}")
    floor = float(costs.sum() * n_min)
    if budget < floor:
        raise ValueError(f"budget {budget:g} is below the cost of n_min = {n_min} sample(s) per group ({floor:g})")
    if greedy and (budget - floor) / costs.min() > MAX_GREEDY_STEPS:
        raise ValueError(
            f"budget {budget:g} buys over MAX_GREEDY_STEPS = {MAX_GREEDY_STEPS} samples at the smallest cost "
            f"{costs.min():g}; scale the costs up (or raise refimpl.selection.allocation.MAX_GREEDY_STEPS)"
        )
    return costs, w


def greedy_allocation(
    curves: Curves, costs: np.ndarray, budget: float, *, weights: np.ndarray | None = None, n_min: int = 1
) -> np.ndarray:
    """Integer n (G,): from n_min each, add the sample of largest w (e(n) - e(n + 1)) / kappa while it fits.

    Paper: Cai et al., arXiv:2202.01327v2, Sec. 3-4; greedy marginal gain per cost, eq. [unverified].
    """
    costs, w = _check(curves, costs, budget, weights, check_integer(n_min, "n_min"))
    n = np.full(costs.size, n_min, dtype=np.int64)
    left = budget - float(costs @ n)
    while True:
        ratio = w * (curves(n) - curves(n + 1)) / costs  # marginal gain per cost of each group's next sample
        g = int(np.argmax(ratio))
        if costs[g] > left + 1e-12 * budget:
            return n
        n[g] += 1
        left -= costs[g]


def kkt_allocation(
    curves: Curves, costs: np.ndarray, budget: float, *, weights: np.ndarray | None = None, n_min: float = 1.0
) -> tuple[np.ndarray, float]:
    """The continuous optimum n (G,) and its multiplier lambda: n_g = max(n_min, (w a b / (lambda kappa))^(1/(b+1)))
    with sum kappa n = budget (bisection on log lambda to float64 resolution).

    Paper: Cai et al., arXiv:2202.01327v2, Sec. 3-4; the KKT conditions of the convex problem, derived here, eq.
    [unverified].
    """
    n_min = check_number(n_min, "n_min")
    costs, w = _check(curves, costs, budget, weights, int(np.ceil(n_min)), greedy=False)

    def n_of(lam: float) -> np.ndarray:
        return np.maximum(n_min, (w * curves.a * curves.b / (lam * costs)) ** (1.0 / (curves.b + 1.0)))

    lo, hi = -60.0, 60.0  # log lambda: spend(lo) > budget > spend(hi) for any sane data
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(costs @ n_of(np.exp(mid))) > budget:
            lo = mid
        else:
            hi = mid
    lam = float(np.exp(0.5 * (lo + hi)))
    return n_of(lam), lam


def _fit(n: np.ndarray, err: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """Least squares for (a, b, c) of one group's observations, a in (0, inf), b in (0.05, 3), c in [0, 1]."""
    res = least_squares(lambda p: p[0] * n ** (-p[1]) + p[2] - err, x0, bounds=([1e-9, 0.05, 0.0], [np.inf, 3.0, 1.0]))
    return res.x


@dataclass
class SequentialResult:
    """The final allocation, the allocation after each round and the curves fitted in each adaptive round.

    Helper, no paper equation: the record of ``sequential_allocation``.
    """

    n: np.ndarray  # final allocation (G,)
    history: list[np.ndarray]  # allocation after each round
    fitted: list[Curves]  # fitted curves after each round


def sequential_allocation(
    truth: Curves,
    costs: np.ndarray,
    budget: float,
    *,
    batch: float,
    noise: float,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    pilot_rounds: int = 3,
) -> SequentialResult:
    """Spend ``budget`` in rounds of about ``batch`` cost without knowing ``truth``.

    Round r observes e_g(n_g) + noise_g with sd ``noise`` / sqrt(n_g) (a held-out estimate whose precision grows
    with the group), fits each group's curve to all its observations so far, and allocates the next batch greedily
    on the fitted curves; the first ``pilot_rounds`` rounds split the batch in equal cost shares.

    Paper: Cai et al., arXiv:2202.01327v2, Sec. 3-4, the adaptive strategy in its simplest form, eq. [unverified].
    """
    check_instance(truth, Curves, "truth")
    costs, w = _check(truth, costs, budget, weights, 1)
    batch, noise = check_number(batch, "batch"), check_number(noise, "noise")
    if batch <= 0 or noise < 0:
        raise ValueError(f"batch must be positive and noise non-negative, got batch = {batch}, noise = {noise}")
    check_generator(rng)
    pilot_rounds = check_integer(pilot_rounds, "pilot_rounds", 0)
    G = costs.size
    n = np.ones(G, dtype=np.int64)
    obs_n: list[list[float]] = [[] for _ in range(G)]
    obs_e: list[list[float]] = [[] for _ in range(G)]
    params = np.tile([1.0, 0.5, 0.0], (G, 1))
    history, fitted = [], []
    spent = float(costs @ n)
    r = 0
    while spent + costs.min() <= budget:
        e = truth(n) + noise / np.sqrt(n) * rng.standard_normal(G)
        for g in range(G):
            obs_n[g].append(float(n[g]))
            obs_e[g].append(float(e[g]))
        step = min(batch, budget - spent)
        if r < pilot_rounds:
            add = np.floor(step / G / costs).astype(np.int64)
        else:
            for g in range(G):
                params[g] = _fit(np.array(obs_n[g]), np.array(obs_e[g]), params[g])
            est = Curves(params[:, 0], params[:, 1], params[:, 2])
            target = greedy_allocation(est, costs, spent + step, weights=w, n_min=1)
            add = np.maximum(target - n, 0)
            while float(costs @ add) > step + 1e-9:  # the target may want to move samples back: trim the largest
                add[int(np.argmax(add * costs))] -= 1
            fitted.append(est)
        if not add.any():
            if r >= pilot_rounds:  # the fitted greedy allocation is reached: stop, as the oracle greedy does
                break
            add[int(np.argmin(costs))] = 1  # a pilot share too small for any group: one sample of the cheapest
        n = n + add
        spent = float(costs @ n)
        history.append(n.copy())
        r += 1
    return SequentialResult(n, history, fitted)
