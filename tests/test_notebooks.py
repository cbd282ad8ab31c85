"""Execution is a test: run every notebook in notebooks/ from a clean kernel.

Each ``notebooks/*.md`` (a MyST Markdown notebook with a jupytext header) is read with jupytext and
executed top to bottom with nbclient in a fresh kernel, with ``notebooks/`` as the working directory and
``REFIMPL_QUICK=1`` in the kernel's environment (notebooks read it as a size knob, so this is the small
version; ``make book`` builds the full one). One test per notebook, named by file; a failing cell fails its
test with the cell's source and the error. With no notebooks, this module collects no test.

When ``REFIMPL_EXECUTED_NOTEBOOKS`` names a folder, each executed notebook is saved there as ``<name>.ipynb``
(outputs included), so that ``make book-check`` builds the book from these executions instead of running every
notebook a second time (``scripts/stage_book.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import run_chapters  # scripts/run_chapters.py: it executes the notebooks for make book and make bench too

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.md"))
CELL_TIMEOUT_S = 600


def save_executed(nb: Any, path: Path) -> None:
    """Write the executed notebook to ``$REFIMPL_EXECUTED_NOTEBOOKS/<name>.ipynb`` when that variable is set."""
    folder = os.environ.get("REFIMPL_EXECUTED_NOTEBOOKS")
    if folder:
        import nbformat

        Path(folder).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, Path(folder) / f"{path.stem}.ipynb")


if NOTEBOOKS:  # no notebooks: collect no test (rather than one skipped for an empty parameter set)

    @pytest.mark.notebook
    @pytest.mark.slow
    @pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
    def test_notebook_executes(path: Path) -> None:
        """The notebook runs from a clean kernel without an error in any cell."""
        failure = None
        try:
            save_executed(run_chapters.execute_notebook(path, quick=True, timeout=CELL_TIMEOUT_S)[0], path)
        except run_chapters.NotebookCellError as err:
            failure = str(err)
        if failure is not None:  # failed outside the except block, so the report is the message alone
            pytest.fail(failure, pytrace=False)
