"""The configuration space of a diffusers scheduler, derived from its own signatures (diffusers ``PINNED_VERSION``).

Every parameter of the scheduler's constructor and of its ``set_timesteps`` is an option to explore if its annotation
says which values it takes: a ``Literal`` (every listed value), a ``bool`` (both), or a number whose documented values
are listed in ``DOCUMENTED``. Parameters the oracle sets itself (the schedule, the prediction type) and those without
a counterpart on an exact toy (``NOT_DRAWN``, each with its reason) keep their defaults. So an option a new diffusers
version adds is explored without a code change, and the report lists what was left out and why.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

__all__ = ["DOCUMENTED", "NOT_DRAWN", "SET_BY_ORACLE", "derived_options", "option_values"]

#: Set by the oracle from the Config (its schedule and the exact model's parameterisation), or by the adapter.
SET_BY_ORACLE = frozenset(
    ("self", "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
     "num_inference_steps", "device", "timesteps", "sigmas")
)  # fmt: skip

#: Options with no counterpart on an exact toy, with the reason (they keep their defaults).
NOT_DRAWN = {
    "thresholding": "dynamic thresholding clips a pixel-space x0 at a data-dependent quantile: no refimpl counterpart",
    "rescale_betas_zero_snr": "another training schedule (alpha-bar_T = 0), not refimpl's ddpm_linear / scaled_linear",
    "use_dynamic_shifting": "resolution-dependent shifting needs the pipeline's mu (an image size)",
    "time_shift_type": "applies with use_dynamic_shifting only",
    "invert_sigmas": "reverses the flow's time direction (t = 0 is noise): another convention",
    "use_flow_sigmas": "flow-matching sigmas inside a VP scheduler: a flow-matching model, not the VP toy",
    "stochastic_sampling": "re-noises the x0 prediction with fresh noise: no refimpl counterpart",
    "timestep_type": "'continuous' feeds the model 0.25 log(sigma) (an EDM-trained model): another model input",
    "variance_type": "the learned variances need a model that outputs them (the fixed ones are drawn where Literal)",
}

#: Documented values of options whose annotation (int, float) does not list them.
DOCUMENTED: dict[str, tuple[Any, ...]] = {
    "solver_order": (1, 2, 3),  # DPM-Solver, DEIS, UniPC docs: "we recommend 2 for guided, 3 for unconditional"
    "shift": (1.0, 3.0),  # flow matching: 3.0 is Stable Diffusion 3's
    "steps_offset": (0, 1),  # Stable Diffusion's configs use 1
    "original_inference_steps": (20, 50),  # TCD / LCM: the distillation grid
}

#: Values of a Literal option that need something the exact toy does not have.
_EXCLUDED_VALUES = {"variance_type": ("learned", "learned_range", "fixed_small_log", "fixed_large_log")}


def option_values(parameter: inspect.Parameter) -> tuple[Any, ...] | None:
    """The values to explore for one parameter (None: keep its default)."""
    name, annotation = parameter.name, parameter.annotation
    if name in SET_BY_ORACLE or (name in NOT_DRAWN and name not in _EXCLUDED_VALUES):
        return None
    if typing.get_origin(annotation) is typing.Literal:
        values = tuple(v for v in typing.get_args(annotation) if v not in _EXCLUDED_VALUES.get(name, ()))
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
