"""refimpl: readable, tested reference implementations of diffusion-sampling math.

The spine (see the book's notation chapter):

* ``refimpl.schedules``        -- noise schedules as data (alpha_t, sigma_t, lambda_t and inverse).
* ``refimpl.grids``            -- timestep grids (uniform t, uniform lambda, quadratic, Karras).
* ``refimpl.parameterization`` -- conversions between eps, x0, v, score and the ODE velocity.
* ``refimpl.models``           -- the model protocol and ``predict_x0_eps``.
* ``refimpl.samplers``         -- samplers with one signature, registered in ``refimpl.registry``.
* ``refimpl.reference``        -- the reference ODE solution and convergence-order measurement.

Exact toy models live in the sibling package ``toy_models``.
"""

from refimpl import grids, guidance, parameterization, reference, registry, samplers, schedules
from refimpl.models import CountingModel, DiffusionModel, FunctionModel, predict, predict_x0_eps
from refimpl.registry import REGISTRY, SamplerSpec, get_sampler
from refimpl.schedules import get_schedule

__version__ = "0.1.0"

__all__ = [
    "REGISTRY",
    "CountingModel",
    "DiffusionModel",
    "FunctionModel",
    "SamplerSpec",
    "get_sampler",
    "get_schedule",
    "grids",
    "guidance",
    "parameterization",
    "predict",
    "predict_x0_eps",
    "reference",
    "registry",
    "samplers",
    "schedules",
]
