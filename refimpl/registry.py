"""The registry: every sampler with what it promises, so the shared property tests cover it on sight.

A ``SamplerSpec`` declares the sampling function, its kind (a sampler that steps along a given grid, or an
adaptive one that chooses its own steps between two ends to meet a tolerance), its global order as implemented,
whether it is stochastic, its encoder (the map back from data to noise) and whether that encoder is an exact
inverse (with the factor by which its rounding can grow), how many model calls it makes for n steps, and
the paper and equation it implements.
``tests/test_registry.py`` iterates over ``REGISTRY``: measured order (strong order of deterministic entries on
drawn mixtures or on the closed-form Gaussian, as ``order_check`` says, on the schedules smooth in t where
``order_needs_smooth_t`` asks for them; weak order of stochastic entries from their exact output law on Gaussian
data; for adaptive entries, the error against the tolerance), call counts, bad input, invertibility and
reproducibility with injected noise.

``REGISTRY`` is one ``Registry`` (a read-only mapping from name to spec) filled when ``refimpl.samplers`` is
imported. ``Registry()`` builds a fresh, empty one, and ``load_module`` executes a private copy of a sampler module
(its source optionally edited, as the mutation catalogue does) whose registrations go to a registry of the caller's,
so nothing is ever registered into ``REGISTRY`` behind its back and no global is patched.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import itertools
import math
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from refimpl._validation import check_instance

__all__ = [
    "KINDS",
    "ORDER_CHECKS",
    "REGISTRY",
    "Registry",
    "SamplerSpec",
    "build_registry",
    "get_sampler",
    "load_module",
    "register",
    "samplers",
]

#: How a sampler uses its time grid: "grid" -- it steps along the ``timesteps`` it is given, n steps with ``nfe(n)``
#: model calls; "adaptive" -- it is given only the two ends, ``timesteps = (t_start, t_end)``, chooses its own steps
#: to meet the tolerances ``rtol`` and ``atol`` (keyword options every adaptive sampler takes: it accepts a step
#: when its local error estimate, per sample the RMS of the estimate over max(atol, rtol |x|), is at most 1),
#: calls ``callback`` at accepted steps only, and declares no ``nfe`` (its calls depend on the tolerance and the
#: model); "fixed" -- it is defined only on the one grid ``fixed_grid`` (a trained few-step student), refuses any
#: other, and has no order to measure against a step count.
KINDS = ("grid", "adaptive", "fixed")

#: Where a spec's declared order is measured: "mixture" -- the shared test on drawn mixtures (and the Gaussian);
#: "gaussian" -- only on the closed-form Gaussian (the spec's ``order_note`` says why the mixtures cannot show it);
#: "tolerance" -- the check of every adaptive sampler, which has no step count to measure an order against: its
#: error against the exact Gaussian map shrinks with the tolerance and stays within the bound the tolerance implies.
#: A stochastic sampler's (weak) order is always measured from its exact output law on Gaussian data.
ORDER_CHECKS = ("mixture", "gaussian", "tolerance")


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
            the ODE solution; stochastic samplers: weak order, the rate at which the law of the output
            approaches the data's marginal law at the last time).
        stochastic: whether it injects noise (then ``sample`` takes ``noise`` and ``generator``) with the registered
            ``options``. Given as a rule ``stochastic(options) -> bool`` when that depends on the options (DDIM is
            stochastic for eta > 0): the rule is kept in ``stochastic_rule``, ``is_stochastic(**options)`` applies
            it to other options, and ``stochastic`` holds its value for the registered ones.
        paper: BibTeX key in ``book/references.bib``.
        equation: arXiv version and equation number implemented.
        encode: ``encode(model, x, timesteps)`` mapping data back to the sampler's latent on the same grid, if
            any. The latent is a tensor, or for a method whose state is not one tensor the object that ``sample``
            accepts in place of x: a ``CoupledState`` (EDICT's pair of sequences, BDIA's two neighbouring
            states) or ``NoiseMaps`` (edit-friendly DDPM: x_T with the noise of every step).
        invertible: whether ``encode`` is an exact inverse of ``sample`` (up to round-off).
        nfe: model calls for n steps; None for an adaptive sampler (``kind="adaptive"``).
        min_steps: fewest steps the method accepts.
        options: fixed keyword options passed to ``sample`` (e.g. ``eta=0``).
        amplification: for invertible samplers, a bound on how much a rounding error committed in one step
            of ``encode`` can grow by the end of an n-step round trip, beyond the size of the states computed:
            1 when no mode grows, p^-2n for EDICT (its inverse mixing), gamma^-n for BDIA (its inverse
            divides by gamma). ``tests/test_registry.py`` multiplies its round-off bound by it.
        order_check: where the declared (strong) order of a deterministic sampler is measured, one of
            ``ORDER_CHECKS``; "tolerance" for (and only for) an adaptive sampler, whose ``order`` is that of its
            higher-order solution. Stochastic samplers ignore it: their weak order is measured from exact laws.
        order_note: why the shared mixture test cannot measure it (required when ``order_check`` is not "mixture").
        order_steps: step counts (uniform-lambda grids) at which the order is measured, for a method whose errors
            reach the asymptotic regime late (e.g. multistep methods in sigma); None lets the tests choose from
            the order.
        order_span: the log-SNR interval (lambda_start, lambda_end), lambda_start < lambda_end, over which the order
            is measured, for a method whose asymptotic regime needs it (e.g. a boundary term that dominates near
            the data); None measures over the toys' whole time range.
        order_needs_smooth_t: whether the declared order needs alpha_t and sigma_t smooth in t: true for a method
            that steps in t on dx/dt (the flow samplers' velocity alpha_t' x0 + sigma_t' eps), which jumps at the
            knots of a piecewise schedule (``t_knots``: the discrete DDPM schedules, log alpha piecewise linear
            in t), so that a step straddling a knot loses the order. The order tests then measure it on the smooth
            schedules only; ``order_note`` says why (required when true).
        kind: one of ``KINDS``: "grid" (the default), "adaptive" or "fixed".
        fixed_grid: for (and only for) kind "fixed": (schedule name, decreasing times), the one grid on which the
            sampler is defined, the only ``timesteps`` it accepts, with a model on that schedule (e.g. a student
            distilled on that grid). None for every other kind.
        stochastic_rule: the rule behind ``stochastic`` (set from a callable ``stochastic``; kept by
            ``dataclasses.replace``, so a spec with other options re-applies it). None for a fixed flag.
    """

    name: str
    sample: Callable[..., Tensor]
    order: float
    stochastic: bool | Callable[[Mapping[str, Any]], bool]
    paper: str
    equation: str
    encode: Callable[..., Any] | None = None
    invertible: bool = False
    nfe: Callable[[int], int] | None = _one_call_per_step
    min_steps: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    amplification: Callable[[int], float] = _no_amplification
    order_check: str = "mixture"
    order_note: str = ""
    order_steps: tuple[int, ...] | None = None
    order_span: tuple[float, float] | None = None
    order_needs_smooth_t: bool = False
    kind: str = "grid"
    fixed_grid: tuple[str, tuple[float, ...]] | None = None
    stochastic_rule: Callable[[Mapping[str, Any]], bool] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        adaptive = self.kind == "adaptive"
        if adaptive != (self.nfe is None):
            raise ValueError(f"{self.name}: nfe must be None exactly for an adaptive sampler (kind={self.kind!r})")
        if adaptive != (self.order_check == "tolerance"):
            raise ValueError(f"{self.name}: order_check must be 'tolerance' exactly for an adaptive sampler")
        if (self.kind == "fixed") != (self.fixed_grid is not None):
            raise ValueError(f"{self.name}: fixed_grid must be given exactly for kind 'fixed' (kind={self.kind!r})")
        if self.fixed_grid is not None:
            if not isinstance(self.fixed_grid, tuple | list) or len(self.fixed_grid) != 2:
                raise ValueError(f"{self.name}: fixed_grid must be a pair (schedule name, times)")
            schedule, times = self.fixed_grid
            grid = tuple(float(t) for t in times)
            if not isinstance(schedule, str) or len(grid) < 2 or not all(math.isfinite(t) for t in grid):
                raise ValueError(f"{self.name}: fixed_grid must be (schedule name, two or more finite times)")
            if any(b >= a for a, b in itertools.pairwise(grid)):
                raise ValueError(f"{self.name}: the times of fixed_grid must be strictly decreasing, got {grid}")
            if self.order_check == "mixture":
                raise ValueError(f"{self.name}: a fixed-grid sampler has no order to measure: say why in order_note")
            object.__setattr__(self, "fixed_grid", (schedule, grid))
        for attr in ("sample", "amplification") if adaptive else ("sample", "nfe", "amplification"):
            if not callable(getattr(self, attr)):
                raise TypeError(f"{self.name}: {attr} must be callable, got {getattr(self, attr)!r}")
        if isinstance(self.order, bool) or not isinstance(self.order, int | float) or not 0 < self.order < math.inf:
            raise ValueError(f"{self.name}: order must be a positive finite number, got {self.order!r}")
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) or self.min_steps < 1:
            raise ValueError(f"{self.name}: min_steps must be an integer >= 1, got {self.min_steps!r}")
        if self.invertible and self.encode is None:
            raise ValueError(f"{self.name}: an invertible sampler needs an encode function")
        if self.order_check not in ORDER_CHECKS:
            raise ValueError(f"{self.name}: order_check must be one of {ORDER_CHECKS}, got {self.order_check!r}")
        if self.order_check != "mixture" and not self.order_note:
            raise ValueError(f"{self.name}: say in order_note why the order is not measured on the mixtures")
        if not isinstance(self.order_needs_smooth_t, bool):
            raise TypeError(f"{self.name}: order_needs_smooth_t must be a bool, got {self.order_needs_smooth_t!r}")
        if self.order_needs_smooth_t and not self.order_note:
            raise ValueError(f"{self.name}: say in order_note why the order needs a schedule smooth in t")
        steps = self.order_steps
        if steps is not None and (
            len(steps) < 2 or any(not isinstance(n, int) or n < 1 for n in steps) or list(steps) != sorted(set(steps))
        ):
            raise ValueError(f"{self.name}: order_steps must be two or more increasing positive integers, got {steps}")
        span = self.order_span
        if span is not None and (len(span) != 2 or not all(math.isfinite(v) for v in span) or not span[0] < span[1]):
            raise ValueError(f"{self.name}: order_span must be (lambda_start, lambda_end), finite, increasing: {span}")
        rule = self.stochastic if callable(self.stochastic) else self.stochastic_rule
        if rule is not None and not callable(rule):
            raise TypeError(f"{self.name}: stochastic_rule must be callable, got {rule!r}")
        options = MappingProxyType(dict(self.options))
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "stochastic_rule", rule)
        object.__setattr__(self, "stochastic", bool(rule(options)) if rule is not None else bool(self.stochastic))

    def is_stochastic(self, **options: Any) -> bool:
        """Whether the sampler injects noise when run with ``options`` on top of the registered ones."""
        if self.stochastic_rule is None:
            return self.stochastic
        return bool(self.stochastic_rule({**self.options, **options}))

    def with_options(self, name: str, **options: Any) -> SamplerSpec:
        """A new (unregistered) spec running the same sampler with ``options`` on top of the registered ones;
        whether it is stochastic follows the spec's rule. Its order and other promises are this spec's:
        pass changed promises to ``dataclasses.replace`` on the result (the rule is kept)."""
        return replace(self, name=name, options={**self.options, **options})

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


class Registry(Mapping[str, SamplerSpec]):
    """Sampler specs by name: a read-only mapping, grown only through ``register``. ``Registry()`` is empty."""

    def __init__(self, specs: Iterable[SamplerSpec] = ()) -> None:
        self._specs: dict[str, SamplerSpec] = {}
        for spec in specs:
            self.register(spec)

    def __getitem__(self, name: str) -> SamplerSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"Registry({sorted(self._specs)})"

    def register(self, spec: SamplerSpec) -> SamplerSpec:
        """Add ``spec``; names are unique."""
        if not isinstance(spec, SamplerSpec):
            raise TypeError(f"spec must be a SamplerSpec, got {type(spec).__name__}")
        if spec.name in self._specs:
            raise ValueError(f"a sampler named {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        return spec

    def sampler(self, name: str) -> SamplerSpec:
        """The spec called ``name`` (ValueError listing the registered names if there is none)."""
        check_instance(name, str, "name")
        try:
            return self._specs[name]
        except KeyError:
            raise ValueError(f"no sampler named {name!r}; registered: {sorted(self._specs)}") from None

    def samplers(
        self, *, stochastic: bool | None = None, invertible: bool | None = None, kind: str | None = "grid"
    ) -> list[SamplerSpec]:
        """Specs, optionally filtered by their declared properties, in name order.

        By default only the "grid" samplers, which every caller that runs a sampler on an n-step grid can use;
        ``kind="adaptive"`` gives the adaptive ones, ``kind=None`` all."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
        return [
            s
            for _, s in sorted(self._specs.items())
            if (stochastic is None or s.stochastic == stochastic)
            and (invertible is None or s.invertible == invertible)
            and (kind is None or s.kind == kind)
        ]


#: The package's registry, filled by importing ``refimpl.samplers``.
REGISTRY = Registry()


def register(spec: SamplerSpec) -> SamplerSpec:
    """Add ``spec`` to ``REGISTRY``; names are unique."""
    return REGISTRY.register(spec)


def get_sampler(name: str) -> SamplerSpec:
    """The registered sampler called ``name``."""
    return REGISTRY.sampler(name)


def samplers(
    *, stochastic: bool | None = None, invertible: bool | None = None, kind: str | None = "grid"
) -> list[SamplerSpec]:
    """Registered samplers, optionally filtered by their declared properties, in name order (by default the
    "grid" samplers only; ``kind="adaptive"`` for the adaptive ones, ``kind=None`` for all)."""
    return REGISTRY.samplers(stochastic=stochastic, invertible=invertible, kind=kind)


def load_module(
    name: str, *, source: str | None = None, into: Registry | None = None
) -> tuple[types.ModuleType, Registry]:
    """Execute a private copy of the module ``name`` (its ``source`` if given, e.g. with one edit) whose
    registrations go to ``into`` (a fresh ``Registry`` by default), never to ``REGISTRY``.

    The copy sees this module through ``from refimpl.registry import ...`` (or ``from refimpl import registry``)
    as a view whose ``register``, ``REGISTRY``, ``get_sampler`` and ``samplers`` are ``into``'s; every other
    import is the ordinary one. Nothing global changes: the copy is not put in ``sys.modules``, the real
    module and ``REGISTRY`` are untouched (the copy's objects still name ``name`` as their module).
    Returns the copy and the registry it filled.
    """
    check_instance(name, str, "name")
    if source is not None:
        check_instance(source, str, "source")
    if into is not None:
        check_instance(into, Registry, "into")
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ValueError(f"name {name!r} is no importable module ({err})") from None
    source = inspect.getsource(module) if source is None else source
    into = Registry() if into is None else into
    view = types.ModuleType(__name__)
    view.__dict__.update({k: v for k, v in globals().items() if not k.startswith("__")})
    view.__dict__.update(REGISTRY=into, register=into.register, get_sampler=into.sampler, samplers=into.samplers)

    def import_(target: str, globals_=None, locals_=None, fromlist=(), level: int = 0) -> Any:
        if level == 0 and target == __name__ and fromlist:
            return view
        imported = builtins.__import__(target, globals_, locals_, fromlist, level)
        if level == 0 and target == "refimpl" and fromlist and "registry" in fromlist:
            return types.SimpleNamespace(**{n: view if n == "registry" else getattr(imported, n) for n in fromlist})
        return imported

    copy = types.ModuleType(name)  # its own name, so that dataclasses and pickling resolve names as in the original
    copy.__dict__.update(
        __builtins__={**vars(builtins), "__import__": import_}, __package__=module.__package__, __file__=module.__file__
    )
    exec(compile(source, f"<copy of {name}>", "exec"), copy.__dict__)  # the package's own (or edited) source
    return copy, into


def build_registry(package: str = "refimpl.samplers") -> Registry:
    """A fresh registry holding what the modules of ``package`` register, built from private copies of them."""
    import pkgutil

    fresh = Registry()
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__, f"{package}."):
        load_module(info.name, into=fresh)
    return fresh
