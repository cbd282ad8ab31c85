"""Chapter 11's checked exercises: each reference solution passes its checker, each stub fails it, each shows its
marks, and the chapter has a checker for every exercise (the shared tests of ``test_exercises.py``, for the
checkers of ``refimpl.exercises.discrete``, which register themselves on import)."""

from __future__ import annotations

import pytest
import sympy as sp
import torch
from test_exercises import chapter_exercises, solution_code

from refimpl.discrete import masked
from refimpl.exercises import ExerciseFailed, check, exercises, get, marks
from refimpl.exercises import discrete as discrete_exercises

CHAPTER = discrete_exercises.CHAPTER
LABELS = [ex.label for ex in exercises(CHAPTER)]


@pytest.fixture
def book_conventions(monkeypatch: pytest.MonkeyPatch):
    """What the chapter's first cell sets: float64 by default; and the quick size."""
    monkeypatch.setenv("REFIMPL_QUICK", "1")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_every_exercise_of_the_chapter_is_checked_with_an_implement_and_a_derive() -> None:
    registered = {ex.label for ex in exercises(CHAPTER)}
    assert set(chapter_exercises(CHAPTER)) == registered == set(solution_code(CHAPTER))
    assert {ex.kind for ex in exercises(CHAPTER)} >= {"implement", "derive"} and len(registered) >= 3


@pytest.mark.parametrize("label", LABELS)
def test_exercise_shows_its_marks(label: str) -> None:
    body = chapter_exercises(CHAPTER)[label]
    assert body.strip().splitlines()[0] == marks(get(label))


@pytest.mark.parametrize("label", LABELS)
def test_reference_solution_passes_its_checker(label: str, book_conventions: None) -> None:
    code = solution_code(CHAPTER)[label]
    assert f'check("{label}",' in code
    exec(compile(code, f"<solution {label}>", "exec"), {"__name__": f"solution_{label}"})


@pytest.mark.parametrize("label", LABELS)
def test_stub_fails_its_checker(label: str, book_conventions: None) -> None:
    namespace: dict = {}
    exec(compile(get(label).stub, f"<stub {label}>", "exec"), namespace)
    with pytest.raises(ExerciseFailed, match=label):
        check(label, namespace["answer"])


def test_wrong_answers_are_rejected() -> None:
    """Plausible mistakes fail: the hitting time without the 1/n root, the reveal probability without the
    1 - abar denominator, a drifted TV list, the cache count of one position instead of L."""

    def no_root(t, n, u, schedule):
        return schedule.alpha_inv(1.0 - u * (1.0 - schedule.alpha(t)))

    with pytest.raises(ExerciseFailed, match="off by"):
        check("ex-discrete-first-hitting", no_root)
    abar_prev, abar = sp.symbols("abar_prev abar", positive=True)
    with pytest.raises(ExerciseFailed, match="differs"):
        check("ex-discrete-absorbing-reveal", abar_prev - abar)
    with pytest.raises(ExerciseFailed, match="off by"):
        check("ex-discrete-vq-mixing", [1 - t / 16 for t in range(17)])
    lin = masked.get_mask_schedule("linear")
    one_position = {N: float((lin.alpha(torch.linspace(1, 0, N + 1))[:-1] > 0).sum()) / N for N in (8, 64, 512)}
    with pytest.raises(ExerciseFailed, match="off by"):
        check("ex-discrete-cache", one_position)
