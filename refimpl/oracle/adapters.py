"""Adapters: run third-party samplers (and any refimpl-signature callable) on the oracle's exact toys.

Each adapter walks its library's own grid and records a ``Run``: the continuous times of that grid,
the state after every step (in x_t coordinates), the times at which the model was queried, and the
noise it used. Time conventions (modelled, not hidden):

* diffusers' integer timestep k of an N-step discrete schedule is continuous time t = (k + 1) / N
  (Lu et al. 2022, arXiv:2206.00927v3, App. D); a step to "k = -1" with alpha-bar = 1 is a final
  denoising step (``Run.denoise_final``).
* k-diffusion works in the EDM variables sigma = sigma_t / alpha_t and x~ = x_t / alpha_t with a
  denoiser D(x~, sigma) = E[x_0 | x_t] (Karras et al. 2022, arXiv:2206.00364v2, Eq. 1-3).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from refimpl.oracle.core import Config, Run
from refimpl.samplers import Trajectory
from refimpl.schedules import DiscreteVP

__all__ = ["DIFFUSERS", "DiffusersScheduler", "KDiffusionSampler", "RefimplCallable", "load_kdiffusion_sampling"]

_DIFFUSERS_PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


@dataclass
class RefimplCallable:
    """Any callable with refimpl's sampler signature, run on the oracle's grid for ``n_steps``."""

    fn: Callable[..., Tensor]
    name: str = "callable"
    spacing: str = "uniform_lambda"
    stochastic: bool = False

    def run(self, config: Config, model: Any, x_T: Tensor, noise: Tensor | None) -> Run:
        from refimpl import grids
        from refimpl.models import CountingModel

        ts = grids.timesteps(model.schedule, config.n_steps, self.spacing)
        counting, traj = CountingModel(_CastingModel(model, x_T.dtype)), Trajectory()
        kwargs = {"noise": noise} if self.stochastic else {}
        out = self.fn(counting, x_T, ts, callback=traj, **dict(config.options), **kwargs)
        if len(traj.steps) != config.n_steps:
            return Run(ts, [], [], error=f"reported {len(traj.steps)} steps through its callback, not {config.n_steps}")
        states = [x_T, *(s.x_next for s in traj.steps[:-1]), out]
        return Run(ts, states, [float(t) for t in counting.t_queried])


@dataclass
class _CastingModel:
    """The exact model evaluated in float64, its output cast back to the caller's dtype."""

    model: Any
    dtype: torch.dtype

    @property
    def schedule(self) -> Any:
        return self.model.schedule

    @property
    def prediction(self) -> str:
        return self.model.prediction

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x.double(), torch.as_tensor(t, dtype=torch.float64)).to(x.dtype)


# --- diffusers -------------------------------------------------------------------------------------------

#: scheduler class -> (refimpl method it implements, constructor arguments that make the conventions match)
DIFFUSERS: dict[str, tuple[str, dict[str, Any]]] = {
    "DDIMScheduler": ("ddim", {"clip_sample": False, "set_alpha_to_one": False, "timestep_spacing": "trailing"}),
    "DDPMScheduler": ("ddpm", {"clip_sample": False, "variance_type": "fixed_small", "timestep_spacing": "leading"}),
}


@dataclass
class DiffusersScheduler:
    """A diffusers scheduler class driven through its public ``set_timesteps`` / ``step`` API."""

    class_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"diffusers.{self.class_name}"

    def _build(self, schedule: DiscreteVP, config: Config) -> Any:
        import diffusers

        if not isinstance(schedule, DiscreteVP):
            raise ValueError(f"diffusers schedulers need a discrete schedule, got {schedule.name}")
        betas = {"ddpm_linear": ("linear", 1e-4, 0.02), "scaled_linear": ("scaled_linear", 0.00085, 0.012)}
        kind, start, end = betas[schedule.name]
        defaults = DIFFUSERS.get(self.class_name, ("", {}))[1]
        args = {
            **defaults,
            **self.kwargs,
            "num_train_timesteps": schedule.N,
            "beta_schedule": kind,
            "beta_start": start,
            "beta_end": end,
            "prediction_type": _DIFFUSERS_PREDICTION[config.prediction],
        }
        return getattr(diffusers, self.class_name)(**args)

    def run(self, config: Config, model: Any, x_T: Tensor, noise: Tensor | None) -> Run:
        schedule = model.schedule
        sched = self._build(schedule, config)
        sched.set_timesteps(config.n_steps)
        N, queries = schedule.N, []

        def model_fn(x: Tensor, k: Tensor) -> Tensor:
            t = (int(k) + 1) / N
            queries.append(t)
            return model(x.double(), torch.tensor(t, dtype=torch.float64)).to(x.dtype)

        ks = [int(k) for k in sched.timesteps]
        eta = config.option("eta", 0.0)
        gen = torch.Generator().manual_seed(config.seed + 1)
        replay = torch.Generator().manual_seed(config.seed + 1)
        states, used_noise, sample = [x_T], [], x_T
        for i, k in enumerate(ks):
            out = model_fn(sample, torch.tensor(k))
            if self.class_name == "DDIMScheduler":
                kw = {"eta": eta, "variance_noise": noise[i]} if eta > 0 else {}
                if eta > 0:
                    used_noise.append(noise[i])
            else:  # DDPM draws its own noise: replay its generator to learn which
                kw = {"generator": gen}
                used_noise.append(
                    torch.randn(x_T.shape, generator=replay, dtype=x_T.dtype) if k > 0 else torch.zeros_like(x_T)
                )
            sample = sched.step(out, k, sample, **kw).prev_sample
            states.append(sample)
        final = _final_time(sched, ks[-1], N)
        times = torch.tensor([(k + 1) / N for k in ks] + [final], dtype=torch.float64)
        used = torch.stack(used_noise).double() if used_noise else None
        return Run(
            times,
            states,
            queries,
            denoise_final=final != final,
            noise=used,
            coefficient_dtype=sched.alphas_cumprod.dtype,
        )


def _final_time(sched: Any, k_last: int, N: int) -> float:
    """Where the last step of a diffusers scheduler lands: (k + 1) / N, or NaN for alpha-bar = 1."""
    k_prev = k_last - N // sched.num_inference_steps
    if k_prev >= 0:
        return (k_prev + 1) / N
    final = getattr(sched, "final_alpha_cumprod", None)
    if final is not None and float(final) < 1.0:
        return 1 / N  # alphas_cumprod[0]
    return float("nan")


# --- k-diffusion ---------------------------------------------------------------------------------------


def load_kdiffusion_sampling() -> types.ModuleType:
    """Import k-diffusion's real ``sampling`` module without its package ``__init__``.

    k-diffusion's ``__init__`` imports all of its submodules, and ``k_diffusion.utils`` imports
    torchvision, which does not import beside the CPU torch wheel. ``sampling.py`` itself needs only
    scipy, torch, torchdiffeq, torchsde, tqdm and one function of ``utils`` (``append_dims``). So we
    register an empty package ``k_diffusion`` pointing at the installed folder, load the real
    ``utils.py`` with a placeholder ``torchvision.transforms.functional`` in ``sys.modules`` for the
    duration of that one import (utils uses it only in image helpers that sampling never calls), and
    then load the real ``sampling.py``. Nothing of k-diffusion is copied or edited.
    """
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed: pip install --no-deps k-diffusion==0.1.1.post1 torchsde")
    root = Path(next(iter(spec.submodule_search_locations)))
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(root)]
    sys.modules["k_diffusion"] = package
    placeholders = {}
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        if name not in sys.modules:
            placeholders[name] = sys.modules[name] = types.ModuleType(name)
    sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    try:
        for sub in ("utils", "sampling"):
            sub_spec = importlib.util.spec_from_file_location(f"k_diffusion.{sub}", root / f"{sub}.py")
            module = importlib.util.module_from_spec(sub_spec)
            sys.modules[f"k_diffusion.{sub}"] = module
            sub_spec.loader.exec_module(module)
            setattr(package, sub, module)
    finally:
        for name in placeholders:
            del sys.modules[name]
    return sys.modules["k_diffusion.sampling"]


#: k-diffusion sampler function -> refimpl method it implements
KDIFFUSION: dict[str, str] = {"sample_euler": "ddim"}


@dataclass
class KDiffusionSampler:
    """A k-diffusion ``sample_*(model, x, sigmas, extra_args, callback, disable)`` function."""

    function: str

    @property
    def name(self) -> str:
        return f"k_diffusion.{self.function}"

    def run(self, config: Config, model: Any, x_T: Tensor, noise: Tensor | None) -> Run:
        from refimpl import grids

        sampling = load_kdiffusion_sampling()
        schedule = model.schedule
        ts = grids.timesteps(schedule, config.n_steps, config.option("spacing", "karras"))
        values = schedule(ts)
        sigmas = (values.sigma_t / values.alpha_t).to(x_T.dtype)
        queries: list[float] = []

        def denoiser(x_tilde: Tensor, sigma: Tensor) -> Tensor:
            t = schedule.t_of_lambda(-torch.log(sigma[0].double()))
            queries.append(float(t))
            v = schedule(t)
            return model.x0(v.alpha_t * x_tilde.double(), t).to(x_tilde.dtype)

        seen: list[Tensor] = []
        out = getattr(sampling, self.function)(
            denoiser,
            x_T / values.alpha_t[0].to(x_T.dtype),
            sigmas,
            callback=lambda d: seen.append(d["x"]),
            disable=True,
        )
        states = [(x * values.alpha_t[i].to(x.dtype)) for i, x in enumerate([*seen, out])]
        return Run(ts, states, queries)
