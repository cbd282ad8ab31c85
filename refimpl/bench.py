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
from functools import partial

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


def versus_diffusers(
    name: str,
    sample: Callable[..., torch.Tensor],
    scheduler_class: str,
    scheduler_options: dict[str, object],
    repeats: int = 7,
    n_steps: int = 50,
) -> str:
    """Time per step of refimpl's ``sample(model, x, timesteps)`` against a diffusers scheduler's own loop.

    Same exact eps model (the ring under the discrete DDPM linear schedule), same start (256 points), same
    timesteps: the scheduler's, with its integer timestep k read as continuous time (k + 1) / N (Lu et al.
    2022, App. D), and a last step to t_min = 1 / N. Also prints the gap between the two outputs.
    """
    try:
        import diffusers
    except ImportError:
        return "\n(diffusers is not installed: speed table skipped; `pip install -e .[compare]`)"
    from toy_models import ExactModel, ring

    schedule = DiscreteVP.ddpm_linear()
    model = ExactModel(ring(), schedule)
    x = model.sample_xt(256, schedule.t_max, torch.Generator().manual_seed(0))[1]
    theirs = getattr(diffusers, scheduler_class)(
        beta_schedule="linear", beta_start=1e-4, beta_end=0.02, timestep_spacing="trailing", **scheduler_options
    )
    theirs.set_timesteps(n_steps)
    ts = torch.cat([(theirs.timesteps.to(torch.float64) + 1) / schedule.N, torch.tensor([schedule.t_min])])

    def run_theirs() -> torch.Tensor:
        theirs.set_timesteps(n_steps)  # resets a multistep scheduler's history
        sample_k = x
        for k in theirs.timesteps:
            eps = model(sample_k, (k.to(torch.float64) + 1) / schedule.N)
            sample_k = theirs.step(eps, k, sample_k).prev_sample
        return sample_k

    def run_ours() -> torch.Tensor:
        return sample(model, x, ts)

    gap = float((run_ours() - run_theirs()).abs().max())
    t_ours, t_theirs = (t / n_steps for t in _time_interleaved(run_ours, run_theirs, repeats))
    return (
        f"\nwall time per step, {name}, {n_steps} steps, batch 256 x 2, exact ring model (median of {repeats})"
        f"\n{'refimpl':<40}{t_ours * 1e3:>10.3f} ms"
        f"\n{'diffusers ' + scheduler_class:<40}{t_theirs * 1e3:>10.3f} ms"
        f"\n{'ratio refimpl / diffusers':<40}{t_ours / t_theirs:>10.2f}"
        f"\n{'max |refimpl - diffusers|':<40}{gap:>10.2e}   (diffusers computes in float32)"
    )


def speed_tables(repeats: int = 7) -> str:
    """DDIM against ``DDIMScheduler`` and DPM-Solver++(2M) against ``DPMSolverMultistepScheduler``.

    diffusers' options are set to the plain methods: no clipping of x0 (default on; the ring reaches radius
    2), DDIM's last step to alpha-bar_0 (``set_alpha_to_one=False``); 2M in Algorithm 2's form (midpoint),
    without thresholding, without the lower-order final step and ending at alpha-bar_0, not at sigma = 0.
    """
    ddim = versus_diffusers(
        "DDIM (eta = 0)", sample_ddim, "DDIMScheduler", {"set_alpha_to_one": False, "clip_sample": False}, repeats
    )
    dpm = versus_diffusers(
        "DPM-Solver++(2M)",
        partial(sample_dpm_solver_pp_multistep, order=2),
        "DPMSolverMultistepScheduler",
        {
            "algorithm_type": "dpmsolver++",
            "solver_order": 2,
            "solver_type": "midpoint",
            "thresholding": False,
            "lower_order_final": False,
            "final_sigmas_type": "sigma_min",
        },
        repeats,
    )
    return ddim + "\n" + dpm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timing repeats (median reported)")
    args = parser.parse_args()
    print(accuracy_table())
    print(speed_tables(args.repeats))


if __name__ == "__main__":
    main()
