"""The committed sample cache of the trained-models chapter holds what the samplers compute.

``toy_models/checkpoints/unet_samples.pt`` is written by ``python -m toy_models.unet_samples`` (about 8 CPU-minutes);
these tests recompute slices of it cheaply: the first and the last ``SEGMENT`` steps of both 1000-step runs for the
first images, from the cached states, and compare. The network computes in float32 and its result depends on the
batch it is called with at the level of float32 round-off, so the comparison allows u32 per network call, over the
steps of the stretch, on states of size < 8, with a margin of 64.
"""

from __future__ import annotations

import pytest
import torch

from toy_models.trained import load_unet
from toy_models.unet_samples import (
    N_CHECKED,
    N_SAMPLES,
    SAMPLERS,
    SEGMENT,
    STEPS,
    load_cache,
    run_segment,
    start,
)

U32 = torch.finfo(torch.float32).eps / 2
ROWS = slice(0, 4)
TOL = 64 * SEGMENT * U32 * 8


@pytest.fixture(scope="module")
def cache() -> dict:
    return load_cache()


def test_cache_holds_every_run_at_the_chapter_size(cache: dict) -> None:
    """Every (sampler, steps) run at N_SAMPLES images, finite, and the states every SEGMENT steps."""
    for sampler in SAMPLERS:
        for steps in STEPS:
            x = cache["ddpm_ddim"][f"{sampler}_{steps}"]
            assert x.shape == (N_SAMPLES, 1, 8, 8) and bool(torch.isfinite(x).all())
        assert cache["checkpoints"][sampler].shape == (STEPS[-1] // SEGMENT + 1, N_CHECKED, 1, 8, 8)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_first_and_last_stretch_of_the_1000_step_run_match_a_fresh_run(cache: dict, sampler: str) -> None:
    """Steps 0-100 from x_T and steps 900-1000 from the cached state at 900 reproduce the cached states and samples."""
    x_T, labels = start(ROWS.stop)
    model = load_unet().model(labels)
    states, steps = cache["checkpoints"][sampler].to(torch.float64), STEPS[-1]
    assert torch.equal(states[0, ROWS], x_T.float().double())
    first = run_segment(model, sampler, steps, x_T, ROWS, 0, SEGMENT)
    assert float((first - states[1, ROWS]).abs().max()) < TOL
    last = run_segment(model, sampler, steps, states[-2, ROWS], ROWS, steps - SEGMENT, steps)
    assert float((last - states[-1, ROWS]).abs().max()) < TOL
    assert float((last - cache["ddpm_ddim"][f"{sampler}_{steps}"][ROWS]).abs().max()) < TOL


def test_a_wrong_stretch_is_noticed(cache: dict) -> None:
    """Broken on purpose: DDIM's last stretch from the wrong state, or DDPM's with other noise, misses the cache."""
    _, labels = start(ROWS.stop)
    model = load_unet().model(labels)
    states = cache["checkpoints"]["DDIM"].to(torch.float64)
    wrong = run_segment(model, "DDIM", STEPS[-1], states[-3, ROWS], ROWS, STEPS[-1] - SEGMENT, STEPS[-1])
    assert float((wrong - states[-1, ROWS]).abs().max()) > 100 * TOL
    other_rows = slice(4, 8)  # the noise of other images
    states = cache["checkpoints"]["DDPM"].to(torch.float64)
    wrong = run_segment(model, "DDPM", STEPS[-1], states[-2, ROWS], other_rows, STEPS[-1] - SEGMENT, STEPS[-1])
    assert float((wrong - states[-1, ROWS]).abs().max()) > 100 * TOL
