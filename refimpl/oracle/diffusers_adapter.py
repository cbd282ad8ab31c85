"""The diffusers adapter, pinned to diffusers ``PINNED_VERSION``: the scheduler classes of ``DIFFUSERS``, driven through
their public ``set_timesteps`` / ``step`` API.

VERSION-SPECIFIC: everything the oracle knows about diffusers is in this module (and nowhere else): which class
implements which refimpl method, the defaults that make conventions comparable, which classes draw noise or take two
stages a step, the table layouts the float64 probe rebuilds, the configuration space's tables (``space`` derives the
rest from the signatures), and the classes left out with the reason. A new diffusers version is checked against
this module (``build`` warns when the installed version is another).

Conventions, modelled rather than hidden:

* Time. diffusers' integer timestep k of an N-step schedule is continuous time t = (k + 1) / N (Lu et al.
  2022, arXiv:2206.00927v3, App. D). Schedulers that index alpha-bar by k (DDIM, DDPM, PNDM, DDIM inverse)
  sit at these knots. Sigma-based schedulers (DPM-Solver, DEIS, UniPC, Euler, Heun, LMS) step between the
  noise levels sigma_k = sqrt((1 - alpha-bar) / alpha-bar) of their ``sigmas`` table; a sigma that is a
  knot's is that knot's time, any other (interpolated, Karras) is the time with that noise level,
  t(lambda = -log sigma). The model is queried at (k + 1) / N of the timestep handed to it; when that is not
  the solver's noise level, ``core.check`` models and measures the difference.
* State. Euler, Heun and LMS keep x~ = x_t / alpha_t (``scale_model_input`` multiplies by alpha back);
  the adapter reports x_t.
* Ends. A last step to alpha-bar = 1 (sigma = 0) returns the x0 prediction (``final="x0"``), except for
  PNDM and LMS, whose multistep formulas step to sigma = 0 themselves (``final="step"``).
* Precision. diffusers keeps its tables in float32; ``float64_tables=True`` replaces them by float64 ones
  after ``set_timesteps`` (a probe: an implementation that computes in the state's dtype then agrees with
  refimpl to float64 round-off).

``DIFFUSERS`` maps each class to the refimpl method it implements (a function of its constructor
arguments) and to constructor defaults that make the conventions comparable.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from refimpl.models import predict
from refimpl.oracle.config import Config
from refimpl.oracle.running import Convention, Run
from refimpl.schedules import DiscreteVP

__all__ = [
    "DIFFUSERS",
    "DOCUMENTED",
    "EXCLUDED_VALUES",
    "NOT_ADAPTED",
    "NOT_DRAWN",
    "PINNED_VERSION",
    "SET_BY_ORACLE",
    "DiffusersScheduler",
    "Profile",
]

#: The diffusers version whose behaviour this module knows (its conventions, table dtypes, step bookkeeping): all of
#: the oracle's version-specific knowledge of diffusers lives in this one module.
PINNED_VERSION = "0.42.1"

_PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
_BETAS = {"ddpm_linear": ("linear", 1e-4, 0.02), "scaled_linear": ("scaled_linear", 0.00085, 0.012)}


def _no_counterpart(what: str) -> ValueError:
    return ValueError(f"refimpl has no counterpart of {what}")


def _dpm_multistep(kw: dict) -> str:
    algorithm, order, form = (
        kw.get("algorithm_type", "dpmsolver++"),
        kw.get("solver_order", 2),
        kw.get("solver_type", "midpoint"),
    )
    if kw.get("thresholding", False):
        raise _no_counterpart("diffusers' thresholding (its s is capped at sample_max_value)")
    exact = "_exact" if form == "heun" else ""
    if algorithm == "dpmsolver++":
        return {1: "ddim", 2: f"dpm_solver_pp_2m{exact}", 3: f"dpm_solver_pp_3m{exact}"}[order]
    if algorithm == "dpmsolver":
        return {1: "ddim", 2: f"dpm_solver_2m{exact}", 3: f"dpm_solver_3m{exact}"}[order]
    if algorithm == "sde-dpmsolver++" and form == "midpoint" and order <= 2:
        return "sde_dpm_solver_pp_2m"
    raise _no_counterpart(f"DPMSolverMultistepScheduler({algorithm}, order {order}, {form})")


def _dpm_singlestep(kw: dict) -> str:
    algorithm, order, form = (
        kw.get("algorithm_type", "dpmsolver++"),
        kw.get("solver_order", 2),
        kw.get("solver_type", "midpoint"),
    )
    if algorithm.startswith("sde"):  # its steps draw noise from a generator (no variance_noise): DDIM at no order
        raise _no_counterpart(f"DPMSolverSinglestepScheduler({algorithm}) (noise drawn inside step)")
    if order == 1:
        return "ddim"
    if form == "midpoint" and algorithm == "dpmsolver":
        return f"dpm_solver_singlestep_{order}"
    if form == "midpoint" and algorithm == "dpmsolver++" and order == 2:
        return "dpm_solver_pp_singlestep_2"
    raise _no_counterpart(f"DPMSolverSinglestepScheduler({algorithm}, order {order}, {form})")


def _unipc(kw: dict) -> str:
    if kw.get("disable_corrector") or kw.get("solver_p") is not None:
        raise _no_counterpart("UniPC with a disabled corrector or another predictor")
    suffix = "" if kw.get("predict_x0", True) else "_eps"
    return f"unipc{kw.get('solver_order', 2)}_{kw.get('solver_type', 'bh2')}{suffix}"


def _flow_euler(kw: dict) -> str:
    if kw.get("stochastic_sampling"):  # x_next = (1 - t_next) x0 + t_next z, fresh z: a consistency-style sampler
        raise _no_counterpart("FlowMatchEulerDiscreteScheduler(stochastic_sampling=True) (the x0 prediction re-noised)")
    return "flow_euler"


@dataclass(frozen=True)
class Profile:
    """How to drive one scheduler class: the method it implements, its defaults here, its kind of table; and how
    ``make oracle`` explores it beyond its signatures (``matrix.diffusers_entries``): ``variants``, settings that change
    what the scheduler is (each explored as an entry of its own), ``step_options``, values of options of its ``step``
    that the adapter passes (drawn), and the state ``dtypes`` drawn."""

    method: Callable[[dict], str]
    defaults: dict[str, Any]
    kind: str  # "alphabar" (alpha-bar indexed by k), "sigma" (sigmas table, state x_t), "scaled" (state x~)
    predictions: tuple[str, ...] = ("eps", "x0", "v")
    variants: tuple[dict[str, Any], ...] = ({},)
    step_options: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    dtypes: tuple[str, ...] = ("float64", "float32")


#: Defaults that make DDIM's and DDPM's conventions comparable (no clipping; DDIM: alpha-bar_0 at the end, a grid
#: that starts at k = N - 1; DDPM: the posterior variance beta-tilde).
_DDIM_DEFAULTS = {"clip_sample": False, "set_alpha_to_one": False, "timestep_spacing": "trailing"}
_DDPM_DEFAULTS = {"clip_sample": False, "variance_type": "fixed_small", "timestep_spacing": "leading"}
#: DDIM's step takes eta (0: DDIM, 1: DDPM's posterior variance with DDIM's mean).
_DDIM_ETA = {"eta": (0.0, 1.0)}
#: DDPM's finding (noise of standard deviation 1e-10 on a last "trailing" step) is below float32's resolution.
_FLOAT64 = ("float64",)


DIFFUSERS: dict[str, Profile] = {
    "DDIMScheduler": Profile(lambda kw: "ddim", _DDIM_DEFAULTS, "alphabar", step_options=_DDIM_ETA),
    "DDPMScheduler": Profile(lambda kw: "ddpm", _DDPM_DEFAULTS, "alphabar", dtypes=_FLOAT64),
    # the parallel variants: the same step (plus a batched_step for parallel sampling), driven through step
    "DDIMParallelScheduler": Profile(lambda kw: "ddim", _DDIM_DEFAULTS, "alphabar", step_options=_DDIM_ETA),
    "DDPMParallelScheduler": Profile(lambda kw: "ddpm", _DDPM_DEFAULTS, "alphabar", dtypes=_FLOAT64),
    "DDIMInverseScheduler": Profile(lambda kw: "ddim", _DDIM_DEFAULTS, "alphabar"),
    # TCD with gamma = 0 (its step's ``eta``, which the adapter sets) is DDIM on the LCM grid; gamma > 0 (DDIM to
    # s = (1 - gamma) t_prev, then forward noise to t_prev) has no refimpl counterpart
    "TCDScheduler": Profile(lambda kw: "ddim", {}, "alphabar"),
    # LCM: f = c_skip x + c_out x0 at each timestep, re-noised (replayed generator) to the next; the last returns f
    "LCMScheduler": Profile(lambda kw: "lcm_multistep", {}, "alphabar"),
    "PNDMScheduler": Profile(
        lambda kw: "plms" if kw.get("skip_prk_steps") else "pndm",
        {"set_alpha_to_one": False, "timestep_spacing": "trailing"},
        "alphabar",
        ("eps", "v"),
        variants=({"skip_prk_steps": True}, {"skip_prk_steps": False}),  # PLMS, or PNDM with its Runge-Kutta start
    ),
    "DPMSolverMultistepScheduler": Profile(_dpm_multistep, {}, "sigma"),
    "DPMSolverSinglestepScheduler": Profile(_dpm_singlestep, {}, "sigma"),
    # the inverse (data to noise) multistep DPM-Solver: refimpl encodes with first-order DDIM only
    "DPMSolverMultistepInverseScheduler": Profile(
        lambda kw: "ddim" if kw.get("solver_order", 2) == 1 else _dpm_multistep(kw), {}, "sigma"
    ),
    "DEISMultistepScheduler": Profile(
        lambda kw: {1: "ddim", 2: "dpm_solver_2m_exact", 3: "dpm_solver_3m_exact"}[kw.get("solver_order", 2)],
        {},
        "sigma",
    ),
    "UniPCMultistepScheduler": Profile(_unipc, {}, "sigma"),
    "EulerDiscreteScheduler": Profile(lambda kw: "edm_euler", {}, "scaled"),
    "HeunDiscreteScheduler": Profile(lambda kw: "edm_heun", {}, "scaled"),
    "LMSDiscreteScheduler": Profile(lambda kw: "lms", {}, "scaled", ("eps", "x0", "v")),
    # Euler ancestral (eta = 1) is DDPM's posterior step: sigma_down = sigma_to^2 / sigma_from (in the EDM variables)
    "EulerAncestralDiscreteScheduler": Profile(lambda kw: "ddpm", {}, "scaled", ("eps", "v")),
    # KDPM2 is DPM-Solver-2 with its midpoint at the geometric mean of its float32 sigmas (r = 1/2 in lambda, up to
    # the float32 cancellation in 1 - alpha-bar near t = 0, which moves it by ~1e-4 in lambda): the reference takes
    # the scheduler's midpoints as given (``_reference_options``)
    "KDPM2DiscreteScheduler": Profile(lambda kw: "dpm_solver_singlestep_2", {}, "scaled", ("eps", "v")),
    # its ancestral variant (eta = 1, no switch): DPM-Solver-2 to sigma_down, then sigma_up of the replayed noise
    "KDPM2AncestralDiscreteScheduler": Profile(lambda kw: "dpm_solver_2_ancestral", {}, "scaled", ("eps", "v")),
    # k-diffusion's stochastic DPM-Solver++(2S): its Brownian-tree noise sampler is replaced by the adapter's draws
    "DPMSolverSDEScheduler": Profile(lambda kw: "sde_dpm_solver_pp_2s", {}, "scaled", ("eps", "v")),
    # flow matching on the rectified-flow path (sigma = t): Euler and Heun in t; stochastic_sampling re-noises x0
    "FlowMatchEulerDiscreteScheduler": Profile(
        _flow_euler, {}, "flow", ("eps",)
    ),
    "FlowMatchHeunDiscreteScheduler": Profile(lambda kw: "flow_heun", {}, "flow", ("eps",)),
    # EDM's own schedulers (sigma_t = t, alpha = 1; the network output F of Karras et al. 2022, Eq. 7)
    "EDMEulerScheduler": Profile(lambda kw: "edm_euler", {}, "edm", ("eps", "v")),
    "EDMDPMSolverMultistepScheduler": Profile(_dpm_multistep, {}, "edm", ("eps", "v")),
}  # fmt: skip

#: The scheduler classes diffusers exports that the oracle does not adapt, with the reason (tested to be complete).
NOT_ADAPTED = {
    "SASolverScheduler": "SA-Solver (arXiv:2309.05019): stochastic Adams predictor and an always-on stochastic "
    "Adams-Moulton corrector (corrector_order > 0 is asserted), coefficients the integrals of Lagrange polynomials "
    "against e^{(1 + tau^2) lambda}, tau = tau_func(t) (default 1 for 200 <= k <= 800): refimpl's multistep engine "
    "integrates against e^lambda only (tau = 0) and has no stochastic corrector",
    "CMStochasticIterativeScheduler": "consistency-model sampling with Karras preconditioning: as LCMScheduler",
    "FlowMatchLCMScheduler": "LCM on the flow path: as LCMScheduler",
    "SCMScheduler": "continuous-time consistency models (TrigFlow): no refimpl counterpart",
    "FlowMapEulerDiscreteScheduler": "a flow-map (two-time) model: the exact toys give one-time predictions only",
    "CosineDPMSolverMultistepScheduler": "DPM-Solver on Stable Audio's cosine sigma table: not adapted yet (its "
    "sigmas are not a refimpl schedule)",
    "CogVideoXDDIMScheduler": "CogVideoX's copy of DDIM with its own snr_shift_scale schedule: not adapted yet",
    "CogVideoXDPMScheduler": "CogVideoX's copy of DPM-Solver with its own snr_shift_scale schedule: not adapted yet",
    "IPNDMScheduler": "improved PNDM on its own cosine-like table: not adapted yet",
    "LTXEulerAncestralRFScheduler": "LTX's ancestral Euler on the flow path: no refimpl ancestral flow sampler",
    "ScoreSdeVeScheduler": "predictor-corrector with Langevin corrector steps (a step-size rule on the score norm)",
    "KarrasVeScheduler": "EDM's stochastic sampler with churn drawn inside step: no noise injection point",
    "RePaintScheduler": "inpainting with resampling jumps: not a sampler of the unconditional model",
    "UnCLIPScheduler": "Karlo's DDPM variant (learned-range variance): needs a model that outputs variances",
    "DDPMWuerstchenScheduler": "Wuerstchen's own continuous cosine schedule: not adapted yet",
    "DiscreteDDIMScheduler": "DDIM over discrete states: not a continuous diffusion",
    "AmusedScheduler": "masked-token (discrete) generation: not a continuous diffusion",
    "VQDiffusionScheduler": "discrete (vector-quantized) diffusion: not a continuous diffusion",
    "BlockRefinementScheduler": "discrete block refinement for language models: not a continuous diffusion",
    "EntropyBoundScheduler": "discrete (masked) language diffusion: not a continuous diffusion",
    "HeliosScheduler": "Helios' video pipeline scheduler: model-specific, not adapted yet",
    "HeliosDMDScheduler": "Helios' distribution-matching distilled sampler: model-specific, not adapted yet",
    "MiniMaxH3Scheduler": "a model-specific scheduler: not adapted yet",
    "PiflowScheduler": "pi-Flow's policy-based flow sampler: needs its network's policy outputs",
    "RFD4ProteinaScheduler": "protein-structure flow sampler on its own manifold: not the exact toys' Euclidean space",
}

#: The configuration space (``space.derived_options``). Parameters set by the oracle from the Config (its schedule
#: and the exact model's parameterisation), or by the adapter.
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
EXCLUDED_VALUES = {"variance_type": ("learned", "learned_range", "fixed_small_log", "fixed_large_log")}


#: Schedulers whose ``step`` draws its own noise from the ``generator`` it is given (the adapter replays it).
_GENERATOR_NOISE = ("DDPMScheduler", "DDPMParallelScheduler", "EulerAncestralDiscreteScheduler",
                    "FlowMatchEulerDiscreteScheduler", "KDPM2AncestralDiscreteScheduler")  # fmt: skip
#: Two model calls per step, ``state_in_first_order`` telling which (the last step to sigma = 0 is one Euler call).
_TWO_STAGE = ("HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "FlowMatchHeunDiscreteScheduler",
              "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler")  # fmt: skip
#: Where the second stage of step i reads its midpoint in the interleaved ``sigmas_interpol`` (index 2i + offset).
_MIDPOINT = {"KDPM2DiscreteScheduler": 1, "KDPM2AncestralDiscreteScheduler": 0}
#: Schedulers whose tables the float64 probe cannot rebuild (interleaved two-stage tables, an increasing inverse table).
_NO_FLOAT64_PROBE = (*_TWO_STAGE, "DPMSolverMultistepInverseScheduler")
#: Schedulers whose ``step`` casts the sample to float32 whatever its dtype (diffusers 0.42.1).
_FLOAT32_STEP = ("EulerAncestralDiscreteScheduler", "FlowMatchEulerDiscreteScheduler",
                 "FlowMatchHeunDiscreteScheduler")  # fmt: skip


@dataclass
class _Step:
    start: float  # the noise level (continuous time) the step starts from
    landing: float  # where its coefficients take it (NaN: sigma = 0)
    state: Tensor  # x_t after the step


@dataclass
class _Trace:
    """What the scheduler did: the solver level and model time of every call, and every completed step."""

    levels: list[float] = field(default_factory=list)
    queries: list[float] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)
    noise: list[Tensor] = field(default_factory=list)


#: Schedulers whose ``step`` creates a tensor in torch's default dtype (diffusers 0.42.1).
DEFAULT_DTYPE_FLOAT32 = ("UniPCMultistepScheduler",)


def _step(sched: Any, *args: Any, **kwargs: Any) -> Any:
    """``sched.step(*args, **kwargs)``; every tensor the adapter hands it has its dtype given explicitly.

    One exception needs torch's default dtype: diffusers 0.42.1 ``UniPCMultistepScheduler.multistep_uni_p_bh_update``
    appends ``torch.ones((), device=device)`` (no dtype, so the default) to its float32 ratios, and under a float64
    default (the test session's) its order-3 predictor solves a float64 system against a float32 right-hand side and
    raises. No argument of its public API sets that dtype, so for that class alone the default is float32 for the
    duration of the one call, and restored on exit, even on error.
    """
    if type(sched).__name__ not in DEFAULT_DTYPE_FLOAT32:
        return sched.step(*args, **kwargs)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        return sched.step(*args, **kwargs)
    finally:
        torch.set_default_dtype(previous)


def _construct(class_name: str, args: dict[str, Any]) -> Any:
    """A fresh ``diffusers.<class_name>(**args)``: a copy of one built once per arguments (the KDPM2 constructors map
    1,000 sigmas to timesteps one by one, ~0.7 s; ``set_timesteps`` then rebuilds every table it uses)."""
    return copy.deepcopy(_shared(class_name, args))


def _shared(class_name: str, args: dict[str, Any]) -> Any:
    """``diffusers.<class_name>(**args)`` built once per arguments (not to be modified: ``_construct`` copies it)."""
    key = tuple(sorted(args.items()))
    try:
        hash(key)
    except TypeError:  # an unhashable argument: no cache
        import diffusers

        return getattr(diffusers, class_name)(**args)
    return _constructed(class_name, key)


@functools.lru_cache(maxsize=128)
def _constructed(class_name: str, items: tuple[tuple[str, Any], ...]) -> Any:
    import diffusers

    return getattr(diffusers, class_name)(**dict(items))


def _draw(noise: list[Tensor], generator: torch.Generator, like: Tensor) -> Tensor:
    """One standard normal draw like ``like`` (for a replaced noise sampler), recorded in ``noise``."""
    noise.append(torch.randn(like.shape, generator=generator, dtype=like.dtype))
    return noise[-1]


@dataclass
class DiffusersScheduler:
    """A diffusers scheduler class driven through its public ``set_timesteps`` / ``step`` API."""

    class_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    float64_tables: bool = False

    @property
    def profile(self) -> Profile:
        if self.class_name not in DIFFUSERS:
            raise ValueError(
                f"the oracle has no adapter for diffusers.{self.class_name}; choose one of {sorted(DIFFUSERS)}"
            )
        return DIFFUSERS[self.class_name]

    @property
    def arguments(self) -> dict[str, Any]:
        """The constructor arguments (beyond the schedule's and the prediction type): defaults, then ours.

        diffusers refuses its default ``final_sigmas_type="zero"`` for the noise-prediction DPM-Solvers; they then
        end at sigma_min (its own suggestion).
        """
        args = {**self.profile.defaults, **self.kwargs}
        if self.class_name in ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler") and args.get(
            "algorithm_type"
        ) in ("dpmsolver", "sde-dpmsolver"):
            args.setdefault("final_sigmas_type", "sigma_min")
        return args

    def _split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The arguments split into the constructor's and ``set_timesteps``' (by their signatures)."""
        import inspect

        import diffusers

        accepted = inspect.signature(getattr(diffusers, self.class_name).set_timesteps).parameters
        args = self.arguments
        return {k: v for k, v in args.items() if k not in accepted}, {k: v for k, v in args.items() if k in accepted}

    def validate(self) -> DiffusersScheduler:
        """Raise ValueError if diffusers refuses these arguments (a combination it rejects, a missing extra)."""

        profile, args = self.profile, self.arguments
        probe_free = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas")
        no_probe = profile.kind in ("flow", "edm") or self.class_name in _NO_FLOAT64_PROBE
        if self.float64_tables and (no_probe or any(args.get(k) for k in probe_free)):
            raise ValueError("the float64 probe applies to one interpolated sigma per timestep only")
        try:
            _shared(self.class_name, self._split()[0])  # built once per arguments: a KDPM2 constructor takes ~0.7 s
        except (ValueError, NotImplementedError, ImportError, TypeError) as err:
            raise ValueError(f"diffusers refuses {self.name}: {err}") from err
        return self

    @property
    def name(self) -> str:
        parts = [f"{k}={v}" for k, v in self.kwargs.items()] + (["float64 tables"] if self.float64_tables else [])
        return f"diffusers.{self.class_name}({', '.join(parts)})"

    @property
    def method(self) -> str:
        return self.profile.method(self.arguments)

    @property
    def encodes(self) -> bool:
        return self.class_name in ("DDIMInverseScheduler", "DPMSolverMultistepInverseScheduler")

    def build(self, schedule: DiscreteVP, config: Config) -> Any:
        import diffusers

        if diffusers.__version__ != PINNED_VERSION:
            warnings.warn(
                f"refimpl.oracle's diffusers adapter knows diffusers {PINNED_VERSION}, found {diffusers.__version__}: "
                "a disagreement may be a change of convention the adapter does not model",
                stacklevel=2,
            )

        kind = self.profile.kind
        if kind in ("flow", "edm"):
            path = {"flow": "rectified_flow", "edm": "edm"}[kind]
            if schedule.name != path:
                raise ValueError(f"{self.class_name} samples the {path} path: use schedule={path!r}")
            extra = {"prediction_type": _PREDICTION[config.prediction]} if kind == "edm" else {}
            return _construct(self.class_name, {**self._split()[0], **extra})
        if not isinstance(schedule, DiscreteVP) or schedule.name not in _BETAS:
            raise ValueError(f"diffusers schedulers need a discrete schedule {sorted(_BETAS)}, got {schedule.name}")
        kind, start, end = _BETAS[schedule.name]
        args = {
            **self._split()[0],
            "num_train_timesteps": schedule.N,
            "beta_schedule": kind,
            "beta_start": start,
            "beta_end": end,
            "prediction_type": _PREDICTION[config.prediction],
        }
        return _construct(self.class_name, args)

    # --- the run -----------------------------------------------------------------------------------------

    def run(self, config: Config, model: Any, x_T: Tensor, noise: Tensor | None) -> Run:
        if config.encode != self.encodes:
            return Run(x_T.new_zeros(0), [], [], error=f"{self.name} {'encodes' if self.encodes else 'samples'}: "
                       f"set Config(encode={self.encodes})")  # fmt: skip
        schedule = model.schedule
        sched = self.build(schedule, config)
        # LCM, TCD: a subset of their distillation grid (original_inference_steps: in the constructor or set_timesteps)
        most = self._split()[1].get("original_inference_steps", getattr(sched.config, "original_inference_steps", None))
        if most is not None and config.n_steps > most:
            return Run(x_T.new_zeros(0), [], [], skipped=f"{self.class_name} takes at most original_inference_steps = "
                       f"{most} steps (set_timesteps refuses more)")  # fmt: skip
        sched.set_timesteps(config.n_steps, **self._split()[1])
        if not torch.isfinite(torch.as_tensor(sched.timesteps)).all():  # a NaN time would reach the model (findings/)
            return Run(x_T.new_zeros(0), [], [], error=f"set_timesteps({config.n_steps}) leaves non-finite timesteps: "
                       f"{torch.as_tensor(sched.timesteps).tolist()}")  # fmt: skip
        kind = self.profile.kind
        if kind in ("flow", "edm") and self.float64_tables:
            raise ValueError(f"{self.class_name} keeps float32 sigmas: the float64 probe does not apply")
        tables = {"flow": _FlowTables, "edm": _EDMTables}.get(kind, _Tables)(sched, schedule)
        if self.float64_tables:
            tables.to_float64(sched, schedule)

        def call(x: Tensor, k: Any, level: float) -> Tensor:
            t = torch.tensor(tables.model_time(k), dtype=torch.float64)
            trace.levels.append(level)
            trace.queries.append(float(t))
            if kind == "flow":  # diffusers' flow-matching models predict the velocity d x_t / dt = eps - x_0
                return predict(model, x.double(), t, "velocity").to(x.dtype)
            if kind == "edm":  # the network output F with D = c_skip x + c_out F (Karras et al. 2022, Eq. 7)
                sd, sign = sched.config.sigma_data, -1.0 if sched.config.prediction_type == "v_prediction" else 1.0
                c_skip, c_out = sd**2 / (t**2 + sd**2), sign * t * sd / (t**2 + sd**2).sqrt()
                return ((predict(model, x.double(), t, "x0") - c_skip * x.double()) / c_out).to(x.dtype)
            return model(x.double(), t).to(x.dtype)

        trace = _Trace()
        loop = {"alphabar": self._alphabar, "sigma": self._sigma, "scaled": self._scaled, "flow": self._scaled,
                "edm": self._sigma if "DPMSolver" in self.class_name else self._scaled}  # fmt: skip
        start = loop[self.profile.kind](sched, tables, call, x_T, noise, trace, config)
        if isinstance(start, str):
            return Run(x_T.new_zeros(0), [], [], error=start)
        if not trace.steps:
            return Run(x_T.new_zeros(0), [], [], error="the scheduler took no step")
        times = torch.tensor([s.start for s in trace.steps] + [trace.steps[-1].landing], dtype=torch.float64)
        final = "grid" if math.isfinite(float(times[-1])) else self._final_kind()
        return Run(
            times,
            [start, *(s.state for s in trace.steps)],
            trace.queries,
            final=final,
            conventions=self._conventions(sched, config, final),
            reference_options=self._reference_options(sched, tables, final, trace),
            levels=trace.levels,
            noise=self._noise(trace),
            coefficient_dtype=torch.float64 if self.float64_tables and not self.float32_step else torch.float32,
            landings=[s.landing for s in trace.steps],
        )

    def _noise(self, trace: _Trace) -> Tensor | None:
        """The noise the scheduler used, one draw a step (DPMSolverSDE: its two a step, (z_1, z_2))."""
        if not trace.noise:
            return None
        noise = torch.stack(trace.noise).double()
        return noise.unflatten(0, (-1, 2)) if self.class_name == "DPMSolverSDEScheduler" else noise

    @property
    def float32_step(self) -> bool:
        """Whether ``step`` computes in float32 whatever the state's dtype (float64 tables cannot help then)."""
        return self.class_name in _FLOAT32_STEP

    def _final_kind(self) -> str:
        return "step" if self.class_name in ("PNDMScheduler", "LMSDiscreteScheduler") else "x0"

    # alpha-bar indexed: DDIM, DDPM, PNDM, DDIM inverse
    def _alphabar(self, sched, tables, call, x_T, noise, trace, config) -> Tensor | str:
        N, n = tables.N, sched.num_inference_steps
        ratio = N // n
        sample = x_T
        if self.class_name == "DDIMInverseScheduler":
            first = tables.t_of_k(-1, initial=True)
            if math.isnan(first):
                return (
                    "DDIM inversion from alpha-bar = 1 (sigma = 0) starts outside the schedule: set_alpha_to_one=False"
                )
            for k in (int(k) for k in sched.timesteps):
                current = min(k - ratio, N - 1)
                level = first if current < 0 else tables.t_of_k(current)
                out = call(sample, k, level)
                sample = _step(sched, out, k, sample).prev_sample
                trace.steps.append(_Step(level, tables.t_of_k(min(k, N - 1)), sample))
            return x_T
        gen, replay = torch.Generator().manual_seed(config.seed + 1), torch.Generator().manual_seed(config.seed + 1)
        eta = config.option("eta", 0.0)
        step_start = None
        for i, k in enumerate(int(k) for k in sched.timesteps):
            kw: dict[str, Any] = {}
            if self.class_name == "PNDMScheduler":
                counter, prk = sched.counter, len(sched.prk_timesteps)
                in_prk = counter < prk and not sched.config.skip_prk_steps
                if in_prk:
                    step_start = tables.t_of_k(int(sched.prk_timesteps[counter // 4 * 4]))
                    done, landing = counter % 4 == 3, tables.t_of_k(k)
                elif sched.config.skip_prk_steps and counter == 0:
                    done, landing = False, math.nan
                elif sched.config.skip_prk_steps and counter == 1:
                    step_start, done, landing = tables.t_of_k(k + ratio), True, tables.t_of_k(k)
                else:
                    step_start, done, landing = tables.t_of_k(k), True, tables.t_of_k(k - ratio)
            elif self.class_name in ("DDPMScheduler", "DDPMParallelScheduler"):
                step_start, done, landing = tables.t_of_k(k), True, tables.t_of_k(int(sched.previous_timestep(k)))
                kw = {"generator": gen}  # DDPM draws its own noise: replay its generator to learn which
                if k > 0:
                    trace.noise.append(torch.randn(x_T.shape, generator=replay, dtype=x_T.dtype))
            elif self.class_name == "LCMScheduler":  # the last step returns f, an estimate of x at k = 0
                last = i + 1 == len(sched.timesteps)
                landing = tables.t_of_k(0 if last else int(sched.timesteps[i + 1]))
                step_start, done = tables.t_of_k(k), True
                kw = {"generator": gen}  # its re-noising draws from the generator (not at the last step: a zero there)
                trace.noise.append(x_T.new_zeros(x_T.shape) if last else torch.randn(x_T.shape, generator=replay,
                                                                                      dtype=x_T.dtype))  # fmt: skip
            elif self.class_name == "TCDScheduler":  # gamma = 0: DDIM to the next timestep of its list (then k = 0)
                following = int(sched.timesteps[i + 1]) if i + 1 < len(sched.timesteps) else 0
                step_start, done, landing = tables.t_of_k(k), True, tables.t_of_k(following)
                kw = {"eta": 0.0}
            else:  # DDIM
                step_start, done, landing = tables.t_of_k(k), True, tables.t_of_k(k - ratio)
                if eta > 0:
                    kw = {"eta": eta, "variance_noise": noise[i]}
                    trace.noise.append(noise[i])
            out = call(sample, k, tables.t_of_k(k))
            sample = _step(sched, out, k, sample, **kw).prev_sample
            if done:
                trace.steps.append(_Step(step_start, landing, sample))
        return x_T

    # sigma tables, state x_t: DPM-Solver (multistep, singlestep), DEIS, UniPC
    def _sigma(self, sched, tables, call, x_T, noise, trace, config) -> Tensor | str:
        sample = x_T
        ks = list(sched.timesteps)
        groups = getattr(sched, "order_list", None)
        sde = "sde" in str(getattr(sched.config, "algorithm_type", ""))
        group_start = None
        for j, k in enumerate(ks):
            level = tables.t_of_sigma(j, k)
            if group_start is None or groups is None or groups[j] == 1:
                group_start = level
            out = call(sample, k, level)
            kw = {"variance_noise": noise[len(trace.noise)]} if sde else {}
            if sde:
                trace.noise.append(noise[len(trace.noise)])
            sample = _step(sched, out, k, sample, **kw).prev_sample
            ends_group = groups is None or j + 1 == len(ks) or groups[j + 1] == 1
            if ends_group:
                trace.steps.append(_Step(group_start, tables.t_of_sigma(j + 1), sample))
        return x_T

    # sigma tables, state x~ = x_t / alpha_t: Euler (ancestral), Heun, KDPM2, LMS; the flow-matching schedulers (x_t)
    def _scaled(self, sched, tables, call, x_T, noise, trace, config) -> Tensor | str:
        two_stage = self.class_name in _TWO_STAGE
        sample = x_T / tables.alpha(0).to(x_T.dtype)  # x~ at the first level
        ks = list(sched.timesteps)
        gen, replay = torch.Generator().manual_seed(config.seed + 1), torch.Generator().manual_seed(config.seed + 1)
        draws = self.class_name in _GENERATOR_NOISE and (self.class_name != "FlowMatchEulerDiscreteScheduler"
                                                         or sched.config.stochastic_sampling)  # fmt: skip
        step_start = None
        if self.class_name == "DPMSolverSDEScheduler":  # its noise sampler (a Brownian tree) is a public attribute
            sched.noise_sampler = lambda sigma, sigma_next: _draw(trace.noise, gen, x_T)
        for j, k in enumerate(ks):
            idx = sched.step_index if sched.step_index is not None else 0
            first_order = not two_stage or sched.state_in_first_order
            between = getattr(sched, "sigmas_interpol", None)  # KDPM2 evaluates its second stage there
            mid = None if first_order or between is None else between[idx - 1 + _MIDPOINT[self.class_name]]
            mid = getattr(sched, "mid_point_sigma", None) if not first_order and mid is None else mid  # DPMSolverSDE
            level = tables.t_of_sigma(idx, k, mid)
            if first_order:
                step_start, landing = level, tables.t_of_sigma(idx + 1)
            scale = getattr(sched, "scale_model_input", lambda x, k: x)  # EDM's: c_in x (the adapter's F takes x)
            scaled = scale(sample, k)
            out = call(scaled if self.profile.kind == "scaled" else sample, k, level)
            kw: dict[str, Any] = {"generator": gen} if draws else {}
            if draws and not (two_stage and first_order):  # replay the scheduler's generator: the noise it drew
                trace.noise.append(torch.randn(x_T.shape, generator=replay, dtype=self._noise_dtype(out)))
            sample = _step(sched, out, k, sample, **kw).prev_sample
            completed = j + 1 == len(ks) or (not first_order if two_stage else True)
            if completed:  # a two-stage step ends after its second call, the last (Euler) step to sigma = 0 at once
                at = idx if two_stage and not first_order else idx + 1
                trace.steps.append(_Step(step_start, landing, sample * tables.alpha(at).to(sample.dtype)))
        return x_T

    def _noise_dtype(self, out: Tensor) -> torch.dtype:
        """The dtype of the scheduler's own draw: the model output's, or float32 where ``step`` casts the sample."""
        return torch.float32 if self.class_name == "FlowMatchEulerDiscreteScheduler" else out.dtype

    # --- what the reference needs ----------------------------------------------------------------------

    def _conventions(self, sched: Any, config: Config, final: str) -> tuple[Convention, ...]:
        out = []
        cfg = sched.config
        if getattr(cfg, "clip_sample", False):
            c = float(cfg.clip_sample_range)
            out.append(Convention(f"x0 clipped to [-{c:g}, {c:g}]", "clip_sample=True", clip_x0=c))
        if self.class_name == "LMSDiscreteScheduler":
            out.append(Convention("lower-order warm-up", "LMS starts with orders 1, 2, 3 (refimpl: RK4 steps)",
                                  options=(("warmup", "lower_order"), ("order", 4))))  # fmt: skip
        orders = self._multistep_orders(sched, final)
        if orders is not None:
            n = len(orders)
            from refimpl.oracle.methods import get_method

            p = int(dict(get_method(self.method).options).get("order", sched.config.solver_order))
            plain = [min(p, i + 1) for i in range(n)]  # what the reference does unless told
            if orders != plain:
                out.append(
                    Convention("lower-order final steps", f"orders {orders}", options=(("orders", tuple(orders)),))
                )
        return tuple(out)

    def _multistep_orders(self, sched: Any, final: str) -> list[int] | None:
        """The order diffusers uses at each regular step of a multistep method (None: not multistep)."""
        cfg = sched.config
        name = self.class_name
        if name not in ("DPMSolverMultistepScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
                        "EDMDPMSolverMultistepScheduler"):  # fmt: skip
            return None
        p, n = cfg.solver_order, len(sched.timesteps)
        orders = []
        for j in range(n):
            if name == "UniPCMultistepScheduler":
                k = min(p, n - j) if cfg.lower_order_final else p
                orders.append(min(k, j + 1))
                continue
            few = cfg.lower_order_final and n < 15
            last = j == n - 1 and (
                getattr(cfg, "euler_at_final", False) or few or getattr(cfg, "final_sigmas_type", "") == "zero"
            )
            second = j == n - 2 and few
            k = 1 if (p == 1 or j < 1 or last) else 2 if (p == 2 or j < 2 or second) else 3
            orders.append(k)
        return orders[:-1] if final != "grid" else orders

    def _reference_options(self, sched: Any, tables: _Tables, final: str, trace: _Trace) -> dict[str, Any]:
        cfg = sched.config
        if self.class_name == "DPMSolverSDEScheduler":  # the second stage of each step evaluates at its midpoint
            return {"stages": trace.levels[1:-1:2]}
        if self.class_name == "LCMScheduler":
            return {"train_steps": tables.N, "timestep_scaling": float(cfg.timestep_scaling)}
        if self.class_name in ("DDPMScheduler", "DDPMParallelScheduler") and cfg.variance_type == "fixed_large":
            return {"variance": "beta"}
        if self.class_name in _MIDPOINT:  # step i evaluates its second stage at sigmas_interpol[2i + offset]
            n, j = sched.num_inference_steps - (final != "grid"), _MIDPOINT[self.class_name]
            stages = [tables.t_of_sigma(2 * i + j, value=sched.sigmas_interpol[2 * i + j]) for i in range(n)]
            if self.class_name == "KDPM2AncestralDiscreteScheduler":
                return {"stages": stages}
            return {"orders": [2] * n, "stages": [[t] for t in stages]}
        if self.class_name == "DPMSolverSinglestepScheduler" and cfg.solver_order > 1:
            groups, stages = [], []
            for j, order in enumerate(sched.order_list):
                if order == 1:
                    groups.append(1)
                    stages.append([])
                else:
                    groups[-1] += 1
                    stages[-1].append(tables.t_of_sigma(j, sched.timesteps[j]))
            if final != "grid":
                groups, stages = groups[:-1], stages[:-1]
            return {"orders": groups, "stages": stages}
        return {}


class _Tables:
    """A scheduler's noise levels as continuous times of the refimpl schedule (see the module docstring)."""

    def __init__(self, sched: Any, schedule: DiscreteVP):
        self.N = schedule.N
        self.schedule = schedule
        abar = sched.alphas_cumprod
        self.abar = abar
        self.train_sigmas = ((1 - abar) / abar) ** 0.5  # the scheduler's own knot sigmas
        self.sigmas = getattr(sched, "sigmas", None)
        self.final_abar = getattr(sched, "final_alpha_cumprod", None)
        self.initial_abar = getattr(sched, "initial_alpha_cumprod", None)

    def to_float64(self, sched: Any, schedule: DiscreteVP) -> None:
        """Replace the scheduler's float32 tables by float64 ones (the same values, computed in float64)."""
        abar64 = schedule.alphas_cumprod.clone()
        train64 = ((1 - abar64) / abar64) ** 0.5
        for name in ("alphas_cumprod",):
            setattr(sched, name, abar64)
        for name, value in (("alpha_t", abar64.sqrt()), ("sigma_t", (1 - abar64).sqrt())):
            if hasattr(sched, name):
                setattr(sched, name, value)
        if hasattr(sched, "lambda_t"):
            sched.lambda_t = torch.log(sched.alpha_t) - torch.log(sched.sigma_t)
        for name in ("final_alpha_cumprod", "initial_alpha_cumprod"):
            value = getattr(sched, name, None)
            if value is not None:
                setattr(sched, name, torch.tensor(1.0, dtype=torch.float64) if float(value) == 1.0 else abar64[0])
        if getattr(sched, "sigmas", None) is not None:
            ks = np.asarray(sched.timesteps, dtype=np.float64)
            inner = np.interp(ks, np.arange(self.N), train64.numpy())
            last = float(sched.sigmas[-1])
            tail = [0.0] if last == 0.0 else [float(train64[0])]
            if getattr(sched.config, "use_karras_sigmas", False) or len(sched.sigmas) != len(ks) + 1:
                raise ValueError("the float64 probe needs one interpolated sigma per timestep plus a final one")
            sched.sigmas = torch.tensor(np.concatenate([inner, tail]), dtype=torch.float64)
        self.__init__(sched, schedule)

    def t_of_k(self, k: int, initial: bool = False) -> float:
        """The time of alpha-bar index k; k < 0 is the final (or, inverting, initial) alpha-bar: 1 or alpha-bar_0."""
        if k >= 0:
            return (k + 1) / self.N
        end = self.initial_abar if initial else self.final_abar
        return math.nan if end is None or float(end) == 1.0 else 1 / self.N

    def model_time(self, k: Any) -> float:
        """The continuous time of the model's timestep input k: (k + 1) / N."""
        return (float(k) + 1) / self.N

    def t_of_sigma(self, j: int, k: Any = None, value: Tensor | None = None) -> float:
        """The time of ``sigmas[j]`` (or of ``value``): its knot's time if it is a knot sigma (timestep k's), else
        t(-log sigma)."""
        sigma = self.sigmas[j] if value is None else value
        if float(sigma) == 0.0:
            return math.nan
        if k is not None and math.isfinite(float(k)) and float(k) == int(k) and 0 <= int(k) < self.N and \
                self.train_sigmas[int(k)] == sigma:  # fmt: skip
            return (int(k) + 1) / self.N
        hits = torch.nonzero(self.train_sigmas == sigma)
        if len(hits):
            return (int(hits[0]) + 1) / self.N
        s = self.schedule
        lam = (-torch.log(torch.as_tensor(float(sigma), dtype=torch.float64))).clamp(s.lambda_min, s.lambda_max)
        return float(s.t_of_lambda(lam))

    def alpha(self, j: int) -> Tensor:
        """alpha_t = 1 / sqrt(1 + sigma^2) of ``sigmas[j]`` (1 at sigma = 0), in float64."""
        sigma = self.sigmas[j].double()
        return 1.0 / torch.sqrt(1.0 + sigma**2)


class _FlowTables:
    """The flow-matching schedulers' noise levels: on the rectified-flow path sigma_t = t, and the model's timestep
    input is k = N t (``num_train_timesteps`` N). Their grids start at sigma = 1 (alpha = 0, lambda = -inf), outside
    every schedule's domain: the first level is moved to the schedule's t_max, where the oracle's x_T is drawn (the
    rest of the grid, shifted or Karras-spaced, is the scheduler's own)."""

    def __init__(self, sched: Any, schedule: Any):
        self.N = sched.config.num_train_timesteps
        if float(sched.sigmas[0]) > schedule.t_max:
            sched.sigmas[0] = schedule.t_max
            sched.timesteps[0] = schedule.t_max * self.N
        self.sigmas, self.schedule = sched.sigmas, schedule

    def model_time(self, k: Any) -> float:
        return min(max(float(k) / self.N, self.schedule.t_min), self.schedule.t_max)

    def t_of_sigma(self, j: int, k: Any = None, value: Tensor | None = None) -> float:
        sigma = float(self.sigmas[j] if value is None else value)
        if sigma == 0.0:
            return math.nan
        return min(max(sigma, self.schedule.t_min), self.schedule.t_max)  # float32 ends round past the domain

    def alpha(self, j: int) -> Tensor:
        """1: the flow schedulers keep x_t itself."""
        return torch.tensor(1.0, dtype=torch.float64)


class _EDMTables(_FlowTables):
    """EDM's schedulers: sigma_t = t on the EDM schedule (alpha = 1, state x_t), and the model's timestep input is
    c_noise = log(sigma) / 4 (Karras et al. 2022, arXiv:2206.00364v2, Table 1). Their Karras grids span exactly the
    EDM schedule's [0.002, 80] (up to float32 rounding, clamped)."""

    def __init__(self, sched: Any, schedule: Any):
        self.sigmas, self.schedule = sched.sigmas, schedule

    def model_time(self, k: Any) -> float:
        return min(max(math.exp(4 * float(k)), self.schedule.t_min), self.schedule.t_max)
