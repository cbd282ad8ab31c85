"""Checkers for the exercises of the discrete-tokens chapter (``notebooks/15_discrete_tokens.md``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from refimpl.discrete import categorical as cat
from refimpl.discrete import masked, speculative, vq
from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, sympy_equal

CHAPTER = "15_discrete_tokens"
L_TOY = 4  # the chapter's sequences have L = 4 positions
P_SPEC = np.array([0.30, 0.25, 0.20, 0.12, 0.08, 0.05])  # the chapter's target and draft laws
Q_SPEC = np.array([0.05, 0.10, 0.15, 0.20, 0.22, 0.28])


@exercise(
    "ex-discrete-first-hitting",
    chapter=CHAPTER,
    goal="first hitting: one model call per token",
    kind="implement",
    difficulty=1,
    minutes=10,
    stub="""
# answer: a function my_hit(t, n, u, schedule): the next reveal time of n masked tokens at time t, uniform u
def my_hit(t, n, u, schedule):
    raise NotImplementedError


answer = my_hit
""",
)
def _first_hitting(answer: Any) -> str:
    my_hit = callable_answer(answer, "my_hit")
    gen = torch.Generator().manual_seed(23)
    t = 0.05 + 0.9 * torch.rand(64, generator=gen, dtype=torch.float64)
    n = torch.randint(1, 9, (64,), generator=gen).to(torch.float64)
    u = torch.rand(64, generator=gen, dtype=torch.float64)
    messages = []
    for name in ("linear", "cosine"):
        schedule = masked.get_mask_schedule(name)
        expected = masked.first_hitting_time(t, n, u, schedule)
        # u^(1/n), a product and alpha^-1 (arccos near 1 loses up to sqrt(U64) relative: allow that on cosine)
        tol = 64 * U64 if name == "linear" else 1e-7
        got = call(my_hit, t, n, u, schedule, what="my_hit")
        messages.append(
            close(got, expected, tol, f"my_hit on the {name} schedule", "alpha^-1(1 - u^(1/n) (1 - alpha_t))")
        )
    return " ".join(messages)


@exercise(
    "ex-discrete-cache",
    chapter=CHAPTER,
    goal="first hitting: one model call per token",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: a dict {N: expected number of steps that reveal at least one of the L = 4 tokens}, for N = 8, 64, 512
answer = None
""",
)
def _cache(answer: Any) -> str:
    if not isinstance(answer, dict) or sorted(answer) != [8, 64, 512]:
        raise ExerciseFailed("the answer should be a dict with the keys 8, 64 and 512 (numbers of steps)")
    lin = masked.get_mask_schedule("linear")
    got, expected = [], []
    for N in (8, 64, 512):
        ts = torch.linspace(1, 0, N + 1, dtype=torch.float64)
        pi = (lin.alpha(ts[1:]) - lin.alpha(ts[:-1])).numpy()  # P(a position is revealed in step k)
        expected.append(float(np.sum(1 - (1 - pi) ** L_TOY)))
        got.append(answer[N])
    # a sum of N terms 1 - (1 - pi)^4, each a few roundings
    return close(
        got,
        torch.tensor(expected, dtype=torch.float64),
        16 * 512 * U64 * L_TOY,
        "the expected model calls",
        "sum over steps of P(the step reveals at least one of the L positions)",
    )


@exercise(
    "ex-discrete-runningsum",
    chapter=CHAPTER,
    goal="the float32 lattice of categorical sampling",
    kind="measure",
    difficulty=2,
    minutes=10,
    stub="""
# answer: a dict {"head first": tail mass drawn, "head last": tail mass drawn} with a running float32 sum
answer = None
""",
)
def _runningsum(answer: Any) -> str:
    if not isinstance(answer, dict) or sorted(answer) != ["head first", "head last"]:
        raise ExerciseFailed('the answer should be a dict with the keys "head first" and "head last"')
    tail = np.full(400, 2.0**-26, dtype=np.float32)
    head = np.array([1 - tail.sum()], dtype=np.float32)
    expected = []
    for pv, rows in ((np.concatenate([head, tail]), slice(1, None)), (np.concatenate([tail, head]), slice(None, -1))):
        cdf32 = np.cumsum(pv)  # a running float32 sum
        counts = np.diff(np.ceil(np.concatenate([[0.0], cdf32.astype(np.float64)]) / 2.0**-24))
        expected.append(counts[rows].sum() * 2.0**-24)
    got = [answer["head first"], answer["head last"]]
    # counts of lattice points: exact multiples of 2^-24, so only the answer's own rounding is allowed
    return close(
        got,
        torch.tensor(expected, dtype=torch.float64),
        2.0**-30,
        "the tail masses (head first, head last)",
        "count the lattice points k 2^-24 under each token's step of the float32 running sum",
    )


@exercise(
    "ex-discrete-kseq",
    chapter=CHAPTER,
    goal="optimal multi-draft acceptance",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the list [1 - (1 - beta(rho))^n for n = 1, 2, 3, 4] on the chapter's p and q
answer = None
""",
)
def _kseq(answer: Any) -> str:
    got = as_array(answer, "the K-SEQ acceptance rates", (4,))
    exact = [speculative.acceptance_rate(speculative.kseq_kernel, P_SPEC, Q_SPEC, n) for n in range(1, 5)]
    rrs = [speculative.acceptance_rate(speculative.rrs_kernel, P_SPEC, Q_SPEC, n) for n in range(1, 5)]
    best = [speculative.optimal_acceptance_sorted(P_SPEC, Q_SPEC, n) for n in range(1, 5)]
    if not all(r - 1e-12 <= float(g) <= b + 1e-12 for r, g, b in zip(rrs, got, best, strict=True)):
        raise ExerciseFailed("K-SEQ's rate should lie between RRS's and the optimum for every n")
    # rho is a root found to 1e-15 relative; beta(rho) and the power add a few roundings
    return close(
        got,
        torch.tensor(exact, dtype=torch.float64),
        1e-12,
        "the K-SEQ acceptance rates",
        "rho solves rho beta(rho) = 1 - (1 - beta(rho))^n, beta(rho) = sum_x min(q(x), p(x)/rho)",
    )


@exercise(
    "ex-discrete-temperature",
    chapter=CHAPTER,
    goal="the float32 lattice of categorical sampling",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the effective temperature of the float32 lattice law of revealed tokens (s = 1e-3, Zipf, V = 50257)
answer = None
""",
)
def _temperature(answer: Any) -> str:
    z = 1.0 / np.arange(1, 50258)
    z /= z.sum()
    s = 1e-3
    law32 = cat.gumbel_lattice_law(np.concatenate([[1 - s], s * z]), cat.uniform_resolution(torch.float32))[1:]
    expected = cat.effective_temperature(z, law32 / law32.sum())
    # a root of an entropy match, found by brentq to about 1e-12
    return close(
        float(as_array(answer, "the effective temperature")),
        torch.tensor(expected, dtype=torch.float64),
        1e-9,
        "the effective temperature",
        "match the entropy of tempered(p, T) to the lattice law's",
    )


@exercise(
    "ex-discrete-vq-mixing",
    chapter=CHAPTER,
    goal="VQ transition products and posteriors",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the TV distances (17,) of row x_0 = 0 of Qbar_t to the uniform law, t = 0..16, for uniform_schedule(32, 16)
answer = None
""",
)
def _vq_mixing(answer: Any) -> str:
    sched = vq.uniform_schedule(32, 16)
    expected = torch.tensor([(1 - 1 / 32) * sched.cumulative(t)[0] for t in range(17)], dtype=torch.float64)
    # a row of 32 entries summed: 32 roundings of values <= 1
    return close(
        answer, expected, 64 * U64, "the TV distances", "row x_0 of Qbar_t is alphabar_t e_x0 + (1 - alphabar_t)/K"
    )


@exercise(
    "ex-discrete-absorbing-reveal",
    chapter=CHAPTER,
    goal="VQ transition products and posteriors",
    kind="derive",
    difficulty=2,
    minutes=15,
    stub="""
# answer: q(x_{t-1} = x_0 | x_t = mask, x_0) for the absorbing kernel, a sympy expression in abar_prev, abar
answer = None
""",
)
def _absorbing_reveal(answer: Any) -> str:
    import sympy as sp

    abar_prev, abar = sp.symbols("abar_prev abar", positive=True)
    expected = (abar_prev - abar) / (1 - abar)
    names = {"abar_prev": abar_prev, "abar": abar}
    return (
        sympy_equal(answer, expected, "q(x_{t-1} = x_0 | x_t = m, x_0)", names)
        + " It is masked diffusion's reveal probability (alpha_s - alpha_t) / (1 - alpha_t)."
    )
