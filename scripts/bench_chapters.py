"""Time every chapter of the book: execute each notebook from a clean kernel and print a table of wall times.

Each chapter in ``book/_toc.yml`` is executed as ``make book`` executes it (full size; ``--quick`` sets
``REFIMPL_QUICK=1`` as the test suite does), one at a time, with one thread per process, and timed; the table
gives the chapter's total, its slowest cell and whether it is within the budget (default 60 s). Nothing is
asserted: a chapter over budget is reported, and the exit status is 1 when any is (``--no-fail`` to print only).

Usage::

    python scripts/bench_chapters.py [CHAPTER ...] [--quick] [--budget 60] [--no-fail]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT_S = 1800


def toc_chapters() -> list[str]:
    """The chapter names (``notebooks/<name>``) of the book's table of contents, in book order."""
    return re.findall(r"file:\s*notebooks/(\S+)", (ROOT / "book" / "_toc.yml").read_text())


def time_chapter(chapter: str, quick: bool) -> tuple[float, float, int]:
    """Execute one chapter in a fresh kernel; returns (total seconds, slowest cell's seconds, its code-cell number)."""
    import jupytext
    from nbclient import NotebookClient

    path = ROOT / "notebooks" / f"{chapter}.md"
    nb = jupytext.read(path)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    env = {k: v for k, v in os.environ.items() if k != "REFIMPL_QUICK"}
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **({"REFIMPL_QUICK": "1"} if quick else {})}
    slowest, slowest_cell, code_cells = 0.0, 0, 0
    start = time.perf_counter()
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            cell_start = time.perf_counter()
            client.execute_cell(cell, index)
            if cell.cell_type == "code":
                code_cells += 1
                if time.perf_counter() - cell_start > slowest:
                    slowest, slowest_cell = time.perf_counter() - cell_start, code_cells
    return time.perf_counter() - start, slowest, slowest_cell


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="notebook stems (default: every chapter of the book)")
    parser.add_argument("--quick", action="store_true", help="the small size (REFIMPL_QUICK=1)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds a chapter may take (default 60)")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a chapter is over budget")
    args = parser.parse_args()
    chapters = args.chapters or toc_chapters()
    size = "quick" if args.quick else "full"
    print(f"| chapter | {size} size, s | slowest cell, s (code cell) | within {args.budget:g} s |")
    print("|---|---|---|---|")
    over, total = [], 0.0
    for chapter in chapters:
        seconds, slowest, cell = time_chapter(chapter, args.quick)
        total += seconds
        if seconds > args.budget:
            over.append(chapter)
        print(
            f"| {chapter} | {seconds:.1f} | {slowest:.1f} ({cell}) | {'yes' if seconds <= args.budget else 'NO'} |",
            flush=True,
        )
    print(f"| total | {total:.1f} | | {len(chapters) - len(over)} of {len(chapters)} |")
    return 1 if over and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
