"""Comparisons the checkers share: arrays against a reference with a tolerance, functions against the package's,
sympy expressions symbolically. Each raises :class:`~refimpl.exercises.ExerciseFailed` with a message that names
what was compared and by how much it missed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

U64 = torch.finfo(torch.float64).eps / 2  # unit round-off of float64


def _failed(message: str) -> Exception:
    from refimpl.exercises import ExerciseFailed

    return ExerciseFailed(message)


def as_array(answer: Any, what: str, shape: Sequence[int] | None = None) -> Tensor:
    """``answer`` as a float64 tensor (numbers, lists, numpy arrays, tensors), with a finite check and a shape."""
    try:
        out = torch.as_tensor(answer.detach() if isinstance(answer, Tensor) else answer, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise _failed(f"{what} should be numbers (a float, list or tensor), got {type(answer).__name__}") from err
    if shape is not None and tuple(out.shape) != tuple(shape):
        raise _failed(f"{what} should have shape {tuple(shape)}, got {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        raise _failed(f"{what} has NaN or infinite entries")
    return out


def close(answer: Any, expected: Tensor, tol: float, what: str, hint: str = "") -> str:
    """Max-abs error of ``answer`` against ``expected`` at most ``tol``; the confirmation names the error."""
    got = as_array(answer, what, expected.shape)
    error = float((got - expected.to(torch.float64)).abs().max()) if got.numel() else 0.0
    if not error <= tol:
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        raise _failed(
            f"{what} is off by {error:.3g} (allowed {tol:.1g}; the expected values are of size {scale:.3g})."
            + (f" Hint: {hint}" if hint else "")
        )
    return f"{what} matches to {error:.1e} (allowed {tol:.1g})."


def callable_answer(answer: Any, what: str) -> Callable[..., Any]:
    """``answer`` if it is a function, else a failure saying a function was expected."""
    if not callable(answer):
        raise _failed(f"{what}: the answer should be a function, got {type(answer).__name__}")
    return answer


def call(fn: Callable[..., Any], *args: Any, what: str) -> Any:
    """``fn(*args)``, turning an exception (other than NotImplementedError) into a failure that names it."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except Exception as err:  # a student's function may raise anything; report it
        raise _failed(f"{what} raised {type(err).__name__}: {err}") from err


def sympy_equal(answer: Any, expected: Any, what: str, symbols: dict[str, Any]) -> str:
    """``answer - expected`` simplifies to 0, with the answer's symbols matched to ``symbols`` by name (so a
    student's ``sp.symbols("h")`` with other assumptions still counts)."""
    import sympy as sp

    try:
        expr = sp.sympify(answer)
    except (sp.SympifyError, TypeError) as err:
        raise _failed(f"{what} should be a sympy expression, got {type(answer).__name__}") from err
    unknown = sorted(str(s) for s in expr.free_symbols if str(s) not in symbols)
    if unknown:
        raise _failed(f"{what} uses symbols {unknown}; write it in {sorted(symbols)}")
    expr = expr.subs({s: symbols[str(s)] for s in expr.free_symbols})
    difference = sp.simplify(expr - expected)
    if difference != 0:
        raise _failed(f"{what} differs from the expected expression by {difference}")
    return f"{what} equals {sp.simplify(expected)} symbolically."


def exact_toy(mixture: Any, seed: int, n: int = 8, schedule: str = "vp_linear") -> tuple[Any, Any, Tensor]:
    """The set-up most checkers share: the schedule ``schedule``, the exact model of ``mixture`` under it, and n
    draws of x_T from its law at t_max (generator seeded with ``seed``)."""
    from refimpl.schedules import get_schedule
    from toy_models import ExactModel

    sched = get_schedule(schedule)
    model = ExactModel(mixture, sched)
    return sched, model, model.sample_xt(n, sched.t_max, torch.Generator().manual_seed(seed))[1]


def steps_tolerance(n_steps: int, scale: float) -> float:
    """Round-off allowed after ``n_steps`` sampler steps of a handful of roundings each, on states of size ``scale``."""
    return 64 * n_steps * U64 * scale
