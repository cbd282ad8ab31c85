"""``make bench``: accuracy and speed tables, measured in one run and printed (nothing is asserted).

1. Accuracy: for every deterministic sampler in the registry, the max-abs error against the exact
   reference at t_min for NFE budgets 5, 10, 15, 20 and 50, on a 2-D ring and a 16-D random mixture
   (``vp_linear``, uniform-lambda steps, 64 samples of p_T).
2. Speed: the wall time per step of a refimpl sampler and of its diffusers counterpart on the same
   exact model, the same timesteps and the same starting point, and their ratio: DDIM against
   ``DDIMScheduler`` and DPM-Solver++(2M) against ``DPMSolverMultistepScheduler``, with the gap between
   the two outputs (diffusers keeps its schedule in float32).

Usage: ``python -m refimpl.bench [--repeats N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from refimpl import grids
from refimpl.reference import solve_pf_ode
from refimpl.registry import samplers
from refimpl.samplers import sample_ddim, sample_dpm_solver_pp_multistep
from refimpl.schedules import DiscreteVP, get_schedule

NFE_BUDGETS = (5, 10, 15, 20, 50)


def _toys() -> dict[str, object]:
    from toy_models import random_mixture, ring

    return {"ring (d=2)": ring(), "mixture (d=16)": random_mixture(K=4, d=16, seed=0)}


def steps_within(nfe_of: Callable[[int], int], budget: int, min_steps: int) -> int | None:
    """The most steps whose model calls fit the budget, or None if even ``min_steps`` do not."""
    best = None
    n = min_steps
    while nfe_of(n) <= budget:
        best, n = n, n + 1
    return best


def accuracy_table() -> str:
    """Errors of every deterministic sampler at each NFE budget, one block per toy."""
    from toy_models import ExactModel

    schedule = get_schedule("vp_linear")
    lines = []
    specs = samplers(stochastic=False)
    for toy_name, gmm in _toys().items():
        model = ExactModel(gmm, schedule)
        x = model.sample_xt(64, schedule.t_max, torch.Generator().manual_seed(0))[1]
        ref = solve_pf_ode(model, x, schedule.t_max, schedule.t_min)
        lines.append(f"\nmax-abs error at t_min, {toy_name}, vp_linear, uniform-lambda steps")
        lines.append(f"{'sampler':<24}" + "".join(f"{'NFE ' + str(b):>12}" for b in NFE_BUDGETS))
        for spec in tqdm(specs, desc=toy_name, leave=False):
            cells = []
            for budget in NFE_BUDGETS:
                n = steps_within(spec.nfe, budget, spec.min_steps)
                if n is None:
                    cells.append(f"{'-':>12}")
                    continue
                err = float((spec(model, x, grids.uniform_lambda(schedule, n)) - ref).abs().max())
                cells.append(f"{err:>12.3e}")
            lines.append(f"{spec.name:<24}" + "".join(cells))
    return "\n".join(lines)


def _time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (one warm-up run first)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _time_interleaved(fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall times of ``fn_a()`` and ``fn_b()``, run alternately (one warm-up each first), so that a
    busy machine slows both alike instead of whichever happened to run during the busy spell."""
    fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return sorted(times_a)[len(times_a) // 2], sorted(times_b)[len(times_b) // 2]


def speed_table(repeats: int = 7, n_steps: int = 50) -> str:
    """Time per step: refimpl's DDIM against diffusers' DDIMScheduler on the exact model."""
    try:
        from diffusers import DDIMScheduler
    except ImportError:
        return "\n(diffusers is not installed: speed table skipped; `pip install -e .[compare]`)"
    from toy_models import ExactModel, ring

    schedule = DiscreteVP.ddpm_linear()
    model = ExactModel(ring(), schedule)
    x = model.sample_xt(256, schedule.t_max, torch.Generator().manual_seed(0))[1]

    theirs = DDIMScheduler(
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        timestep_spacing="trailing",
        set_alpha_to_one=False,
        clip_sample=False,  # diffusers clips x0 to [-1, 1] by default; the ring reaches radius 2
    )
    theirs.set_timesteps(n_steps)
    # Their integer timestep k is our continuous time (k + 1) / N (Lu et al. 2022, App. D).
    ts = (theirs.timesteps.to(torch.float64) + 1) / schedule.N
    ts = torch.cat([ts, ts.new_tensor([schedule.t_min])]) if float(ts[-1]) > schedule.t_min else ts

    def run_theirs() -> torch.Tensor:
        sample = x
        for k in theirs.timesteps:
            eps = model(sample, (k.to(torch.float64) + 1) / schedule.N)
            sample = theirs.step(eps, k, sample).prev_sample
        return sample

    def run_ours() -> torch.Tensor:
        return sample_ddim(model, x, ts)

    gap = float((run_ours() - run_theirs()).abs().max())
    t_ours = _time(run_ours, repeats) / (len(ts) - 1)
    t_theirs = _time(run_theirs, repeats) / len(theirs.timesteps)
    return (
        f"\nwall time per step, DDIM (eta = 0), {n_steps} steps, batch 256 x 2, exact ring model (median of {repeats})"
        f"\n{'refimpl sample_ddim':<32}{t_ours * 1e3:>10.3f} ms"
        f"\n{'diffusers DDIMScheduler':<32}{t_theirs * 1e3:>10.3f} ms"
        f"\n{'ratio refimpl / diffusers':<32}{t_ours / t_theirs:>10.2f}"
        f"\n{'max |refimpl - diffusers|':<32}{gap:>10.2e}   (diffusers keeps alpha-bar in float32)"
    )


def dpm_solver_pp_speed_table(repeats: int = 7, n_steps: int = 50) -> str:
    """Time per step: refimpl's DPM-Solver++(2M) against diffusers' DPMSolverMultistepScheduler.

    Same exact eps model, same timesteps, same start; diffusers' thresholding, lower-order final step and
    final sigma 0 are switched off so that both run the plain 2M recursion of Algorithm 2.
    """
    try:
        from diffusers import DPMSolverMultistepScheduler
    except ImportError:
        return "\n(diffusers is not installed: speed table skipped; `pip install -e .[compare]`)"
    from toy_models import ExactModel, ring

    schedule = DiscreteVP.ddpm_linear()
    model = ExactModel(ring(), schedule)
    x = model.sample_xt(256, schedule.t_max, torch.Generator().manual_seed(0))[1]
    theirs = DPMSolverMultistepScheduler(
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",  # Algorithm 2's form
        timestep_spacing="trailing",
        thresholding=False,
        lower_order_final=False,
        final_sigmas_type="sigma_min",  # end at alpha-bar_1, our t_min = 1/N, not at sigma = 0
    )
    theirs.set_timesteps(n_steps)
    # Their integer timestep k is our continuous time (k + 1) / N; the last step goes to t_min = 1 / N.
    ts = torch.cat([(theirs.timesteps.to(torch.float64) + 1) / schedule.N, torch.tensor([schedule.t_min])])

    def run_theirs() -> torch.Tensor:
        theirs.set_timesteps(n_steps)  # resets the scheduler's multistep history
        sample = x
        for k in theirs.timesteps:
            eps = model(sample, (k.to(torch.float64) + 1) / schedule.N)
            sample = theirs.step(eps, k, sample).prev_sample
        return sample

    def run_ours() -> torch.Tensor:
        return sample_dpm_solver_pp_multistep(model, x, ts, order=2)

    gap = float((run_ours() - run_theirs()).abs().max())
    t_ours, t_theirs = (t / n_steps for t in _time_interleaved(run_ours, run_theirs, repeats))
    return (
        f"\nwall time per step, DPM-Solver++(2M), {n_steps} steps, batch 256 x 2, exact ring model "
        f"(median of {repeats})"
        f"\n{'refimpl 2M':<32}{t_ours * 1e3:>10.3f} ms"
        f"\n{'diffusers DPMSolverMultistep':<32}{t_theirs * 1e3:>10.3f} ms"
        f"\n{'ratio refimpl / diffusers':<32}{t_ours / t_theirs:>10.2f}"
        f"\n{'max |refimpl - diffusers|':<32}{gap:>10.2e}   (diffusers steps in float32)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timing repeats (median reported)")
    args = parser.parse_args()
    print(accuracy_table())
    print(speed_table(args.repeats))
    print(dpm_solver_pp_speed_table(args.repeats))


if __name__ == "__main__":
    main()
