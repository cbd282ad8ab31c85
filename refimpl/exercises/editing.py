"""Checkers for the exercises of chapter 7, editing (``notebooks/05b_editing.md``)."""

from __future__ import annotations

from typing import Any

from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import as_array

CHAPTER = "05b_editing"


def _falls_like(gaps: Any, factors: tuple[float, float], what: str) -> str:
    """Gaps measured at sigma_max growing by ``factors`` fall by those factors (1 / sigma_max), within 25 %."""
    values = as_array(gaps, what, (3,))
    ratios = (values[:-1] / values[1:]).tolist()
    if not (values > 0).all() or not all(0.75 < r / f < 1.25 for r, f in zip(ratios, factors, strict=True)):
        raise ExerciseFailed(
            f"{what} should fall like 1 / sigma_max (by {factors[0]:g} and {factors[1]:g}); "
            f"they fall by {ratios[0]:.2f} and {ratios[1]:.2f}"
        )
    return f"{what} fall like 1 / sigma_max (ratios {ratios[0]:.1f} and {ratios[1]:.1f})."


@exercise(
    "ex-edit-zscore",
    chapter=CHAPTER,
    goal="what an exact edit preserves",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the max gaps between the exact ODE edit and the z-score formula at sigma_max = 8, 80 and 800
answer = None
""",
)
def _zscore(answer: Any) -> str:
    return _falls_like(answer, (10.0, 10.0), "the gaps")


@exercise(
    "ex-edit-infedit-noise",
    chapter=CHAPTER,
    goal="InfEdit",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: (spread of ten InfEdit edits of one point, spread of ten BDIA edits of it): max coordinate std each
answer = None
""",
)
def _infedit_noise(answer: Any) -> str:
    infedit_spread, bdia_spread = as_array(answer, "the two spreads", (2,)).tolist()
    if not infedit_spread > 1e-3:
        raise ExerciseFailed(f"InfEdit draws fresh noise: ten edits should spread, got a std of {infedit_spread:.1e}")
    if not bdia_spread < 1e-12:
        raise ExerciseFailed(f"BDIA editing is deterministic: its std should be 0, got {bdia_spread:.1e}")
    return "InfEdit's edits depend on the noise drawn; inversion editors are deterministic."


@exercise(
    "ex-edit-counterfactual",
    chapter=CHAPTER,
    goal="counterfactuals by inversion",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the max gaps |ODE counterfactual - Pearl| at sigma_max = 10, 80 and 640
answer = None
""",
)
def _counterfactual(answer: Any) -> str:
    return _falls_like(answer, (8.0, 8.0), "the gaps")
