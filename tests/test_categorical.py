"""Categorical sampling precision: the uniform lattice, the float32 Gumbel-max tail deficit, the fix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tolerances import GUMBEL_LATTICE_RTOL, chi2_bound, clt_bound, gumbel_lattice_rtol, pearson_chi2, roundoff

from refimpl.discrete.categorical import (
    effective_temperature,
    gumbel_lattice_law,
    gumbel_max,
    gumbel_noise,
    gumbel_tail_win_probability,
    inverse_cdf,
    inverse_cdf_lattice_law,
    sample_categorical,
    tempered,
    uniform_resolution,
)

D32 = uniform_resolution(torch.float32)


@pytest.mark.parametrize(("dtype", "bits"), [(torch.float32, 24), (torch.float64, 53)])
def test_cpu_uniforms_lie_on_the_lattice(dtype: torch.dtype, bits: int) -> None:
    """torch.rand on the CPU returns k 2^-bits, k < 2^bits: the resolution the derivation starts from."""
    u = torch.rand(200_000, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(torch.float64)
    k = u * 2.0**bits
    assert bool((k == torch.round(k)).all())
    assert float(u.max()) <= 1 - 2.0**-bits


@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0, 4.0, 64.0])
def test_float32_gumbel_max_undersamples_a_tail_by_the_derived_amount(ratio: float) -> None:
    """A tail of 2^14 tokens of p = ratio * 2^-24 each (mass ratio / 1024). The float32 implementation,
    evaluated on every relevant lattice point (no Monte Carlo), gives the tail the derived law's mass,
    about r(c) = c / expm1(c) of its own, c ~ 1 / ratio: well below it."""
    n_tail = 2**14
    p = ratio * D32
    exact = gumbel_tail_win_probability(p, n_tail, dtype=torch.float32)
    probs = np.full(n_tail + 1, p)
    probs[0] = 1 - n_tail * p
    derived = gumbel_lattice_law(probs, D32)[1:].sum()
    assert abs(exact / derived - 1) <= gumbel_lattice_rtol(n_tail, D32)
    assert exact < n_tail * p * (1 - 1 / (4 * ratio + 1))  # the deficit: about delta / 2 a token for p >> delta


@pytest.mark.parametrize("ratio", [0.25, 1.0, 64.0])
def test_a_lone_rare_token_is_oversampled_by_the_atom_at_zero(ratio: float) -> None:
    """Against a single head token the rare token also wins whenever the head draws u = 0 (g = -inf),
    probability 2^-24: p r(c) + delta (1 - p), which exceeds p for p <~ delta (derived, then exact)."""
    p = ratio * D32
    exact = gumbel_tail_win_probability(p, dtype=torch.float32)
    derived = gumbel_lattice_law(np.array([1 - p, p]), D32)[1]
    assert abs(exact / derived - 1) <= GUMBEL_LATTICE_RTOL
    assert exact > p


def test_float64_has_the_same_mechanism_at_2_to_the_minus_53() -> None:
    """In float64 the effects need p ~ 2^-53: at p = 2^-40 they are 2^-14 of p; at 2^-20 below 2^-32."""
    d64 = uniform_resolution(torch.float64)
    p = 2.0**-40
    exact = gumbel_tail_win_probability(p, dtype=torch.float64)
    derived = gumbel_lattice_law(np.array([1 - p, p]), d64)[1]
    assert abs(exact / derived - 1) <= GUMBEL_LATTICE_RTOL
    probs = np.full(2**14 + 1, 2.0**-20)
    probs[0] = 1 - 2**14 * 2.0**-20
    assert abs(gumbel_lattice_law(probs, d64)[1:].sum() / probs[1:].sum() - 1) <= 2.0**-32


@pytest.mark.parametrize("bits", [12, 53])
def test_sampled_tail_frequency_matches_the_lattice_law(bits: int) -> None:
    """Monte Carlo through the sampler: 64 tail tokens of p = 2^-12 / 2 each (c = 2). With 12-bit uniforms
    the tail frequency is the exact lattice value (about 2/(e^2 - 1) = 0.31 of its mass, as derived); with
    float64 uniforms it is the mass itself."""
    d12 = uniform_resolution(12)
    probs = torch.full((65,), d12 / 2, dtype=torch.float64)
    probs[0] = 1 - 64 * d12 / 2
    n = 20_000
    gen = torch.Generator().manual_seed(1)
    if bits == 53:
        x = sample_categorical(probs, n, dtype=torch.float64, generator=gen)
    else:
        x = sample_categorical(probs, n, bits=bits, generator=gen)
    freq = float((x > 0).double().mean())
    mass = float(probs[1:].sum())
    expected = gumbel_tail_win_probability(d12 / 2, 64, bits=12) if bits == 12 else mass
    assert abs(freq - expected) <= clt_bound(np.sqrt(expected * (1 - expected)), n)
    if bits == 12:
        assert abs(expected / gumbel_lattice_law(probs.numpy(), d12)[1:].sum() - 1) <= gumbel_lattice_rtol(64, d12)
        assert freq < mass - clt_bound(np.sqrt(mass * (1 - mass)), n)


@pytest.mark.parametrize("method", ["gumbel", "inverse_cdf"])
def test_float64_sampling_has_the_law(method: str) -> None:
    """Both samplers in float64 on a 12-token long-tailed law: Pearson chi-square."""
    p = 1.0 / np.arange(1, 13) ** 2
    probs = torch.tensor(p / p.sum())
    x = sample_categorical(probs, 40_000, method=method, generator=torch.Generator().manual_seed(2))
    stat, dof = pearson_chi2(np.bincount(x.numpy(), minlength=12), probs.numpy())
    assert stat <= chi2_bound(dof)


@pytest.mark.parametrize("order", ["descending", "ascending"])
def test_inverse_cdf_float32_law_by_enumerating_the_lattice(order: str) -> None:
    """inverse_cdf on all 2^24 float32 uniforms equals inverse_cdf_lattice_law. 400 tail tokens of
    p = 2^-26 each get 0 or 2^-24 (a whole number of lattice points), wherever they sit in the order, and
    together their mass within 2^-24 (torch's CPU cumsum accumulates float32 in double, so the sum near 1
    does not swallow them)."""
    tail = np.full(400, 2.0**-26)
    p = np.concatenate([[1 - tail.sum()], tail]) if order == "descending" else np.concatenate([tail, [1 - tail.sum()]])
    probs = torch.tensor(p)
    u = torch.arange(2**24, dtype=torch.float32) * D32
    counts = torch.bincount(inverse_cdf(probs, u), minlength=p.size).to(torch.float64).numpy()
    law = inverse_cdf_lattice_law(probs, torch.float32)
    assert np.array_equal(counts * D32, law)
    tail_law = law[1:] if order == "descending" else law[:-1]
    assert set(np.unique(tail_law)) <= {0.0, D32}
    assert abs(tail_law.sum() - tail.sum()) <= D32


def test_float64_inverse_cdf_keeps_every_tail_token() -> None:
    tail = np.full(400, 2.0**-26)
    probs = torch.tensor(np.concatenate([[1 - tail.sum()], tail]))
    law = inverse_cdf_lattice_law(probs, torch.float64)
    assert np.abs(law[1:] - tail).max() <= roundoff(4, scale=1.0)  # a lattice point and a rounding of cdf ~ 1


def test_effective_temperature() -> None:
    """Tempering round trip; and the float32 law of a long-tailed (per-step scaled) law is colder than it."""
    p = 1.0 / np.arange(1, 2001)
    p /= p.sum()
    for T in [0.7, 1.0, 1.3]:
        assert abs(effective_temperature(p, tempered(p, T)) - T) <= 1e-9
    step = np.concatenate([[1 - 1e-3], 1e-3 * p])  # a masked-diffusion step: stay masked, or a token
    law32 = gumbel_lattice_law(step, D32)
    assert effective_temperature(p, law32[1:] / law32[1:].sum()) < 0.99


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        sample_categorical(torch.tensor([1.2, -0.2]), 3)
    with pytest.raises(ValueError, match="sum to 1"):
        sample_categorical(torch.tensor([0.5, 0.2]), 3)
    with pytest.raises(ValueError, match="sum to 1"):
        sample_categorical(torch.tensor([[0.5, 0.2], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="method"):
        sample_categorical(torch.tensor([0.5, 0.5]), 3, method="topk")
    with pytest.raises(ValueError, match="bits"):
        uniform_resolution(60)
    with pytest.raises(ValueError, match="head"):
        gumbel_tail_win_probability(0.7)


def test_lower_tail_cut_drops_at_most_its_bound_and_lattice_uniform_is_seeded() -> None:
    """``tail``: the lattice points with j c > tail contribute below exp(-tail), so cutting there loses at most that;
    ``lattice_uniform`` with its own generator repeats and stays on the lattice {k 2^-bits}."""
    from refimpl.discrete.categorical import lattice_uniform

    p = 2e-3
    full = gumbel_tail_win_probability(p, 2, dtype=torch.float64, bits=20)
    for tail in (3.0, 8.0):
        cut = gumbel_tail_win_probability(p, 2, dtype=torch.float64, bits=20, tail=tail)
        assert 0.0 < full - cut <= math.exp(-tail)  # it does cut, and by less than its bound
    u = lattice_uniform((500,), 10, torch.Generator().manual_seed(3))
    assert torch.equal(u, lattice_uniform((500,), 10, torch.Generator().manual_seed(3)))
    assert torch.equal(u * 2**10, torch.floor(u * 2**10)) and bool(((u >= 0) & (u < 1)).all())


def test_gumbel_noise_refuses_u_zero_while_gumbel_max_lets_that_token_abstain() -> None:
    """u = 0 has no Gumbel value (-log(-log 0) = -inf): gumbel_noise raises; in gumbel_max it is the lattice's
    abstention atom, so a token drawing u = 0 never wins and the other one does."""
    u = torch.tensor([0.25, 0.5], dtype=torch.float64)
    assert torch.equal(gumbel_noise(u), -torch.log(-torch.log(u)))
    with pytest.raises(ValueError, match="open interval"):
        gumbel_noise(torch.tensor([0.0, 0.5], dtype=torch.float64))
    logits = torch.tensor([[5.0, 0.0]], dtype=torch.float64)
    assert int(gumbel_max(logits, torch.tensor([[0.0, 0.5]], dtype=torch.float64))[0]) == 1


@pytest.mark.parametrize("u_bad", [1.0, 1.5, -0.25])
def test_uniforms_outside_zero_one_are_refused(u_bad: float) -> None:
    """u = 1 gives g = +inf (a token that always wins, whatever its logit): both functions refuse it, as any u
    outside [0, 1)."""
    u = torch.tensor([[0.5, u_bad]], dtype=torch.float64)
    with pytest.raises(ValueError, match="u"):
        gumbel_noise(u)
    with pytest.raises(ValueError, match="u"):
        gumbel_max(torch.zeros(1, 2, dtype=torch.float64), u)
