"""The README's Python code blocks run exactly as written (in order, in one namespace, as a reader would)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2, "the README lost its examples"


def test_the_readme_python_blocks_run_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for k, block in enumerate(BLOCKS):
        exec(compile(block, f"README.md python block {k + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "PASS: my_dpmpp_2m agrees with refimpl's dpm_solver_pp_2m" in out, out
