"""Chapter 11's checkers reject plausible wrong answers. That each reference solution passes, each stub fails, each
exercise shows its marks and has a checker is tested for every chapter in ``test_exercises.py``."""

from __future__ import annotations

import pytest
import sympy as sp
import torch

from refimpl.discrete import masked
from refimpl.exercises import ExerciseFailed, check


def test_wrong_answers_are_rejected() -> None:
    """Plausible mistakes fail: the hitting time without the 1/n root, the reveal probability without the
    1 - abar denominator, a drifted TV list, the cache count of one position instead of L."""

    def no_root(t, n, u, schedule):
        return schedule.alpha_inv(1.0 - u * (1.0 - schedule.alpha(t)))

    with pytest.raises(ExerciseFailed, match="off by"):
        check("ex-discrete-first-hitting", no_root)
    abar_prev, abar = sp.symbols("abar_prev abar", positive=True)
    with pytest.raises(ExerciseFailed, match="differs"):
        check("ex-discrete-absorbing-reveal", abar_prev - abar)
    with pytest.raises(ExerciseFailed, match="off by"):
        check("ex-discrete-vq-mixing", [1 - t / 16 for t in range(17)])
    lin = masked.get_mask_schedule("linear")
    one_position = {N: float((lin.alpha(torch.linspace(1, 0, N + 1))[:-1] > 0).sum()) / N for N in (8, 64, 512)}
    with pytest.raises(ExerciseFailed, match="off by"):
        check("ex-discrete-cache", one_position)
