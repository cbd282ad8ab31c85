"""Argument checks shared by the search modules (each error names its argument, as ``refimpl._validation``)."""

from __future__ import annotations

import torch

from refimpl._validation import check_instance
from refimpl.models import DiffusionModel, check_model


def integer(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def model_argument(model: object, name: str) -> DiffusionModel:
    """``check_model`` with the argument's own name in the error."""
    try:
        return check_model(model)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{name}: {err}") from err


def generator_argument(generator: object, name: str = "generator") -> torch.Generator:
    check_instance(generator, torch.Generator, name)
    return generator
