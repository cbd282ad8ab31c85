"""diffusers DDPMScheduler(variance_type="fixed_large"): the last step, to alpha-bar = 1, adds noise.

step() adds noise whenever the timestep k > 0. With "trailing" spacing (or steps_offset=1) the last timestep is
k > 0, and the step from it goes to alpha-bar = 1, where Ho et al. 2020 (arXiv:2006.11239v2, Algorithm 2: z = 0
at t = 1) add none. With "fixed_small" the variance there is beta-tilde = 0 (clamped to 1e-20: noise 1e-10); with
"fixed_large" it is beta = 1 - alpha-bar_k, so the returned sample carries noise of that variance.
Status: not found reported (huggingface/diffusers issues searched: DDPMScheduler fixed_large, last step, noise).
"""

import torch
from diffusers import DDPMScheduler

x, eps = torch.ones(1, 4), torch.zeros(1, 4)  # a state and a model output (any)
finals = {}
for variance_type in ("fixed_small", "fixed_large"):
    sched = DDPMScheduler(variance_type=variance_type, timestep_spacing="trailing", clip_sample=False)
    sched.set_timesteps(4)
    k = int(sched.timesteps[-1])  # 249: the last step goes to alpha-bar = 1
    outs = [sched.step(eps, k, x, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    right = outs[0].pred_original_sample  # at alpha-bar = 1 the sample is the x0 prediction
    spread = float((outs[0].prev_sample - outs[1].prev_sample).abs().max())
    finals[variance_type] = spread
    print(f"{variance_type}: last step from k = {k}: two generators give final samples {spread:.2e} apart; "
          f"right value (no noise) {right[0, 0].item():.6f}, got {outs[0].prev_sample[0, 0].item():.6f}")  # fmt: skip
assert finals["fixed_small"] < 1e-6 < finals["fixed_large"], "the defect is gone in this diffusers version"
