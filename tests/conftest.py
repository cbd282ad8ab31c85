"""Shared test configuration: hypothesis profiles, float64 by default, and guards against hidden global state.

Profiles (select with HYPOTHESIS_PROFILE): ``dev`` (the default, quick and random) and ``ci``
(derandomized, so CI runs the same examples every time). ``make test`` uses ``ci``.

Global state: every test must leave torch's default dtype as it found it (float64; checked after each test), and
must own its random generators. ``REFIMPL_SCRAMBLE_RNG=1`` reseeds torch's global RNG at random before each test,
so a test that draws from it without a seed of its own shows up as flaky. ``REFIMPL_SHUFFLE_SEED=<int>`` runs the
collected tests in an order shuffled with that seed (the same on every xdist worker), e.g.
``REFIMPL_SCRAMBLE_RNG=1 REFIMPL_SHUFFLE_SEED=3 pytest tests/test_x.py``.
"""

from __future__ import annotations

import os
import random

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib: no display in tests

import pytest
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

SCRAMBLE_RNG = os.environ.get("REFIMPL_SCRAMBLE_RNG", "") == "1"
SHUFFLE_SEED = os.environ.get("REFIMPL_SHUFFLE_SEED", "")


def pytest_collection_modifyitems(config, items) -> None:
    """Shuffle the test order with REFIMPL_SHUFFLE_SEED (opt-in; see the module docstring)."""
    if SHUFFLE_SEED:
        random.Random(int(SHUFFLE_SEED)).shuffle(items)


@pytest.fixture(autouse=True)
def _no_hidden_global_state():
    """Scramble the global RNG first (opt-in); afterwards, fail a test that left the default dtype changed."""
    if SCRAMBLE_RNG:
        torch.manual_seed(random.SystemRandom().randrange(2**63))
    yield
    dtype = torch.get_default_dtype()
    if dtype != torch.float64:
        torch.set_default_dtype(torch.float64)
        pytest.fail(f"the test left torch's default dtype at {dtype}, not float64")
