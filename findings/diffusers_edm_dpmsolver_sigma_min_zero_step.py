"""diffusers EDMDPMSolverMultistepScheduler(final_sigmas_type="sigma_min"): the last model call is a step of zero
length (sigma_min to sigma_min), so n calls make n - 1 steps.

The Karras/exponential grid already ends at sigma_min, and set_timesteps appends sigma_min again (the forward
DPMSolverMultistepScheduler appends the smallest *training* sigma instead, which differs from its last level). The
same dummy step was removed from DPMSolverMultistepScheduler's Karras path in huggingface/diffusers#6477.
Status: not found reported (searched huggingface/diffusers issues and pull requests for EDMDPMSolverMultistepScheduler,
final_sigmas_type, sigma_min, zero step).
"""

import torch
from diffusers import EDMDPMSolverMultistepScheduler

for final in ("sigma_min", "zero"):
    s = EDMDPMSolverMultistepScheduler(final_sigmas_type=final)
    s.set_timesteps(5)
    x, moved = torch.full((1,), 3.0, dtype=torch.float64), []
    for t in s.timesteps:
        x_next = s.step(torch.zeros_like(x), t, x).prev_sample
        moved.append(f"{float((x_next - x).abs().max() / x.abs().max()):.0e}")  # relative change
        x = x_next
    last = [round(v, 4) for v in s.sigmas[-2:].tolist()]
    print(f"final_sigmas_type={final}: last sigmas {last}, relative change per call: {moved}")
    if final == "sigma_min":
        assert float(moved[-1]) < 1e-5, "the defect is gone in this diffusers version"
