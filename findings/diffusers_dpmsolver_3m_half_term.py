"""diffusers DPMSolverMultistepScheduler(solver_order=3): the third-order step is not exact for a quadratic x0(lambda).

A model whose x0 prediction depends on lambda only, x0 = c0 + c1 lambda + c2 lambda^2, makes the history exact; the
third-order step from sigma_s to sigma_t must then equal the exact solution of the data-prediction ODE,
x_t = (sigma_t/sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^l x0(l) dl (Lu et al. 2022, arXiv:2211.01095).
It misses it by alpha_t phi_3 h^2 c2 (half of its D2 term). Status: not found reported upstream (searched diffusers
and LuChengTHU/dpm-solver issues); the official code has the same D2 line (refimpl.oracle.official).
"""

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

c0, c1, c2 = 0.3, -0.7, 0.45
s = DPMSolverMultistepScheduler(solver_order=3, lower_order_final=False, final_sigmas_type="sigma_min",
                                prediction_type="sample")  # fmt: skip
s.set_timesteps(5)
sig = s.sigmas.double().numpy()  # EDM sigma = sigma_t / alpha_t of each level
lam = -np.log(sig)


def antiderivative(l):  # of e^l (c0 + c1 l + c2 l^2)
    return np.exp(l) * (c0 + c1 * (l - 1) + c2 * (l * l - 2 * l + 2))


x = torch.ones(1, dtype=torch.float64)
for i, t in enumerate(s.timesteps[:3]):
    x_s = x
    x = s.step(torch.full_like(x, c0 + c1 * lam[i] + c2 * lam[i] ** 2), t, x).prev_sample
alpha = 1 / np.sqrt(1 + sig**2)  # alpha_t; the VP sigma_t is sig * alpha_t
integral = antiderivative(lam[3]) - antiderivative(lam[2])
exact = sig[3] * alpha[3] / (sig[2] * alpha[2]) * float(x_s) + sig[3] * alpha[3] * integral
h = lam[3] - lam[2]
phi_3 = (np.expm1(-h) / h + 1) / h - 0.5
print(f"diffusers third-order step {float(x):.8f}, exact {exact:.8f}, miss {float(x) - exact:+.2e}")
print(f"predicted miss (alpha_t phi_3 h^2 c2, the lost half of the D2 term): {alpha[3] * phi_3 * h**2 * c2:+.2e}")
assert abs(float(x) - exact) > 1e-3, "the defect is gone in this diffusers version"
