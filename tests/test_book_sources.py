"""Fast checks of the book's sources, so a broken include or citation fails in seconds, not in the book build."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.md"))
INCLUDE = re.compile(r"```\{literalinclude\} \.\./\.\./(\S+)\n:pyobject: (\S+)")
CITE = re.compile(r"\{cite(?::[pt])?\}`([^`]+)`")
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", flags=re.M | re.S)

#: The widest code line the book's column shows without a scroll bar (``book/_static/refimpl.css``; the page check
#: ``scripts/check_book.py`` measures it in Chromium): 120 characters, ruff's line length for the package.
CODE_WIDTH = 120


def _objects(path: Path) -> set[str]:
    """Top-level functions and classes of a Python file, and Class.method names."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{b.name}" for b in node.body if isinstance(b, ast.FunctionDef)}
    return names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_included_code_exists(notebook: Path) -> None:
    """Every ``literalinclude`` with ``:pyobject:`` names a function or class that exists in that file."""
    for path, obj in INCLUDE.findall(notebook.read_text()):
        assert (ROOT / path).is_file(), f"{notebook.name} includes a missing file {path}"
        assert obj in _objects(ROOT / path), f"{notebook.name} includes {obj}, which {path} does not define"


def test_every_citation_is_in_the_bibliography() -> None:
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(), flags=re.M))
    for source in [*NOTEBOOKS, ROOT / "book" / "intro.md"]:
        for group in CITE.findall(source.read_text()):
            for key in (k.strip() for k in group.split(",")):
                assert key in keys, f"{source.name} cites {key!r}, which book/references.bib does not define"


def test_every_notebook_is_in_the_table_of_contents() -> None:
    toc = (ROOT / "book" / "_toc.yml").read_text()
    for notebook in NOTEBOOKS:
        assert f"notebooks/{notebook.stem}" in toc, f"{notebook.name} is not listed in book/_toc.yml"


def test_old_chapter_urls_redirect_to_chapters_of_the_book() -> None:
    """Every redirect of book/_config.yml (chapters renamed to follow the book's order) leaves a name that is no
    longer a chapter and points to one in the table of contents, and every renamed chapter is in the map."""
    import yaml

    redirects = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())["sphinx"]["config"]["redirects"]
    toc = (ROOT / "book" / "_toc.yml").read_text()
    stems = {p.stem for p in NOTEBOOKS}
    for old, new in redirects.items():
        assert old.removeprefix("notebooks/") not in stems, f"{old} is still a chapter: a redirect would replace it"
        assert f"file: {new}\n" in toc, f"{old} redirects to {new}, which is not in book/_toc.yml"
    assert len(set(redirects.values())) == len(redirects), "two old pages redirect to the same chapter"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_code_lines_fit_the_column(notebook: Path) -> None:
    """No code-cell line is wider than CODE_WIDTH characters, so no code block scrolls sideways on the page."""
    wide = [
        line for cell in CODE_CELL.findall(notebook.read_text()) for line in cell.splitlines() if len(line) > CODE_WIDTH
    ]
    assert not wide, f"{notebook.name}: {len(wide)} code line(s) over {CODE_WIDTH} characters: {wide[0][:80]}..."
