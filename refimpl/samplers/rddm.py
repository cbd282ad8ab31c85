"""Registers RDDM's sampler (``refimpl.forward.rddm``): with I_in = 0, the default, it is DDIM (Eq. 12 of Song et al.)
written in the residual coordinates of Liu et al. 2024 (arXiv:2308.13712v3)."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from refimpl.models import DiffusionModel
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback


def sample_rddm(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    I_in: Tensor | None = None,
    eta: float = 0.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """``refimpl.forward.rddm.sample_rddm`` (this module's own name for it, so a private copy registers its own)."""
    from refimpl.forward import rddm  # on first call: importing the samplers loads no chapter package

    return rddm.sample_rddm(
        model, x, timesteps, I_in=I_in, eta=eta, noise=noise, generator=generator, callback=callback
    )


def _eta_positive(options: Mapping[str, Any]) -> bool:
    """RDDM injects noise exactly when eta > 0."""
    return options.get("eta", 0) > 0


register(
    SamplerSpec(
        name="rddm",
        sample=sample_rddm,
        order=1,
        stochastic=_eta_positive,
        paper="liu2024rddm",
        equation="arXiv:2308.13712v3 Eq. 7 [unverified] with I_in = 0 and the DDIM coefficient map",
        order_check="gaussian",
        order_note="with I_in = 0 RDDM is DDIM to round-off (tests/test_forward.py), whose mixture order DDIM's entry "
        "checks; the mixture run would repeat it for 80 s",
    )
)
