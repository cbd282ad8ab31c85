"""Checkers for the exercises of the choosing-samples chapter (``notebooks/16_choosing_samples.md``)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch

from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, sympy_equal
from refimpl.selection import dpp, greedy

CHAPTER = "16_choosing_samples"
GRAM_DESIGNS = ("i.i.d.", "volume", "2 DPPs")  # the three designs of n = 20 points, m = 10


def finite_toy(N: int = 5, m: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The chapter's finite ground set: mu uniform on N points, an L^2(mu)-orthonormal basis phi (N, m) drawn with
    seed 1, and the optimal density rho and weights w = m / k_m on it."""
    mu = np.full(N, 1 / N)
    q, _ = np.linalg.qr(np.sqrt(mu)[:, None] * np.random.default_rng(1).normal(size=(N, m)))
    phi = q / np.sqrt(mu)[:, None]
    k = (phi**2).sum(1)
    return mu, phi, mu * k / m, m / k


@exercise(
    "ex-dpp-unbiased",
    chapter=CHAPTER,
    goal="generalised volume sampling and its unbiasedness",
    kind="implement",
    difficulty=2,
    minutes=20,
    stub="""
# answer: a function my_volume_density(rho, w, phi): the volume-sampling density of n points, phi of shape (n, m)
def my_volume_density(rho, w, phi):
    raise NotImplementedError


answer = my_volume_density
""",
)
def _unbiased(answer: Any) -> str:
    my_density = callable_answer(answer, "my_volume_density")
    n, m = 3, 2
    mu, phi, rho, w = finite_toy(5, m)
    fv = np.random.default_rng(2).normal(size=len(mu))
    got, expected, scale, mean_c = [], [], [], np.zeros(m)
    for t in map(list, itertools.product(range(len(mu)), repeat=n)):
        p = float(as_array(call(my_density, rho[t], w[t], phi[t], what="my_volume_density"), "the density"))
        got.append(p)
        expected.append(dpp.volume_density(rho[t], w[t], phi[t]))
        # det of an m x m Gram of n rank-one terms: a few m n roundings relative to trace(G)^m
        scale.append(
            math.factorial(n - m)
            / math.factorial(n)
            * float(np.prod(rho[t]))
            * np.trace(phi[t].T @ (w[t, None] * phi[t])) ** m
        )
        if abs(np.linalg.det((w[t, None] * phi[t]).T @ phi[t])) > 0:
            mean_c += p * np.linalg.lstsq(np.sqrt(w[t])[:, None] * phi[t], np.sqrt(w[t]) * fv[t], rcond=None)[0]
    tol = 64 * n * m * U64 * max(scale)
    message = close(
        got,
        torch.tensor(expected, dtype=torch.float64),
        tol,
        f"my_volume_density on all {len(got)} triples of the 5-point toy",
        "(n - m)!/n! det(sum_i w_i phi_i phi_i^T) prod_i rho_i",
    )
    c_best = phi.T @ (mu * fv)
    return message + f" With it, E[Q f] - P f = {np.abs(mean_c - c_best).max():.1e}: unbiased."


@exercise(
    "ex-dpp-gram",
    chapter=CHAPTER,
    goal="repulsion keeps the Gram matrix well conditioned",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: a dict {"i.i.d.": lams, "volume": lams, "2 DPPs": lams}, lams the smallest eigenvalues of G (m = 10, n = 20)
answer = None
""",
)
def _gram(answer: Any) -> str:
    if not isinstance(answer, dict) or sorted(answer) != sorted(GRAM_DESIGNS):
        raise ExerciseFailed(f"the answer should be a dict with the keys {list(GRAM_DESIGNS)}")
    m, n, n_ref = 10, 20, 2000
    rng = np.random.default_rng(12)
    draws = {
        "i.i.d.": lambda: dpp.sample_iid(n, m, rng),
        "volume": lambda: dpp.sample_volume(n, m, rng),
        "2 DPPs": lambda: dpp.sample_repeated_dpp(2, m, rng),
    }
    messages = []
    for name in GRAM_DESIGNS:
        lams = as_array(answer[name], f"the smallest eigenvalues under {name}")
        if lams.ndim != 1 or len(lams) < 20:
            raise ExerciseFailed(f"{name}: give the smallest eigenvalue of each design, at least 20 designs")
        # trace G = (1/n) sum_i w_i k_m(x_i) = m exactly, so 0 <= lambda_min <= 1
        if (lams < 0).any() or (lams > 1 + 64 * m * U64).any():
            raise ExerciseFailed(f"{name}: lambda_min(G) lies in [0, 1] since trace G = m; use w = m / k_m and 1/n")
        ref = []
        for _ in range(n_ref):
            x = draws[name]()
            ph = dpp.legendre_features(x, m)
            ref.append(np.linalg.eigvalsh((dpp.optimal_weights(x, m)[:, None] * ph).T @ ph / n)[0])
        # CLT: two independent means, 5 joint standard errors (each from its sample's standard deviation)
        tol = 5 * math.hypot(float(lams.std()) / math.sqrt(len(lams)), float(np.std(ref)) / math.sqrt(n_ref))
        messages.append(
            close(
                float(lams.mean()),
                torch.tensor(float(np.mean(ref)), dtype=torch.float64),
                tol,
                f"the mean smallest eigenvalue under {name}",
                "G = (1/n) sum_i w(x_i) phi(x_i) phi(x_i)^T with w = m / k_m, m = 10, n = 20",
            )
        )
    return " ".join(messages)


@exercise(
    "ex-dpp-linear",
    chapter=CHAPTER,
    goal="the projection DPP's one-point intensity and repulsion",
    kind="derive",
    difficulty=3,
    minutes=25,
    stub="""
# answer: Var sum_i x_i^2 under the Legendre projection DPP of m points, a sympy expression in the symbol m
answer = None
""",
)
def _linear(answer: Any) -> str:
    import sympy as sp

    m = sp.symbols("m", positive=True, integer=True)

    def a2(j: Any) -> Any:  # <x^2 phi_j, phi_{j+2}>^2 from x P_j = ((j + 1) P_{j+1} + j P_{j-1}) / (2j + 1)
        return (j + 1) ** 2 * (j + 2) ** 2 / ((2 * j + 3) ** 2 * (2 * j + 1) * (2 * j + 5))

    return (
        sympy_equal(answer, a2(m - 2) + a2(m - 1), "Var S", {"m": m})
        + " It tends to 1/8 as m grows, where i.i.d. points give a variance growing like m."
    )


@exercise(
    "ex-select-gme-readme",
    chapter=CHAPTER,
    goal="GME's approximate greedy step",
    kind="implement",
    difficulty=1,
    minutes=10,
    stub="""
# answer: a function my_top_n(N, n, k): P(the best of k candidates drawn from N without replacement is in the top n)
def my_top_n(N, n, k):
    raise NotImplementedError


answer = my_top_n
""",
)
def _gme_readme(answer: Any) -> str:
    my_top_n = callable_answer(answer, "my_top_n")
    cases = [(130_000, 10, 25_000), (130_000, 20, 25_000), (130_000, 50, 25_000), (20, 3, 5), (10, 7, 4), (9, 0, 3)]
    got = [float(as_array(call(my_top_n, *c, what=f"my_top_n{c}"), f"my_top_n{c}")) for c in cases]
    expected = torch.tensor([greedy.approx_top_n_probability(*c) for c in cases], dtype=torch.float64)
    # the log of C(N - n, k)/C(N, k) from log-gammas (or log1p's) of size up to N log N, a few roundings each
    tol = 16 * 130_000 * math.log(130_000) * U64
    return close(
        got, expected, tol, "my_top_n on the README's and small cases", "1 - C(N - n, k) / C(N, k); 1 when n > N - k"
    )
