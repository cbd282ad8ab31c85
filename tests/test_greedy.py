"""Greedy selection: GME (entropy, approximate variant), Deita (threshold filter), MIG (submodular information)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from tolerances import clt_bound, roundoff

from refimpl.selection import greedy


def _relation_table(
    seed: int, n_items: int = 10, sizes: tuple[int, ...] = (6, 4), max_rel: int = 5
) -> list[np.ndarray]:
    """Random counts: item d reports a few relations, each with one entity per category."""
    rng = np.random.default_rng(seed)
    counts = [np.zeros((n_items, s)) for s in sizes]
    for d in range(n_items):
        for _ in range(rng.integers(1, max_rel)):
            for c, s in zip(counts, sizes, strict=True):
                c[d, rng.integers(s)] += 1
    return counts


@pytest.mark.parametrize("N", [6, 9])
def test_the_approximate_pick_is_in_the_top_n_with_the_readme_probability_by_enumeration(N: int) -> None:
    """Over all k-subsets of N ranked items, the fraction whose best member is in the top n is exactly
    1 - C(N - n, k) / C(N, k)."""
    for k in range(1, N + 1):
        subsets = list(itertools.combinations(range(N), k))  # item r has rank r (0 = best)
        for n in range(N + 1):
            hits = sum(min(s) < n for s in subsets)
            assert Fraction(hits, len(subsets)) == 1 - Fraction(math.comb(N - n, k), math.comb(N, k))
            assert abs(greedy.approx_top_n_probability(N, n, k) - hits / len(subsets)) <= roundoff(8)


def test_gme_approximate_first_pick_matches_the_formula_in_frequency() -> None:
    """The approximate sampler's first pick (k random candidates of 12) lands in the exact greedy's top 3 with
    probability 1 - C(9, k) / C(12, k) (CLT bound over 1000 runs)."""
    counts = _relation_table(1, n_items=12, sizes=(8, 6), max_rel=14)
    utopia = np.array([math.log((c.sum(0) > 0).sum()) for c in counts])
    dist = [np.linalg.norm(greedy.gme_entropies(counts, [d]) - utopia) for d in range(12)]
    assert np.sort(dist)[2] < np.sort(dist)[3] - 1e-9  # no tie at the cut, so "top 3" is well defined
    top3 = set(np.argsort(dist)[:3].tolist())
    rng = np.random.default_rng(0)
    for k in (2, 5):
        runs = 1000
        hits = np.mean([greedy.gme_greedy(counts, 1, approx=k, rng=rng)[0][0] in top3 for _ in range(runs)])
        p = greedy.approx_top_n_probability(12, 3, k)
        assert abs(hits - p) <= clt_bound(math.sqrt(p * (1 - p)), runs)


@pytest.mark.parametrize("selector", ["dutopia", "sum"])
@pytest.mark.parametrize("binarised", [False, True])
def test_gme_greedy_equals_a_direct_greedy_on_the_entropies(selector: str, binarised: bool) -> None:
    counts = _relation_table(2)
    chosen, history = greedy.gme_greedy(counts, 6, selector=selector, binarised=binarised)
    c = [np.minimum(x, 1) for x in counts] if binarised else counts
    utopia = np.array([math.log((x.sum(0) > 0).sum()) for x in c])
    S: list[int] = []
    for step in range(6):
        cands = [d for d in range(10) if d not in S]
        H = {d: greedy.gme_entropies(c, [*S, d]) for d in cands}
        score = {d: np.linalg.norm(h - utopia) if selector == "dutopia" else -h.sum() for d, h in H.items()}
        best = min(cands, key=lambda d: (score[d], d))
        assert chosen[step] == best
        assert np.abs(history[step] - H[best]).max() <= roundoff(64, scale=3)
        S.append(best)


def test_binarised_counting_changes_the_selection() -> None:
    counts = [np.array([[5.0, 0, 0], [1, 1, 0], [0, 0, 1]])]
    assert greedy.gme_greedy(counts, 1, selector="sum")[0] == [1]
    assert greedy.gme_greedy(counts, 2, selector="sum", binarised=True)[1][1, 0] == pytest.approx(
        math.log(3), abs=1e-15
    )


def test_sum_of_entropies_is_neither_monotone_nor_submodular() -> None:
    _, facts = greedy.gme_counterexample()
    assert facts["H({a, b, a})"] < facts["H({a, b})"]  # adding an item lowers it: not monotone
    assert facts["gain of b on {a}"] > facts["gain of b on {}"]  # gain grows with the set: not submodular
    counts, value, opt = greedy.gme_greedy_counterexample(50.0)
    brute, _ = greedy.brute_force_max(lambda s: float(greedy.gme_entropies(counts, s).sum()), 3, 2)
    assert opt == brute and value < (1 - 1 / math.e) * opt  # no (1 - 1/e) guarantee without submodularity


def _deita_reference(scores: np.ndarray, emb: np.ndarray, tau: float, n: int | None) -> list[int]:
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    kept: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if all(unit[i] @ unit[j] <= tau for j in kept):
            kept.append(i)
        if n is not None and len(kept) == n:
            break
    return kept


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.8, 1.0])
@pytest.mark.parametrize("n_select", [None, 5])
def test_deita_accepts_in_score_order_and_every_accepted_pair_is_within_tau(tau: float, n_select: int | None) -> None:
    rng = np.random.default_rng(int(10 * tau))
    emb = rng.normal(size=(40, 3))
    scores = greedy.deita_scores(rng.uniform(1, 6, (40, 2)), rng.uniform(1, 6, (40, 2)))
    kept = greedy.deita_select(scores, emb, tau, n_select)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit[kept] @ unit[kept].T
    assert (sim[~np.eye(len(kept), dtype=bool)] <= tau).all()
    assert all(scores[a] >= scores[b] for a, b in itertools.pairwise(kept))
    assert kept == _deita_reference(scores, emb, tau, n_select)
    if n_select is None:  # maximal: every rejected sample is too close to a better accepted one
        for i in set(range(40)) - set(kept):
            assert any(unit[i] @ unit[j] > tau and scores[j] >= scores[i] for j in kept)


def test_deita_code_batching_rejects_what_the_sequential_rule_accepts() -> None:
    """Official code, batch_size > 1: C is rejected for being close to B, which was itself rejected."""
    ang = np.radians([0.0, 30.0, 60.0])
    emb = np.stack([np.cos(ang), np.sin(ang)], 1)
    scores = np.array([3.0, 2.0, 1.0])
    tau = math.cos(math.radians(45))
    assert greedy.deita_select(scores, emb, tau) == [0, 2]
    assert greedy.deita_select(scores, emb, tau, batch_size=2) == [0]


def _mig_instance(seed: int, n_items: int = 8, n_labels: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W = rng.uniform(0, 1, (n_labels, n_labels)) * (rng.uniform(size=(n_labels, n_labels)) < 0.4)
    W = np.triu(W, 1)
    W = W + W.T + np.eye(n_labels)
    labels = [rng.choice(n_labels, rng.integers(1, 3), replace=False).tolist() for _ in range(n_items)]
    X = greedy.mig_item_vectors(labels, rng.uniform(0.5, 5, n_items), n_labels)
    return X @ greedy.mig_propagation(W, prop_weight=0.7)


@pytest.mark.parametrize("phi", ["pow", "exp"])
def test_mig_information_is_monotone_submodular_by_enumeration(phi: str) -> None:
    XP = _mig_instance(0, n_items=6)
    f = lambda s: greedy.mig_information(XP, s, phi=phi, b=0.5, alpha=0.7)  # noqa: E731
    tol = roundoff(64, scale=f(list(range(6))))
    for r in range(6):
        for B in itertools.combinations(range(6), r):
            for A in itertools.chain.from_iterable(itertools.combinations(B, q) for q in range(r + 1)):
                for i in set(range(6)) - set(B):
                    gain_A = f([*A, i]) - f(list(A))
                    gain_B = f([*B, i]) - f(list(B))
                    assert gain_B >= -tol and gain_A >= gain_B - tol


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("phi", ["pow", "exp"])
def test_mig_exact_greedy_reaches_one_minus_one_over_e_of_the_optimum(seed: int, phi: str) -> None:
    XP = _mig_instance(seed, n_items=9)
    f = lambda s: greedy.mig_information(XP, s, phi=phi)  # noqa: E731
    for k in (2, 3, 4):
        chosen = greedy.mig_select(XP, k, phi=phi)
        assert chosen == greedy.greedy_max(f, 9, k)
        opt, _ = greedy.brute_force_max(f, 9, k)
        assert f(chosen) >= (1 - 1 / math.e) * opt - roundoff(64, scale=opt)
        gains = np.diff([f(chosen[:j]) for j in range(k + 1)])
        assert (np.diff(gains) <= roundoff(64, scale=opt)).all()  # diminishing returns along the greedy path


def test_mig_gradient_gain_is_the_official_first_order_rule() -> None:
    XP = _mig_instance(3, n_items=9)
    chosen = greedy.mig_select(XP, 4, gain="gradient", b=0.8)
    v = np.zeros(XP.shape[1])
    for i in chosen:
        g = XP @ (0.8 * (v + 1e-6) ** -0.2)
        g[[j for j in chosen if j in chosen[: chosen.index(i)]]] = -np.inf
        assert i == int(np.argmax(g))
        v = v + XP[i]


def test_bad_input_raises() -> None:
    emb, s = np.eye(3), np.ones(3)
    for tau in (-0.1, 1.5):
        with pytest.raises(ValueError, match="tau must lie in"):
            greedy.deita_select(s, emb, tau)
    with pytest.raises(ValueError, match="embeddings"):
        greedy.deita_select(s, np.eye(4), 0.5)
    with pytest.raises(ValueError, match="concave"):
        greedy.mig_information(np.ones((2, 2)), [0], b=1.5)
    with pytest.raises(ValueError, match="alpha"):
        greedy.mig_information(np.ones((2, 2)), [0], phi="exp", alpha=0.0)
    with pytest.raises(ValueError, match="n_select"):
        greedy.mig_select(np.ones((2, 2)), 3)
    with pytest.raises(ValueError, match="non-negative"):
        greedy.mig_propagation(-np.eye(2))
    with pytest.raises(ValueError, match="n_select"):
        greedy.gme_greedy([np.ones((3, 2))], 4)
    with pytest.raises(ValueError, match="selector"):
        greedy.gme_greedy([np.ones((3, 2))], 1, selector="max")
    with pytest.raises(ValueError, match="need 1 <= k <= N"):
        greedy.approx_top_n_probability(5, 2, 6)
    with pytest.raises(ValueError, match="scores must be non-negative"):
        greedy.mig_item_vectors([[0]], np.array([-1.0]), 2)


def test_synthetic_generators_give_valid_data() -> None:
    counts = greedy.random_relation_table(20, (5, 3), max_relations=4, zipf=1.0, seed=1)
    per_item = [c.sum(1) for c in counts]
    assert np.array_equal(per_item[0], per_item[1]) and (per_item[0] >= 1).all() and (per_item[0] <= 3).all()
    XP = greedy.mig_random_instance(2, n_items=7, n_labels=4, prop_weight=0.3)
    assert XP.shape == (7, 4) and (XP >= 0).all()


def test_counterexample_gets_worse_with_m_and_unnormalised_item_vectors() -> None:
    """``M`` off default: greedy's share of the optimum log 2 shrinks as M grows (H(1, 1, M) -> 0), below 1 - 1/e;
    ``norm=False`` puts the full score on every label of an item."""
    shares = []
    for M in (10.0, 1000.0):
        _, value, opt = greedy.gme_greedy_counterexample(M)
        assert abs(opt - math.log(2)) <= roundoff(16)
        shares.append(value / opt)
    assert shares[1] < shares[0] and shares[1] < 1 - 1 / math.e
    X = greedy.mig_item_vectors([[0, 2], [1]], np.array([3.0, 2.0]), 3, norm=False)
    assert np.array_equal(X, np.array([[3.0, 0.0, 3.0], [0.0, 2.0, 0.0]]))
    assert np.array_equal(greedy.mig_item_vectors([[0, 2], [1]], np.array([3.0, 2.0]), 3)[0], [1.5, 0.0, 1.5])
