"""Categorical sampling and its precision: Gumbel-max and inverse-CDF in float32 and float64.

Zheng et al. (arXiv:2409.02908v5, the section on categorical sampling) observe that Gumbel-max sampling
with 32-bit uniforms under-samples rare tokens, which lowers the effective temperature of a masked
diffusion model's samples.
This module makes the mechanism exact. A uniform from ``torch.rand`` on the CPU lies on the lattice
{k delta : k = 0, ..., 1/delta - 1} with delta = 2^-24 in float32 and 2^-53 in float64 (24 and 53 random
bits). Gumbel-max picks argmax_i (log p_i + g_i) with g_i = -log(-log u_i), i.e. argmin_i E_i / p_i with
E_i = -log u_i ~ Exp(1). A rare token wins only when E_i is tiny, of the order of p_i; near u = 1 the
lattice turns E_i into the multiples j delta (j >= 1) of delta, each with mass delta, so

    P(i wins, no abstention) = delta * sum_{j>=1} exp(-(1 - p_i) j delta / p_i) = p_i * r(c_i),
    c_i = delta (1 - p_i) / p_i,   r(c) = c / expm1(c),                                (*)

instead of p_i: a deficit of about delta / 2 for p_i >> delta, and an exponential suppression
p_i * c_i exp(-c_i) for p_i <~ delta. The other end of the lattice, u = 0, gives g = -inf: each token
abstains with probability delta, and then the others compete; to first order in delta this adds
delta p_i sum_{j != i} p_j / (1 - p_j) to token i, a relative bonus delta p_h / (1 - p_h) from a dominant
token h that is the same for every other token. That is ``gumbel_lattice_law``;
``gumbel_tail_win_probability`` evaluates the float32 implementation exactly on the lattice (no Monte
Carlo) to check it; float64 (delta = 2^-53) is the fix.
Inverse-CDF sampling gives each token a whole number of lattice points (``inverse_cdf_lattice_law``): a
token of p < delta gets 0 or delta.

Randomness is passed in: the samplers take the uniforms ``u`` (or a generator that draws them).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import brentq
from torch import Tensor

from refimpl._validation import as_float_tensor, as_real_array, check_integer, check_number, check_probability_vector

__all__ = [
    "UNIFORM_BITS",
    "effective_temperature",
    "entropy",
    "gumbel_lattice_law",
    "gumbel_max",
    "gumbel_noise",
    "gumbel_tail_win_probability",
    "inverse_cdf",
    "inverse_cdf_lattice_law",
    "lattice_uniform",
    "sample_categorical",
    "tempered",
    "uniform_resolution",
]

#: Random bits in one ``torch.rand`` draw on the CPU: the uniforms are k * 2^-bits, k = 0 .. 2^bits - 1.
UNIFORM_BITS = {torch.float32: 24, torch.float64: 53}


def uniform_resolution(dtype: torch.dtype | int) -> float:
    """delta = 2^-bits, the spacing of the uniforms of ``dtype`` (or of an integer number of bits).

    Helper, no paper equation: the lattice spacing of Zheng et al., arXiv:2409.02908v5's float32 finding, as a number.
    """
    if isinstance(dtype, int) and not isinstance(dtype, bool):
        bits = dtype
    elif isinstance(dtype, torch.dtype):
        bits = UNIFORM_BITS.get(dtype)
    else:
        raise TypeError(f"dtype must be a torch.dtype or a number of bits, got {type(dtype).__name__}")
    if bits is None or not 1 <= bits <= 53:
        raise ValueError(f"dtype must be torch.float32, torch.float64 or a number of bits in 1..53, got {dtype}")
    return 2.0**-bits


def lattice_uniform(shape: tuple[int, ...], bits: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniforms on the lattice {k 2^-bits}, in float64: emulates a generator with ``bits`` random bits.

    ``bits = 24`` reproduces the law of float32 ``torch.rand``; ``bits = 53`` is float64 ``torch.rand``.

    Helper, no paper equation: a generator with a chosen number of random bits, for Monte Carlo checks.
    """
    delta = 2.0 ** -check_integer(bits, "bits", 1, 53)
    if not isinstance(shape, tuple | list | torch.Size):
        raise TypeError(f"shape must be a tuple of sizes, got {type(shape).__name__}")
    shape = tuple(check_integer(n, "shape", 0) for n in shape)
    # floor(u / delta) * delta, in place: the Monte Carlo draws run to tens of millions of entries
    return torch.rand(shape, dtype=torch.float64, generator=generator).div_(delta).floor_().mul_(delta)


def _check_probs(probs: Tensor, name: str = "probs") -> Tensor:
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
    as_float_tensor(probs, name)  # complex or bool probabilities raise
    if probs.ndim == 1:
        return check_probability_vector(probs.to(torch.float64), name, atol=1e-6)
    lo, hi = (float(v) for v in probs.aminmax()) if probs.numel() else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} holds non-finite values")
    if lo < 0:
        raise ValueError(f"{name} must be non-negative; smallest entry is {lo:g}")
    sums = probs.sum(-1)
    err = float((sums - 1).abs().max()) if sums.numel() else 0.0
    if err > 1e-6:
        raise ValueError(f"{name} must sum to 1 along the last axis; the worst sum is off by {err:.3g}")
    return probs


def _check_uniforms(u: Tensor, name: str = "u") -> Tensor:
    """Raise unless ``u`` is a floating tensor of values in [0, 1) (NaN fails the test too)."""
    if not isinstance(u, Tensor) or not u.is_floating_point():
        got = getattr(u, "dtype", type(u).__name__)
        raise TypeError(f"{name} must be a floating torch.Tensor of uniforms, got {got}")
    lo, hi = (float(v) for v in u.aminmax()) if u.numel() else (0.0, 0.0)
    if not (lo >= 0 and hi < 1):  # one pass, no temporary; NaN propagates and fails the test
        raise ValueError(f"{name} must hold uniforms in [0, 1); got values outside (or NaN)")
    return u


def _gumbel(u: Tensor) -> Tensor:
    """-log(-log u) on lattice uniforms in [0, 1): u = 0 gives -inf, the token abstains (``gumbel_max``).
    Formed in one buffer (u can hold tens of millions of draws)."""
    return torch.log(u).neg_().log_().neg_()


def gumbel_noise(u: Tensor) -> Tensor:
    """g = -log(-log u) ~ Gumbel(0, 1) by inversion of its CDF exp(-exp(-g)), in the dtype of u.

    Zheng et al., arXiv:2409.02908v5, the Gumbel-max trick of their categorical-sampling section
    (equation number [unverified]). u: uniforms in the open interval (0, 1); u = 0 (g = -inf) is refused
    here, since it is no Gumbel value; ``gumbel_max`` accepts it as an abstaining token.
    """
    _check_uniforms(u)
    if u.numel() and not bool((u > 0).all()):
        raise ValueError("u must hold uniforms in the open interval (0, 1) for a finite Gumbel value; got u = 0")
    return _gumbel(u)


def gumbel_max(logits: Tensor, u: Tensor) -> Tensor:
    """argmax_i (logits_i + g_i), g = -log(-log u), computed in the dtype of ``u``.

    logits: (..., V) with -inf allowed (zero-probability tokens); u: (..., V) uniforms in [0, 1).
    Returns the indices (...,). Ties go to the first index (torch.argmax).

    Paper: Zheng et al., arXiv:2409.02908v5, categorical-sampling section (the Gumbel-max trick), eq. [unverified].
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        got = getattr(logits, "dtype", type(logits).__name__)
        raise TypeError(f"logits must be a floating torch.Tensor, got {got}")
    if logits.ndim < 1 or logits.shape[-1] < 1 or (logits.numel() and not float(logits.amax()) < math.inf):
        raise ValueError(f"logits must be (..., V) with V >= 1, no NaN and no +inf; got shape {tuple(logits.shape)}")
    _check_uniforms(u)
    if logits.shape[-1] != u.shape[-1]:
        raise ValueError(f"logits (..., {logits.shape[-1]}) and u (..., {u.shape[-1]}) differ in the last axis")
    scores, logits = _gumbel(u), logits.to(u.dtype)
    # logits + g, in g's buffer where it has the broadcast shape (the sum is the same either way)
    scores = (
        scores.add_(logits) if torch.broadcast_shapes(scores.shape, logits.shape) == scores.shape else logits + scores
    )
    return torch.argmax(scores, dim=-1)


def inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """The first index i with u < cdf_i, cdf = cumsum(probs) computed in the dtype of ``u``.

    probs: (V,); u: (n,) uniforms in [0, 1). If the rounded cumulative sum stops short of 1, the draws
    above it go to the last token (the clamp), as in most implementations.

    Paper: Zheng et al., arXiv:2409.02908v5, categorical-sampling section (inverse-CDF sampling, its alternative), eq.
    [unverified].
    """
    _check_probs(probs)
    if probs.ndim != 1:
        raise ValueError(f"probs must be one probability vector (V,), got shape {tuple(probs.shape)}")
    _check_uniforms(u)
    cdf = torch.cumsum(probs.to(u.dtype), 0)
    return torch.searchsorted(cdf, u, right=True).clamp(max=probs.shape[-1] - 1)


def sample_categorical(
    probs: Tensor,
    n: int | None = None,
    *,
    method: str = "gumbel",
    dtype: torch.dtype = torch.float64,
    bits: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw tokens from ``probs`` with Gumbel-max or inverse-CDF, uniforms of ``dtype`` (or ``bits``).

    probs: (V,) with ``n`` draws (returns (n,)), or a batch (..., V) with one draw each (returns (...)).
    ``dtype=torch.float64`` is the fix for the float32 tail deficit; ``bits`` emulates coarser uniforms
    (``lattice_uniform``) with float64 arithmetic.

    Paper: Zheng et al., arXiv:2409.02908v5, categorical-sampling section; float64 uniforms are the fix derived in
    this module, eq. [unverified].
    """
    _check_probs(probs)
    if method not in ("gumbel", "inverse_cdf"):
        raise ValueError(f"method must be 'gumbel' or 'inverse_cdf', got {method!r}")
    batch = probs.shape[:-1] if n is None else (n,)
    if method == "inverse_cdf" and probs.ndim != 1:
        raise ValueError("inverse_cdf takes a single probability vector (V,)")
    shape = (*batch, probs.shape[-1]) if method == "gumbel" else batch
    if bits is not None:
        u = lattice_uniform(shape, bits, generator)
    else:
        u = torch.rand(shape, dtype=dtype, generator=generator)
    if method == "inverse_cdf":
        return inverse_cdf(probs, u)
    with torch.no_grad():
        logits = torch.log(probs.to(u.dtype))  # log 0 = -inf: such tokens never win
    return gumbel_max(logits.expand(shape), u)


def gumbel_lattice_law(p: Tensor | np.ndarray, delta: float) -> np.ndarray:
    """The law of Gumbel-max with uniforms of resolution delta, derived in (*) of the module docstring.

    P_delta(i) is proportional to p_i (r(c_i) + delta sum_{j != i} p_j / (1 - p_j)), c_i = delta (1 - p_i) / p_i,
    r(c) = c / expm1(c): the lattice near u = 1 (the deficit r) and the atom u = 0, where a token's
    Gumbel is -inf and it abstains (probability delta each), handing its win to the others; p_i = 0 stays 0.

    Paper: Zheng et al., arXiv:2409.02908v5, categorical-sampling section; the law (*) itself is derived here, not in
    the paper, eq. [unverified].
    """
    p = _check_law(p, "p")
    delta = check_number(delta, "delta", 0.0, 1.0)
    if delta == 0:
        raise ValueError("delta must be positive (the spacing of the uniforms)")
    out = np.zeros_like(p)
    pos = p > 0
    c = delta * (1.0 - p[pos]) / p[pos]
    with np.errstate(over="ignore"):  # expm1(c) overflows to inf for c > ~709: r(c) = c / inf = 0, as it should
        r = np.where(c > 0, c / np.expm1(np.maximum(c, 1e-300)), 1.0)  # r(0) = 1: a token of probability 1
    odds = np.where(p < 1, p / np.where(p < 1, 1 - p, 1.0), 0.0)  # p_j / (1 - p_j)
    out[pos] = p[pos] * (r + delta * (odds.sum() - odds[pos]))
    return out / out.sum()


def gumbel_tail_win_probability(
    p: float, n_tail: int = 1, dtype: torch.dtype = torch.float32, bits: int | None = None, tail: float = 60.0
) -> float:
    """Exact probability that one of ``n_tail`` tokens of probability p each wins Gumbel-max against a head
    token of probability 1 - n_tail p, with lattice uniforms (no Monte Carlo).

    The tail's best score comes from the largest of its n_tail uniforms, u_max = 1 - j delta with
    probability (1 - (j-1) delta)^n - (1 - j delta)^n; ``gumbel_max``'s score log p + g(u_max) is evaluated
    in ``dtype`` (float64 if ``bits`` emulates coarser uniforms) for every j with j c <= ``tail``,
    c = delta (1 - p) / p (the rest contribute below exp(-tail)); the head loses on exactly the lattice
    points below exp(-exp(l_head - score)), counted in closed form (ties go to the head, index 0).
    Costs about tail / c evaluations: meant for p up to ~1e-4 in float32.

    Paper: Zheng et al., arXiv:2409.02908v5, categorical-sampling section; an exact check of (*), derived here, eq.
    [unverified].
    """
    p, n_tail, tail = check_number(p, "p"), check_integer(n_tail, "n_tail", 1), check_number(tail, "tail", 0.0)
    if bits is not None:
        check_integer(bits, "bits", 1, 53)
    head = 1.0 - n_tail * p
    if not (p > 0 and head > p):
        raise ValueError(f"need 0 < p and a head 1 - n_tail p larger than p; got p = {p}, n_tail = {n_tail}")
    delta = uniform_resolution(dtype if bits is None else bits)
    work = dtype if bits is None else torch.float64
    c = delta * (1 - p) / p
    J = min(math.ceil(tail / c), round(1 / delta))
    if J > 50_000_000:
        raise ValueError(f"p = {p:g} needs {J} lattice points; use gumbel_lattice_law")
    j = torch.arange(1, J + 1, dtype=torch.float64)
    pmf = torch.exp(n_tail * torch.log1p(-(j - 1) * delta)) - torch.exp(n_tail * torch.log1p(-j * delta))
    u = (1.0 - j * delta).to(work)  # exact: every 1 - j delta is representable
    logits = torch.log(torch.tensor([head, p], dtype=torch.float64)).to(work)
    score = (logits[1] + _gumbel(u)).to(torch.float64)  # gumbel_max's score of the tail's best
    # the head loses iff l_head + g(u_head) < score  <=>  u_head < exp(-exp(l_head - score))
    threshold = torch.exp(-torch.exp(float(logits[0]) - score))
    losing = torch.ceil(threshold / delta) * delta  # mass of the lattice points k delta < threshold
    # beyond J the head loses only at u_head = 0 (g = -inf: it abstains), mass delta
    abstain = delta * math.exp(n_tail * math.log1p(-J * delta))
    return float((pmf * losing).sum()) + abstain


def inverse_cdf_lattice_law(probs: Tensor, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """The exact law of ``inverse_cdf`` with lattice uniforms of ``dtype``: counts of lattice points.

    Token i gets delta * #{k : cdf_{i-1} <= k delta < cdf_i} with the cumulative sum rounded in ``dtype``
    as ``inverse_cdf`` computes it, and the last token also every k delta >= cdf_{V-1}. A token of
    p < delta gets 0 or delta. (torch's CPU cumsum accumulates float32 in double; a running float32 sum
    near 1, spacing 2^-24, would not grow by tokens of p < 2^-25 summed last, and they would get nothing.)

    Paper: Zheng et al., arXiv:2409.02908v5, categorical-sampling section; the lattice count is derived here, eq.
    [unverified].
    """
    _check_probs(probs)
    if probs.ndim != 1:
        raise ValueError(f"probs must be one probability vector (V,), got shape {tuple(probs.shape)}")
    if dtype not in UNIFORM_BITS:
        raise ValueError(f"dtype must be one of {list(UNIFORM_BITS)}, got {dtype}")
    delta = uniform_resolution(dtype)
    cdf = torch.cumsum(probs.to(dtype), 0).to(torch.float64).numpy()
    counts = np.minimum(np.ceil(np.concatenate([[0.0], cdf]) / delta), 1.0 / delta)
    counts[-1] = 1.0 / delta  # every u < 1 is drawn by some token; the clamp sends the rest to the last
    return np.diff(counts) * delta


def _check_law(p: np.ndarray, name: str) -> np.ndarray:
    """``p`` as a float64 probability vector (V,), V >= 1 (array or tensor)."""
    p = as_real_array(p, name)
    if p.ndim != 1 or p.size == 0 or bool((p < 0).any()) or abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name} must be a non-empty 1-D probability vector (non-negative, summing to 1)")
    return p


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats of a probability vector (0 log 0 = 0).

    Helper, no paper equation: Shannon entropy, used by ``effective_temperature``.
    """
    p = _check_law(p, "p")
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def tempered(p: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the law at temperature T (T < 1 sharpens); zero entries stay zero.

    Paper: Zheng et al., arXiv:2409.02908v5, categorical-sampling section (the temperature their finding is stated
    in), eq. [unverified].
    """
    p = _check_law(p, "p")
    if check_number(temperature, "temperature") <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    with np.errstate(divide="ignore"):  # log 0 = -inf: a zero-probability token stays at zero
        logp = np.log(p) / temperature
    logp -= logp.max()
    q = np.exp(logp)
    return q / q.sum()


def effective_temperature(p: np.ndarray, q: np.ndarray) -> float:
    """The T with entropy(tempered(p, T)) = entropy(q): the temperature at which q looks like p.

    Paper: Zheng et al., arXiv:2409.02908v5, categorical-sampling section (their 'lower effective temperature'; the
    entropy match is ours), eq. [unverified].
    """
    p = _check_law(p, "p")
    if np.any(p <= 0):
        raise ValueError("p must be strictly positive to be tempered")
    target = entropy(q)
    lo, hi = (entropy(tempered(p, T)) for T in _TEMPERATURES)
    if not lo <= target <= hi:
        raise ValueError(
            f"the entropy of q ({target:.6g}) is not reached by tempering p with T in {_TEMPERATURES}: "
            f"entropies {lo:.6g} .. {hi:.6g}"
        )
    return float(brentq(lambda T: entropy(tempered(p, T)) - target, *_TEMPERATURES, xtol=1e-12))


_TEMPERATURES = (0.05, 20.0)  # the bracket searched by ``effective_temperature``
