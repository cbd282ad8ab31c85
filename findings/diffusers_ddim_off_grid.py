"""diffusers DDIMScheduler(timestep_spacing="trailing") with 7 steps lands off its own grid.

step() goes to t - N // n (1000 // 7 = 142), not to the next timestep of its list, unless N / n is an integer: the
first step lands on k = 857, the next model call is made at k = 856.
Status: reported upstream, huggingface/diffusers issues #11347 and #12633.
"""

import torch
from diffusers import DDIMScheduler

s = DDIMScheduler(timestep_spacing="trailing")
s.set_timesteps(7)
timesteps = [int(t) for t in s.timesteps]
abar = s.alphas_cumprod.double()
x = torch.ones(1, dtype=torch.float64)
t0 = timesteps[0]
x1 = s.step((x - abar[t0].sqrt() * 0.8) / (1 - abar[t0]).sqrt(), t0, x).prev_sample  # exact eps of the point 0.8
# DDIM with the exact eps of a point moves x along x = alpha * 0.8 + sigma * eps: solve for where it landed
eps = (x - abar[t0].sqrt() * 0.8) / (1 - abar[t0]).sqrt()
landed = min(range(1000), key=lambda k: abs(float(abar[k].sqrt() * 0.8 + (1 - abar[k]).sqrt() * eps - x1)))
print(f"timesteps {timesteps}: the first step lands on k = {landed}, the next call is at k = {timesteps[1]}")
assert landed != timesteps[1], "the defect is gone in this diffusers version"
