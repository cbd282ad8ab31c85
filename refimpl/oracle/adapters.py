"""Adapters: run third-party samplers (and any refimpl-signature callable) on the oracle's exact toys.

Each adapter walks its library's own grid and records a ``Run``: the continuous times of that grid,
the state after every step (in x_t coordinates), the times at which the model was queried, and the
noise it used. Time conventions (modelled, not hidden):

* diffusers' integer timestep k of an N-step discrete schedule is continuous time t = (k + 1) / N
  (Lu et al. 2022, arXiv:2206.00927v3, App. D); a step to "k = -1" with alpha-bar = 1 is a final
  step to sigma = 0 (see ``refimpl.oracle.diffusers_adapter``).
* k-diffusion works in the EDM variables sigma = sigma_t / alpha_t and x~ = x_t / alpha_t with a
  denoiser D(x~, sigma) = E[x_0 | x_t] (Karras et al. 2022, arXiv:2206.00364v2, Eq. 1-3); its grids
  (``get_sigmas_karras``) append sigma = 0, a final step to the x0 prediction (``final_zero=True``).
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from refimpl.oracle.config import Config, config_grid
from refimpl.oracle.own import RefimplCallable
from refimpl.oracle.running import Convention, Run

__all__ = [
    "DIFFUSERS",
    "KDIFFUSION",
    "KDIFFUSION_ETA",
    "DiffusersScheduler",
    "KDiffusionSampler",
    "RefimplCallable",
    "load_kdiffusion_sampling",
]


# --- k-diffusion ---------------------------------------------------------------------------------------


_KDIFFUSION_SAMPLING: list[types.ModuleType] = []  # the loaded module, once (not kept in sys.modules)


def load_kdiffusion_sampling() -> types.ModuleType:
    """Import k-diffusion's real ``sampling`` module without its package ``__init__``.

    k-diffusion's ``__init__`` imports all of its submodules, and ``k_diffusion.utils`` imports
    torchvision, which does not import beside the CPU torch wheel. ``sampling.py`` itself needs only
    scipy, torch, torchdiffeq, torchsde, tqdm and one function of ``utils`` (``append_dims``). So we
    register an empty package ``k_diffusion`` pointing at the installed folder, load the real
    ``utils.py`` with a placeholder ``torchvision.transforms.functional`` in ``sys.modules`` for the
    duration of that one import (utils uses it only in image helpers that sampling never calls), and
    then load the real ``sampling.py``. Nothing of k-diffusion is copied or edited, and ``sys.modules``
    is left as it was found: the placeholder package and its two modules are removed once loaded (``sampling``
    holds ``utils`` by reference), and the module is kept here.
    """
    if _KDIFFUSION_SAMPLING:
        return _KDIFFUSION_SAMPLING[0]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed: pip install --no-deps k-diffusion==0.1.1.post1 torchsde")
    root = Path(next(iter(spec.submodule_search_locations)))
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(root)]
    names = ["k_diffusion", "k_diffusion.utils", "k_diffusion.sampling"]
    names += ["torchvision", "torchvision.transforms", "torchvision.transforms.functional"]
    placeholders = [name for name in names if name not in sys.modules]
    sys.modules["k_diffusion"] = package
    for name in names[3:]:
        if name in placeholders:
            sys.modules[name] = types.ModuleType(name)
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
            sys.modules.pop(name, None)
    _KDIFFUSION_SAMPLING.append(package.sampling)
    return package.sampling


#: k-diffusion sampler -> (refimpl method it implements, keyword arguments that make it that method).
#: The ancestral and SDE samplers with eta = 0 are their deterministic skeletons; the noise of
#: sample_euler_ancestral (eta = 1: DDPM's posterior variance) and sample_dpmpp_2m_sde is injected through
#: k-diffusion's own ``noise_sampler`` argument, and so is that of the samplers of ``KDIFFUSION_ETA`` with eta > 0.
KDIFFUSION: dict[str, tuple[str, dict[str, Any]]] = {
    "sample_euler": ("edm_euler", {}),
    "sample_heun": ("edm_heun", {}),
    "sample_lms": ("lms", {}),
    "sample_dpm_2": ("dpm_solver_2", {}),
    "sample_dpm_2_ancestral": ("dpm_solver_2", {"eta": 0.0}),
    "sample_euler_ancestral": ("ddpm", {}),
    "sample_dpmpp_2s_ancestral": ("dpm_solver_pp_2s", {"eta": 0.0}),
    "sample_dpmpp_sde": ("dpm_solver_pp_2s", {"eta": 0.0}),
    "sample_dpmpp_2m": ("dpm_solver_pp_2m", {}),
    "sample_dpmpp_2m_sde": ("sde_dpm_solver_pp_2m", {}),
    "sample_dpmpp_3m_sde": ("dpm_solver_pp_3m_exact", {"eta": 0.0}),
    "sample_dpm_fast": ("dpm_solver_singlestep_3", {}),
    "sample_dpm_adaptive": ("dpm_solver_singlestep_3", {}),
}
_KD_STOCHASTIC = ("sample_euler_ancestral", "sample_dpmpp_2m_sde")
#: Samplers that are a stochastic refimpl method when given eta > 0 (the refimpl method takes the same eta):
#: sample_dpm_2_ancestral is ancestral DPM-Solver-2 (one draw a step), sample_dpmpp_sde the stochastic
#: DPM-Solver++(2S) with r = 1/2 (a draw for each of its two stages, in place of its Brownian tree).
KDIFFUSION_ETA = {"sample_dpm_2_ancestral": "dpm_solver_2_ancestral", "sample_dpmpp_sde": "sde_dpm_solver_pp_2s"}


@dataclass
class KDiffusionSampler:
    """A k-diffusion ``sample_*(model, x, sigmas, extra_args, callback, disable)`` function.

    ``kwargs`` go to the function (they override ``KDIFFUSION``'s); ``final_zero`` appends sigma = 0 to the
    grid as k-diffusion's ``get_sigmas_*`` do (then ``config.n_steps`` counts that last step too).
    """

    @property
    def _eta(self) -> float:
        """The eta of a ``KDIFFUSION_ETA`` sampler (0: its deterministic skeleton)."""
        return float(self.kwargs.get("eta", KDIFFUSION[self.function][1].get("eta", 1.0)))

    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    final_zero: bool = False

    @property
    def name(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"k_diffusion.{self.function}({extra})" if extra else f"k_diffusion.{self.function}"

    @property
    def method(self) -> str:
        if self.function not in KDIFFUSION:
            raise ValueError(f"no known refimpl method for {self.function}; choose one of {sorted(KDIFFUSION)}")
        if self.function == "sample_dpm_adaptive":
            return f"dpm_solver_singlestep_{self.kwargs.get('order', 3)}"
        if self.function in KDIFFUSION_ETA and self._eta > 0:
            return KDIFFUSION_ETA[self.function]
        return KDIFFUSION[self.function][0]

    def run(self, config: Config, model: Any, x_T: Tensor, noise: Tensor | None) -> Run:
        sampling = load_kdiffusion_sampling()
        if self.function in ("sample_dpm_fast", "sample_dpm_adaptive"):
            return self._run_fast(sampling, config, model, x_T)
        schedule = model.schedule
        ts = config_grid(schedule, replace(config, final_zero=self.final_zero))  # every spacing, "random" too
        values = schedule(ts)
        sigma_grid = torch.exp(-values.lambda_)  # the EDM noise level sigma_t / alpha_t
        sigmas = torch.cat([sigma_grid, torch.zeros(1, dtype=torch.float64)]) if self.final_zero else sigma_grid
        queries: list[float] = []
        lam_lo, lam_hi = schedule.lambda_min, schedule.lambda_max

        def denoiser(x_tilde: Tensor, sigma: Tensor) -> Tensor:
            lam = (-torch.log(sigma[0].double())).clamp(lam_lo, lam_hi)  # float32 sigmas may round past the ends
            t = schedule.t_of_lambda(lam)
            queries.append(float(t))
            return model.x0(schedule(t).alpha * x_tilde.double(), t).to(x_tilde.dtype)

        kwargs = {**KDIFFUSION.get(self.function, ("", {}))[1], **self.kwargs}
        reference_options: dict[str, Any] = {}
        if self.function in KDIFFUSION_ETA and self._eta > 0:
            reference_options["eta"] = self._eta
            if self.function == "sample_dpmpp_sde" and noise is not None:  # two draws a step: (n_steps, 2, B, ...)
                g = torch.Generator().manual_seed(config.seed + 1)
                noise = torch.stack([noise, torch.randn(noise.shape, generator=g, dtype=noise.dtype)], dim=1)
        if self.function in _KD_STOCHASTIC or "eta" in kwargs:
            draws = noise.flatten(0, 1) if noise is not None and noise.ndim > x_T.ndim + 1 else noise
            kwargs["noise_sampler"] = _noise_sampler(draws, x_T)
        seen: list[Tensor] = []
        out = getattr(sampling, self.function)(
            denoiser,
            x_T / values.alpha[0].to(x_T.dtype),
            sigmas.to(x_T.dtype),
            callback=lambda d: seen.append(d["x"]),
            disable=True,
            **kwargs,
        )
        alphas = [*values.alpha, torch.tensor(1.0, dtype=torch.float64)] if self.final_zero else [*values.alpha]
        states = [x * a.to(x.dtype) for x, a in zip([*seen, out], alphas, strict=True)]
        times = torch.cat([ts, torch.tensor([math.nan], dtype=torch.float64)]) if self.final_zero else ts
        final = "grid"
        conventions: tuple[Convention, ...] = ()
        if self.function == "sample_lms":
            final = "step" if self.final_zero else "grid"
            conventions = (
                Convention(
                    "lower-order warm-up",
                    "k-diffusion starts LMS with orders 1, 2, 3 (refimpl's default: RK4 steps)",
                    options=(("warmup", "lower_order"), ("order", kwargs.get("order", 4))),
                ),
            )
        elif self.final_zero:
            final = "x0"
        return Run(
            times,
            states,
            queries,
            final=final,
            conventions=conventions,
            noise=noise if reference_options else None,
            coefficient_dtype=x_T.dtype,
            reference_options=reference_options,
        )

    def _run_fast(self, sampling: types.ModuleType, config: Config, model: Any, x_T: Tensor) -> Run:
        """``sample_dpm_fast(model, x, sigma_min, sigma_max, n)``: DPM-Solver-fast with n model calls (Lu et al. 2022,
        arXiv:2206.00927v3, Sec. 3.4): m = n // 3 + 1 steps uniform in lambda = -log sigma, orders 3, ..., 3 then
        [2, 1] or [n % 3], intermediate points at r = 1/3, 2/3 (order 3) and 1/2 (order 2) of each step in lambda;
        the reference is refimpl's singlestep DPM-Solver with those orders and points."""
        schedule = model.schedule
        ends = schedule(torch.tensor([schedule.t_max, schedule.t_min], dtype=torch.float64))
        queries: list[float] = []
        lam_lo, lam_hi = schedule.lambda_min, schedule.lambda_max

        def t_of(lam: Tensor | float) -> Tensor:
            return schedule.t_of_lambda(torch.as_tensor(lam, dtype=torch.float64).clamp(lam_lo, lam_hi))

        def denoiser(x_tilde: Tensor, sigma: Tensor) -> Tensor:
            t = t_of(-torch.log(sigma[0].double()))
            queries.append(float(t))
            return model.x0(schedule(t).alpha * x_tilde.double(), t).to(x_tilde.dtype)

        seen: list[tuple[Tensor, float]] = []
        sigma_min, sigma_max = (float(r) for r in ends.rho.flip(0))
        x_start = x_T / ends.alpha[0].to(x_T.dtype)
        if self.function == "sample_dpm_adaptive":
            return self._run_adaptive(sampling, denoiser, x_start, sigma_min, sigma_max, queries, t_of, schedule)
        out = sampling.sample_dpm_fast(
            denoiser, x_start, sigma_min, sigma_max, config.n_steps, disable=True,
            callback=lambda d: seen.append((d["x"], float(d["t"]))),
        )  # fmt: skip
        n, m = config.n_steps, config.n_steps // 3 + 1
        orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
        lambdas = [lam for _, lam in seen] + [-math.log(sigma_min)]
        stages = [
            [float(t_of(a + r * (b - a))) for r in {1: (), 2: (0.5,), 3: (1 / 3, 2 / 3)}[k]]
            for k, a, b in zip(orders, lambdas, lambdas[1:], strict=False)
        ]
        times = t_of(torch.tensor(lambdas, dtype=torch.float64))
        alphas = schedule(times).alpha
        states = [x * a.to(x.dtype) for x, a in zip([x for x, _ in seen] + [out], alphas, strict=True)]
        # k-diffusion makes its end points with torch.tensor(sigma): torch's default dtype sets their precision
        precision = min(x_T.dtype, torch.get_default_dtype(), key=lambda d: torch.finfo(d).bits)
        return Run(
            times, states, queries, reference_options={"orders": orders, "stages": stages}, coefficient_dtype=precision
        )

    def _run_adaptive(self, sampling, denoiser, x_start, sigma_min, sigma_max, queries, t_of, schedule) -> Run:
        """``sample_dpm_adaptive`` (DPM-Solver-12 / -23 with step-size control, Lu et al. 2022, arXiv:2206.00927v3,
        Sec. 3.3 and App. C): the step math of each accepted step against refimpl's singlestep DPM-Solver-k on the
        accepted grid (intermediate points at r = 1/2, or 1/3 and 2/3, of the step in lambda).

        What is compared: the accepted grid is k-diffusion's, and only the model calls of accepted trials are
        reported. Its controller is not refimpl's: a PID controller with an arctan limiter accepting when the step
        factor is >= 0.81, and an error norm over the whole batch, where the paper and refimpl's
        ``sample_dpm_solver_adaptive`` accept when E <= 1 with h <- theta h E^(-1/k) and E the largest per-sample
        norm; the two choose different grids (a convention, not compared), and a rejected trial costs k-diffusion
        k calls (it recomputes eps at the current point) against refimpl's k - 1."""
        order = self.kwargs.get("order", 3)
        points, kept, done = [(x_start, -math.log(sigma_max))], [], {"calls": 0, "accepted": 0}

        def record(info: dict[str, Any]) -> None:  # called after every trial step, accepted or rejected
            trial, done["calls"] = queries[done["calls"] :], len(queries)
            if info["n_accept"] > done["accepted"]:
                done["accepted"] = info["n_accept"]
                kept.extend(trial)
                points.append((info["x"], float(info["t"])))

        options = {k: v for k, v in self.kwargs.items() if k != "order"}
        out = sampling.sample_dpm_adaptive(
            denoiser, x_start, sigma_min, sigma_max, order=order, disable=True, callback=record, **options
        )
        lambdas = [lam for _, lam in points]
        stages = [[float(t_of(a + r * (b - a))) for r in {2: (0.5,), 3: (1 / 3, 2 / 3)}[order]]
                  for a, b in itertools.pairwise(lambdas)]  # fmt: skip
        times = t_of(torch.tensor(lambdas, dtype=torch.float64))
        alphas = schedule(times).alpha
        states = [x * a.to(x.dtype) for (x, _), a in zip(points, alphas, strict=True)]
        states[-1] = out * alphas[-1].to(out.dtype)
        precision = min(x_start.dtype, torch.get_default_dtype(), key=lambda d: torch.finfo(d).bits)
        return Run(times, states, kept, reference_options={"orders": [order] * len(stages), "stages": stages},
                   coefficient_dtype=precision)  # fmt: skip


def _noise_sampler(noise: Tensor | None, like: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """k-diffusion's noise_sampler(sigma, sigma_next) returning the injected noise of each step in turn."""
    draws: Iterator[Tensor] = iter(noise if noise is not None else [])

    def sample(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return next(draws, torch.zeros_like(like)).to(like.dtype)

    return sample


from refimpl.oracle.diffusers_adapter import DIFFUSERS, DiffusersScheduler  # noqa: E402  (re-exported)
