"""diffusers DPMSolverMultistepScheduler(final_sigmas_type="sigma_min") with Karras, exponential or beta sigmas: the
last model call is a step of zero length (sigma_min to sigma_min, to float32 round-off), so n calls make n - 1 steps.

Those grids already end at the smallest training sigma, and set_timesteps appends it again as the final sigma; the
default grid ends above it, so there the last step is a real one. huggingface/diffusers#6477 removed the repeated
sigma for final_sigmas_type="zero", now the default; "sigma_min" still repeats it. The same defect in the singlestep
scheduler: diffusers_dpmsolver_singlestep_sigma_min_zero_step.py; with use_lu_lambdas: chapter 90, Finding 7.
Status: not found reported for final_sigmas_type="sigma_min" (searched huggingface/diffusers issues and pull requests
for DPMSolverMultistepScheduler, final_sigmas_type, sigma_min, karras, zero step).
"""

import torch
from diffusers import DPMSolverMultistepScheduler

for kwargs in ({"use_karras_sigmas": True}, {"use_exponential_sigmas": True}, {"use_beta_sigmas": True}, {}):
    s = DPMSolverMultistepScheduler(final_sigmas_type="sigma_min", **kwargs)
    s.set_timesteps(3)
    x, moved = torch.full((1,), 3.0, dtype=torch.float64), []  # a model output of 0.1 x
    for t in s.timesteps:
        x_next = s.step(0.1 * x, t, x).prev_sample
        moved.append(f"{float((x_next - x).abs().max() / x.abs().max()):.0e}")  # relative change
        x = x_next
    last = [round(v, 4) for v in s.sigmas[-2:].tolist()]
    print(f"{kwargs}: last sigmas {last}, relative change per call: {moved}")
    if kwargs:  # float32 round-off of the sigma table: the last step is zero length to about 1e-7
        assert float(moved[-1]) < 1e-6, "the defect is gone in this diffusers version"
