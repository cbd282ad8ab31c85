"""Shared test configuration: hypothesis profiles and float64 by default.

Profiles (select with HYPOTHESIS_PROFILE): ``dev`` (the default, quick and random) and ``ci``
(derandomized, so CI runs the same examples every time). ``make test`` uses ``ci``.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib: no display in tests

import torch
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)  # one process per core (pytest -n); intra-op threads only oversubscribe
