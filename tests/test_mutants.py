"""The mutation catalogue is itself under test: every mutant applies once, changes behaviour, and is caught."""

from __future__ import annotations

import functools

import pytest
import torch
from tolerances import CHANGED_OUTPUT

from refimpl import grids
from refimpl.oracle.mutants import CATALOGUE, PROPERTY_BLIND_SPOTS, build, oracle_catches, properties_catch
from refimpl.registry import get_sampler
from refimpl.schedules import get_schedule
from toy_models import ExactModel, ring

NAMES = [m.name for m in CATALOGUE]


def test_names_are_unique_and_the_catalogue_is_large_enough() -> None:
    assert len(set(NAMES)) == len(NAMES) and len(NAMES) >= 20
    assert set(PROPERTY_BLIND_SPOTS) <= set(NAMES)
    assert len({m.kind for m in CATALOGUE}) >= min(len(CATALOGUE), 8)


@functools.cache
def _problem(schedule: str, stochastic: bool) -> tuple:
    """(model, grid, x_T, sampler keyword arguments) on ``schedule``: shared by every mutant (read only)."""
    s = get_schedule(schedule)
    model, ts = ExactModel(ring(), s), grids.uniform_t(s, 6)  # step ratios r != 1
    x = model.sample_xt(4, s.t_max, torch.Generator().manual_seed(0))[1]
    noise = torch.randn(6, 4, 2, generator=torch.Generator().manual_seed(1))
    return model, ts, x, {"noise": noise} if stochastic else {}


@functools.cache
def _original(method: str, schedule: str, stochastic: bool) -> torch.Tensor:
    """The unmutated registered sampler's output on ``_problem``, computed once per method and schedule."""
    model, ts, x, kwargs = _problem(schedule, stochastic)
    spec = get_sampler(method)
    return spec.sample(model, x, ts, **dict(spec.options), **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_mutant_applies_once_and_changes_the_output(name: str) -> None:
    """On a VP schedule or, for a defect only non-VP schedules expose (a VP-only identity), on EDM."""
    mutant = next(m for m in CATALOGUE if m.name == name)
    sample = build(mutant)
    for schedule in ("vp_cosine", "edm"):
        model, ts, x, kwargs = _problem(schedule, mutant.stochastic)
        original = _original(mutant.method, schedule, mutant.stochastic)
        try:
            mutated = sample(model, x.clone(), ts.clone(), **mutant.sampler_options(), **kwargs)
        except ValueError as err:  # the mutant drove the state to NaN and the model refused it: changed, visibly
            assert "non-finite" in str(err)
            return
        if mutated.shape != original.shape or float((mutated - original).abs().max()) > CHANGED_OUTPUT:
            return
    pytest.fail(f"{name} changes the output on neither schedule")


def test_a_snippet_that_does_not_occur_exactly_once_is_refused() -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="occurs 0 times"):
        build(replace(CATALOGUE[0], old="this text is not in the module"))


@pytest.mark.parametrize("name", NAMES)
def test_the_oracle_catches_every_catalogued_mutant(name: str) -> None:
    assert oracle_catches(next(m for m in CATALOGUE if m.name == name)) is not None


@pytest.mark.parametrize("name", sorted(PROPERTY_BLIND_SPOTS))
def test_the_property_suite_misses_exactly_the_mutants_whose_blind_spot_is_explained(name: str) -> None:
    """The explanations in the mutation table are true: the property suite does not see these mutants."""
    assert properties_catch(next(m for m in CATALOGUE if m.name == name)) is None
