"""k-diffusion sample_dpmpp_3m_sde (eta = 0): the third-order step misses the exact step for a quadratic x0(lambda)
D = c0 + c1 lambda + c2 lambda^2 (history exact) by phi_3 h^2 c2: half the D2 term, as the official code and diffusers.
Status: not found reported upstream (searched crowsonkb/k-diffusion issues and pull requests)."""

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

# k_diffusion/__init__ imports torchvision, skimage, clip, ...; sampling.py needs only utils (and not torchvision)
root = Path(importlib.util.find_spec("k_diffusion").submodule_search_locations[0])
sys.modules["k_diffusion"] = types.ModuleType("k_diffusion")
sys.modules["k_diffusion"].__path__ = [str(root)]
for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
from k_diffusion import sampling  # noqa: E402

c0, c1, c2 = 0.3, -0.7, 0.45
sigmas = torch.tensor([10.0, 4.0, 1.5, 0.7, 0.3], dtype=torch.float64)
seen = []

x0 = lambda lam: c0 + c1 * lam + c2 * lam**2  # noqa: E731  (the denoiser, a quadratic in lambda = -log sigma)
D = lambda x, sigma: torch.full_like(x, x0(-torch.log(sigma[0]).item()))  # noqa: E731
out = sampling.sample_dpmpp_3m_sde(D, torch.ones(1, 1, dtype=torch.float64), sigmas, eta=0.0, disable=True,
                                   callback=lambda d: seen.append(d["x"]))  # fmt: skip
x_s, x_t = float(seen[2]), float(seen[3])  # before and after the first third-order step (sigma 1.5 -> 0.7)
lam = -np.log(sigmas.numpy())
F = lambda l: np.exp(l) * (c0 + c1 * (l - 1) + c2 * (l * l - 2 * l + 2))  # noqa: E731  (antiderivative)
exact = sigmas[3].item() / sigmas[2].item() * x_s + sigmas[3].item() * (F(lam[3]) - F(lam[2]))
h = lam[3] - lam[2]
phi_3 = (np.expm1(-h) / h + 1) / h - 0.5  # the official code's phi_3
print(f"k-diffusion third-order step {x_t:.8f}, exact {exact:.8f}, miss {x_t - exact:+.2e}")
print(f"predicted miss (phi_3 h^2 c2, the lost half of the D2 term): {phi_3 * h**2 * c2:+.2e}")
assert abs(x_t - exact) > 1e-3, "the defect is gone in this k-diffusion version"
