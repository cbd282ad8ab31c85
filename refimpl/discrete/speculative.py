"""Multi-draft speculative decoding: the optimal acceptance rate and verification algorithms, exactly.

A draft model proposes n tokens (x_1, ..., x_n) from a draft law P_draft built from q; a verification
algorithm outputs a token y whose law must be the target p. A verification algorithm is a coupling pi
of P_draft (on draft tuples) and p (on tokens); it accepts when y is one of the drafts. Hu et al.
(arXiv:2502.18779v1) write the best acceptance rate as the optimal-transport linear program

    alpha* = max_pi  sum_{x, y} pi(x, y) 1[y in x]   s.t.  sum_y pi(x, y) = P_draft(x),  sum_x pi(x, y) = p(y),

and by duality (a max-flow / min-cut argument on the bipartite graph draft set -> token) as a minimum
over token subsets H:

    alpha* = 1 + min_H [ p(H) - P_draft(every draft in H) ].                                       (**)

One draft gives 1 - TV(p, q). Only the set of distinct drafts matters, so the LP here runs over
(draft set, token) pairs. With replacement (i.i.d. drafts) P(every draft in H) = q(H)^n, and the
minimum is attained on a prefix of the tokens sorted by p_i / q_i (``optimal_acceptance_sorted``).

Verification algorithms from the literature (each given as its exact conditional law of y given the
drafts, so their output law and acceptance rate are computed by enumeration):

* ``rrs_kernel``: recursive rejection sampling -- speculative sampling against the residual, draft by
  draft; with i.i.d. drafts (SpecInfer, Miao et al. arXiv:2305.09781v4; Yang et al. arXiv:2401.06706) or
  drafts without replacement (Jeon et al. arXiv:2402.14160v2), where each next draft's law excludes the
  rejected tokens.
* ``kseq_kernel``: SpecTr's K-SEQ (Sun et al. arXiv:2310.15141v2) for i.i.d. drafts: accept draft i with
  probability min(1, p/(rho q)), rho solving rho beta(rho) = 1 - (1 - beta(rho))^n.
* ``optimal_kernel``: the LP coupling itself, which attains alpha*.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy.optimize import brentq, linprog

from refimpl._validation import as_real_array, check_integer

__all__ = [
    "DRAFT_METHODS",
    "MAX_DRAFT_TUPLES",
    "MAX_SUBSETS",
    "acceptance_rate",
    "check_law",
    "draft_law",
    "kseq_kernel",
    "optimal_acceptance_lp",
    "optimal_acceptance_sorted",
    "optimal_acceptance_subsets",
    "optimal_kernel",
    "output_law",
    "rrs_kernel",
    "set_law",
    "single_draft_kernel",
]

DRAFT_METHODS = ("with_replacement", "without_replacement")

#: Exact enumeration limits: ``draft_law`` lists V^n (or V!/(V-n)!) draft tuples and ``optimal_acceptance_subsets``
#: visits 2^V token subsets; beyond these counts a call takes minutes or exhausts memory. Pass ``max_count`` to lift.
MAX_DRAFT_TUPLES = 2**20
MAX_SUBSETS = 2**20
Kernel = Callable[[np.ndarray, np.ndarray, tuple[int, ...]], np.ndarray]


def check_law(p: object, name: str = "p") -> np.ndarray:
    """Return p as a float64 probability vector; raise ValueError if negative or not summing to 1.

    Helper, no paper equation: validation of a probability vector.
    """
    p = as_real_array(p, name)  # complex, bool, non-numeric or non-finite entries raise here
    if p.ndim != 1 or p.size < 2:
        raise ValueError(f"{name} must be a 1-D vector of at least 2 probabilities, got shape {p.shape}")
    if np.any(p < 0):
        raise ValueError(f"{name} must be non-negative; smallest entry is {p.min():g}")
    if abs(p.sum() - 1.0) > 1e-9:
        raise ValueError(f"{name} must sum to 1 (within 1e-9); it sums to {p.sum():.12g}")
    return p


def _check_method(method: str, n: int, V: int) -> None:
    if not isinstance(method, str) or method not in DRAFT_METHODS:
        raise ValueError(f"method must be one of {DRAFT_METHODS}, got {method!r}")
    check_integer(n, "n (the number of drafts)", 1)
    if method == "without_replacement" and n > V:
        raise ValueError(f"cannot draw n = {n} drafts without replacement from {V} tokens")


def _check_same_size(p: np.ndarray, q: np.ndarray) -> None:
    if p.size != q.size:
        raise ValueError(f"p and q must be laws on the same tokens (the same size); got sizes {p.size} and {q.size}")


def _check_drafts(drafts: tuple[int, ...], q: np.ndarray) -> tuple[int, ...]:
    """``drafts`` as a non-empty tuple of token indices that q can propose (q > 0)."""
    if isinstance(drafts, str) or not isinstance(drafts, tuple | list) or not drafts:
        raise TypeError(f"drafts must be a non-empty tuple of token indices, got {type(drafts).__name__}")
    drafts = tuple(check_integer(x, "drafts", 0, q.size - 1) for x in drafts)
    if any(q[x] <= 0 for x in drafts):
        raise ValueError(f"drafts {drafts} include a token that q never proposes (q = 0)")
    return drafts


def draft_law(
    q: np.ndarray, n: int, method: str = "with_replacement", max_count: int = MAX_DRAFT_TUPLES
) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """All ordered draft tuples and their probabilities under q (at most ``max_count`` tuples).

    with_replacement: i.i.d., prod q(x_k). without_replacement: sequentially from q renormalised over
    the tokens not drawn yet, prod q(x_k) / (1 - q(x_1) - ... - q(x_{k-1})) (zero-probability tokens
    are never drawn).

    Paper: Hu et al., arXiv:2502.18779v1, the draft law P_draft (with or without replacement), eq. [unverified].
    """
    q = check_law(q, "q")
    _check_method(method, n, q.size)
    n = int(n)
    support = [i for i in range(q.size) if q[i] > 0]
    if method == "without_replacement" and n > len(support):
        raise ValueError(f"q has only {len(support)} tokens of positive probability, fewer than n = {n}")
    count = len(support) ** n if method == "with_replacement" else math.perm(len(support), n)
    if count > max_count:
        raise ValueError(
            f"{count} draft tuples ({len(support)} tokens, n = {n}) exceed max_count = {max_count}; "
            "pass a larger max_count to enumerate them anyway"
        )
    tuples = list(
        itertools.product(support, repeat=n) if method == "with_replacement" else itertools.permutations(support, n)
    )
    probs = np.empty(len(tuples))
    for i, x in enumerate(tuples):
        pr, used = 1.0, 0.0
        for tok in x:
            pr *= q[tok] / (1.0 - used) if method == "without_replacement" else q[tok]
            used += q[tok]
        probs[i] = pr
    return tuples, probs


def set_law(q: np.ndarray, n: int, method: str = "with_replacement") -> dict[int, float]:
    """The law of the set of distinct drafts, as {bitmask of the set: probability}.

    Helper, no paper equation: the law of the set of distinct drafts, all that the LP needs (Hu et al.,
    arXiv:2502.18779v1).
    """
    tuples, probs = draft_law(q, n, method)
    out: dict[int, float] = {}
    for x, pr in zip(tuples, probs, strict=True):
        key = sum(1 << tok for tok in set(x))
        out[key] = out.get(key, 0.0) + pr
    return out


def optimal_acceptance_lp(
    p: np.ndarray, q: np.ndarray, n: int, method: str = "with_replacement"
) -> tuple[float, dict[int, np.ndarray]]:
    """alpha* by the linear program over couplings, solved with scipy's HiGHS.

    Returns (alpha*, kernel) with kernel[set] = pi(set, .) / P(set), the optimal conditional law of the
    output given the draft set.

    Paper: Hu et al., arXiv:2502.18779v1, the optimal-transport LP for alpha*, eq. [unverified].
    """
    p = check_law(p)
    q = check_law(q, "q")
    _check_same_size(p, q)
    sets = set_law(q, n, method)
    keys = list(sets)
    S, V = len(keys), p.size
    reward = np.array([[1.0 if (k >> y) & 1 else 0.0 for y in range(V)] for k in keys])  # 1[y in set]
    # variables pi(s, y), row-major; equality constraints: row sums = P(s), column sums = p(y)
    A_rows = np.kron(np.eye(S), np.ones((1, V)))
    A_cols = np.kron(np.ones((1, S)), np.eye(V))
    res = linprog(
        -reward.ravel(),
        A_eq=np.vstack([A_rows, A_cols]),
        b_eq=np.concatenate([[sets[k] for k in keys], p]),
        bounds=(0, None),
        method="highs",
        options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    )
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed: {res.message}")
    pi = res.x.reshape(S, V)
    kernel = {k: pi[i] / sets[k] for i, k in enumerate(keys)}
    return float(-res.fun), kernel


def _prob_all_in(q: np.ndarray, n: int, method: str) -> Callable[[int], float]:
    """H (bitmask) -> P(every draft lies in H)."""
    sets = set_law(q, n, method)
    return lambda H: sum(pr for k, pr in sets.items() if k & ~H == 0)


def optimal_acceptance_subsets(
    p: np.ndarray, q: np.ndarray, n: int, method: str = "with_replacement", max_count: int = MAX_SUBSETS
) -> float:
    """alpha* = 1 + min_H [p(H) - P(every draft in H)] over all 2^V token subsets H (formula (**)).

    Enumerates 2^V subsets: V is limited to log2(max_count) tokens.

    Paper: Hu et al., arXiv:2502.18779v1, the dual as a minimum over token subsets, eq. [unverified].
    """
    p = check_law(p)
    q = check_law(q, "q")
    _check_same_size(p, q)
    if 2**p.size > max_count:
        raise ValueError(f"2^{p.size} token subsets exceed max_count = {max_count}; pass a larger max_count")
    all_in = _prob_all_in(q, n, method)
    best = 0.0  # H = empty set
    for H in range(1, 1 << p.size):
        pH = sum(p[i] for i in range(p.size) if (H >> i) & 1)
        best = min(best, pH - all_in(H))
    return 1.0 + best


def optimal_acceptance_sorted(p: np.ndarray, q: np.ndarray, n: int) -> float:
    """alpha* for i.i.d. drafts in O(V log V): min of p(H) - q(H)^n over prefixes H sorted by p_i / q_i.

    For fixed q(H) = c the smallest p(H) is a fractional knapsack, filled greedily by increasing p_i/q_i;
    along that path p(H) is piecewise linear in c and -c^n is concave, so the minimum over each piece
    (hence over all H) sits at a prefix.

    Paper: Hu et al., arXiv:2502.18779v1; the prefix rule for i.i.d. drafts is proved in this module, eq.
    [unverified].
    """
    p = check_law(p)
    q = check_law(q, "q")
    with np.errstate(divide="ignore"):
        ratio = np.where(q > 0, p / np.where(q > 0, q, 1.0), np.inf)
    order = np.argsort(ratio, kind="stable")
    pH = np.concatenate([[0.0], np.cumsum(p[order])])
    qH = np.concatenate([[0.0], np.cumsum(q[order])])
    return float(1.0 + np.min(pH - np.minimum(qH, 1.0) ** n))


def single_draft_kernel(p: np.ndarray, q: np.ndarray, drafts: tuple[int, ...]) -> np.ndarray:
    """Speculative sampling on the first draft only (arXiv:2211.17192, speculative sampling).

    Paper: Leviathan et al. / Chen et al., speculative sampling (one draft), arXiv:2211.17192v2, Sec. 2.3 and
    Algorithm 1 (the rule is stated in prose there, with no equation number).
    """
    p, q = check_law(p), check_law(q, "q")
    _check_same_size(p, q)
    x = _check_drafts(drafts, q)[0]
    accept = min(1.0, p[x] / q[x])
    residual = np.maximum(p - q, 0.0)
    out = (1.0 - accept) * residual / residual.sum() if residual.sum() > 0 else np.zeros_like(p)
    out[x] += accept
    return out


def rrs_kernel(p: np.ndarray, q: np.ndarray, drafts: tuple[int, ...], method: str = "with_replacement") -> np.ndarray:
    """Recursive rejection sampling: the conditional law of the output given the drafts (x_1..x_n).

    Stage k: accept x_k with probability min(1, r_{k-1}(x_k) / q_k(x_k)); on rejection the target
    becomes r_k = norm((r_{k-1} - q_k)_+). r_0 = p; q_k = q (with replacement) or q renormalised
    without x_1..x_{k-1} (without replacement). If all drafts are rejected, draw from r_n.

    Paper: recursive rejection sampling, Miao et al. (SpecInfer) arXiv:2305.09781v4, Sec. 4.3, multi-step
    speculative sampling (VerifyStochastic in Algorithm 2; correctness Theorem 4.2, Eq. 6), and Jeon et al.
    arXiv:2402.14160v2, eq. [unverified].
    """
    p, q = check_law(p), check_law(q, "q")
    _check_same_size(p, q)
    drafts = _check_drafts(drafts, q)
    _check_method(method, len(drafts), p.size)
    out = np.zeros_like(p)
    r, qk, reach = p.copy(), q.copy(), 1.0  # reach = P(all previous drafts rejected)
    for x in drafts:
        accept = min(1.0, r[x] / qk[x])
        out[x] += reach * accept
        reach *= 1.0 - accept
        if reach <= 0.0:
            return out
        residual = np.maximum(r - qk, 0.0)
        if residual.sum() <= 1e-12:  # r = q_k: the acceptance above was 1 up to round-off; nothing is left
            return out + reach * r
        r = residual / residual.sum()
        if method == "without_replacement":
            qk = qk.copy()
            qk[x] = 0.0
            qk = qk / qk.sum() if qk.sum() > 0 else qk
    return out + reach * r


def _kseq_rho(p: np.ndarray, q: np.ndarray, n: int) -> float:
    """SpecTr's rho: the root of rho beta(rho) = 1 - (1 - beta(rho))^n, beta(rho) = sum min(q, p/rho).

    It depends on (p, q, n) only, not on the drafts: solved once per law and cached (float64 bytes as the key).
    """
    return _kseq_rho_of_bytes(p.astype(np.float64).tobytes(), q.astype(np.float64).tobytes(), n)


@lru_cache(maxsize=64)
def _kseq_rho_of_bytes(p_bytes: bytes, q_bytes: bytes, n: int) -> float:
    p, q = np.frombuffer(p_bytes), np.frombuffer(q_bytes)

    def gap(rho: float) -> float:
        beta = np.minimum(q, p / rho).sum()
        return rho * beta - (1.0 - (1.0 - beta) ** n)

    # gap(1) = (1 - beta)^n - (1 - beta) <= 0, zero for n = 1 or p = q; gap(n) >= 0 since 1 - (1 - b)^n <= n b
    if n == 1 or gap(1.0) >= -1e-15:
        return 1.0
    return float(brentq(gap, 1.0, float(n), xtol=1e-15, rtol=4 * np.finfo(float).eps))


def kseq_kernel(p: np.ndarray, q: np.ndarray, drafts: tuple[int, ...]) -> np.ndarray:
    """SpecTr K-SEQ (Sun et al. arXiv:2310.15141) for i.i.d. drafts: conditional law of the output.

    Accept x_k with probability min(1, p(x_k) / (rho q(x_k))), the first accepted wins; if none is,
    draw from the residual norm(p - min(p, rho q)).

    Paper: Sun et al. (SpecTr) arXiv:2310.15141v2, K-SEQ, eq. [unverified].
    """
    p, q = check_law(p), check_law(q, "q")
    _check_same_size(p, q)
    drafts = _check_drafts(drafts, q)
    rho = _kseq_rho(p, q, len(drafts))
    out = np.zeros_like(p)
    reach = 1.0
    for x in drafts:
        accept = min(1.0, p[x] / (rho * q[x]))
        out[x] += reach * accept
        reach *= 1.0 - accept
    residual = p - np.minimum(p, rho * q)
    if residual.sum() > 0:
        out += reach * residual / residual.sum()
    return out


def optimal_kernel(p: np.ndarray, q: np.ndarray, n: int, method: str = "with_replacement") -> Kernel:
    """The LP's optimal coupling as a verification algorithm (a kernel on draft tuples).

    Paper: Hu et al., arXiv:2502.18779v1, the LP coupling that attains alpha*, eq. [unverified].
    """
    _, kernel = optimal_acceptance_lp(p, q, n, method)
    return lambda p_, q_, drafts: kernel[sum(1 << tok for tok in set(drafts))]


def _check_kernel(kernel: Kernel) -> None:
    if not callable(kernel):
        raise TypeError(f"kernel must be a function (p, q, drafts) -> law of the output, got {type(kernel).__name__}")


def output_law(kernel: Kernel, p: np.ndarray, q: np.ndarray, n: int, method: str = "with_replacement") -> np.ndarray:
    """The exact law of the output token: sum over draft tuples of P_draft(x) kernel(x).

    Helper, no paper equation: the exact output law of a verification kernel by enumerating draft tuples.
    """
    _check_kernel(kernel)
    p = check_law(p)
    tuples, probs = draft_law(q, n, method)
    return sum(pr * kernel(p, q, x) for x, pr in zip(tuples, probs, strict=True))


def acceptance_rate(kernel: Kernel, p: np.ndarray, q: np.ndarray, n: int, method: str = "with_replacement") -> float:
    """The exact probability that the output is one of the drafts.

    Paper: Hu et al., arXiv:2502.18779v1, the acceptance rate P(y in drafts) of a kernel, by enumeration, eq.
    [unverified].
    """
    _check_kernel(kernel)
    p = check_law(p)
    tuples, probs = draft_law(q, n, method)
    return float(sum(pr * kernel(p, q, x)[list(set(x))].sum() for x, pr in zip(tuples, probs, strict=True)))
