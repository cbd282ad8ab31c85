"""Full-size solver and time-step search of chapter 4 on the exact objective; prints a table (nothing asserted).

USF/S3 (``refimpl.search.usf_search``) and AutoDiffusion (``refimpl.search.autodiffusion_search``) run with their
default (paper-sized) settings at NFE 4, 6 and 8 on the 8-dimensional Gaussian toy of the chapter (covariance
eigenvalues 1e-3 to 1, linear VP schedule), seeded by the NFE. The table gives the exact KL of each search's best
solver against DPM-Solver++(2M) and UniPC-2 on uniform-lambda grids, and each search's CPU time.

Usage::

    python scripts/bench_search.py [--nfe 4 6 8]
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from refimpl import grids
from refimpl.registry import get_sampler
from refimpl.samplers.usf import SolverSchedule, StepChoice
from refimpl.schedules import get_schedule
from refimpl.search import autodiffusion_search, exact_kl, usf_objective, usf_search
from toy_models import ExactModel, anisotropic_gaussian

BASELINES = ("dpm_solver_pp_2m", "unipc2_bh1", "unipc2_bh2")


def bench(nfes: tuple[int, ...] = (4, 6, 8)) -> dict[int, dict[str, float]]:
    """Exact KL per NFE and method, with ``<search> s`` entries holding each search's CPU seconds."""
    torch.set_default_dtype(torch.float64)
    schedule = get_schedule("vp_linear")
    gauss = anisotropic_gaussian(d=8, seed=0, eig_range=(1e-3, 1.0))
    model = ExactModel(gauss, schedule)
    objective = usf_objective(model, gauss.means[0])
    fine = grids.uniform_lambda(schedule, 120)
    table: dict[int, dict[str, float]] = {}
    for nfe in nfes:
        grid = grids.uniform_lambda(schedule, nfe)
        row = {name: exact_kl(get_sampler(name), model, grid) for name in BASELINES}
        initial = [
            SolverSchedule(grid, (StepChoice(),) * nfe),
            SolverSchedule(grid, (StepChoice("x0", 2, 1, True),) * (nfe - 1) + (StepChoice("x0", 2, 1, False),)),
        ]
        start = time.process_time()
        row["USF/S3"] = usf_search(
            objective, schedule, nfe, torch.Generator().manual_seed(nfe), initial=initial
        ).best_value
        row["USF/S3 s"] = time.process_time() - start
        start = time.process_time()
        kl_2m = functools.partial(exact_kl, get_sampler("dpm_solver_pp_2m"), model)
        row["AutoDiffusion (2M)"] = autodiffusion_search(
            kl_2m, fine, nfe, torch.Generator().manual_seed(nfe)
        ).best_value
        row["AutoDiffusion (2M) s"] = time.process_time() - start
        table[nfe] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 6, 8])
    table = bench(tuple(parser.parse_args().nfe))
    nfes = list(table)
    print(f"{'exact KL (CPU s)':<24}" + "".join(f"{'NFE ' + str(b):>22}" for b in nfes))
    for name in (*BASELINES, "USF/S3", "AutoDiffusion (2M)"):
        cells = [
            f"{table[b][name]:.3e}" + (f" ({table[b][name + ' s']:.1f} s)" if name + " s" in table[b] else "")
            for b in nfes
        ]
        print(f"{name:<24}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
