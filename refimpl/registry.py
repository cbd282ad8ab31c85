"""The registry: every sampler with what it promises, so the shared property tests cover it on sight.

A ``SamplerSpec`` declares the sampling function, its global order as implemented, whether it is
stochastic, its encoder (the map back from data to noise) and whether that encoder is an exact
inverse (with the factor by which its rounding can grow), how many model calls it makes for n steps, and
the paper and equation it implements.
``tests/test_registry.py`` iterates over ``REGISTRY``: measured order, call counts, bad input,
invertibility and reproducibility with injected noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

__all__ = ["ORDER_CHECKS", "REGISTRY", "SamplerSpec", "get_sampler", "register", "samplers"]

#: Where a spec's declared order is measured: "mixture" -- the shared test on drawn mixtures (and the Gaussian);
#: "gaussian" -- only on the closed-form Gaussian (the spec's ``order_note`` says why the mixtures cannot show it).
#: A stochastic sampler's (weak) order is always measured from its exact output law on Gaussian data.
ORDER_CHECKS = ("mixture", "gaussian")


def _one_call_per_step(n_steps: int) -> int:
    return n_steps


def _no_amplification(n_steps: int) -> float:
    return 1.0


@dataclass(frozen=True)
class SamplerSpec:
    """What a registered sampler promises.

    Attributes:
        name: registry key.
        sample: ``sample(model, x, timesteps, **options)`` with the shared signature.
        order: global order of convergence as implemented (deterministic samplers: strong order of
            the ODE solution; stochastic samplers: weak order).
        stochastic: whether it injects noise (then ``sample`` takes ``noise`` and ``generator``) with the registered
            ``options``. Given as a rule ``stochastic(options) -> bool`` when that depends on the options (DDIM is
            stochastic for eta > 0); ``is_stochastic(**options)`` applies the rule to other options, and after
            construction ``stochastic`` holds the value for the registered ones.
        paper: BibTeX key in ``book/references.bib``.
        equation: arXiv version and equation number implemented.
        encode: ``encode(model, x, timesteps)`` mapping data back to the sampler's latent on the same grid, if
            any. The latent is a tensor, or for a method whose state is not one tensor the object that ``sample``
            accepts in place of x: a ``CoupledState`` (EDICT's pair of sequences, BDIA's two neighbouring
            states) or ``NoiseMaps`` (edit-friendly DDPM: x_T with the noise of every step).
        invertible: whether ``encode`` is an exact inverse of ``sample`` (up to round-off).
        nfe: model calls for n steps.
        min_steps: fewest steps the method accepts.
        options: fixed keyword options passed to ``sample`` (e.g. ``eta=0``).
        amplification: for invertible samplers, a bound on how much a rounding error committed in one step
            of ``encode`` can grow by the end of an n-step round trip, beyond the size of the states computed:
            1 when no mode grows, p^-2n for EDICT (its inverse mixing), gamma^-n for BDIA (its inverse
            divides by gamma). ``tests/test_registry.py`` multiplies its round-off bound by it.
        order_check: where the declared order is measured, one of ``ORDER_CHECKS``.
        order_note: why the shared mixture test cannot measure it (required when ``order_check`` is not "mixture").
        order_steps: step counts (uniform-lambda grids over the toys' whole time range) at which the order
            is measured, for a method whose errors reach the asymptotic regime late (e.g. multistep methods
            in sigma); None lets the tests choose from the order.
    """

    name: str
    sample: Callable[..., Tensor]
    order: float
    stochastic: bool | Callable[[Mapping[str, Any]], bool]
    paper: str
    equation: str
    encode: Callable[..., Any] | None = None
    invertible: bool = False
    nfe: Callable[[int], int] = _one_call_per_step
    min_steps: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    amplification: Callable[[int], float] = _no_amplification
    order_check: str = "mixture"
    order_note: str = ""
    order_steps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.invertible and self.encode is None:
            raise ValueError(f"{self.name}: an invertible sampler needs an encode function")
        if self.order_check not in ORDER_CHECKS:
            raise ValueError(f"{self.name}: order_check must be one of {ORDER_CHECKS}, got {self.order_check!r}")
        if self.order_check != "mixture" and not self.order_note:
            raise ValueError(f"{self.name}: say in order_note why the order is not measured on the mixtures")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        rule = self.stochastic if callable(self.stochastic) else None
        object.__setattr__(self, "_stochastic_rule", rule)
        object.__setattr__(self, "stochastic", bool(rule(self.options)) if rule else bool(self.stochastic))

    def is_stochastic(self, **options: Any) -> bool:
        """Whether the sampler injects noise when run with ``options`` on top of the registered ones."""
        rule = self._stochastic_rule  # type: ignore[attr-defined]
        return bool(rule({**self.options, **options})) if rule else self.stochastic

    def with_options(self, name: str, **options: Any) -> SamplerSpec:
        """A new (unregistered) spec running the same sampler with ``options`` on top of the registered ones;
        whether it is stochastic follows the spec's rule. Its order and other promises are this spec's:
        pass changed promises to ``dataclasses.replace`` on the result."""
        rule = self._stochastic_rule  # type: ignore[attr-defined]
        return replace(self, name=name, options={**self.options, **options}, stochastic=rule or self.stochastic)

    def __call__(
        self,
        model: Any,
        x: Any,
        timesteps: Tensor,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[..., None] | None = None,
    ) -> Tensor:
        """Run the sampler with its registered options; noise and generator reach stochastic ones only.

        x is the start state (B, ...) or a latent returned by ``encode``.
        """
        kwargs: dict[str, Any] = dict(self.options, callback=callback)
        if self.stochastic:
            kwargs.update(noise=noise, generator=generator)
        elif noise is not None or generator is not None:
            raise ValueError(f"{self.name} is deterministic: it takes no noise or generator")
        return self.sample(model, x, timesteps, **kwargs)


_REGISTRY: dict[str, SamplerSpec] = {}
REGISTRY: Mapping[str, SamplerSpec] = MappingProxyType(_REGISTRY)


def register(spec: SamplerSpec) -> SamplerSpec:
    """Add ``spec`` to the registry; names are unique."""
    if spec.name in _REGISTRY:
        raise ValueError(f"a sampler named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_sampler(name: str) -> SamplerSpec:
    """The registered sampler called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"no sampler named {name!r}; registered: {sorted(_REGISTRY)}") from None


def samplers(*, stochastic: bool | None = None, invertible: bool | None = None) -> list[SamplerSpec]:
    """Registered samplers, optionally filtered by their declared properties, in name order."""
    return [
        s
        for _, s in sorted(_REGISTRY.items())
        if (stochastic is None or s.stochastic == stochastic) and (invertible is None or s.invertible == invertible)
    ]
