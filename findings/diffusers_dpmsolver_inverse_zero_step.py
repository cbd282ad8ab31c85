"""diffusers DPMSolverMultistepInverseScheduler: with timestep_spacing="trailing" (or Karras, exponential, beta or
flow sigmas) the last of n model calls is a step of zero length (sigma_max to sigma_max): n calls for n - 1 steps.

set_timesteps appends sigma_max to a table that already ends at sigma_max (or repeats its last sigma), so the last
step has h = 0 and returns its input. The forward DPMSolverMultistepScheduler had the same dummy step with
use_karras_sigmas, fixed there in huggingface/diffusers#6477 for the default final_sigmas_type="zero" only.
Status: not found reported for the inverse scheduler (searched huggingface/diffusers issues and pull requests for
DPMSolverMultistepInverseScheduler, trailing, duplicate sigma, zero step).
"""

import torch
from diffusers import DPMSolverMultistepInverseScheduler

for kwargs in ({"timestep_spacing": "trailing"}, {"use_karras_sigmas": True}, {}):
    s = DPMSolverMultistepInverseScheduler(solver_order=1, **kwargs)
    s.set_timesteps(5)
    x, moved = torch.full((1,), 0.3, dtype=torch.float64), []
    for t in s.timesteps:
        x_next = s.step(0.1 * x, t, x).prev_sample
        moved.append(bool((x_next != x).any()))
        x = x_next
    print(f"{kwargs}: last two sigmas {[round(v, 3) for v in s.sigmas[-2:].tolist()]}, each call moves x: {moved}")
    if kwargs:
        assert not moved[-1], "the defect is gone in this diffusers version"
