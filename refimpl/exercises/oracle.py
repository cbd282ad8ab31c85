"""Checkers for the exercises of the oracle chapter (``notebooks/90_oracle.md``).

diffusers' adapter is imported inside the checker that needs it, so that registering these exercises does not
load diffusers.
"""

from __future__ import annotations

from typing import Any

from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import callable_answer, sympy_equal

CHAPTER = "90_oracle"
N_TRAIN = 1000  # diffusers' default num_train_timesteps


@exercise(
    "ex-oracle-divides",
    chapter=CHAPTER,
    goal="what the oracle found in diffusers' DDIM",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the sorted list of the step counts n <= 20 for which diffusers' DDIM (trailing spacing) agrees with refimpl
answer = None
""",
)
def _divides(answer: Any) -> str:
    from refimpl.oracle import Config, check
    from refimpl.oracle.adapters import DiffusersScheduler

    try:
        got = sorted(int(n) for n in answer)
    except (TypeError, ValueError) as err:
        raise ExerciseFailed(f"the answer should be a list of step counts, got {type(answer).__name__}") from err
    ddim = DiffusersScheduler("DDIMScheduler")
    expected = [n for n in range(1, 21) if check(ddim, Config("ddim", n), exact=False).passed]
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        raise ExerciseFailed(
            f"the oracle passes n in {expected}: your list misses {missing} and has {extra} too much. "
            f"Hint: compare the step t - N // n with the grid of trailing spacing, N = {N_TRAIN}"
        )
    divisors = [n for n in range(1, 21) if N_TRAIN % n == 0]
    return f"DDIM agrees for n = {expected}; the divisors of N = {N_TRAIN} up to 20 are {divisors}."


@exercise(
    "ex-oracle-float32",
    chapter=CHAPTER,
    goal="where the oracle's tolerance comes from",
    kind="derive",
    difficulty=2,
    minutes=15,
    stub="""
# answer: d x_t / d delta at delta = 0, abar_t stored as abar_t (1 + delta): a sympy expression in abar_t, x0, eps
answer = None
""",
)
def _float32(answer: Any) -> str:
    import sympy as sp

    abar_t = sp.symbols("abar_t", positive=True)
    x0, eps = sp.symbols("x0 eps", real=True)
    # DDIM's deterministic step x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, differentiated in delta at 0
    expected = sp.sqrt(abar_t) * x0 / 2 - abar_t * eps / (2 * sp.sqrt(1 - abar_t))
    return (
        sympy_equal(answer, expected, "d x_t / d delta", {"abar_t": abar_t, "x0": x0, "eps": eps})
        + " The error is delta's, float32's whatever the state's dtype, and grows like abar_t / (1 - abar_t)."
    )


@exercise(
    "ex-oracle-mutant",
    chapter=CHAPTER,
    goal="checking your own sampler with the oracle",
    kind="implement",
    difficulty=2,
    minutes=20,
    stub="""
# answer: a function my_ddim(model, x, timesteps): deterministic DDIM with refimpl's sampler signature
def my_ddim(model, x, timesteps):
    raise NotImplementedError


answer = my_ddim
""",
)
def _mutant(answer: Any) -> str:
    from refimpl.oracle import check

    verdict = check(callable_answer(answer, "my_ddim"), method="ddim")
    if not verdict.passed:
        raise ExerciseFailed(
            f"the oracle rejects it: {verdict.headline()} Hint: one model call per step, "
            "x_t = alpha_t x0 + sigma_t eps; a last timestep 0 returns x0"
        )
    return f"the oracle accepts it: {verdict.headline()}"
