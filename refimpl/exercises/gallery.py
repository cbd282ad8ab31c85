"""Checkers for the exercises of the gallery chapter (``notebooks/17_gallery.md``)."""

from __future__ import annotations

import math
from typing import Any

import torch

from refimpl import gallery
from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, sympy_equal
from toy_models import ring

CHAPTER = "17_gallery"
SLOPE_BAND = 0.15  # a fitted log-log slope, as the book's measured orders (STYLE rule 12)


@exercise(
    "ex-gallery-tex4d-k",
    chapter=CHAPTER,
    goal="why averaging latents blurs",
    kind="derive",
    difficulty=2,
    minutes=15,
    stub="""
# answer: d r / d abar of the output variance ratio r, a sympy expression in the symbols abar, s2 and K
answer = None
""",
)
def _tex4d(answer: Any) -> str:
    import sympy as sp

    abar, s2, K = sp.symbols("abar s2 K", positive=True)
    expected = s2 * (1 - 1 / K) / (abar * s2 + 1 - abar) ** 2
    return sympy_equal(answer, expected, "dr/dabar", {"abar": abar, "s2": s2, "K": K}) + (
        " It is positive for K > 1: the noisiest steps hurt most."
    )


@exercise(
    "ex-gallery-loss",
    chapter=CHAPTER,
    goal="the pairwise-similarity loss",
    kind="implement",
    difficulty=2,
    minutes=15,
    stub="""
# answer: a function my_loss(source, adapted, temperature) returning DomainStudio's loss (a 0-dim tensor)
def my_loss(source, adapted, temperature=1.0):
    raise NotImplementedError


answer = my_loss
""",
)
def _loss(answer: Any) -> str:
    my_loss = callable_answer(answer, "my_loss")
    gen = torch.Generator().manual_seed(3)
    source = torch.randn(8, 16, generator=gen, dtype=torch.float64)
    messages = []
    for temperature, scale in [(1.0, 0.3), (0.5, 1.0), (4.0, 0.1)]:
        adapted = source + scale * torch.randn(8, 16, generator=gen, dtype=torch.float64)
        expected = gallery.pairwise_similarity_loss(source, adapted, temperature)
        got = call(my_loss, source, adapted, temperature, what="my_loss")
        # a sum of 8 x 7 terms, each a few roundings of numbers of size |log p| <= log 7 + 2 / T
        tol = 64 * 56 * U64 * (math.log(7) + 2 / temperature)
        messages.append(
            close(got, expected, tol, f"the loss at T = {temperature}", "sum_i sum_j p_i(j) (log p_i(j) - log q_i(j))")
        )
    return messages[0] + " So do the losses at T = 0.5 and 4."


@exercise(
    "ex-gallery-temperature",
    chapter=CHAPTER,
    goal="the pairwise-similarity loss",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the fitted log-log slope of the loss of a fixed perturbation against the temperature (a float)
answer = None
""",
)
def _temperature(answer: Any) -> str:
    slope = float(as_array(answer, "the slope", ()))
    if abs(slope + 2) > SLOPE_BAND:
        raise ExerciseFailed(
            f"a slope of {slope:.2f} is not within {SLOPE_BAND} of -2: fit log(loss) against log(T) "
            "(numpy.polyfit(np.log(Ts), np.log(vals), 1)[0]) for the temperatures 2 to 32"
        )
    return f"slope {slope:.2f}: the loss falls like 1 / T^2."


@exercise(
    "ex-gallery-memory",
    chapter=CHAPTER,
    goal="memory conditioning as cluster-conditional diffusion",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the mean largest responsibility of 4000 noised ring samples at the three noise levels (a list of 3)
answer = None
""",
)
def _memory(answer: Any) -> str:
    got = as_array(answer, "the mean largest responsibilities", (3,))
    gmm, gen, n_ref = ring(K=8), torch.Generator().manual_seed(11), 40_000
    expected = []
    for alpha, sigma in [(0.95, 0.3), (0.5, 0.87), (0.2, 0.98)]:
        xt = alpha * gmm.sample(n_ref, gen) + sigma * torch.randn(n_ref, 2, generator=gen, dtype=torch.float64)
        expected.append(float(gmm.responsibilities(xt, alpha, sigma).max(-1).values.mean()))
    # CLT: a mean of n values in [0, 1] has a standard error at most 0.5 / sqrt(n); 5 joint standard errors
    tol = 5 * 0.5 * math.sqrt(1 / 4000 + 1 / n_ref)
    expected = torch.tensor(expected, dtype=torch.float64)
    return close(got, expected, tol, "the mean largest responsibilities", "4000 samples of ring(K=8)")
