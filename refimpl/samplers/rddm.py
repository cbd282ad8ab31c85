"""Registers RDDM's sampler (``refimpl.forward.rddm``): with I_in = 0, the default, it is DDIM (Eq. 12 of Song et al.)
written in the residual coordinates of Liu et al. 2024 (arXiv:2308.13712v3)."""

from collections.abc import Mapping
from typing import Any

from refimpl.forward.rddm import sample_rddm
from refimpl.registry import SamplerSpec, register


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
    )
)
