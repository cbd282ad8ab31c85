"""Execute the book's chapters in clean kernels: time them (``make bench``) or save them for the build (``make book``).

Each chapter of ``book/_toc.yml`` (a MyST Markdown notebook in ``notebooks/``) is read with jupytext and executed
top to bottom with nbclient in a fresh kernel, with ``notebooks/`` as the working directory and one thread per
process, at full size (``--quick`` sets ``REFIMPL_QUICK=1``, the size the test suite runs). ``--jobs N`` executes
N chapters at once, each in its own kernel; ``--save DIR`` writes each executed notebook, outputs included, to
``DIR/<chapter>.ipynb``, which ``scripts/stage_book.py`` lays out for Jupyter Book to render without executing
again. A table gives each chapter's wall time, its slowest cell and whether it is within the budget (default 60 s);
with ``--jobs`` above 1 the chapters share the cores, so their times are those of a shared machine.

A chapter whose cell raises is reported with the cell's source and error; the other chapters still run, and the
exit status is 1. A chapter over budget also makes it 1, unless ``--no-fail``.

``tests/test_notebooks.py`` executes each notebook through :func:`execute_notebook` here.

Usage::

    python scripts/run_chapters.py [CHAPTER ...] [--quick] [--jobs N] [--save DIR] [--budget 60] [--no-fail]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from stage_book import ROOT, toc_chapters

NOTEBOOK_DIR = ROOT / "notebooks"
CELL_TIMEOUT_S = 1800
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


def execute_notebook(path: Path, quick: bool, timeout: float = CELL_TIMEOUT_S) -> tuple[Any, list[float]]:
    """Execute the notebook at ``path`` cell by cell in a new kernel; returns it with each code cell's wall seconds.

    The kernel runs in the notebook's folder with this process's environment, one thread per process, and
    ``REFIMPL_QUICK=1`` exactly when ``quick``. Raises :class:`NotebookCellError` naming the first cell that
    raised, ran over ``timeout`` seconds or killed the kernel.
    """
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = jupytext.read(path)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", DEFAULT_KERNEL),
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},  # the kernel's working directory
    )
    env = {k: v for k, v in os.environ.items() if k != "REFIMPL_QUICK"}
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **({"REFIMPL_QUICK": "1"} if quick else {})}
    client.reset_execution_trackers()
    cell_seconds = []
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            start = time.perf_counter()
            try:
                client.execute_cell(cell, index)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
                error = ANSI_ESCAPE.sub("", _error_text(cell, err))
                code_number = sum(c.cell_type == "code" for c in nb.cells[: index + 1])
                raise NotebookCellError(
                    f"{path.name}: code cell {code_number} failed ({type(err).__name__})\n"
                    f"---- cell source ----\n{cell.source}\n---- error ----\n{error}"
                ) from err
            if cell.cell_type == "code":
                cell_seconds.append(time.perf_counter() - start)
    return nb, cell_seconds


def run_chapter(chapter: str, quick: bool, save: Path | None) -> tuple[str, float, list[float], str | None]:
    """Execute one chapter (saving it under ``save`` if given): (chapter, seconds, cell seconds, error or None)."""
    start = time.perf_counter()
    try:
        nb, cells = execute_notebook(NOTEBOOK_DIR / f"{chapter}.md", quick)
    except NotebookCellError as err:
        return chapter, time.perf_counter() - start, [], str(err)
    if save is not None:
        import nbformat

        save.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save / f"{chapter}.ipynb")
    return chapter, time.perf_counter() - start, cells, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="notebook stems (default: every chapter of the book)")
    parser.add_argument("--quick", action="store_true", help="the small size (REFIMPL_QUICK=1)")
    parser.add_argument("--jobs", type=int, default=1, help="chapters executed at once (default 1)")
    parser.add_argument("--save", type=Path, help="folder to write the executed notebooks to")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds a chapter may take (default 60)")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a chapter is over budget")
    args = parser.parse_args()
    chapters = args.chapters or toc_chapters()
    unknown = [c for c in chapters if not (NOTEBOOK_DIR / f"{c}.md").exists()]
    if unknown or args.jobs < 1:
        parser.error(f"no notebooks/<name>.md for {unknown}" if unknown else f"--jobs must be >= 1, got {args.jobs}")
    size = "quick" if args.quick else "full"
    shared = f", {args.jobs} at once" if args.jobs > 1 else ""
    print(f"executing {len(chapters)} chapters at {size} size{shared}", flush=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_chapter, c, args.quick, args.save) for c in chapters]
        results = {}
        for done, future in enumerate(as_completed(futures), 1):
            chapter, seconds, cells, error = future.result()
            results[chapter] = (seconds, cells, error)
            print(f"[{done}/{len(chapters)}] {chapter}: {'FAILED' if error else f'{seconds:.1f} s'}", flush=True)
    print(f"\n| chapter | {size} size{shared}, s | slowest cell, s (code cell) | within {args.budget:g} s |")
    print("|---|---|---|---|")
    failed, over = [], []
    for chapter in chapters:
        seconds, cells, error = results[chapter]
        if error:
            failed.append(chapter)
            print(f"| {chapter} | failed | | |")
            continue
        slowest = max(range(len(cells)), key=cells.__getitem__) if cells else 0
        within = seconds <= args.budget
        over += [] if within else [chapter]
        slow_cell = f"{cells[slowest]:.1f} ({slowest + 1})" if cells else "-"
        print(f"| {chapter} | {seconds:.1f} | {slow_cell} | {'yes' if within else 'NO'} |")
    total = sum(seconds for seconds, _, _ in results.values())
    print(
        f"| total | {total:.1f} (wall {time.perf_counter() - start:.1f}) | | {len(chapters) - len(over)} of "
        f"{len(chapters)} |"
    )
    for chapter in failed:
        print(f"\n{results[chapter][2]}", file=sys.stderr)
    return 1 if failed or (over and not args.no_fail) else 0


if __name__ == "__main__":
    sys.exit(main())
