"""The configuration space of a diffusers scheduler, derived from its own signatures.

Every parameter of the scheduler's constructor and of its ``set_timesteps`` is an option to explore if its annotation
says which values it takes: a ``Literal`` (every listed value), a ``bool`` (both), or a number whose documented values
are listed in ``DOCUMENTED``. Parameters the oracle sets itself (the schedule, the prediction type) and those without
a counterpart on an exact toy (``NOT_DRAWN``, each with its reason) keep their defaults. So an option a new diffusers
version adds is explored without a code change, and the report lists what was left out and why. The tables (which
options, which documented values) are knowledge of diffusers ``PINNED_VERSION`` and live in ``diffusers_adapter``.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from refimpl.oracle.diffusers_adapter import DOCUMENTED, EXCLUDED_VALUES, NOT_DRAWN, SET_BY_ORACLE

__all__ = ["DOCUMENTED", "NOT_DRAWN", "SET_BY_ORACLE", "derived_options", "option_values"]


def option_values(parameter: inspect.Parameter) -> tuple[Any, ...] | None:
    """The values to explore for one parameter (None: keep its default)."""
    name, annotation = parameter.name, parameter.annotation
    if name in SET_BY_ORACLE or (name in NOT_DRAWN and name not in EXCLUDED_VALUES):
        return None
    if typing.get_origin(annotation) is typing.Literal:
        values = tuple(v for v in typing.get_args(annotation) if v not in EXCLUDED_VALUES.get(name, ()))
        return values if len(values) > 1 else None
    if annotation is bool:
        return (False, True)
    return DOCUMENTED.get(name)


def derived_options(class_name: str, fixed: dict[str, Any] | None = None) -> dict[str, tuple[Any, ...]]:
    """Option name -> values to explore, from ``class_name``'s constructor and ``set_timesteps`` signatures
    (``fixed`` options are left out: the entry sets them)."""
    import diffusers

    cls = getattr(diffusers, class_name)
    out: dict[str, tuple[Any, ...]] = {}
    for function in (cls.__init__, cls.set_timesteps):
        for parameter in inspect.signature(function).parameters.values():
            values = option_values(parameter)
            if values is not None and parameter.name not in (fixed or {}):
                out[parameter.name] = values
    return out
