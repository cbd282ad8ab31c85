"""Lint the code cells of every MyST notebook with ruff, in one process (``make lint``).

Each notebook is converted with jupytext to a Python script (prose lines become comments, so the line-length rule
does not apply to them; tests/test_book_sources.py checks the code lines' width) and piped to ``ruff check``. Exercises
are self-contained, so their cells import again what the chapter imported: the redefinition rule (F811) is off, as
are the import-position rule (E402: a chapter imports where it first needs a name) and the line length (E501).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jupytext

RUFF = [str(Path(sys.executable).parent / "ruff"), "check", "--quiet", "--extend-ignore", "E402,E501,F811"]


def main(paths: list[str]) -> int:
    """ruff over each notebook's code; the exit status is 1 if any notebook has a finding."""
    failed = 0
    for path in paths:
        script = jupytext.writes(jupytext.read(path), fmt="py:percent")
        proc = subprocess.run([*RUFF, "--stdin-filename", f"{path}.py", "-"], input=script, text=True, check=False)
        failed |= proc.returncode != 0
    return int(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or sorted(str(p) for p in Path("notebooks").glob("*.md"))))
