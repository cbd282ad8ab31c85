"""Automatic checks for the book's exercises: ``check("label", answer)``.

Every exercise of a converted chapter is registered here with its chapter, the learning goal it trains, its kind
(``implement``: write the method and have it compared with the package on an exact toy; ``derive``: a sympy
derivation checked symbolically; ``measure``: a number or an array checked against its exact value or a
derived bound), a difficulty from 1 to 3, a time estimate in minutes, and the stub a student starts from. The
checker compares an answer with the package's own result with a derived tolerance (round-off counts for
float64 identities, CLT bounds for Monte Carlo) and raises :class:`ExerciseFailed` with a message that says what
was expected when it is wrong.

The notebooks' reference solutions end with ``check("label", answer)``; ``scripts/make_student.py`` replaces
each solution by the stub and that call; ``tests/test_exercises.py`` runs every reference solution through its
checker and checks that every stub fails it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Exercise", "ExerciseFailed", "check", "exercise", "exercises", "marks"]

KINDS = ("implement", "derive", "measure")


class ExerciseFailed(AssertionError):
    """A wrong (or missing) answer; the message says what the checker expected."""


@dataclass(frozen=True)
class Exercise:
    """One checked exercise: its metadata, the stub a student starts from, and its checker.

    ``checker(answer)`` returns a one-line confirmation or raises :class:`ExerciseFailed`.
    """

    label: str
    chapter: str
    goal: str
    kind: str
    difficulty: int
    minutes: int
    stub: str
    checker: Callable[[Any], str]


_REGISTRY: dict[str, Exercise] = {}


def exercise(
    label: str, *, chapter: str, goal: str, kind: str, difficulty: int, minutes: int, stub: str
) -> Callable[[Callable[[Any], str]], Callable[[Any], str]]:
    """Register the decorated function as the checker of exercise ``label`` (decorator)."""
    for name, value in (("label", label), ("chapter", chapter), ("goal", goal), ("kind", kind), ("stub", stub)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(difficulty, bool) or difficulty not in (1, 2, 3):
        raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
        raise ValueError(f"minutes must be a positive integer, got {minutes!r}")

    def register(checker: Callable[[Any], str]) -> Callable[[Any], str]:
        if label in _REGISTRY:
            raise ValueError(f"exercise {label!r} is registered twice")
        _REGISTRY[label] = Exercise(label, chapter, goal, kind, difficulty, minutes, stub.strip() + "\n", checker)
        return checker

    return register


def exercises(chapter: str | None = None) -> list[Exercise]:
    """The registered exercises (of one chapter, by notebook stem, if given), in registration order."""
    return [ex for ex in _REGISTRY.values() if chapter is None or ex.chapter == chapter]


def get(label: str) -> Exercise:
    """The registered exercise ``label``; ValueError naming the known labels otherwise."""
    if not isinstance(label, str):
        raise TypeError(f"label must be a string naming an exercise, got {type(label).__name__}")
    if label not in _REGISTRY:
        raise ValueError(f"label {label!r} names no exercise; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[label]


def marks(ex: Exercise) -> str:
    """The line a chapter shows at the top of the exercise: kind, difficulty, time and learning goal."""
    if not isinstance(ex, Exercise):
        raise TypeError(f"ex must be an Exercise (see exercises()), got {type(ex).__name__}")
    stars = "★" * ex.difficulty + "☆" * (3 - ex.difficulty)
    return f"*{ex.kind} · {stars} · about {ex.minutes} min · goal: {ex.goal}*"


def check(label: str, answer: Any) -> None:
    """Check ``answer`` to exercise ``label``: print a confirmation, or raise ExerciseFailed saying what is wrong."""
    ex = get(label)
    if answer is None or answer is Ellipsis:
        raise ExerciseFailed(f"{label}: no answer yet; the exercise asks for: {ex.stub.splitlines()[0].lstrip('# ')}")
    try:
        message = ex.checker(answer)
    except ExerciseFailed as err:
        raise ExerciseFailed(f"{label}: not yet. {err}") from None
    except NotImplementedError:
        raise ExerciseFailed(f"{label}: your function still raises NotImplementedError: fill it in") from None
    print(f"{label}: correct. {message}")


# the chapters' exercises register themselves on import
from refimpl.exercises import (  # noqa: E402, F401
    analytic_lab,
    differentiating,
    discrete,
    distillation,
    editing,
    exponential,
    forward,
    gallery,
    guidance,
    inversion,
    multistep,
    notation,
    oracle,
    score_distillation,
    search,
    selection,
    trained,
    transport,
)
