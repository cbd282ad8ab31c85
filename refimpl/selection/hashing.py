"""SimHash sampling of long behaviour sequences: SDIM's hashing estimate of kernel attention (numpy, float64).

SDIM (Cao et al., arXiv:2205.10249v2, Sec. 3): a user's behaviours v_1..v_L and a candidate item q are hashed
with m SimHash functions of tau bits each, sig_j(x) = (sign(r_{j,1} . x), ..., sign(r_{j,tau} . x)), r Gaussian.
For two vectors at angle theta one bit agrees with probability 1 - theta / pi (Charikar 2002), so a tau-bit
signature collides with probability

    p(theta) = (1 - theta / pi)^tau.

SDIM gathers, for each hash j, the behaviours whose signature equals the candidate's and averages over the m
hashes: an unbiased estimate of sum_s p(theta_qs) v_s, and their ratio an estimate of the kernel-weighted
average sum_s p(theta_qs) v_s / sum_s p(theta_qs) ("attention" with kernel p instead of softmax). Both
errors shrink like 1 / sqrt(m). (SDIM normalises the gathered sum by its l2 norm; the kernel form above is the
one whose limit is stated in the paper's analysis, and the one tested here.)
"""

from __future__ import annotations

import math

import numpy as np

from refimpl._validation import check_array, check_generator, check_integer

__all__ = [
    "angle",
    "collision_probability",
    "hashing_attention",
    "kernel_attention",
    "random_hyperplanes",
    "simhash",
]


def _check_tau(tau: int) -> None:
    if not isinstance(tau, int | np.integer) or tau < 1:
        raise ValueError(f"tau (bits per signature) must be a positive integer, got {tau!r}")


def random_hyperplanes(m: int, tau: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian directions R (m, tau, dim) of m SimHash functions with tau bits each.

    Paper: Cao et al. (SDIM), arXiv:2205.10249v2, Sec. 3, the Gaussian directions of SimHash, eq. [unverified].
    """
    _check_tau(tau)
    m, dim = check_integer(m, "m", 1), check_integer(dim, "dim", 1)
    check_generator(rng)
    return rng.standard_normal((m, tau, dim))


def simhash(x: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Signatures (n, m) of the rows of x (n, dim): the tau sign bits of hash j packed into one integer.

    Paper: Cao et al. (SDIM), arXiv:2205.10249v2, Sec. 3, SimHash signatures (Charikar 2002), eq. [unverified].
    """
    x, R = check_array(x, "x", 2, nonempty=False), check_array(R, "R", 3)
    if x.shape[1] != R.shape[2]:
        raise ValueError(f"x (n, dim) and R (m, tau, dim) must share dim, got {x.shape} and {R.shape}")
    if R.shape[1] > 62:
        raise ValueError(f"R has tau = {R.shape[1]} bits per signature; at most 62 fit in one int64")
    bits = np.einsum("mtd,nd->nmt", R, x) > 0  # (n, m, tau)
    return (bits * (1 << np.arange(R.shape[1], dtype=np.int64))).sum(-1)


def angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle between u (..., d) and v (..., d) in [0, pi] (neither may be zero: a zero vector has no direction).

    Helper, no paper equation: the angle between vectors.
    """
    u, v = check_array(u, "u"), check_array(v, "v")
    try:
        np.broadcast_shapes(u.shape, v.shape)
    except ValueError as err:
        raise ValueError(f"u and v must broadcast, got shapes {u.shape} and {v.shape}") from err
    norms = np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1)
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError("u and v must be non-zero vectors of finite norm (|u| |v| overflows or vanishes)")
    c = (u * v).sum(-1) / norms
    return np.arccos(np.clip(c, -1.0, 1.0))


def collision_probability(theta: np.ndarray | float, tau: int) -> np.ndarray:
    """(1 - theta / pi)^tau: P(two tau-bit SimHash signatures of vectors at angle theta agree).

    Paper: Cao et al. (SDIM), arXiv:2205.10249v2, Sec. 3, (1 - theta/pi)^tau, eq. [unverified].
    """
    _check_tau(tau)
    theta = check_array(theta, "theta", nonempty=False)
    if bool(((theta < 0) | (theta > math.pi)).any()):
        raise ValueError("theta must lie in [0, pi]")
    return (1.0 - theta / math.pi) ** tau


def _check_qkv(q: np.ndarray, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q, keys, values = check_array(q, "q", 1), check_array(keys, "keys", 2), check_array(values, "values", 2)
    if keys.shape[0] != values.shape[0] or keys.shape[1] != q.shape[0]:
        raise ValueError(
            f"keys (L, d) and values (L, d_v) must share L and match q (d,), got {keys.shape}, {values.shape}"
        )
    return q, keys, values


def kernel_attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, tau: int) -> tuple[np.ndarray, np.ndarray]:
    """The limits: (sum_s p_s v_s, sum_s p_s v_s / sum_s p_s) with p_s = (1 - theta(q, k_s) / pi)^tau.

    Paper: Cao et al. (SDIM), arXiv:2205.10249v2, Sec. 3, the kernel-attention limit of the hashing estimate, eq.
    [unverified].
    """
    q, keys, values = _check_qkv(q, keys, values)
    p = collision_probability(angle(keys, q[None, :]), tau)
    total = p @ values
    if p.sum() == 0:
        raise ValueError("every key is opposite to q (angle pi): the kernel weights sum to 0, the ratio is undefined")
    return total, total / p.sum()


def hashing_attention(
    q: np.ndarray, keys: np.ndarray, values: np.ndarray, R: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """SDIM's estimates with the m hashes of R: (mean_j sum_{s: sig_j(k_s) = sig_j(q)} v_s, and that over the
    mean bucket size). Raises if no behaviour shares any signature with q (the ratio is undefined).

    Paper: Cao et al. (SDIM), arXiv:2205.10249v2, Sec. 3, the hashing estimate of attention, eq. [unverified].
    """
    q, keys, values = _check_qkv(q, keys, values)
    sig_q = simhash(q[None, :], R)[0]  # (m,)
    hit = simhash(keys, R) == sig_q[None, :]  # (L, m)
    total = hit.T.astype(np.float64) @ values  # (m, d_v): each hash's bucket sum
    size = hit.sum(0)
    if size.sum() == 0:
        raise ValueError("no behaviour collides with the candidate under any hash; use more hashes or fewer bits")
    return total.mean(0), total.sum(0) / size.sum()
