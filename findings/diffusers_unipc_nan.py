"""diffusers UniPCMultistepScheduler(lower_order_final=False, timestep_spacing="leading"): inf after 2 steps.

With "leading" spacing the last step goes to alpha-bar = 1 (sigma = 0, lambda = +inf); with lower_order_final=False
it is taken at second order, whose coefficients divide by h = lambda_t - lambda_s = inf. The right last step is first
order (the x0 prediction), as with lower_order_final=True.
Status: not found reported upstream (searched huggingface/diffusers issues for UniPC, NaN, lower_order_final).
"""

import torch
from diffusers import UniPCMultistepScheduler


def run(lower_order_final):
    s = UniPCMultistepScheduler(timestep_spacing="leading", lower_order_final=lower_order_final)
    s.set_timesteps(2)
    x = torch.ones(1, 1)
    for t in s.timesteps:
        abar = s.alphas_cumprod[int(t)]
        x = s.step((x - abar.sqrt() * 0.8) / (1 - abar).sqrt(), t, x).prev_sample  # exact eps of the point 0.8
    return x.item()


print(f"lower_order_final=False: {run(False)}; lower_order_final=True: {run(True):.6f} (data point: 0.8)")
assert not torch.isfinite(torch.tensor(run(False))), "the defect is gone in this diffusers version"
