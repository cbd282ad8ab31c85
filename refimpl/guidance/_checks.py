"""Input checks shared by the guidance modules, on top of ``refimpl._validation`` (each names its argument)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from refimpl._validation import as_float_tensor, check_finite, check_instance
from refimpl.models import DiffusionModel, check_model


def real_tensor(value: object, name: str, ndim: int | tuple[int, ...] | None = None, finite: bool = True) -> Tensor:
    """``value`` as a real floating tensor with ``ndim`` dimensions and at least one entry; finite unless told
    otherwise (then only NaN and +inf are refused: log-weights may be -inf)."""
    check_instance(value, Tensor, name)
    x = as_float_tensor(value, name)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and x.ndim not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite:
        return check_finite(x, name)
    if bool(torch.isnan(x).any() | (x == math.inf).any()):
        raise ValueError(f"{name} holds NaN or +inf")
    return x


def labels_tensor(value: object, name: str, n: int, n_classes: int) -> Tensor:
    """``value`` as n integer labels in [0, n_classes)."""
    check_instance(value, Tensor, name)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool or value.shape != (n,):
        raise TypeError(f"{name} must be {n} integer labels, got {value.dtype} of shape {tuple(value.shape)}")
    if bool(((value < 0) | (value >= n_classes)).any()):
        raise ValueError(f"{name} must lie in [0, {n_classes})")
    return value.to(torch.long)


def positive_int(value: object, name: str) -> int:
    """``value`` as an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def positive_float(value: object, name: str) -> float:
    """``value`` as a finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return float(value)


def named_model(model: object, name: str) -> DiffusionModel:
    """``check_model`` with the argument's name in the message."""
    try:
        return check_model(model)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{name}: {err}") from None
