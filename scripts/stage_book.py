"""Stage the book with notebooks the test suite already executed, so ``make test`` runs each notebook once.

``make test`` runs ``tests/test_notebooks.py`` with ``REFIMPL_EXECUTED_NOTEBOOKS=<stage>/notebooks``: every
notebook is executed (in parallel, quick size) and saved there as ``.ipynb`` with its outputs. This script then
lays out ``<stage>`` as a copy of ``book/`` whose chapters are those executed notebooks, with notebook execution
switched off in its ``_config.yml``, so Jupyter Book renders the outputs it is given. A chapter with no executed
notebook, or one older than its source, is converted from its MyST source and marked to be executed by the build
itself (MyST-NB's per-notebook ``execution_mode``), so ``make book-check`` also works on its own.

Links beside the stage (``refimpl``, ``toy_models``, ``tests``) keep the chapters' ``literalinclude`` paths
(``../../refimpl/...`` from ``notebooks/``) pointing at the sources.

Usage::

    python scripts/stage_book.py --stage book/_build/quick/src
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
SOURCES = ROOT / "notebooks"
BOOK_FILES = ("_toc.yml", "intro.md", "references.bib")
INCLUDED_TREES = ("refimpl", "toy_models", "tests")


def toc_chapters() -> list[str]:
    """The chapter names (``notebooks/<name>``) listed in the book's table of contents, in book order."""
    return re.findall(r"file:\s*notebooks/(\S+)", (BOOK / "_toc.yml").read_text())


def lay_out(stage_dir: Path, config: str) -> None:
    """A copy of ``book/`` at ``stage_dir`` with the configuration ``config`` and without its chapters (the caller
    writes them into ``stage_dir/notebooks``), and links beside it to the trees the chapters include code from.

    Used by this script and by ``scripts/make_student.py`` (the student edition)."""
    (stage_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        shutil.copy2(BOOK / name, stage_dir / name)
    shutil.copytree(BOOK / "_static", stage_dir / "_static", dirs_exist_ok=True)  # the book's stylesheet
    shutil.copytree(BOOK / "_ext", stage_dir / "_ext", dirs_exist_ok=True)  # its redirect pages
    (stage_dir / "_config.yml").write_text(config)
    for tree in INCLUDED_TREES:
        link = stage_dir.parent / tree
        if not link.exists():
            link.symlink_to(ROOT / tree, target_is_directory=True)


def stage(stage_dir: Path) -> tuple[list[str], list[str]]:
    """Lay out the staged book; returns the chapters taken as executed and those left for the build to execute."""
    import jupytext
    import nbformat

    config = (BOOK / "_config.yml").read_text()
    config, n = re.subn(r"execute_notebooks:\s*\S+", 'execute_notebooks: "off"', config)
    if n != 1:
        raise SystemExit("book/_config.yml: expected one 'execute_notebooks:' setting to switch off")
    lay_out(stage_dir, config)
    notebooks = stage_dir / "notebooks"
    reused, executing = [], []
    for chapter in toc_chapters():
        source, executed = SOURCES / f"{chapter}.md", notebooks / f"{chapter}.ipynb"
        if executed.exists() and executed.stat().st_mtime >= source.stat().st_mtime:
            reused.append(chapter)
            continue
        nb = jupytext.read(source)
        nb.metadata["mystnb"] = {"execution_mode": "force"}
        nbformat.write(nb, executed)
        executing.append(chapter)
    return reused, executing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=Path, required=True, help="folder to lay the staged book out in")
    args = parser.parse_args()
    reused, executing = stage(args.stage.resolve())
    print(f"staged book: {len(reused)} chapters already executed, {len(executing)} to execute in the build")
    for chapter in executing:
        print(f"  executes in the build: {chapter}")


if __name__ == "__main__":
    main()
