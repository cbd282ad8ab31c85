"""diffusers TCDScheduler(clip_sample=True): the documented clipping of the x0 prediction is never applied.

TCDScheduler documents clip_sample / clip_sample_range (and thresholding) like DDIM and LCM, but its step never
reads them: the x0 prediction outside [-1, 1] is used as is. LCMScheduler, from which it was adapted, clips.
Status: not found reported (searched huggingface/diffusers issues and pull requests for TCDScheduler, clip_sample,
thresholding).
"""

import torch
from diffusers import TCDScheduler

s = TCDScheduler(clip_sample=True, clip_sample_range=1.0)
s.set_timesteps(2)
t, x = s.timesteps[0], torch.full((1,), 2.0)
abar = s.alphas_cumprod[int(t)]
eps = (x - abar.sqrt() * 3.0) / (1 - abar).sqrt()  # the noise prediction whose x0 prediction is 3.0
out = s.step(eps, t, x, eta=0.0)
following = s.alphas_cumprod[int(s.timesteps[1])]
clipped = following.sqrt() * 1.0 + (1 - following).sqrt() * (x - abar.sqrt() * 1.0) / (1 - abar).sqrt()
print(
    f"x0 prediction 3.0 with clip_sample=True: step gives {out.prev_sample.item():.5f}; clipped to 1.0 it would "
    f"be {clipped.item():.5f}"
)
assert not torch.allclose(out.prev_sample, clipped), "the defect is gone in this diffusers version"
