"""diffusers KDPM2AncestralDiscreteScheduler: a NaN timestep, then a NaN sample, when sigma_next / sigma < 2.4e-4.

set_timesteps computes sigma_down = sqrt(sigma_next^2 - sigma_up^2) in float32, with sigma_up^2 = sigma_next^2
(sigma^2 - sigma_next^2) / sigma^2. When sigma_next^2 / sigma^2 is below float32's epsilon, sigma_up^2 rounds to
sigma_next^2 and sigma_down to 0 (exactly: sigma_next^2 / sigma); the midpoint, a log-space lerp towards log(0),
is NaN, and so are its timestep and the sample after the step. DDPM's linear betas (1e-4 to 0.02) at 2 steps suffice.
Status: reported for beta_schedule="squaredcos_cap_v2" in huggingface/diffusers#14213 (fix open: #14221), which says
"linear" is unaffected; it is not, with DDPM's beta_end = 0.02.
"""

import torch
from diffusers import KDPM2AncestralDiscreteScheduler

s = KDPM2AncestralDiscreteScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
s.set_timesteps(2)
sigma, sigma_next = s.sigmas[0].item(), s.sigmas[1].item()
print(f"timesteps {s.timesteps.tolist()}; sigma_down {s.sigmas_down[0].item():.3e}, right {sigma_next**2 / sigma:.3e}")
print(f"midpoint sigma {s.sigmas_interpol[0].item()}, right {(sigma * sigma_next**2 / sigma) ** 0.5:.5f}")
x, gen = torch.full((1,), sigma), torch.Generator().manual_seed(0)
for t in s.timesteps[:2]:  # the first step's two stages, with a model that predicts eps = 1
    x = s.step(torch.ones(1), t, x, generator=gen).prev_sample
print(f"sample after the first step: {x.item()} (finite with the exact sigma_down)")
assert not torch.isfinite(s.timesteps).all(), "the defect is gone in this diffusers version"
