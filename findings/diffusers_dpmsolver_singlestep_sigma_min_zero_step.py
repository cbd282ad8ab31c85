"""diffusers DPMSolverSinglestepScheduler(final_sigmas_type="sigma_min") with Karras, exponential or beta sigmas: the
last of n model calls is a step of zero length (sigma_min to sigma_min) whenever that step is first order: n calls for
n - 1 steps. With the default solver_order=2 that is every odd n (set_timesteps then switches on lower_order_final),
so 25 steps of "DPM++ 2S Karras" make 24; with solver_order=1, every n >= 2.

Those grids already end at the smallest training sigma, and set_timesteps appends it again as the final sigma; the
default grid ends above it, so there the last step is a real one. huggingface/diffusers#6477 removed a repeated last
sigma from DPMSolverMultistepScheduler's Karras grid (the same symptom was reported there for this scheduler) and
added final_sigmas_type="zero", now the default, which avoids it; under "sigma_min" both schedulers still repeat it.
Status: not found reported for final_sigmas_type="sigma_min" (searched huggingface/diffusers issues and pull requests
for DPMSolverSinglestepScheduler, final_sigmas_type, sigma_min, karras, zero step).
"""

import torch
from diffusers import DPMSolverSinglestepScheduler

for kwargs in ({"use_karras_sigmas": True}, {"use_beta_sigmas": True}, {}):
    s = DPMSolverSinglestepScheduler(final_sigmas_type="sigma_min", **kwargs)
    s.set_timesteps(3)
    x, moved = torch.full((1,), 3.0, dtype=torch.float64), []
    for t in s.timesteps:
        x_next = s.step(0.1 * x, t, x).prev_sample
        moved.append(f"{float((x_next - x).abs().max() / x.abs().max()):.0e}")  # relative change
        x = x_next
    last = [round(v, 4) for v in s.sigmas[-2:].tolist()]
    print(f"{kwargs}: orders {s.order_list}, last sigmas {last}, relative change per call: {moved}")
    if kwargs:
        assert float(moved[-1]) == 0, "the defect is gone in this diffusers version"
