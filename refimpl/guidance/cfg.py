"""Guidance: models built from other models.

``classifier_free_guidance`` is Ho & Salimans (2022), arXiv:2207.12598v1, Eq. 6, written on eps:
eps_w = eps_uncond + w (eps_cond - eps_uncond). w = 1 is the conditional model itself, w = 0 the
unconditional one; w < 0 is refused. (Their Eq. 6 uses (1 + w'): w here is 1 + w' there, the convention of
most code bases.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from refimpl.models import DiffusionModel, check_model, predict
from refimpl.schedules import NoiseSchedule

__all__ = ["ClassifierFreeGuidance", "check_guidance_weight", "classifier_free_guidance"]


def check_guidance_weight(w: object, name: str) -> float:
    """w as a float, or ValueError unless it is a finite number >= 0 (negative weights guide away from the
    condition: the tilted target p_c^w p_u^(1 - w) they would aim at need not be normalisable)."""
    if isinstance(w, bool) or not isinstance(w, int | float):
        raise TypeError(f"the guidance weight {name} must be a real number, got {type(w).__name__}")
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"the guidance weight {name} must be a finite number >= 0, got {w}")
    return float(w)


@dataclass
class ClassifierFreeGuidance:
    """The eps-predicting model eps_uncond + w (eps_cond - eps_uncond); two model calls per evaluation."""

    cond: DiffusionModel
    uncond: DiffusionModel
    w: float

    prediction = "eps"

    @property
    def schedule(self) -> NoiseSchedule:
        return self.cond.schedule

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        eps_c = predict(self.cond, x, t, "eps")
        eps_u = predict(self.uncond, x, t, "eps")
        return eps_u + self.w * (eps_c - eps_u)


def classifier_free_guidance(cond: DiffusionModel, uncond: DiffusionModel, w: float) -> ClassifierFreeGuidance:
    """Combine a conditional and an unconditional model with guidance scale w (w = 1: no guidance).

    Both models must be trained under one schedule; the guided model uses the conditional one's.
    """
    check_model(cond, "cond")
    check_model(uncond, "uncond")
    return ClassifierFreeGuidance(cond, uncond, check_guidance_weight(w, "w"))
