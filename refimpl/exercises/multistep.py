"""Checkers for the exercises of chapter 6, multistep and predictor-corrector solvers
(``notebooks/06_multistep_predictor_corrector.md``)."""

from __future__ import annotations

from typing import Any

from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array

CHAPTER = "06_multistep_predictor_corrector"
ORDER_BAND = 0.2  # the book's band for a measured order, widened for three step counts (STYLE rule 12)


@exercise(
    "ex-pc-pndm-lms",
    chapter=CHAPTER,
    goal="PNDM and LMS",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: (max |F-PNDM - LMS| on the sigma-uniform grid, the same on the lambda-uniform grid), 12 steps
answer = None
""",
)
def _pndm_lms(answer: Any) -> str:
    on_sigma, on_lambda = as_array(answer, "the two differences", (2,)).tolist()
    bound = 64 * 12 * U64 * 10  # 12 steps of a few roundings of states of size up to 10 (x / alpha from lambda = -1)
    if not on_sigma <= bound:
        raise ExerciseFailed(
            f"on the sigma-uniform grid the two methods agree to round-off (below {bound:.0e}), "
            f"got {on_sigma:.1e}: use midpoint='sigma' and Karras steps with rho = 1"
        )
    if on_lambda < 1e-6:
        raise ExerciseFailed(
            f"on the lambda-uniform grid they should differ (PLMS's weights assume equal sigma "
            f"steps), got {on_lambda:.1e}"
        )
    return "F-PNDM is LMS-4 started by RK4 exactly when the grid is uniform in sigma."


@exercise(
    "ex-pc-3m",
    chapter=CHAPTER,
    goal="reading measured orders",
    kind="implement",
    difficulty=3,
    minutes=40,
    stub="""
# answer: a dict {1.0: order with the official D2 weight, 2.0: order with twice that weight}, measured
answer = None
""",
)
def _three_m(answer: Any) -> str:
    if not isinstance(answer, dict) or sorted(answer) != [1.0, 2.0]:
        raise ExerciseFailed("the answer should be a dict with the keys 1.0 and 2.0 (the factor on the D2 weight)")
    official, restored = (float(as_array(answer[k], f"the order at factor {k:g}", ())) for k in (1.0, 2.0))
    if abs(official - 2) > ORDER_BAND:
        raise ExerciseFailed(
            f"with the official weight the update is exact only for linear x0: order 2, got {official:.2f}"
        )
    if abs(restored - 4) > ORDER_BAND:  # third order, superconvergent on the Gaussian toy
        raise ExerciseFailed(
            f"with the weight doubled the method is third order, and measures about 4 on the "
            f"single Gaussian; got {restored:.2f}"
        )
    return f"orders {official:.2f} and {restored:.2f}: the official update loses an order."


@exercise(
    "ex-pc-unic",
    chapter=CHAPTER,
    goal="UniPC's corrector",
    kind="derive",
    difficulty=2,
    minutes=20,
    stub="""
# answer: the three gaps max |(a = 1/2) - solved| of UniC-1 at h = 0.4, 0.2 and 0.1
answer = None
""",
)
def _unic(answer: Any) -> str:
    gaps = as_array(answer, "the three gaps", (3,))
    ratios = (gaps[:-1] / gaps[1:]).tolist()
    if not (gaps > 0).all() or not all(5 < r < 11 for r in ratios):  # O(h^3): 8 per halving, + O(h^4)
        raise ExerciseFailed(f"the gap should shrink about 8 times per halving of h (O(h^3)); ratios {ratios}")
    return f"the gap shrinks {ratios[0]:.1f} and {ratios[1]:.1f} times per halving: O(h^3)."


@exercise(
    "ex-pc-v3-gauss",
    chapter=CHAPTER,
    goal="DPM-Solver-v3's statistics",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: (one-step v3 error, one-step DDIM error) against the exact ODE map, lambda from -2 to 2
answer = None
""",
)
def _v3_gauss(answer: Any) -> str:
    v3, ddim = as_array(answer, "the two errors", (2,)).tolist()
    if ddim < 0.1:
        raise ExerciseFailed(f"one DDIM step over 4 units of lambda should be far off (error above 0.1), got {ddim}")
    if not v3 < 1e-3 * ddim:
        raise ExerciseFailed(
            f"one v3 step should be exact up to the statistics' quadrature, far below DDIM's "
            f"error; got {v3:.1e} against {ddim:.1e}"
        )
    return "with exact statistics one first-order v3 step solves a diagonal Gaussian's flow."
