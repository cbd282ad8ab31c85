"""Every checked exercise: its reference solution passes its checker, its stub fails it, and the chapter shows it.

The reference solutions are the notebooks' own solution cells (between ``{solution-start} <label>`` and
``{solution-end}``), executed here in a fresh namespace at the quick size (``REFIMPL_QUICK=1``) with the book's
float64 default, so a solution that leans on its chapter's earlier cells fails here. The stubs are the ones
``scripts/make_student.py`` writes into the student notebooks (``refimpl.exercises.Exercise.stub``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from refimpl.exercises import ExerciseFailed, check, exercises, get, marks

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted({ex.chapter for ex in exercises()})
LABELS = [ex.label for ex in exercises()]
EXERCISE = re.compile(r"```\{exercise\}\n:label: (\S+)\n(.*?)```", re.S)
MARKER = re.compile(r"\{solution-(start|end)\}\s*(\S*)")


def chapter_exercises(chapter: str) -> dict[str, str]:
    """Label -> body text of every ``{exercise}`` in a chapter's source."""
    return dict(EXERCISE.findall((ROOT / "notebooks" / f"{chapter}.md").read_text()))


def solution_code(chapter: str) -> dict[str, str]:
    """Label -> the code of the solution's code cells, joined, for every gated solution in a chapter."""
    import jupytext

    nb = jupytext.read(ROOT / "notebooks" / f"{chapter}.md")
    code: dict[str, list[str]] = {}
    current = None
    for cell in nb.cells:
        if cell.cell_type == "code":
            if current is not None:
                code[current].append(cell.source)
            continue
        for kind, label in MARKER.findall(cell.source):
            current = label if kind == "start" else None
            if current is not None:
                code.setdefault(current, [])
    return {label: "\n\n".join(cells) for label, cells in code.items()}


@pytest.fixture
def book_conventions(monkeypatch: pytest.MonkeyPatch):
    """What every chapter's first cell sets: float64 by default; and the quick size."""
    monkeypatch.setenv("REFIMPL_QUICK", "1")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_exercise_of_a_converted_chapter_is_checked(chapter: str) -> None:
    """A chapter with checked exercises has a checker for each of its exercises, and a solution for each."""
    shown = set(chapter_exercises(chapter))
    registered = {ex.label for ex in exercises(chapter)}
    assert shown == registered, f"{chapter}: exercises without a checker {shown - registered}, "
    f"checkers without an exercise {registered - shown}"
    assert set(solution_code(chapter)) == registered


@pytest.mark.parametrize("label", LABELS)
def test_exercise_shows_its_marks(label: str) -> None:
    """The exercise's first line is its kind, difficulty, time and goal, as registered."""
    ex = get(label)
    body = chapter_exercises(ex.chapter)[label]
    assert body.strip().splitlines()[0] == marks(ex), f"{label}: the first line should read {marks(ex)!r}"


@pytest.mark.parametrize("label", LABELS)
def test_reference_solution_passes_its_checker(label: str, book_conventions: None) -> None:
    """The notebook's solution, run on its own, ends by passing ``check(label, answer)``."""
    code = solution_code(get(label).chapter)[label]
    assert f'check("{label}",' in code, f"{label}: the solution should end with check({label!r}, answer)"
    namespace: dict = {"__name__": f"solution_{label}"}
    exec(compile(code, f"<solution {label}>", "exec"), namespace)


@pytest.mark.parametrize("label", LABELS)
def test_stub_fails_its_checker(label: str, book_conventions: None) -> None:
    """A student's untouched stub is rejected with a message (a stub that passes is a bug)."""
    namespace: dict = {}
    exec(compile(get(label).stub, f"<stub {label}>", "exec"), namespace)
    with pytest.raises(ExerciseFailed, match=label):
        check(label, namespace["answer"])


def test_a_wrong_answer_gets_a_helpful_message() -> None:
    """A wrong value is rejected with what was expected; an unknown label names the known ones."""
    with pytest.raises(ExerciseFailed, match="off by"):
        check("ex-ei-fast", list(range(5, 14)))
    with pytest.raises(ExerciseFailed, match="should be a function"):
        check("ex-lab-cfg", 3.0)
    with pytest.raises(ValueError, match="known"):
        check("ex-no-such-exercise", 1.0)


def test_student_edition_replaces_every_solution() -> None:
    """scripts/make_student.py leaves no solution in a chapter: each becomes a stub, and a check if registered."""
    import make_student  # scripts/make_student.py

    config = make_student.student_config()  # the book's configuration, with the solutions hidden
    assert "\n    hide_solutions: true\n" in config and "student edition" in config
    for chapter in CHAPTERS:
        text, labels = make_student.student_source((ROOT / "notebooks" / f"{chapter}.md").read_text())
        assert sorted(labels) == sorted(ex.label for ex in exercises(chapter))
        for ex in exercises(chapter):
            assert f'check("{ex.label}", answer)' in text and ex.stub in text
        assert "solution-start" not in text and "solution-end" not in text


def test_registration_refuses_bad_metadata() -> None:
    """A checker with an unknown kind or a difficulty outside 1..3 is refused, naming the field."""
    from refimpl.exercises import exercise

    with pytest.raises(ValueError, match="kind"):
        exercise("ex-x", chapter="c", goal="g", kind="essay", difficulty=1, minutes=5, stub="answer = None")
    with pytest.raises(ValueError, match="difficulty"):
        exercise("ex-x", chapter="c", goal="g", kind="measure", difficulty=4, minutes=5, stub="answer = None")
    with pytest.raises(ExerciseFailed, match="numbers"):
        check("ex-lab-dirac", "three small numbers")
