"""k-diffusion sample_dpmpp_2m_sde and sample_dpmpp_3m_sde crash on a one-step schedule [sigma_max, 0].

The last step to sigma = 0 returns the denoised value, and the bookkeeping after it (h_1, h_2 = h, h_1) reads h,
which only the other branch assigns: UnboundLocalError. The right value is the denoiser's output, D(x, sigma_max).
Status: reported upstream, crowsonkb/k-diffusion issue #72 (open; pull requests #80, #86, #104 not merged).
"""

import importlib.util
import sys
import types
from pathlib import Path

import torch

# k_diffusion/__init__ imports torchvision, skimage, clip, ...; sampling.py needs only utils (and not torchvision)
root = Path(importlib.util.find_spec("k_diffusion").submodule_search_locations[0])
sys.modules["k_diffusion"] = types.ModuleType("k_diffusion")
sys.modules["k_diffusion"].__path__ = [str(root)]
for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
from k_diffusion import sampling  # noqa: E402

sigmas = torch.tensor([80.0, 0.0], dtype=torch.float64)
x = torch.ones(1, 1, dtype=torch.float64)
denoiser = lambda x, sigma: 0.5 * x / (1 + sigma[0] ** 2)  # noqa: E731  (any denoiser)
crashed = []
for name in ("sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"):
    try:
        print(name, "returns", getattr(sampling, name)(denoiser, x, sigmas, eta=0.0, disable=True).item())
    except UnboundLocalError as err:
        crashed.append(name)
        print(f"{name} raises UnboundLocalError: {err}; expected {denoiser(x, sigmas[:1]).item():.6g}")
assert len(crashed) == 2, "the defect is gone in this k-diffusion version"
