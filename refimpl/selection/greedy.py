"""Greedy selection of diverse subsets: GME (maximum entropy), Deita (score-first, threshold) and MIG (information
on a label graph), with brute force for small instances (numpy, float64).

* GME (Delmas, Wysocka & Freitas, arXiv:2311.06364v2, Sec. 3, and the README of
  github.com/idiap/gme-sampler): items carry entities of N categories V_1..V_N; for a subset S,
  P_S(e) = (# relations of S involving e) / (# relations of S), H_S(V_j) its Shannon entropy. The greedy step adds
  d* = argmin_d || (H_{S+d}(V_j))_j - (log |V_j|)_j ||_2 ("dutopia": distance to the utopian point of maximal
  entropies) or argmax_d sum_j H_{S+d}(V_j) ("sum"). The approximate variant scores only k random candidates;
  its pick is in the global top n with probability 1 - C(N - n, k) / C(N, k) (README, "Additional information").
  Sum of entropies is neither monotone nor submodular (``gme_counterexample``), and greedy can end far below
  (1 - 1/e) of the optimum (``gme_greedy_counterexample``).
* Deita (Liu et al., arXiv:2312.15685v2, Sec. 3.1, Algorithm 1; code src/deita/selection/filter/base.py): sort by
  score (sum over turns of complexity x quality), walk down the list and accept a sample unless its cosine
  similarity to some accepted sample exceeds tau (the code rejects on similarity > tau, so accepted pairs have
  similarity <= tau); stop at n accepted.
* MIG (Chen et al., arXiv:2504.13835v1, Sec. 3): item i carries a label vector x_i >= 0 (its quality score spread
  over its labels), information propagates on the label graph by a column-normalised weighted adjacency P
  (off-diagonal weights scaled by ``prop_weight``), and the information of S is E(S) = sum_l phi((sum_{i in S}
  x_i P)_l) with phi concave and non-decreasing: (x + a)^b, 0 < b <= 1, or 1 - exp(-alpha x). A concave function of
  a non-negative modular function is monotone submodular, so greedy on the exact gain reaches at least (1 - 1/e)
  of the optimum (Nemhauser, Wolsey & Fisher 1978). MIG (Eqs. 10-11, Algorithm 1, and its code) ranks candidates
  by the first-order gain grad phi(x_S) . x_i P instead of the exact gain (``gain="gradient"``), which carries no
  such guarantee.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from refimpl._validation import check_array, check_generator, check_integer, check_number

__all__ = [
    "approx_top_n_probability",
    "brute_force_max",
    "deita_scores",
    "deita_select",
    "gme_counterexample",
    "gme_entropies",
    "gme_greedy",
    "gme_greedy_counterexample",
    "greedy_max",
    "mig_information",
    "mig_item_vectors",
    "mig_propagation",
    "mig_random_instance",
    "mig_select",
    "random_relation_table",
]


# --- GME: greedy maximum entropy -----------------------------------------------------------------------------


def _check_counts(counts: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(counts, str) or not isinstance(counts, Sequence):
        raise TypeError(f"counts must be a list of (n_items, |V_j|) arrays, got {type(counts).__name__}")
    out = [check_array(c, f"counts[{j}]") for j, c in enumerate(counts)]
    if not out or any(c.ndim != 2 or c.shape[0] != out[0].shape[0] for c in out):
        raise ValueError("counts must be a non-empty list of (n_items, |V_j|) arrays with one n_items")
    if any(bool((c < 0).any()) for c in out):
        raise ValueError("counts must be non-negative")
    return out


def _check_subset(subset: Sequence[int], n_items: int) -> list[int]:
    """``subset`` as a list of distinct item indices in [0, n_items)."""
    if isinstance(subset, str) or not isinstance(subset, Sequence | np.ndarray):
        raise TypeError(f"subset must be a sequence of item indices, got {type(subset).__name__}")
    idx = [check_integer(i, "subset", 0, n_items - 1) for i in subset]
    if len(set(idx)) != len(idx):
        raise ValueError(f"subset must not repeat an item, got {idx}")
    return idx


def gme_entropies(counts: Sequence[np.ndarray], subset: Sequence[int]) -> np.ndarray:
    """H_S(V_j) for every category j (nats): counts[j][d, e] = # relations of item d involving entity e of V_j.

    Paper: Delmas et al. (GME), arXiv:2311.06364v2, Sec. 3, the entropies H_S(V_j), eq. [unverified].
    """
    counts = _check_counts(counts)
    idx = _check_subset(subset, counts[0].shape[0])
    out = []
    for c in counts:
        tot = c[idx].sum(0)
        p = tot[tot > 0] / tot.sum() if tot.sum() > 0 else np.zeros(0)
        out.append(float(-(p * np.log(p)).sum()))
    return np.array(out)


def approx_top_n_probability(N: int, n: int, k: int) -> float:
    """P(the best of k items drawn without replacement from N is in the top n) = 1 - C(N - n, k) / C(N, k).

    Paper: Delmas et al. (GME), arXiv:2311.06364v2, Sec. 3 README (github.com/idiap/gme-sampler), 1 - C(N-n, k)/C(N,
    k), eq. [unverified].
    """
    N, n, k = check_integer(N, "N"), check_integer(n, "n"), check_integer(k, "k")
    if not (1 <= k <= N and 0 <= n <= N):
        raise ValueError(f"need 1 <= k <= N and 0 <= n <= N, got N = {N}, n = {n}, k = {k}")
    # C(N - n, k) / C(N, k) = prod_{i < n} (N - k - i) / (N - i): no huge binomials for N ~ 1e5
    i = np.arange(n, dtype=np.float64)
    return float(-np.expm1(np.sum(np.log1p(-k / (N - i))))) if n <= N - k else 1.0


def gme_greedy(
    counts: Sequence[np.ndarray],
    n_select: int,
    *,
    selector: str = "dutopia",
    binarised: bool = False,
    approx: int = 0,
    rng: np.random.Generator | None = None,
) -> tuple[list[int], np.ndarray]:
    """The GME sampler: n_select items in order of selection and the entropies (n_select, N) after each step.

    ``selector``: "dutopia" (distance to (log |V_j|)_j, |V_j| the entities present in the whole set) or "sum".
    ``binarised``: count each entity once per item. ``approx`` = k > 0 scores only k random remaining items per
    step (drawn with ``rng``). Ties go to the lowest index.

    Paper: Delmas et al. (GME), arXiv:2311.06364v2, Sec. 3, the greedy step (dutopia or sum), eq. [unverified].
    """
    counts = _check_counts(counts)
    n_items = counts[0].shape[0]
    check_integer(n_select, "n_select", 1, n_items)
    approx = check_integer(approx, "approx")
    if rng is not None:
        check_generator(rng)
    if selector not in ("dutopia", "sum"):
        raise ValueError(f"selector must be 'dutopia' or 'sum', got {selector!r}")
    if approx < 0:
        raise ValueError(f"approx must be >= 0, got {approx}")
    if binarised:
        counts = [np.minimum(c, 1.0) for c in counts]
    utopia = np.array([math.log(max(int((c.sum(0) > 0).sum()), 1)) for c in counts])
    rng = rng if rng is not None else np.random.default_rng(0)
    totals = [np.zeros(c.shape[1]) for c in counts]  # entity counts of S per category
    chosen: list[int] = []
    history = []
    remaining = np.arange(n_items)
    for _ in range(n_select):
        cand = (
            remaining
            if not approx or approx >= remaining.size
            else np.sort(rng.choice(remaining, approx, replace=False))
        )
        H = np.zeros((cand.size, len(counts)))
        for j, c in enumerate(counts):
            tot = totals[j][None, :] + c[cand]  # (candidates, |V_j|): S + d
            mass = tot.sum(1, keepdims=True)
            p = np.divide(tot, mass, out=np.zeros_like(tot), where=mass > 0)
            H[:, j] = -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)
        score = np.linalg.norm(H - utopia, axis=1) if selector == "dutopia" else -H.sum(1)
        best = int(np.argmin(score))
        d = int(cand[best])
        chosen.append(d)
        history.append(H[best])
        for j, c in enumerate(counts):
            totals[j] += c[d]
        remaining = remaining[remaining != d]
    return chosen, np.array(history)


def gme_counterexample() -> tuple[list[np.ndarray], dict[str, float]]:
    """One category, three items with entities a, a, b: sum-of-entropies is not monotone (adding a second a to
    {a, b} lowers H) and not submodular (b gains log 2 after {a} but 0 on its own).

    Helper, no paper equation: a three-item instance showing GME's objective is neither monotone nor submodular.
    """
    counts = [np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])]
    H = lambda s: float(gme_entropies(counts, s).sum())  # noqa: E731
    facts = {
        "H({a, b})": H([0, 2]),
        "H({a, b, a})": H([0, 1, 2]),
        "gain of b on {}": H([2]) - H([]),
        "gain of b on {a}": H([0, 2]) - H([0]),
    }
    return counts, facts


def gme_greedy_counterexample(M: float = 50.0) -> tuple[list[np.ndarray], float, float]:
    """Greedy on sum-of-entropies below (1 - 1/e) of the optimum: one category, items {a, b}, {c x M}, {e x M}.

    Greedy takes {a, b} first (entropy log 2, the others 0), then any heavy item: H(1, 1, M) -> 0 as M grows,
    while {c x M, e x M} has entropy log 2. Returns (counts, greedy value, optimum) for k = 2.

    Helper, no paper equation: an instance where greedy on GME's sum falls below (1 - 1/e).
    """
    counts = [np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, M, 0.0], [0.0, 0.0, 0.0, M]])]
    chosen, _ = gme_greedy(counts, 2, selector="sum")
    value = float(gme_entropies(counts, chosen).sum())
    return counts, value, float(gme_entropies(counts, [1, 2]).sum())


# --- Deita: score-first, diversity-aware greedy --------------------------------------------------------------


def deita_scores(complexity: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Deita's evol score: sum over turns of complexity x quality, (n, turns) -> (n,) (Liu et al. Sec. 3.1).

    Paper: Liu et al. (Deita), arXiv:2312.15685v2, Sec. 3.1, the evol score, eq. [unverified].
    """
    c, q = check_array(complexity, "complexity"), check_array(quality, "quality")
    if c.shape != q.shape:
        raise ValueError(f"complexity and quality must have one shape, got {c.shape} and {q.shape}")
    if c.ndim not in (1, 2):
        raise ValueError(f"complexity and quality must have shape (n,) or (n, turns), got {c.shape}")
    score = (c * q).reshape(c.shape[0], -1).sum(1)
    if not np.isfinite(score).all():
        raise ValueError("complexity x quality overflows float64: rescale complexity or quality")
    return score


def deita_select(
    scores: np.ndarray, embeddings: np.ndarray, tau: float, n_select: int | None = None, *, batch_size: int = 1
) -> list[int]:
    """Indices accepted by Deita's filter, in acceptance order (descending score; ties by index).

    A candidate is rejected if its cosine similarity to an accepted sample exceeds tau. ``batch_size`` > 1
    reproduces the official code's batching, which also rejects a candidate similar (> tau) to an earlier
    candidate of the same batch even if that one was itself rejected.

    Paper: Liu et al. (Deita), arXiv:2312.15685v2, Sec. 3.1, Algorithm 1, with the Repr Filter of Sec. 2.5 (the
    threshold filter), eq. [unverified].
    """
    s = check_array(scores, "scores", 1)
    e = check_array(embeddings, "embeddings", 2)
    tau = check_number(tau, "tau", 0.0, 1.0)
    if e.shape[0] != s.shape[0]:
        raise ValueError(f"embeddings must have shape (n = {s.shape[0]}, dim), got {e.shape}")
    if n_select is not None:
        check_integer(n_select, "n_select", 1)
    check_integer(batch_size, "batch_size", 1)
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    if not (np.isfinite(norm).all() and (norm > 0).all()):
        raise ValueError("embeddings must have finite, non-zero rows (cosine similarity needs a direction)")
    unit = e / norm
    order = np.argsort(-s, kind="stable")
    accepted = [int(order[0])]
    for start in range(1, order.size, batch_size):
        batch = order[start : start + batch_size]
        sim_acc = unit[batch] @ unit[accepted].T  # (b, accepted)
        reject = (sim_acc > tau).any(1)
        sim_cur = np.tril(unit[batch] @ unit[batch].T, -1)  # earlier members of the same batch
        reject |= (sim_cur > tau).any(1)
        accepted.extend(int(i) for i in batch[~reject])
        if n_select is not None and len(accepted) >= n_select:
            break
    return accepted[:n_select] if n_select is not None else accepted


# --- MIG: information on a label graph -----------------------------------------------------------------------


def mig_propagation(W: np.ndarray, prop_weight: float = 1.0) -> np.ndarray:
    """P: the label graph's weighted adjacency W (with its diagonal), off-diagonal scaled by prop_weight, each
    column normalised to sum one (MIG code ``calc_prop_matrix``).

    Paper: Chen et al. (MIG), arXiv:2504.13835v1, Sec. 3.2, label-graph propagation, Eqs. 6-7 (P here is the
    transpose of the paper's A: (A e_i)^T = x_i P).
    """
    W = check_array(W, "W", 2)
    if W.shape[0] != W.shape[1] or bool((W < 0).any()):
        raise ValueError("W must be a square non-negative matrix")
    prop_weight = check_number(prop_weight, "prop_weight", 0.0)
    M = np.where(np.eye(W.shape[0], dtype=bool), W, prop_weight * W)
    col = M.sum(0)
    if bool((col <= 0).any()):
        raise ValueError("every label needs a positive diagonal or edge weight (a column of W sums to 0)")
    return M / col


def mig_item_vectors(
    labels: Sequence[Sequence[int]], scores: np.ndarray, n_labels: int, norm: bool = True
) -> np.ndarray:
    """x_i: item i's quality score on each of its labels (divided by its number of labels if ``norm``).

    Paper: Chen et al. (MIG), arXiv:2504.13835v1, Sec. 3.2, item label vectors, Eqs. 4-5 (e_i = s_i v_i, the
    ``norm=False`` case).
    """
    n_labels = check_integer(n_labels, "n_labels", 1)
    scores = check_array(scores, "scores", 1, nonempty=False)
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) != scores.size:
        raise ValueError(f"labels must be a list of {scores.size} label lists (one per score)")
    X = np.zeros((len(labels), n_labels))
    for i, (labs, s) in enumerate(zip(labels, scores, strict=True)):
        if s < 0:
            raise ValueError(f"scores must be non-negative, got {s} for item {i}")
        if isinstance(labs, str) or not isinstance(labs, Sequence | np.ndarray) or len(labs) == 0:
            raise ValueError(f"labels[{i}] must be a non-empty list of label indices")
        for lab in labs:
            X[i, check_integer(lab, "labels", 0, n_labels - 1)] = s / len(labs) if norm else s
    return X


def _phi(kind: str, a: float, b: float, alpha: float) -> tuple[Callable, Callable]:
    a, b, alpha = check_number(a, "a"), check_number(b, "b"), check_number(alpha, "alpha")
    if kind == "pow":
        if not (0 < b <= 1 and a > 0):
            raise ValueError(f"phi 'pow' = (x + a)^b needs a > 0 and 0 < b <= 1 to be concave, got a = {a}, b = {b}")
        return (lambda x: (x + a) ** b), (lambda x: b * (x + a) ** (b - 1))
    if kind == "exp":
        if alpha <= 0:
            raise ValueError(f"phi 'exp' = 1 - exp(-alpha x) needs alpha > 0, got {alpha}")
        return (lambda x: -np.expm1(-alpha * x)), (lambda x: alpha * np.exp(-alpha * x))
    raise ValueError(f"phi must be 'pow' or 'exp', got {kind!r}")


def _check_xp(XP: np.ndarray) -> np.ndarray:
    XP = check_array(XP, "XP", 2)
    if bool((XP < 0).any()):
        raise ValueError("XP must be non-negative (scores and propagation weights are)")
    return XP


def mig_information(
    XP: np.ndarray, subset: Sequence[int], *, phi: str = "pow", a: float = 1e-6, b: float = 0.8, alpha: float = 1.0
) -> float:
    """E(S) = sum_l phi((sum_{i in S} x_i P)_l) - sum_l phi(0), so E(empty) = 0; XP = X @ P (n, n_labels).

    Paper: Chen et al. (MIG), arXiv:2504.13835v1, Sec. 3.2, the information E(S), Eq. 8; the two phi are Eqs. 12-13
    (Sec. 4.3).
    """
    XP = _check_xp(XP)
    f, _ = _phi(phi, a, b, alpha)
    idx = _check_subset(subset, XP.shape[0])
    v = XP[idx].sum(0) if idx else np.zeros(XP.shape[1])
    return float(f(v).sum() - f(np.zeros(XP.shape[1])).sum())


def mig_select(
    XP: np.ndarray,
    n_select: int,
    *,
    gain: str = "exact",
    phi: str = "pow",
    a: float = 1e-6,
    b: float = 0.8,
    alpha: float = 1.0,
) -> list[int]:
    """Greedy MIG: ``gain="exact"`` adds argmax E(S + i) - E(S); ``"gradient"`` (the official code) adds
    argmax grad phi(x_S) . (x_i P). Ties go to the lowest index.

    Paper: Chen et al. (MIG), arXiv:2504.13835v1, Sec. 3.3: the exact gain is Eq. 9, the first-order gain Eqs. 10-11
    and Algorithm 1 (the paper's own approximation, which its code implements).
    """
    XP = _check_xp(XP)
    check_integer(n_select, "n_select", 1, XP.shape[0])
    if gain not in ("exact", "gradient"):
        raise ValueError(f"gain must be 'exact' or 'gradient', got {gain!r}")
    f, df = _phi(phi, a, b, alpha)
    v = np.zeros(XP.shape[1])
    free = np.ones(XP.shape[0], dtype=bool)
    chosen = []
    for _ in range(n_select):
        g = (f(v + XP).sum(1) - f(v).sum()) if gain == "exact" else XP @ df(v)
        g = np.where(free, g, -np.inf)
        i = int(np.argmax(g))
        chosen.append(i)
        free[i] = False
        v = v + XP[i]
    return chosen


def random_relation_table(
    n_items: int, sizes: Sequence[int], *, max_relations: int = 5, zipf: float = 0.0, seed: int = 0
) -> list[np.ndarray]:
    """Synthetic GME counts: item d reports 1..max_relations - 1 relations, each naming one entity per category,
    drawn with probability proportional to rank^-zipf (0: uniform).

    Helper, no paper equation: synthetic GME relation counts.
    """
    n_items = check_integer(n_items, "n_items", 0)
    if isinstance(sizes, str) or not isinstance(sizes, Sequence) or not sizes:
        raise TypeError(f"sizes must be a non-empty list of category sizes, got {type(sizes).__name__}")
    sizes = [check_integer(s, "sizes", 1) for s in sizes]
    max_relations = check_integer(max_relations, "max_relations", 2)
    zipf = check_number(zipf, "zipf", 0.0)
    rng = np.random.default_rng(check_integer(seed, "seed", 0))
    laws = [1.0 / np.arange(1, s + 1) ** zipf for s in sizes]
    counts = [np.zeros((n_items, s)) for s in sizes]
    for d in range(n_items):
        for _ in range(rng.integers(1, max_relations)):
            for c, w in zip(counts, laws, strict=True):
                c[d, rng.choice(w.size, p=w / w.sum())] += 1
    return counts


def mig_random_instance(seed: int, n_items: int = 9, n_labels: int = 6, prop_weight: float = 0.7) -> np.ndarray:
    """Synthetic MIG data XP = X P: 1-2 labels per item, scores U(0.5, 5), a sparse random label graph.

    Helper, no paper equation: a synthetic MIG instance.
    """
    n_items, n_labels = check_integer(n_items, "n_items", 1), check_integer(n_labels, "n_labels", 2)
    rng = np.random.default_rng(check_integer(seed, "seed", 0))
    W = np.triu(rng.uniform(0, 1, (n_labels, n_labels)) * (rng.uniform(size=(n_labels, n_labels)) < 0.4), 1)
    labels = [rng.choice(n_labels, rng.integers(1, 3), replace=False).tolist() for _ in range(n_items)]
    X = mig_item_vectors(labels, rng.uniform(0.5, 5, n_items), n_labels)
    return X @ mig_propagation(W + W.T + np.eye(n_labels), prop_weight=prop_weight)


# --- generic greedy and brute force ---------------------------------------------------------------------------


#: Subsets ``brute_force_max`` enumerates at most (one call of f each).
MAX_SUBSETS = 10**6


def _check_set_function(f: Callable[[list[int]], float], n_items: int, k: int) -> None:
    if not callable(f):
        raise TypeError(f"f must be a function of a list of item indices, got {type(f).__name__}")
    check_integer(k, "k", 0, check_integer(n_items, "n_items", 0))


def greedy_max(f: Callable[[list[int]], float], n_items: int, k: int) -> list[int]:
    """Plain greedy: k times add the item of largest f(S + i) (ties to the lowest index).

    Helper, no paper equation: plain greedy, the rule of Nemhauser, Wolsey & Fisher (1978).
    """
    _check_set_function(f, n_items, k)
    chosen: list[int] = []
    for _ in range(k):
        best = max((i for i in range(n_items) if i not in chosen), key=lambda i: (f([*chosen, i]), -i))
        chosen.append(best)
    return chosen


def brute_force_max(f: Callable[[list[int]], float], n_items: int, k: int) -> tuple[float, list[int]]:
    """max over all k-subsets of f, by enumeration (small n_items only: at most ``MAX_SUBSETS`` subsets).

    Helper, no paper equation: the exact optimum by enumeration, the reference for greedy.
    """
    _check_set_function(f, n_items, k)
    if math.comb(n_items, k) > MAX_SUBSETS:
        raise ValueError(
            f"binom(n_items = {n_items}, k = {k}) = {math.comb(n_items, k)} subsets exceed MAX_SUBSETS = "
            f"{MAX_SUBSETS}; raise refimpl.selection.greedy.MAX_SUBSETS to enumerate them anyway"
        )
    best = max(itertools.combinations(range(n_items), k), key=lambda s: f(list(s)))
    return f(list(best)), list(best)
