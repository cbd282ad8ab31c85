"""diffusers PNDMScheduler with prediction_type="v_prediction" combines raw v outputs of different timesteps.

The PLMS combination (55 e_t - 59 e_{t-1} + 37 e_{t-2} - 9 e_{t-3}) / 24 is derived for noise predictions; with v it
is applied to v and converted to eps afterwards with the current alpha and sample. The same denoiser written as an
eps model and as a v model should give the same sample (it does for DDIM, DPM-Solver, UniPC, DEIS).
Status: reported upstream, huggingface/diffusers issue #14816 (open).
"""

import torch
from diffusers import PNDMScheduler

x_T = torch.ones(1, dtype=torch.float64) * 1.5


def run(prediction_type):
    s = PNDMScheduler(skip_prk_steps=True, prediction_type=prediction_type)
    s.set_timesteps(4)
    x = x_T
    for t in s.timesteps:
        abar = s.alphas_cumprod[int(t)].double()
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        eps = (x - alpha * 0.8) / sigma  # the exact eps when the data is the point x0 = 0.8
        out = eps if prediction_type == "epsilon" else alpha * eps - sigma * 0.8
        x = s.step(out, t, x).prev_sample
    return x.item()


print(f"PNDM (PLMS), eps model: {run('epsilon'):.6f}; the same denoiser as a v model: {run('v_prediction'):.6f}")
assert abs(run("epsilon") - run("v_prediction")) > 1e-2, "the defect is gone in this diffusers version"
