"""k-diffusion get_ancestral_step: sigma_down = sqrt(sigma_to^2 - sigma_up^2) cancels when sigma_to << sigma_from.

Its relative round-off grows like u (sigma_from / sigma_to)^2: in float32 one step from 80 to 0.002 gives sigma_down
= 0 (sample_dpm_2_ancestral then takes an Euler step to sigma = 0), where sigma_to^2 / sigma_from = 5e-8 (eta = 1).
sigma_to * sqrt(1 - eta^2 + eta^2 (sigma_to / sigma_from)^2) is the same value without the cancellation.
Status: not found reported for k-diffusion; the same formula in diffusers' ancestral schedulers is
huggingface/diffusers#14213 (fix open: #14221, sigma_down = sqrt(sigma_to^4 / sigma_from^2)).
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

shown = []
for sigma_from, sigma_to in [(80.0, 0.002), (80.0, 0.4)]:
    s, t = torch.tensor(sigma_from), torch.tensor(sigma_to)  # float32, as in a float32 pipeline
    down = float(sampling.get_ancestral_step(s, t, eta=1.0)[0])
    right = sigma_to**2 / sigma_from  # eta = 1: sigma_down = sigma_to^2 / sigma_from
    print(f"sigma {sigma_from} -> {sigma_to}: sigma_down {down:.7g}, right value {right:.7g} "
          f"(relative error {abs(down / right - 1):.1e})")  # fmt: skip
    shown.append(abs(down / right - 1) > 1e-4)
assert all(shown), "the defect is gone in this k-diffusion version"
