"""Scalar and array checks that ``refimpl._validation`` does not have yet (private; to be merged into it).

Each raises ``TypeError`` (bad kind) or ``ValueError`` (bad value) naming the argument, like the shared checks.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from refimpl._validation import as_float_tensor, as_real_array, check_finite


def check_integer(value: object, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int (a Python or NumPy integer, not a bool) in [lo, hi]."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{name} must lie in {span}, got {value}")
    return int(value)


def check_number(value: object, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """``value`` as a finite real float in [lo, hi] (an int, a float or a 0-d array or tensor)."""
    array = as_real_array(value, name)
    if array.ndim != 0:
        raise ValueError(f"{name} must be a single number, got shape {array.shape}")
    x = float(array)
    if not lo <= x <= hi:
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}], got {x:g}")
    return x


def check_array(value: object, name: str, ndim: int | None = None, *, nonempty: bool = True) -> np.ndarray:
    """``value`` as a finite float64 array with ``ndim`` dimensions (any if None), non-empty unless told."""
    array = as_real_array(value, name)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    if nonempty and array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    return array


def check_generator(rng: object, name: str = "rng") -> np.random.Generator:
    """Raise ``TypeError`` unless ``rng`` is a ``numpy.random.Generator``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name} must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def check_tensor(value: object, name: str, ndim: int | None = None) -> Tensor:
    """``value`` as a finite real floating tensor (numbers and arrays are converted, float64 unless floating)."""
    if isinstance(value, str) or value is None:
        raise TypeError(f"{name} must be a tensor of real numbers, got {type(value).__name__}")
    x = check_finite(as_float_tensor(value, name), name)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}")
    return x


def check_callable(value: object, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` can be called (a function argument such as a score)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
