"""Masked (absorbing-state) diffusion on a small space of sequences, with an exact denoiser.

Sequences x in {0, ..., V-1}^L with a known joint law p_0 (V^L entries); the mask token is V. The forward
process masks each token independently: at time t in [0, 1] a token is still visible with probability
alpha_t (alpha_0 = 1, alpha_1 = 0), MDLM / Zheng et al. (arXiv:2409.02908v5, their background section).

* The exact denoiser is the law of the masked tokens given the visible ones, p_0(x | x agrees with z),
  and it does not depend on t: the likelihood q(z_t | x_0) = alpha_t^{#visible} (1 - alpha_t)^{#masked}
  1[x_0 agrees with z_t] depends on x_0 only through the indicator, so alpha_t cancels in Bayes' rule
  (Zheng et al., "time-agnostic"). ``posterior_bayes`` carries alpha_t through Bayes' rule;
  ``SequenceLaw.denoise`` does not; the tests check that they agree at every t.
* The step-by-step sampler moves from t to s < t: a masked token is revealed with probability
  (alpha_s - alpha_t) / (1 - alpha_t), its value drawn from the denoiser, and stays masked otherwise.
  Tokens revealed in the same step are drawn independently from their marginals, so with finitely many
  steps its law is not exactly p_0; ``exact_law_steps`` computes that law by enumeration.
* The first-hitting sampler (Zheng et al.'s FHS) jumps to the next time a token is revealed:
  with n tokens masked at time t, the first of their n i.i.d. reveal times is
  t' = alpha^{-1}(1 - u^{1/n} (1 - alpha_t)), u ~ U(0, 1); one masked position, uniform, is revealed
  there. One model call per token; its law is exactly p_0 (the chain rule in a random order).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from refimpl._validation import (
    as_float_tensor,
    check_instance,
    check_integer,
    check_number,
    check_probability_vector,
    check_strictly_decreasing,
)
from refimpl.discrete.categorical import sample_categorical

__all__ = [
    "CountingDenoiser",
    "MaskSchedule",
    "SequenceLaw",
    "collision_bound",
    "exact_law_first_hitting",
    "exact_law_steps",
    "first_hitting_time",
    "forward_mask",
    "get_mask_schedule",
    "mdlm_step",
    "posterior_bayes",
    "random_sequence_law",
    "sample_first_hitting",
    "sample_mdlm",
]


@dataclass(frozen=True)
class MaskSchedule:
    """alpha_t (probability that a token is visible at time t) and its inverse, on t in [0, 1].

    Paper: Zheng et al., arXiv:2409.02908v5, background on masked diffusion (MDLM), eq. [unverified].
    """

    name: str
    alpha: Callable[[Tensor], Tensor]
    alpha_inv: Callable[[Tensor], Tensor]


MASK_SCHEDULES = {
    "linear": MaskSchedule("linear", lambda t: 1.0 - t, lambda a: 1.0 - a),
    "cosine": MaskSchedule(
        "cosine", lambda t: torch.cos(0.5 * math.pi * t), lambda a: torch.arccos(a.clamp(0.0, 1.0)) * (2 / math.pi)
    ),
}


def get_mask_schedule(name: str) -> MaskSchedule:
    """``linear`` (alpha_t = 1 - t, MDLM's default) or ``cosine`` (alpha_t = cos(pi t / 2)).

    Paper: Zheng et al., arXiv:2409.02908v5, background on masked diffusion (MDLM); the linear and cosine schedules,
    eq. [unverified].
    """
    if not isinstance(name, str) or name not in MASK_SCHEDULES:
        raise ValueError(f"unknown mask schedule {name!r}; choose one of {sorted(MASK_SCHEDULES)}")
    return MASK_SCHEDULES[name]


@dataclass(frozen=True)
class SequenceLaw:
    """A joint law ``probs`` (V^L,) on sequences of length L over V tokens, in lexicographic order.

    ``sequences`` (V^L, L) lists them in the same order; the mask token is ``V``.

    Helper, no paper equation: a known joint law on V^L sequences with its exact time-agnostic denoiser (Zheng et al.,
    arXiv:2409.02908v5).
    """

    probs: Tensor
    L: int
    V: int
    sequences: Tensor = field(init=False, repr=False)
    # Per position l and token v (the mask included), which sequences agree with v at l: row l (V + 1) + v of
    # (L (V + 1), V^L). ``consistent`` ANDs L of its rows, which is many times faster than comparing z with every
    # sequence (it runs once per denoiser call); and the one-hot of ``sequences`` (V^L, L, V) that ``denoise`` sums.
    _agrees: Tensor = field(init=False, repr=False, compare=False)
    _onehot: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_integer(self.L, "L", 1), check_integer(self.V, "V", 2)
        probs = as_float_tensor(self.probs, "probs", torch.float64)
        if probs.shape != (self.V**self.L,):
            raise ValueError(f"probs must have shape ({self.V**self.L},) for L = {self.L}, V = {self.V}")
        check_probability_vector(probs, "probs")
        object.__setattr__(self, "probs", probs)
        seqs = torch.tensor(list(itertools.product(range(self.V), repeat=self.L)), dtype=torch.long)
        object.__setattr__(self, "sequences", seqs)
        tokens = torch.arange(self.V + 1)
        agrees = (seqs.T[:, None, :] == tokens[None, :, None]) | (tokens == self.mask)[None, :, None]  # (L, V+1, S)
        object.__setattr__(self, "_agrees", agrees.reshape(self.L * (self.V + 1), -1))
        object.__setattr__(self, "_onehot", torch.nn.functional.one_hot(seqs, self.V).to(torch.float64))

    @property
    def mask(self) -> int:
        """Helper, no paper equation: the mask token's index, V."""
        return self.V

    def index(self, x: Tensor) -> Tensor:
        """Position of each sequence of x (B, L) in ``probs`` (base-V digits).

        Helper, no paper equation: lexicographic position of sequences in ``probs``.
        """
        if bool((x < 0).any() or (x >= self.V).any()):
            raise ValueError(f"sequences must hold tokens in 0..{self.V - 1} (no mask)")
        powers = self.V ** torch.arange(self.L - 1, -1, -1)
        return (x * powers).sum(-1)

    def _check_z(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or z.dtype != torch.long or z.ndim != 2 or z.shape[1] != self.L:
            raise TypeError(f"z must be a long tensor of shape (B, {self.L})")
        if bool((z < 0).any() or (z > self.V).any()):
            raise ValueError(f"z must hold tokens in 0..{self.V - 1} or the mask {self.V}")
        return z

    def consistent(self, z: Tensor) -> Tensor:
        """(B, V^L) indicator that sequence s agrees with z on every visible position.

        Helper, no paper equation: the indicator 1[x_0 agrees with z] of the time-agnostic posterior.
        """
        rows = self._check_z(z) + (self.V + 1) * torch.arange(self.L)  # row of (position l, token z_l)
        out = self._agrees[rows[:, 0]]
        for position in range(1, self.L):
            out &= self._agrees[rows[:, position]]
        return out

    def denoise(self, z: Tensor, t: Tensor | float | None = None) -> Tensor:
        """The exact denoiser: (B, L, V) marginals of x_0 given the visible tokens of z (B, L).

        Time-agnostic: ``t`` is accepted for the model signature and ignored. Visible positions get
        their one-hot. Raises if some z has probability 0 under the law.

        Paper: Zheng et al., arXiv:2409.02908v5, the time-agnostic denoiser p(x_0 | z) (no t), eq. [unverified].
        """
        w = self.consistent(z) * self.probs  # p_0(x) 1[x agrees with z]
        total = w.sum(-1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("some z agrees with no sequence of positive probability")
        return torch.einsum("bs,slv->blv", w / total, self._onehot)  # one-hot (S, L, V)


def random_sequence_law(
    L: int = 4, V: int = 3, concentration: float = 0.5, seed: int = 0, max_count: int = 2**20
) -> SequenceLaw:
    """A Dirichlet(concentration) draw on the V^L sequences: a joint law with strong dependence.

    The law is a table of V^L probabilities: refused beyond ``max_count`` entries (pass a larger one to lift).

    Helper, no paper equation: a Dirichlet test law.
    """
    for name, value in (("L", L), ("V", V)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(concentration, (int, float)) and 0 < concentration < math.inf):
        raise ValueError(f"concentration must be a positive finite number, got {concentration!r}")
    if V**L > max_count:
        raise ValueError(f"V^L = {V}^{L} sequences exceed max_count = {max_count}; pass a larger max_count")
    rng = np.random.default_rng(seed)
    w = torch.as_tensor(rng.dirichlet(np.full(V**L, float(concentration))) + 1e-3)  # every sequence possible
    return SequenceLaw(w / w.sum(), L, V)


def posterior_bayes(law: SequenceLaw, z: Tensor, t: float, schedule: MaskSchedule) -> Tensor:
    """The posterior marginals of x_0 given z_t by Bayes' rule with the time-t likelihood (B, L, V).

    q(z_t | x_0) = alpha_t^{#visible} (1 - alpha_t)^{#masked} 1[x_0 agrees with z_t]; for 0 < t < 1 the
    result equals ``law.denoise(z)`` (alpha_t cancels): the time-agnostic property.

    Paper: Zheng et al., arXiv:2409.02908v5, background on masked diffusion (MDLM); Bayes' rule with the forward
    likelihood, the check on ``denoise``, eq. [unverified].
    """
    check_instance(law, SequenceLaw, "law")
    check_instance(schedule, MaskSchedule, "schedule")
    a = schedule.alpha(torch.as_tensor(t, dtype=torch.float64))
    n_masked = (z == law.mask).sum(-1, keepdim=True).to(torch.float64)
    lik = a ** (law.L - n_masked) * (1 - a) ** n_masked * law.consistent(z)
    joint = lik * law.probs
    post = joint / joint.sum(-1, keepdim=True)
    return torch.einsum("bs,slv->blv", post, law._onehot)


def _check_tokens(z: Tensor, name: str) -> Tensor:
    if not isinstance(z, Tensor) or z.dtype != torch.long or z.ndim != 2:
        raise TypeError(f"{name} must be a long tensor of tokens (B, L), got {getattr(z, 'dtype', type(z).__name__)}")
    return z


def forward_mask(x0: Tensor, alpha_t: float, mask: int, generator: torch.Generator | None = None) -> Tensor:
    """Mask each token of x0 (B, L) independently with probability 1 - alpha_t.

    Paper: Zheng et al., arXiv:2409.02908v5, background on masked diffusion (MDLM) (the forward masking process), eq.
    [unverified].
    """
    _check_tokens(x0, "x0")
    check_number(alpha_t, "alpha_t", 0.0, 1.0)
    check_integer(mask, "mask", 0)
    keep = torch.rand(x0.shape, dtype=torch.float64, generator=generator) < alpha_t
    return torch.where(keep, x0, torch.full_like(x0, mask))


@dataclass
class CountingDenoiser:
    """Wrap a denoiser ``fn(z, t) -> (B, L, V)`` and count evaluations per sequence (rows of z).

    Helper, no paper equation: counts model calls, the cost the first-hitting sampler saves.
    """

    fn: Callable[[Tensor, Tensor], Tensor]
    evaluations: int = 0
    calls: int = 0

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        self.evaluations += z.shape[0]
        return self.fn(z, t)


def mdlm_step(
    z: Tensor,
    x0_probs: Tensor,
    alpha_t: float,
    alpha_s: float,
    mask: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """One reverse step t -> s (alpha_s > alpha_t) of MDLM's sampler on z (B, L).

    Each masked position draws from the categorical over V tokens and the mask with probabilities
    (alpha_s - alpha_t)/(1 - alpha_t) * x0_probs and (1 - alpha_s)/(1 - alpha_t) (Zheng et al.,
    the reverse kernel q(z_s | z_t, x_0) with x_0 replaced by the denoiser); visible tokens stay.
    ``dtype`` is the precision of the Gumbel-max draw (float32 shows the tail deficit).

    Paper: Zheng et al., arXiv:2409.02908v5, background on masked diffusion (MDLM) (the reverse step, reveal
    probability (alpha_s - alpha_t)/(1 - alpha_t)), eq. [unverified].
    """
    _check_tokens(z, "z")
    alpha_t = check_number(alpha_t, "alpha_t", 0.0, 1.0)
    alpha_s = check_number(alpha_s, "alpha_s", alpha_t, 1.0)
    if alpha_t == 1.0:
        raise ValueError("alpha_t must be below 1 (at alpha_t = 1 nothing is masked and the step is undefined)")
    if not isinstance(x0_probs, Tensor) or x0_probs.shape[:2] != z.shape or x0_probs.ndim != 3:
        raise ValueError(f"x0_probs must be a tensor of shape ({z.shape[0]}, {z.shape[1]}, V)")
    if check_integer(mask, "mask") != x0_probs.shape[-1]:
        raise ValueError(f"mask must be the token V = {x0_probs.shape[-1]} (x0_probs' last size), got {mask}")
    reveal = (alpha_s - alpha_t) / (1.0 - alpha_t)
    masked = z == mask
    probs = torch.cat([reveal * x0_probs[masked], torch.full((int(masked.sum()), 1), 1.0 - reveal)], -1)
    z_new = z.clone()
    z_new[masked] = sample_categorical(probs, method="gumbel", dtype=dtype, generator=generator)  # V = stays masked
    return z_new


def sample_mdlm(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    n_samples: int,
    L: int,
    V: int,
    timesteps: Tensor,
    schedule: MaskSchedule,
    *,
    cache: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    reveal_times: Tensor | None = None,
) -> Tensor:
    """The step-by-step sampler from the all-mask sequence on the decreasing grid 1 = t_0 > ... > t_N = 0.

    One denoiser call per step; with ``cache`` a sequence is re-evaluated only when it changed since its
    last evaluation (the denoiser is time-agnostic, so the cached output is exact). If ``reveal_times``
    (n_samples, L) is given, the time s at which each position was revealed is written into it.

    Paper: Zheng et al., arXiv:2409.02908v5, background on masked diffusion (MDLM) (the step-by-step sampler; caching
    as in Zheng et al.), eq. [unverified].
    """
    check_instance(schedule, MaskSchedule, "schedule")
    ts = check_strictly_decreasing(torch.as_tensor(timesteps, dtype=torch.float64))
    if float(ts[0]) != 1.0 or float(ts[-1]) != 0.0:
        raise ValueError(f"timesteps must run from 1 to 0, got {float(ts[0]):g} .. {float(ts[-1]):g}")
    z = torch.full((n_samples, L), V, dtype=torch.long)
    probs = torch.zeros(n_samples, L, V, dtype=torch.float64)
    stale = torch.ones(n_samples, dtype=torch.bool)  # rows whose cached denoiser output is out of date
    for t, s in itertools.pairwise(ts):
        need = stale & (z == V).any(-1) if cache else (z == V).any(-1)
        if bool(need.any()):
            probs[need] = denoiser(z[need], t)
        a_t, a_s = float(schedule.alpha(t)), float(schedule.alpha(s))
        z_new = mdlm_step(z, probs, a_t, a_s, V, generator=generator, dtype=dtype)
        changed = (z_new != z).any(-1)
        if reveal_times is not None:
            reveal_times[(z_new != z)] = float(s)
        stale = changed
        z = z_new
    return z


def first_hitting_time(t: Tensor, n_masked: Tensor, u: Tensor, schedule: MaskSchedule) -> Tensor:
    """The time of the next reveal: alpha^{-1}(1 - u^{1/n} (1 - alpha_t)) (Zheng et al.'s first-hitting sampler).

    P(no reveal of n masked tokens in (s, t)) = ((1 - alpha_s)/(1 - alpha_t))^n; inverting at u gives it.

    Paper: Zheng et al., arXiv:2409.02908v5, the first-hitting sampler (FHS), eq. [unverified].
    """
    check_instance(schedule, MaskSchedule, "schedule")
    a_t = schedule.alpha(t)
    return schedule.alpha_inv(1.0 - u ** (1.0 / n_masked) * (1.0 - a_t))


def sample_first_hitting(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    n_samples: int,
    L: int,
    V: int,
    schedule: MaskSchedule,
    *,
    generator: torch.Generator | None = None,
    reveal_times: Tensor | None = None,
) -> Tensor:
    """The first-hitting sampler: L steps, each revealing one uniformly chosen masked position.

    Exactly one denoiser evaluation per token. If ``reveal_times`` (n_samples, L) is given, the
    first-hitting time of each position is written into it.

    Paper: Zheng et al., arXiv:2409.02908v5, the first-hitting sampler (FHS), eq. [unverified].
    """
    check_instance(schedule, MaskSchedule, "schedule")
    z = torch.full((n_samples, L), V, dtype=torch.long)
    t = torch.ones(n_samples, dtype=torch.float64)
    rows = torch.arange(n_samples)
    for n in range(L, 0, -1):  # n masked tokens left
        u = torch.rand(n_samples, dtype=torch.float64, generator=generator)
        t = first_hitting_time(t, torch.tensor(float(n)), u, schedule)
        # choose one of the n masked positions uniformly: random keys, masked positions only
        keys = torch.rand(n_samples, L, dtype=torch.float64, generator=generator).masked_fill(z != V, -1.0)
        pos = keys.argmax(-1)
        probs = denoiser(z, t)[rows, pos]  # (B, V): the denoiser at the new time, at the chosen position
        z[rows, pos] = sample_categorical(probs, generator=generator)
        if reveal_times is not None:
            reveal_times[rows, pos] = t
    return z


def _state_space(L: int, V: int) -> Tensor:
    """All (V+1)^L partially masked sequences (mask = V), in base-(V+1) order."""
    return torch.tensor(list(itertools.product(range(V + 1), repeat=L)), dtype=torch.long)


def _transitions(law: SequenceLaw) -> tuple[np.ndarray, ...]:
    """Every one-step move (state -> state with some masked positions revealed), with its weights.

    Returns (src, dst, k, n, base): n masked in src, k of them revealed, base = product of the
    denoiser probabilities of the revealed values (the time enters only through a^k (1-a)^(n-k)).
    """
    L, V = law.L, law.V
    states = _state_space(L, V)
    powers = (V + 1) ** torch.arange(L - 1, -1, -1)
    valid = law.consistent(states).to(torch.float64) @ law.probs > 0
    probs = torch.zeros(len(states), L, V, dtype=torch.float64)
    probs[valid] = law.denoise(states[valid])
    states_l, probs_l, powers_l = states.tolist(), probs.tolist(), powers.tolist()  # plain Python: a scalar loop
    src, dst, ks, ns, base = [], [], [], [], []
    for i in torch.nonzero(valid).flatten().tolist():
        z = states_l[i]
        masked = [pos for pos, v in enumerate(z) if v == V]
        options = [range(V + 1)] * len(masked)  # value V = stays masked
        for choice in itertools.product(*options):
            z_new = list(z)
            w, k = 1.0, 0
            for pos, v in zip(masked, choice, strict=True):
                if v < V:
                    z_new[pos] = v
                    w *= probs_l[i][pos][v]
                    k += 1
            src.append(i)
            dst.append(sum(v * p for v, p in zip(z_new, powers_l, strict=True)))
            ks.append(k)
            ns.append(len(masked))
            base.append(w)
    return tuple(np.asarray(a) for a in (src, dst, ks, ns, base))


def exact_law_steps(law: SequenceLaw, timesteps: Tensor, schedule: MaskSchedule) -> np.ndarray:
    """The exact output law (V^L,) of ``sample_mdlm`` on ``timesteps`` with the exact denoiser.

    A Markov chain on the (V+1)^L partially masked states, one transition per step.

    Helper, no paper equation: the exact output law of ``sample_mdlm`` by enumerating its Markov chain.
    """
    check_instance(law, SequenceLaw, "law")
    check_instance(schedule, MaskSchedule, "schedule")
    ts = check_strictly_decreasing(torch.as_tensor(timesteps, dtype=torch.float64))
    src, dst, k, n, base = _transitions(law)
    n_states = (law.V + 1) ** law.L
    mass = np.zeros(n_states)
    mass[-1] = 1.0  # the all-mask state is the last in base-(V+1) order
    for t, s in itertools.pairwise(ts):
        a_t, a_s = float(schedule.alpha(t)), float(schedule.alpha(s))
        a = (a_s - a_t) / (1.0 - a_t)
        w = mass[src] * base * a**k * (1.0 - a) ** (n - k)
        mass = np.bincount(dst, weights=w, minlength=n_states)
    return _to_sequences(law, mass)


def exact_law_first_hitting(law: SequenceLaw) -> np.ndarray:
    """The exact output law (V^L,) of ``sample_first_hitting``: L transitions revealing one position each.

    Helper, no paper equation: the exact output law of ``sample_first_hitting`` by enumeration.
    """
    check_instance(law, SequenceLaw, "law")
    src, dst, k, n, base = _transitions(law)
    one = k == 1
    src, dst, n, base = src[one], dst[one], n[one], base[one]
    n_states = (law.V + 1) ** law.L
    mass = np.zeros(n_states)
    mass[-1] = 1.0
    for _ in range(law.L):
        mass = np.bincount(dst, weights=mass[src] * base / n, minlength=n_states)  # position uniform: 1/n
    return _to_sequences(law, mass)


def _to_sequences(law: SequenceLaw, mass: np.ndarray) -> np.ndarray:
    """Restrict a law on partially masked states to the fully revealed ones, in ``law.sequences`` order."""
    powers = ((law.V + 1) ** torch.arange(law.L - 1, -1, -1)).numpy()
    return mass[law.sequences.numpy() @ powers]


def collision_bound(L: int, timesteps: Tensor, schedule: MaskSchedule) -> float:
    """P(two tokens revealed in the same step) = 1 - L! e_L(pi), pi_k = alpha_{t_{k+1}} - alpha_{t_k}.

    The steps at which positions are revealed have the same law under the step-by-step sampler and the
    exact process, and the two differ only when a step reveals two tokens; so this bounds the total
    variation between ``exact_law_steps`` and p_0.

    Helper, no paper equation: a birthday bound on the step sampler's error, derived here (not in Zheng et al.,
    arXiv:2409.02908v5).
    """
    check_instance(schedule, MaskSchedule, "schedule")
    ts = torch.as_tensor(timesteps, dtype=torch.float64)
    pi = (schedule.alpha(ts[1:]) - schedule.alpha(ts[:-1])).numpy()
    e = np.zeros(L + 1)  # elementary symmetric polynomials e_0..e_L of pi, by the usual recursion
    e[0] = 1.0
    for x in pi:
        e[1:] = e[1:] + x * e[:-1]
    return float(1.0 - math.factorial(L) * e[L])
