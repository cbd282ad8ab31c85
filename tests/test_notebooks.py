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
import re
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.md"))
CELL_TIMEOUT_S = 600
DEFAULT_KERNEL = "python3"
# Colour codes in IPython tracebacks; removed so the failure message reads as plain text.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookCellError(Exception):
    """A cell of a notebook failed; the message holds the cell's source and the error."""


def _error_text(cell: dict, err: Exception) -> str:
    """The error of a failed cell: the traceback it printed if any, else the exception's message."""
    for output in reversed(cell.get("outputs", [])):
        if output.get("output_type") == "error":
            return "\n".join(output.get("traceback", [])) or f"{output.get('ename')}: {output.get('evalue')}"
    return str(err)


def execute_notebook(path: Path) -> Any:
    """Execute the notebook at ``path`` cell by cell in a new kernel.

    The kernel runs in the notebook's folder with ``REFIMPL_QUICK=1`` added to this process's environment.
    Returns the executed notebook. Raises :class:`NotebookCellError` naming the first cell that raised, timed out
    (``CELL_TIMEOUT_S`` seconds) or killed the kernel.
    """
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = jupytext.read(path)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", DEFAULT_KERNEL),
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},  # the kernel's working directory
    )
    client.reset_execution_trackers()
    with client.setup_kernel(env={**os.environ, "REFIMPL_QUICK": "1", "OMP_NUM_THREADS": "1"}):
        for index, cell in enumerate(nb.cells):
            try:
                client.execute_cell(cell, index)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
                error = ANSI_ESCAPE.sub("", _error_text(cell, err))
                code_number = sum(c.cell_type == "code" for c in nb.cells[: index + 1])
                raise NotebookCellError(
                    f"{path.name}: code cell {code_number} failed ({type(err).__name__})\n"
                    f"---- cell source ----\n{cell.source}\n---- error ----\n{error}"
                ) from err
    return nb


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
            save_executed(execute_notebook(path), path)
        except NotebookCellError as err:
            failure = str(err)
        if failure is not None:  # failed outside the except block, so the report is the message alone
            pytest.fail(failure, pytrace=False)
