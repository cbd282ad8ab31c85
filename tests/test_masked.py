"""Masked diffusion: time-agnostic denoiser, exact laws of both samplers, call counts, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tolerances import IDENTITY_RTOL, ORDER_TOL, chi2_bound, pearson_chi2, roundoff

from refimpl.discrete.masked import (
    CountingDenoiser,
    SequenceLaw,
    collision_bound,
    exact_law_first_hitting,
    exact_law_steps,
    get_mask_schedule,
    posterior_bayes,
    random_sequence_law,
    sample_first_hitting,
    sample_mdlm,
)

L, V = 4, 3  # 81 sequences
LAW = random_sequence_law(L, V, seed=0)
P0 = LAW.probs.numpy()
SCHEDULES = ["linear", "cosine"]


def counts_of(law: SequenceLaw, x: torch.Tensor) -> np.ndarray:
    return np.bincount(law.index(x).numpy(), minlength=law.V**law.L)


@given(
    seed=st.integers(0, 10_000),
    t=st.floats(0.01, 0.99),
    pattern=st.lists(st.booleans(), min_size=L, max_size=L),
    name=st.sampled_from(SCHEDULES),
)
def test_the_exact_denoiser_is_time_agnostic(seed: int, t: float, pattern: list[bool], name: str) -> None:
    """Bayes' rule with the time-t likelihood gives the t-free denoiser: alpha_t cancels (Zheng et al. Sec. 3)."""
    law = random_sequence_law(L, V, seed=seed)
    x0 = law.sequences[torch.randint(0, V**L, (6,), generator=torch.Generator().manual_seed(seed))]
    z = torch.where(torch.tensor(pattern), torch.full_like(x0, V), x0)
    torch.testing.assert_close(
        posterior_bayes(law, z, t, get_mask_schedule(name)), law.denoise(z), rtol=IDENTITY_RTOL, atol=IDENTITY_RTOL
    )


def test_the_first_hitting_sampler_has_exactly_the_joint_law() -> None:
    """Enumerating the L one-token reveals (uniform position, exact conditional) gives p_0 to round-off."""
    err = np.abs(exact_law_first_hitting(LAW) - P0).max()
    assert err <= roundoff(8 * L, condition=L)


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_step_sampler_law_is_within_the_collision_bound(name: str) -> None:
    """TV(step sampler, p_0) is positive (tokens revealed together are drawn independently) and at most
    P(two reveals in one step); it shrinks like 1/N (first order, measured)."""
    schedule = get_mask_schedule(name)
    steps = [32, 64, 128, 256]
    tvs = []
    for n in steps:
        ts = torch.linspace(1, 0, n + 1)
        tv = 0.5 * np.abs(exact_law_steps(LAW, ts, schedule) - P0).sum()
        assert 0 < tv <= collision_bound(L, ts, schedule)
        tvs.append(tv)
    slope = np.polyfit(np.log(steps), np.log(tvs), 1)[0]
    assert abs(slope + 1) <= ORDER_TOL


def test_the_collision_bound_is_the_birthday_probability() -> None:
    """With equal steps (linear schedule) the bound is 1 - N!/(N - L)!/N^L."""
    N = 10
    bound = collision_bound(L, torch.linspace(1, 0, N + 1), get_mask_schedule("linear"))
    assert abs(bound - (1 - math.perm(N, L) / N**L)) <= roundoff(4 * N)


def test_first_hitting_samples_match_the_joint() -> None:
    """Pearson chi-square over the 81 sequences, fixed seed."""
    x = sample_first_hitting(
        LAW.denoise, 10_000, L, V, get_mask_schedule("linear"), generator=torch.Generator().manual_seed(0)
    )
    stat, dof = pearson_chi2(counts_of(LAW, x), P0)
    assert stat <= chi2_bound(dof)


@pytest.mark.parametrize("cache", [False, True])
def test_step_samples_match_their_exact_law(cache: bool) -> None:
    """The step sampler (8 steps: a clear parallel-reveal error) against its enumerated law."""
    schedule = get_mask_schedule("cosine")
    ts = torch.linspace(1, 0, 9)
    x = sample_mdlm(LAW.denoise, 10_000, L, V, ts, schedule, cache=cache, generator=torch.Generator().manual_seed(1))
    stat, dof = pearson_chi2(counts_of(LAW, x), exact_law_steps(LAW, ts, schedule))
    assert stat <= chi2_bound(dof)


def test_the_two_samplers_agree() -> None:
    """Two-sample chi-square between first-hitting and 256-step samples; the exact laws differ so little
    that the test's non-centrality n/2 sum (p_N - p_0)^2 / p_0 is below 1 (checked first)."""
    schedule = get_mask_schedule("linear")
    ts = torch.linspace(1, 0, 257)
    n = 10_000
    law_n = exact_law_steps(LAW, ts, schedule)
    assert n / 2 * ((law_n - P0) ** 2 / P0).sum() < 1.0
    gen = torch.Generator().manual_seed(2)
    a = counts_of(LAW, sample_first_hitting(LAW.denoise, n, L, V, schedule, generator=gen))
    b = counts_of(LAW, sample_mdlm(LAW.denoise, n, L, V, ts, schedule, cache=True, generator=gen))
    both = a + b
    keep = both > 0
    stat = float((((a - b)[keep]) ** 2 / both[keep]).sum())  # equal sample sizes
    assert stat <= chi2_bound(int(keep.sum()) - 1)


def test_first_hitting_makes_one_model_call_per_token() -> None:
    model = CountingDenoiser(LAW.denoise)
    sample_first_hitting(model, 500, L, V, get_mask_schedule("cosine"), generator=torch.Generator().manual_seed(3))
    assert model.calls == L
    assert model.evaluations == 500 * L


def test_step_sampler_call_counts() -> None:
    """Without the cache a sequence is evaluated at every step while it has a mask (here: every step, as
    the last step reveals everything); with it at most once per revealed token."""
    ts = torch.linspace(1, 0, 101)
    schedule = get_mask_schedule("linear")
    plain = CountingDenoiser(LAW.denoise)
    times = torch.zeros(300, L, dtype=torch.float64)
    sample_mdlm(plain, 300, L, V, ts, schedule, generator=torch.Generator().manual_seed(4), reveal_times=times)
    last_reveal = times.min(-1).values  # the sampler evaluates while t > last reveal time
    expected = int((ts[:-1, None] > last_reveal[None]).sum())
    assert plain.evaluations == expected
    cached = CountingDenoiser(LAW.denoise)
    sample_mdlm(cached, 300, L, V, ts, schedule, cache=True, generator=torch.Generator().manual_seed(4))
    assert cached.evaluations <= 300 * L


@pytest.mark.parametrize("name", SCHEDULES)
def test_first_hitting_times_have_the_reveal_law(name: str) -> None:
    """A position's reveal time tau has P(tau <= s) = 1 - alpha_s: Kolmogorov distance within the DKW bound."""
    schedule = get_mask_schedule(name)
    n = 4000
    times = torch.zeros(n, L, dtype=torch.float64)
    sample_first_hitting(LAW.denoise, n, L, V, schedule, generator=torch.Generator().manual_seed(5), reveal_times=times)
    tau = torch.sort(times[:, 0]).values
    cdf = 1 - schedule.alpha(tau)
    ecdf_hi = torch.arange(1, n + 1) / n
    dist = float(torch.maximum((ecdf_hi - cdf).abs(), (ecdf_hi - 1 / n - cdf).abs()).max())
    assert dist <= math.sqrt(math.log(2 / 1e-6) / (2 * n))  # DKW, false alarm 1e-6


def test_bad_input_raises() -> None:
    probs = torch.full((V**L,), 1.0 / V**L)
    with pytest.raises(ValueError, match="non-negative"):
        SequenceLaw(probs - 2 * probs * (torch.arange(V**L) == 0), L, V)
    with pytest.raises(ValueError, match="sum to 1"):
        SequenceLaw(probs * 1.1, L, V)
    with pytest.raises(ValueError, match="shape"):
        SequenceLaw(probs[:-1], L, V)
    with pytest.raises(ValueError, match="mask"):
        LAW.denoise(torch.full((1, L), V + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="run from 1 to 0"):
        sample_mdlm(LAW.denoise, 2, L, V, torch.linspace(0.9, 0, 5), get_mask_schedule("linear"))
    with pytest.raises(ValueError, match="unknown mask schedule"):
        get_mask_schedule("sigmoid")


def test_forward_mask_with_its_own_generator_masks_a_fraction_one_minus_alpha() -> None:
    """``forward_mask(generator=...)``: seeded, repeatable, and the masked fraction is 1 - alpha_t within 5 SE."""
    from refimpl.discrete.masked import forward_mask

    x0 = torch.zeros(200, 50, dtype=torch.long)
    z = forward_mask(x0, 0.3, 7, torch.Generator().manual_seed(5))
    assert torch.equal(z, forward_mask(x0, 0.3, 7, torch.Generator().manual_seed(5)))
    frac = float((z == 7).double().mean())
    assert abs(frac - 0.7) <= 5 * math.sqrt(0.7 * 0.3 / z.numel())
    assert bool(((z == 0) | (z == 7)).all())


@pytest.mark.parametrize(("L", "V"), [(1, 2), (3, 2), (2, 4)])
def test_the_cached_agreement_table_gives_the_direct_indicator(L: int, V: int) -> None:
    """``consistent`` reads a table built once per law (which sequences agree with token v at position l); over
    every z in {0..V}^L (the mask V included) it equals the indicator compared directly against every sequence,
    and ``denoise`` equals the posterior by Bayes' rule (IDENTITY_RTOL: a normalised sum of V^L products)."""
    law = random_sequence_law(L, V, seed=3)
    z = torch.cartesian_prod(*[torch.arange(V + 1)] * L).reshape(-1, L)
    direct = ((z[:, None, :] == V) | (z[:, None, :] == law.sequences[None])).all(-1)
    assert torch.equal(law.consistent(z), direct)
    bayes = posterior_bayes(law, z, 0.5, get_mask_schedule("linear"))
    assert float((law.denoise(z) - bayes).abs().max()) <= IDENTITY_RTOL
