"""Generate the student edition of the book from the chapters' sources (never by hand).

Every gated solution (``{solution-start} <label>`` ... ``{solution-end}``) of every chapter in the table of
contents is replaced by a stub cell and a check cell: the stub is the exercise's registered one
(``refimpl.exercises``; it sets ``answer``), the check cell calls ``refimpl.exercises.check("<label>", answer)``,
which says whether the answer is right and, if not, what was expected. An exercise without a checker gets an
empty solution cell. Both cells carry the tag ``skip-execution``, so the book builds with them unexecuted.

Writes, under ``--out`` (default ``book/_build/student``):

- ``notebooks/<chapter>.ipynb``: the student notebooks (no outputs), to hand out;
- ``src/``: the sources of the HTML edition, the student chapters with the book's configuration plus
  ``hide_solutions: true`` (sphinx-exercise) and the book's table of contents, with links beside it so the
  chapters' ``literalinclude`` paths resolve; build it with
  ``jupyter-book build <out>/src --path-output <out>`` (``make student`` does both steps).

Usage::

    python scripts/make_student.py [--out book/_build/student]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from stage_book import BOOK, ROOT, lay_out, toc_chapters

SOLUTION = re.compile(
    r"```\{solution-start\} (?P<label>\S+)\n(?::[^\n]*\n)*```\n(?P<body>.*?)```\{solution-end\}\n```\n", re.S
)
CELL = "```{{code-cell}} ipython3\n:tags: [skip-execution]\n{code}```\n"


def student_block(label: str) -> str:
    """The text that replaces the solution of exercise ``label``: a stub cell and, if it is checked, a check."""
    from refimpl.exercises import get

    try:
        stub = get(label).stub
    except ValueError:  # an exercise without a checker: an empty cell to write the solution in
        return "**Your solution:**\n\n" + CELL.format(code="# your solution\n")
    check = f'from refimpl.exercises import check\n\ncheck("{label}", answer)\n'
    cells = CELL.format(code=stub) + "\n" + CELL.format(code=check)
    return "**Your solution** (the second cell checks it):\n\n" + cells


def student_source(text: str) -> tuple[str, list[str]]:
    """A chapter's MyST source with every gated solution replaced; returns it and the labels replaced."""
    labels: list[str] = []

    def replace(match: re.Match[str]) -> str:
        labels.append(match["label"])
        return student_block(match["label"])

    out = SOLUTION.sub(replace, text)
    if "{solution-start}" in out or "{solution-end}" in out:
        raise SystemExit("a solution-start/solution-end pair was not recognised; check its fences")
    return out, labels


def student_config() -> str:
    """The book's ``_config.yml`` with sphinx-exercise's ``hide_solutions: true`` added to the Sphinx config."""
    config = (BOOK / "_config.yml").read_text()
    block = r"(\nsphinx:\n(?:  (?!config:).*\n|    .*\n)*  config:\n)"  # the sphinx block, up to its config:
    config, n = re.subn(block, r"\1    hide_solutions: true\n", config)
    if n != 1:
        raise SystemExit("book/_config.yml: expected one 'sphinx: config:' block to add hide_solutions to")
    return config.replace('title: "refimpl:', 'title: "refimpl (student edition):', 1)


def build_sources(out: Path) -> dict[str, list[str]]:
    """Write the student notebooks and the HTML edition's sources under ``out``; returns chapter -> labels."""
    import jupytext

    src, notebooks = out / "src", out / "notebooks"
    lay_out(src, student_config())
    notebooks.mkdir(parents=True, exist_ok=True)
    replaced = {}
    for chapter in toc_chapters():
        text, labels = student_source((ROOT / "notebooks" / f"{chapter}.md").read_text())
        (src / "notebooks" / f"{chapter}.md").write_text(text)
        jupytext.write(jupytext.reads(text, fmt="md:myst"), notebooks / f"{chapter}.ipynb")
        replaced[chapter] = labels
    return replaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BOOK / "_build" / "student", help="output folder")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    replaced = build_sources(args.out.resolve())
    from refimpl.exercises import exercises

    checked = {ex.label for ex in exercises()}
    total = sum(len(labels) for labels in replaced.values())
    with_check = sum(label in checked for labels in replaced.values() for label in labels)
    print(f"student edition: {len(replaced)} chapters, {total} solutions replaced ({with_check} with a check)")
    print(f"  notebooks: {args.out / 'notebooks'}\n  HTML sources: {args.out / 'src'}")


if __name__ == "__main__":
    main()
