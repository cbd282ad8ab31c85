"""The paper index behind the coverage page: every paper listed once, every named function importable, every named
test present in its test file (found by parsing the file), every chapter known."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from refimpl.papers import CHAPTERS, PAPERS, book_chapter, coverage_table, resolve
from refimpl.registry import samplers

ROOT = Path(__file__).resolve().parents[1]


def _test_functions(path: Path) -> set[str]:
    return {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}


def test_all_63_papers_appear_once_with_a_known_chapter() -> None:
    assert sorted(p.number for p in PAPERS) == list(range(1, 64))
    for p in PAPERS:
        assert p.chapter in CHAPTERS, p
        sections = CHAPTERS[p.chapter][1]
        assert p.section is None or (sections is not None and p.section in sections), p
        assert p.function is not None or p.note or sections is None, f"#{p.number}: say why there is no function"


@pytest.mark.parametrize("paper", [p for p in PAPERS if p.function], ids=lambda p: f"paper{p.number}")
def test_every_named_function_imports(paper) -> None:
    assert callable(resolve(paper.function)), paper.function


@pytest.mark.parametrize("paper", [p for p in PAPERS if p.test], ids=lambda p: f"paper{p.number}")
def test_every_named_test_exists(paper) -> None:
    file, name = paper.test.split("::")
    path = ROOT / file
    assert path.is_file(), paper.test
    assert name in _test_functions(path), paper.test


def test_every_section_is_a_notebook_and_every_key_has_registered_samplers() -> None:
    for _, sections in CHAPTERS.values():
        for stem in sections or ():
            assert (ROOT / "notebooks" / f"{stem}.md").is_file(), stem
    keys = {spec.paper for spec in samplers(kind=None)}
    assert all(p.key in keys for p in PAPERS if p.key)


def test_the_table_lists_every_paper_and_the_registry() -> None:
    table = coverage_table().splitlines()
    assert len(table) == 2 + 63
    assert [int(row.split("|")[1]) for row in table[2:]] == list(range(1, 64))
    assert "`dpm_solver_23`" in table[2 + 22] and "`pndm`" in table[2 + 5]  # joined with the registry


def test_resolve_refuses_a_missing_path() -> None:
    with pytest.raises((ImportError, AttributeError)):
        resolve("refimpl.samplers.no_such_function")
    with pytest.raises(ImportError):
        resolve("no_such_package.f")


def test_book_chapter_is_the_number_the_book_renders() -> None:
    """The book numbers its chapters across the numbered parts of _toc.yml, in order; every section's file prefix
    (what the coverage page shows) is that number."""
    toc = (ROOT / "book" / "_toc.yml").read_text()
    numbered = []
    for part in toc.split("- caption:")[1:]:
        if "numbered: true" in part:
            numbered += re.findall(r"file:\s*notebooks/(\S+)", part)
    rendered = {stem: index for index, stem in enumerate(numbered, 1)}
    for _, sections in CHAPTERS.values():
        for stem in sections or ():
            assert book_chapter(stem) == rendered[stem], stem
    for bad in ("course", "5_x", "ab_notation"):
        with pytest.raises(ValueError, match="stem"):
            book_chapter(bad)
