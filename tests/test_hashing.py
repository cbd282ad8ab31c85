"""SDIM: SimHash collision probability (binomial), hashing estimate of kernel attention (1/sqrt(m) rate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tolerances import ORDER_TOL, clt_bound, roundoff

from refimpl.selection import hashing


@pytest.mark.parametrize("tau", [1, 3, 6])
@pytest.mark.parametrize("theta", [0.3, 1.2, 2.5])
def test_simhash_signatures_collide_with_probability_one_minus_theta_over_pi_to_the_tau(theta: float, tau: int) -> None:
    """20000 independent tau-bit hashes of two vectors at angle theta: the collision count is binomial."""
    rng = np.random.default_rng(int(100 * theta) + tau)
    d = 5
    u = rng.standard_normal(d)
    w = rng.standard_normal(d)
    w -= (w @ u) / (u @ u) * u  # orthogonal to u
    v = math.cos(theta) * u / np.linalg.norm(u) + math.sin(theta) * w / np.linalg.norm(w)
    assert abs(float(hashing.angle(u, v)) - theta) <= roundoff(64)
    m = 20_000
    sig = hashing.simhash(np.stack([u, v]), hashing.random_hyperplanes(m, tau, d, rng))
    freq = float((sig[0] == sig[1]).mean())
    p = float(hashing.collision_probability(theta, tau))
    assert abs(freq - p) <= clt_bound(math.sqrt(p * (1 - p)), m)


def test_hashing_attention_converges_to_kernel_attention_like_one_over_sqrt_m() -> None:
    """RMS error over 120 independent hash draws, m = 16 .. 1024: log-log slope -1/2 for the unbiased bucket-sum
    estimate (a mean of m i.i.d. terms) and for the kernel-weighted average (a ratio of two such means)."""
    rng = np.random.default_rng(0)
    L, d, tau = 60, 8, 3
    q = rng.standard_normal(d)
    keys = rng.standard_normal((L, d)) + 0.8 * q  # behaviours leaning towards the candidate
    values = rng.standard_normal((L, 2))
    exact_sum, exact_avg = hashing.kernel_attention(q, keys, values, tau)
    ms = [16, 64, 256, 1024]
    rms_sum, rms_avg = [], []
    for m in ms:
        errs = np.array(
            [
                [
                    np.linalg.norm(e - x)
                    for e, x in zip(
                        hashing.hashing_attention(q, keys, values, hashing.random_hyperplanes(m, tau, d, rng)),
                        (exact_sum, exact_avg),
                        strict=True,
                    )
                ]
                for _ in range(120)
            ]
        )
        rms_sum.append(np.sqrt((errs[:, 0] ** 2).mean()))
        rms_avg.append(np.sqrt((errs[:, 1] ** 2).mean()))
    for rms in (rms_sum, rms_avg):
        slope = np.polyfit(np.log(ms), np.log(rms), 1)[0]
        assert abs(slope + 0.5) <= ORDER_TOL


def test_the_bucket_sum_is_unbiased() -> None:
    """Mean over 400 draws of m = 8 hashes within the CLT bound of sum_s p_s v_s (per coordinate)."""
    rng = np.random.default_rng(3)
    L, d, tau = 30, 6, 2
    q, keys, values = rng.standard_normal(d), rng.standard_normal((L, d)), rng.standard_normal((L, 3))
    exact, _ = hashing.kernel_attention(q, keys, values, tau)
    draws = np.array(
        [hashing.hashing_attention(q, keys, values, hashing.random_hyperplanes(8, tau, d, rng))[0] for _ in range(400)]
    )
    assert (np.abs(draws.mean(0) - exact) <= clt_bound(draws.std(0), 400)).all()


def test_bad_input_raises() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="tau"):
        hashing.collision_probability(1.0, 0)
    with pytest.raises(ValueError, match="theta"):
        hashing.collision_probability(4.0, 2)
    with pytest.raises(ValueError, match="tau"):
        hashing.random_hyperplanes(4, 0, 3, rng)
    with pytest.raises(ValueError, match="keys"):
        hashing.hashing_attention(
            np.ones(3), np.ones((4, 3)), np.ones((5, 2)), hashing.random_hyperplanes(2, 2, 3, rng)
        )
    with pytest.raises(ValueError, match="no behaviour collides"):
        hashing.hashing_attention(
            np.array([1.0, 0]), np.array([[-1.0, 0]]), np.ones((1, 1)), hashing.random_hyperplanes(3, 4, 2, rng)
        )
