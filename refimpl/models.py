"""A model is a function of (x, t) that declares what it predicts and under which schedule.

Samplers see every model through ``predict_x0_eps``, which converts whatever the model
predicts into the pair (x0, eps) with the named conversions of ``refimpl.parameterization``
and checks the output (a tensor, the shape of x, finite) so a broken model fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from refimpl._validation import all_finite
from refimpl.parameterization import PREDICTIONS, from_x0_eps, to_x0_eps
from refimpl.schedules import NoiseSchedule, ScheduleValues

__all__ = [
    "CountingModel",
    "DiffusionModel",
    "FunctionModel",
    "ModelWrapper",
    "check_model",
    "predict",
    "predict_x0_eps",
]


@runtime_checkable
class DiffusionModel(Protocol):
    """What every sampler needs of a model.

    ``prediction`` is one of ``refimpl.parameterization.PREDICTIONS``; ``model(x, t)`` takes a
    batch x of shape (B, ...) and a time t (a 0-d tensor, or shape (B,)) in the schedule's domain.
    """

    schedule: NoiseSchedule
    prediction: str

    def __call__(self, x: Tensor, t: Tensor) -> Tensor: ...


def check_model(model: object, name: str = "model") -> DiffusionModel:
    """Raise ``TypeError``/``ValueError`` unless ``model`` follows the ``DiffusionModel`` protocol; the message names
    the argument ``name`` (e.g. "cond" for one of two models)."""
    if not isinstance(model, DiffusionModel):
        raise TypeError(
            f"{name} must be callable and have .schedule and .prediction attributes, got {type(model).__name__}"
        )
    if not isinstance(model.schedule, NoiseSchedule):
        raise TypeError(f"{name}.schedule must be a NoiseSchedule, got {type(model.schedule).__name__}")
    if model.prediction not in PREDICTIONS:
        raise ValueError(f"{name}.prediction must be one of {PREDICTIONS}, got {model.prediction!r}")
    return model


def _check_model_quickly(model: object) -> None:
    """``check_model``'s error for an object that is plainly no model, in O(1): it runs on every model call, where
    the protocol check (slow ``isinstance`` of a runtime protocol) would cost more than a small model; the sampler
    entry points run the full check once."""
    if not (callable(model) and hasattr(model, "schedule") and hasattr(model, "prediction")):
        check_model(model)


def _checked_output(model: DiffusionModel, x: Tensor, t: Tensor) -> Tensor:
    out = model(x, t)
    if not isinstance(out, Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, not a tensor")
    if out.shape != x.shape:
        raise ValueError(f"the model returned shape {tuple(out.shape)} for an input of shape {tuple(x.shape)}")
    if not all_finite(out):
        raise ValueError(f"the model returned non-finite values at t = {t.tolist()}")
    return out


def predict_x0_eps(
    model: DiffusionModel, x: Tensor, t: Tensor, values: ScheduleValues | None = None
) -> tuple[Tensor, Tensor]:
    """One model call at (x, t), returned as the pair (x0, eps). ``values`` = model.schedule(t) if given."""
    _check_model_quickly(model)
    values = model.schedule(t) if values is None else values
    return to_x0_eps(model.prediction, _checked_output(model, x, values.t), x, values)


def predict(model: DiffusionModel, x: Tensor, t: Tensor, kind: str) -> Tensor:
    """One model call at (x, t), converted to the prediction ``kind`` (eps, x0, v, score or velocity)."""
    _check_model_quickly(model)
    values = model.schedule(t)
    out = _checked_output(model, x, values.t)
    if kind == model.prediction:
        return out
    x0, eps = to_x0_eps(model.prediction, out, x, values)
    return from_x0_eps(kind, x0, eps, values)


@dataclass
class FunctionModel:
    """Wrap a plain function ``fn(x, t)`` as a model predicting ``prediction`` under ``schedule``."""

    fn: Callable[[Tensor, Tensor], Tensor]
    schedule: NoiseSchedule
    prediction: str = "eps"

    def __post_init__(self) -> None:
        check_model(self)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.fn(x, t)


@dataclass
class ModelWrapper:
    """Base of a model that wraps another: the same schedule and prediction; subclasses define ``__call__``."""

    model: DiffusionModel

    @property
    def schedule(self) -> NoiseSchedule:
        return self.model.schedule

    @property
    def prediction(self) -> str:
        return self.model.prediction


@dataclass
class CountingModel(ModelWrapper):
    """Wrap a model and record every call: ``calls`` (the NFE) and the times ``t_queried``."""

    t_queried: list[Tensor] = field(default_factory=list)

    @property
    def calls(self) -> int:
        """Number of model evaluations so far (one call on a batch counts once)."""
        return len(self.t_queried)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.t_queried.append(torch.as_tensor(t).detach().clone())
        return self.model(x, t)
