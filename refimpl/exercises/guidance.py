"""Checkers for the exercises of the guidance chapter (``notebooks/10_guidance.md``)."""

from __future__ import annotations

import math
from typing import Any

import torch

from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, sympy_equal
from refimpl.guidance import fk_log_weight_rate

CHAPTER = "10_guidance"
N_PARTICLES = 12  # the resampling exercise's population
RESAMPLE_SEED = 9  # its weights: softmax of 12 standard normals from this seed


@exercise(
    "ex-guid-tilt-gauss",
    chapter=CHAPTER,
    goal="the exact targets of guidance",
    kind="derive",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the largest w for which the tilt N(m_c, vc)^w N(m_u, vu)^(1 - w) is normalisable (vc > vu), in vc and vu
answer = None
""",
)
def _tilt_gauss(answer: Any) -> str:
    import sympy as sp

    vc, vu = sp.symbols("vc vu", positive=True)
    # the tilt's precision w / vc + (1 - w) / vu vanishes there (Ho & Salimans 2022, arXiv:2207.12598v1, Sec. 3.2)
    expected = vc / (vc - vu)
    return sympy_equal(answer, expected, "the largest weight", {"vc": vc, "vu": vu}) + (
        " Beyond it the precision w / vc + (1 - w) / vu is negative: no density."
    )


@exercise(
    "ex-guid-cfgpp-weight",
    chapter=CHAPTER,
    goal="CFG++ as CFG with a step-dependent weight",
    kind="derive",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the CFG weight w of one CFG++ step with guidance lam on a log-SNR step h, a sympy expression in lam and h
answer = None
""",
)
def _cfgpp_weight(answer: Any) -> str:
    import sympy as sp

    lam, h = sp.symbols("lam h", positive=True)
    # one CFG++ step (Chung et al. 2024, arXiv:2406.08070v2, Eq. 11 [unverified]) against one CFG DDIM step
    expected = lam / (1 - sp.exp(-h))
    return sympy_equal(answer, expected, "the equivalent CFG weight", {"lam": lam, "h": h}) + (
        " It grows like lam / h as the steps shrink."
    )


@exercise(
    "ex-guid-fk-product",
    chapter=CHAPTER,
    goal="Feynman-Kac weights for tilted, annealed and product targets",
    kind="implement",
    difficulty=2,
    minutes=15,
    stub="""
# answer: a function my_rate(scores, a, g2): the Feynman-Kac log-weight rate of the target prod_i p_i^(a_i)
def my_rate(scores, a, g2):
    raise NotImplementedError


answer = my_rate
""",
)
def _fk_product(answer: Any) -> str:
    my_rate = callable_answer(answer, "my_rate")
    gen = torch.Generator().manual_seed(8)
    messages = []
    for name, a in [("product", [1.0, 1.0]), ("CFG tilt w = 2", [2.0, -1.0]), ("annealing beta = 3", [3.0])]:
        a = torch.tensor(a, dtype=torch.float64)
        scores = list(torch.randn(len(a), 5, 2, generator=gen, dtype=torch.float64))
        g2 = torch.tensor(0.7, dtype=torch.float64)
        expected = fk_log_weight_rate(scores, a, g2)
        got = call(my_rate, scores, a, g2, what="my_rate")
        # squares of sums of M terms over d = 2 coordinates: a handful of roundings of numbers of size
        # g2 (sum_i |a_i| |s_i|_max)^2
        size = float(g2) * (float(a.abs().sum()) * max(float(s.abs().max()) for s in scores)) ** 2
        tol = 64 * 2 * len(a) * U64 * size
        messages.append(
            close(got, expected, tol, f"the rate ({name})", "(g2 / 2)(|sum_i a_i s_i|^2 - sum_i a_i |s_i|^2)")
        )
    return messages[0] + " So do the rates of the CFG tilt and of annealing."


@exercise(
    "ex-guid-resample",
    chapter=CHAPTER,
    goal="systematic resampling and the effective sample size",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the copy counts (R, 12) of the 12 particles in R >= 100 independent systematic resamplings
answer = None
""",
)
def _resample(answer: Any) -> str:
    counts = as_array(answer, "the copy counts")
    if counts.ndim != 2 or counts.shape[1] != N_PARTICLES or counts.shape[0] < 100:
        raise ExerciseFailed(
            f"the counts should have shape (R, {N_PARTICLES}) with R >= 100, got {tuple(counts.shape)}"
        )
    if not bool((counts == counts.round()).all()) or not bool((counts.sum(1) == N_PARTICLES).all()):
        raise ExerciseFailed(f"each row should hold whole copy counts summing to N = {N_PARTICLES}")
    gen = torch.Generator().manual_seed(RESAMPLE_SEED)  # the book draws in float64, its default dtype
    weights = torch.softmax(torch.randn(N_PARTICLES, generator=gen, dtype=torch.float64), 0)
    expected = N_PARTICLES * weights
    low, high = torch.floor(expected), torch.ceil(expected)
    bad = ((counts < low) | (counts > high)).any(0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ExerciseFailed(
            f"particle {i} (N w_i = {float(expected[i]):.3f}) was copied {int(counts[:, i].min())} to "
            f"{int(counts[:, i].max())} times; systematic resampling copies it {int(low[i])} or {int(high[i])} times"
        )
    # a count takes two adjacent values: variance at most 1/4, so the mean of R counts has a standard error at
    # most 0.5 / sqrt(R); 5 standard errors (CLT)
    tol = 5 * 0.5 / math.sqrt(counts.shape[0])
    return close(counts.mean(0), expected, tol, "the mean copy counts", "N w_i in expectation")
