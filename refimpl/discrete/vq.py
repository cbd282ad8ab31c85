"""Discrete diffusion over vector-quantised codebook indices (torch, float64).

VQ-DDM (Hu et al., arXiv:2112.01799v2, Sec. 3): an image is cut into patches, each patch is replaced by
the index of its nearest codebook vector (k-means here, a VQ-VAE there), and a discrete diffusion runs on
the indices. The forward kernels, with K codes and (optionally) a mask state m = K:

* uniform (multinomial diffusion, Hoogeboom et al. arXiv:2102.05379v2; VQ-DDM Sec. 3.2):
  Q_t = (1 - beta_t) I + (beta_t / K) 1 1^T on the K codes;
* absorbing: a code moves to the mask with probability gamma_t and the mask stays (D3PM, Austin et al.
  arXiv:2107.03006v3, Sec. 3 / App. A.2);
* mask-and-replace (VQ-Diffusion, Gu et al. arXiv:2111.14822v3, eq. (7)): both; a code keeps its value
  with probability alpha_t = 1 - beta_t - gamma_t, moves to each code with beta_t / K, to the mask with
  gamma_t. Uniform is gamma = 0, absorbing is beta = 0.

Rows are "from" and columns "to": q(x_t | x_{t-1}) = Q_t[x_{t-1}, x_t]. The family is closed under
products: Qbar_t = Q_1 ... Q_t is again mask-and-replace with alphabar_t = prod alpha_i,
1 - gammabar_t = prod (1 - gamma_i), betabar_t = 1 - alphabar_t - gammabar_t (``cumulative_matrix``).
The posterior of one step is Bayes' rule (D3PM eq. (3)):
q(x_{t-1} | x_t, x_0) = Q_t[x_{t-1}, x_t] Qbar_{t-1}[x_0, x_{t-1}] / Qbar_t[x_0, x_t].

Absorbing = masked diffusion: with beta = 0, Qbar_t sends a code to the mask with probability
1 - alphabar_t independently per token, which is chapter 11's forward process with alpha_t -> alphabar_t;
the posterior above is then exactly ``refimpl.discrete.masked.mdlm_step``'s kernel.

Time indices: t = 1..T in refimpl (Qbar_0 = I). diffusers' ``VQDiffusionScheduler`` indexes the same
steps 0..T-1 (its ``timestep`` t is step t + 1 here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._validation import as_float_tensor, check_finite, check_instance, check_integer, check_number
from refimpl.differentiable._optim import Adam
from refimpl.discrete.masked import SequenceLaw

__all__ = [
    "DiscreteSchedule",
    "TokenDenoiser",
    "absorbing_schedule",
    "check_transition_matrix",
    "cumulative_by_product",
    "cumulative_matrix",
    "decode",
    "exact_denoiser",
    "kmeans",
    "patchify",
    "posterior",
    "quantise",
    "reverse_probs",
    "sample_forward",
    "sample_reverse",
    "step_matrix",
    "train_denoiser",
    "uniform_schedule",
    "unpatchify",
    "vq_diffusion_schedule",
]


# --- vector quantisation -------------------------------------------------------------------------------------


def _check_patching(x: Tensor, name: str, patch: int, side: int, shape: tuple[int, ...]) -> Tensor:
    """``x`` a finite real tensor of shape (N, *shape), with ``patch`` a divisor of ``side``."""
    patch, side = check_integer(patch, "patch", 1), check_integer(side, "side", 1)
    if side % patch:
        raise ValueError(f"patch must divide side = {side}, got patch = {patch}")
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    check_finite(as_float_tensor(x, name), name)
    if x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != shape:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    return x


def patchify(images: Tensor, patch: int = 2, side: int = 8) -> Tensor:
    """(N, side*side) row-major images -> (N, (side/patch)^2, patch*patch) patches, row-major over patches.

    Helper, no paper equation: cuts images into patches for the quantiser (Hu et al. (VQ-DDM), arXiv:2112.01799v2,
    Sec. 3).
    """
    _check_patching(images, "images", patch, side, (side * side,))
    n, g = images.shape[0], side // patch
    x = images.reshape(n, g, patch, g, patch)  # (N, row block, row in patch, column block, column in patch)
    return x.permute(0, 1, 3, 2, 4).reshape(n, g * g, patch * patch)


def unpatchify(patches: Tensor, patch: int = 2, side: int = 8) -> Tensor:
    """The inverse of ``patchify``: (N, (side/patch)^2, patch*patch) -> (N, side*side).

    Helper, no paper equation: the inverse of ``patchify``.
    """
    _check_patching(patches, "patches", patch, side, ((side // max(patch, 1)) ** 2, patch * patch))
    n, g = patches.shape[0], side // patch
    x = patches.reshape(n, g, g, patch, patch).permute(0, 1, 3, 2, 4)
    return x.reshape(n, side * side)


def quantise(x: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codebook row (Euclidean) for each row of x (..., d) -> (...) long.

    Paper: Hu et al. (VQ-DDM), arXiv:2112.01799v2, Sec. 3, the nearest-codebook quantiser (k-means here, a VQ-VAE
    there), eq. [unverified].
    """
    x, codebook = _check_vectors(x, "x"), _check_codebook(codebook)
    if x.shape[-1] != codebook.shape[1]:
        raise ValueError(f"x (..., d) and codebook (K, d) must share d, got {tuple(x.shape)}, {tuple(codebook.shape)}")
    return _nearest(x, codebook)


def _check_vectors(x: Tensor, name: str) -> Tensor:
    """A finite floating tensor (..., d) with d >= 1 and whose squared distances cannot overflow."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    check_finite(x, name)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (..., d) with d >= 1, got {tuple(x.shape)}")
    if x.numel() and float(x.abs().max()) > _MAX_COORDINATE:
        raise ValueError(f"{name} has entries above {_MAX_COORDINATE:g}: squared distances would overflow")
    return x


_MAX_COORDINATE = 1e150  # (2 x 1e150)^2 d stays far below the float64 maximum 1.8e308


def _check_codebook(codebook: Tensor) -> Tensor:
    codebook = _check_vectors(codebook, "codebook")
    if codebook.ndim != 2 or codebook.shape[0] < 1:
        raise ValueError(f"codebook must have shape (K >= 1, d), got {tuple(codebook.shape)}")
    return codebook


def _nearest(x: Tensor, codebook: Tensor) -> Tensor:
    d2 = torch.cdist(x.reshape(-1, x.shape[-1]), codebook)
    return d2.argmin(-1).reshape(x.shape[:-1])


def decode(indices: Tensor, codebook: Tensor) -> Tensor:
    """Codebook vectors of the indices (...) -> (..., d).

    Paper: Hu et al. (VQ-DDM), arXiv:2112.01799v2, Sec. 3, indices back to codebook vectors, eq. [unverified].
    """
    codebook = _check_codebook(codebook)
    if not isinstance(indices, Tensor) or indices.dtype != torch.long:
        raise TypeError(f"indices must be a long tensor, got {getattr(indices, 'dtype', type(indices).__name__)}")
    if indices.numel() and not (0 <= int(indices.min()) and int(indices.max()) < codebook.shape[0]):
        raise ValueError(f"indices must lie in [0, K = {codebook.shape[0]})")
    return codebook[indices]


def kmeans(
    x: Tensor, K: int, *, iters: int = 50, generator: torch.Generator | None = None
) -> tuple[Tensor, list[float]]:
    """Lloyd's k-means with k-means++ seeding on x (N, d): the codebook (K, d) and the distortion per iteration.

    Distortion = mean squared distance to the nearest centroid; Lloyd's two steps (assign, average) can
    only lower it, so the returned list is non-increasing. An empty cluster keeps its centroid.

    Helper, no paper equation: Lloyd's k-means with k-means++ seeding, our codebook in place of VQ-DDM's VQ-VAE.
    """
    x = _check_vectors(x, "x")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, d), got {tuple(x.shape)}")
    check_integer(K, "K", 1, x.shape[0])
    check_integer(iters, "iters", 1)
    # k-means++: each new centre drawn with probability proportional to the squared distance to the nearest one
    centres = [x[torch.randint(x.shape[0], (1,), generator=generator)][0]]
    for _ in range(K - 1):
        d2 = torch.cdist(x, torch.stack(centres)).min(-1).values ** 2
        centres.append(x[torch.multinomial(d2 / d2.sum(), 1, generator=generator)][0])
    codebook = torch.stack(centres)
    distortion = []
    for _ in range(iters):
        assign = _nearest(x, codebook)
        distortion.append(float(((x - codebook[assign]) ** 2).sum(-1).mean()))
        counts = torch.bincount(assign, minlength=K).to(x.dtype)
        sums = torch.zeros_like(codebook).index_add_(0, assign, x)
        filled = counts > 0
        codebook = codebook.clone()
        codebook[filled] = sums[filled] / counts[filled, None]
    return codebook, distortion


# --- transition matrices -------------------------------------------------------------------------------------


def check_transition_matrix(Q: Tensor, name: str = "Q", atol: float = 1e-12) -> Tensor:
    """Raise ``ValueError`` unless Q is square, non-negative and every row sums to one (within ``atol``).

    Helper, no paper equation: validation of a row-stochastic matrix.
    """
    if not isinstance(Q, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(Q).__name__}")
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(Q.shape)}")
    if not bool(torch.isfinite(Q).all()) or bool((Q < 0).any()):
        raise ValueError(f"{name} must have finite, non-negative entries")
    worst = float((Q.sum(-1) - 1).abs().max())
    if worst > atol:
        raise ValueError(f"the rows of {name} must sum to one; the worst is off by {worst:.3g} (atol {atol:g})")
    return Q


@dataclass(frozen=True)
class DiscreteSchedule:
    """Per-step replace and mask probabilities beta_t, gamma_t (t = 1..T) on K codes (+ the mask if ``mask``).

    A code keeps its value with alpha_t = 1 - beta_t - gamma_t, moves to each of the K codes with
    beta_t / K and to the mask with gamma_t; the mask (index K) is absorbing.

    Paper: Gu et al. (VQ-Diffusion), arXiv:2111.14822v3, the mask-and-replace kernel, eq. (7) (number from the module
    docstring, [unverified] here).
    """

    K: int
    betas: Tensor
    gammas: Tensor
    mask: bool

    def __post_init__(self) -> None:
        check_integer(self.K, "K", 2)
        if not isinstance(self.mask, bool):
            raise TypeError(f"mask must be a bool, got {type(self.mask).__name__}")
        b = check_finite(as_float_tensor(self.betas, "betas", torch.float64), "betas")
        g = check_finite(as_float_tensor(self.gammas, "gammas", torch.float64), "gammas")
        if b.ndim != 1 or b.shape != g.shape or b.numel() == 0:
            raise ValueError(f"betas and gammas must be 1-D of one length, got {tuple(b.shape)}, {tuple(g.shape)}")
        slack = 1e-15  # a step rebuilt from cumulative values may land a rounding error below 0
        if bool((b < -slack).any() or (g < -slack).any() or (b + g > 1 + slack).any()):
            raise ValueError("betas and gammas must be non-negative with beta_t + gamma_t <= 1 at every step")
        if not self.mask and bool((g != 0).any()):
            raise ValueError("gammas must be zero when the schedule has no mask state (mask=False)")
        object.__setattr__(self, "betas", b.clamp(min=0.0))
        object.__setattr__(self, "gammas", g.clamp(min=0.0))

    @property
    def T(self) -> int:
        """Helper, no paper equation: the number of steps."""
        return self.betas.numel()

    @property
    def n_states(self) -> int:
        """Helper, no paper equation: K codes, plus one for the mask state."""
        return self.K + int(self.mask)

    def cumulative(self, t: int) -> tuple[float, float, float]:
        """(alphabar_t, betabar_t, gammabar_t) in closed form (products of the per-step factors).

        Paper: Gu et al. (VQ-Diffusion), arXiv:2111.14822v3, the closed-form cumulative alphabar, betabar, gammabar,
        eq. [unverified].
        """
        self._check_t(t, lo=0)
        alphas = 1.0 - self.betas[:t] - self.gammas[:t]
        abar = float(torch.prod(alphas))
        gbar = 1.0 - float(torch.prod(1.0 - self.gammas[:t]))
        return abar, max(1.0 - abar - gbar, 0.0), gbar

    def _check_t(self, t: int, lo: int = 1) -> None:
        if not isinstance(t, int) or not lo <= t <= self.T:
            raise ValueError(f"t must be an integer in [{lo}, {self.T}], got {t!r}")


def _mask_replace(K: int, mask: bool, alpha: float, beta: float, gamma: float) -> Tensor:
    """alpha I + (beta / K) 1 1^T on the codes, gamma to the mask, the mask absorbing (VQ-Diffusion eq. (7))."""
    S = K + int(mask)
    Q = torch.zeros(S, S, dtype=torch.float64)
    Q[:K, :K] = alpha * torch.eye(K, dtype=torch.float64) + beta / K
    if mask:
        Q[:K, K] = gamma
        Q[K, K] = 1.0
    return Q


def step_matrix(schedule: DiscreteSchedule, t: int) -> Tensor:
    """Q_t (S, S), rows "from" x_{t-1}, columns "to" x_t; t in 1..T.

    Paper: Gu et al. (VQ-Diffusion), arXiv:2111.14822v3, eq. (7) [unverified]; uniform: Hu et al. (VQ-DDM),
    arXiv:2112.01799v2, Sec. 3.2.
    """
    check_instance(schedule, DiscreteSchedule, "schedule")
    schedule._check_t(t)
    b, g = float(schedule.betas[t - 1]), float(schedule.gammas[t - 1])
    return _mask_replace(schedule.K, schedule.mask, 1.0 - b - g, b, g)


def cumulative_matrix(schedule: DiscreteSchedule, t: int) -> Tensor:
    """Qbar_t = Q_1 ... Q_t in closed form (S, S); Qbar_0 = I.

    Paper: Gu et al. (VQ-Diffusion), arXiv:2111.14822v3, Qbar_t in closed form, eq. [unverified].
    """
    check_instance(schedule, DiscreteSchedule, "schedule")
    return _mask_replace(schedule.K, schedule.mask, *schedule.cumulative(t))


def cumulative_by_product(schedule: DiscreteSchedule, t: int) -> Tensor:
    """Qbar_t as the explicit product of the t step matrices (the check on ``cumulative_matrix``).

    Helper, no paper equation: the explicit product of step matrices, the check on ``cumulative_matrix``.
    """
    check_instance(schedule, DiscreteSchedule, "schedule")
    schedule._check_t(t, lo=0)
    Q = torch.eye(schedule.n_states, dtype=torch.float64)
    for i in range(1, t + 1):
        Q = Q @ step_matrix(schedule, i)
    return Q


def uniform_schedule(K: int, T: int) -> DiscreteSchedule:
    """Uniform kernel with alphabar_t = 1 - t/T decaying linearly, so Qbar_T is exactly uniform.

    beta_t = 1 - alphabar_t / alphabar_{t-1} = 1 / (T - t + 1).

    Paper: Hu et al. (VQ-DDM), arXiv:2112.01799v2, Sec. 3.2 (multinomial diffusion, Hoogeboom et al.
    arXiv:2102.05379v2), eq. [unverified].
    """
    T = check_integer(T, "T", 1)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    return DiscreteSchedule(K, 1.0 / (T - t + 1), torch.zeros(T, dtype=torch.float64), mask=False)


def absorbing_schedule(K: int, T: int) -> DiscreteSchedule:
    """Absorbing kernel with alphabar_t = 1 - t/T: chapter 11's linear mask schedule at time t/T.

    gamma_t = 1 - alphabar_t / alphabar_{t-1} = 1 / (T - t + 1); Qbar_T sends every code to the mask.

    Paper: Austin et al. (D3PM), arXiv:2107.03006v3, Sec. 3 / App. A.2, the absorbing kernel, eq. [unverified].
    """
    T = check_integer(T, "T", 1)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    return DiscreteSchedule(K, torch.zeros(T, dtype=torch.float64), 1.0 / (T - t + 1), mask=True)


def vq_diffusion_schedule(
    K: int,
    T: int = 100,
    alpha_cum_start: float = 0.99999,
    alpha_cum_end: float = 0.000009,
    gamma_cum_start: float = 0.000009,
    gamma_cum_end: float = 0.99999,
) -> DiscreteSchedule:
    """VQ-Diffusion's mask-and-replace schedule (Gu et al. arXiv:2111.14822v3, Sec. 4.1): alphabar_t and
    gammabar_t linear in t between the given ends; per step alpha_t = alphabar_t / alphabar_{t-1},
    1 - gamma_t = (1 - gammabar_t) / (1 - gammabar_{t-1}), beta_t = 1 - alpha_t - gamma_t (checked >= 0).

    Paper: Gu et al. (VQ-Diffusion), arXiv:2111.14822v3, Sec. 4.1, alphabar and gammabar linear in t, eq.
    [unverified].
    """
    T = check_integer(T, "T", 2)
    for name, value in (
        ("alpha_cum_start", alpha_cum_start),
        ("alpha_cum_end", alpha_cum_end),
        ("gamma_cum_start", gamma_cum_start),
        ("gamma_cum_end", gamma_cum_end),
    ):
        check_number(value, name, 0.0, 1.0)
    s = torch.arange(T, dtype=torch.float64) / (T - 1)
    abar = torch.cat([torch.ones(1, dtype=torch.float64), alpha_cum_start + s * (alpha_cum_end - alpha_cum_start)])
    gbar = torch.cat([torch.zeros(1, dtype=torch.float64), gamma_cum_start + s * (gamma_cum_end - gamma_cum_start)])
    if bool((abar[:-1] <= 0).any() or (gbar[:-1] >= 1).any()):
        raise ValueError("alpha_cum_start must be positive and gamma_cum_start below 1 (each step divides by them)")
    alpha = abar[1:] / abar[:-1]
    gamma = 1.0 - (1.0 - gbar[1:]) / (1.0 - gbar[:-1])
    try:
        return DiscreteSchedule(K, 1.0 - alpha - gamma, gamma, mask=True)
    except ValueError as err:
        raise ValueError(f"alpha_cum_start/end and gamma_cum_start/end give no valid schedule: {err}") from err


# --- posterior and reverse step ------------------------------------------------------------------------------


def posterior(schedule: DiscreteSchedule, t: int) -> Tensor:
    """q(x_{t-1} | x_t, x_0) as (K, S, S): [x_0, x_t, x_{t-1}] (D3PM, arXiv:2107.03006v3, eq. (3)).

    Q_t[x_{t-1}, x_t] Qbar_{t-1}[x_0, x_{t-1}] / Qbar_t[x_0, x_t]; rows of impossible pairs
    (Qbar_t[x_0, x_t] = 0, e.g. a visible code other than x_0 under the absorbing kernel) are zero.

    Paper: Austin et al. (D3PM), arXiv:2107.03006v3, eq. (3), the posterior q(x_{t-1} | x_t, x_0) by Bayes' rule.
    """
    check_instance(schedule, DiscreteSchedule, "schedule")
    Q, prev, cum = step_matrix(schedule, t), cumulative_matrix(schedule, t - 1), cumulative_matrix(schedule, t)
    K = schedule.K
    num = prev[:K, None, :] * Q.T[None, :, :]  # [x_0, x_t, x_{t-1}]
    den = cum[:K, :, None]
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


def reverse_probs(schedule: DiscreteSchedule, t: int, x0_probs: Tensor, x_t: Tensor) -> Tensor:
    """p(x_{t-1} | x_t) = sum_{x_0} q(x_{t-1} | x_t, x_0) p(x_0 | x_t): (..., S) from x0_probs (..., K), x_t (...).

    Mass that x0_probs puts on an x_0 from which x_t is impossible is dropped and the rest renormalised
    (for the absorbing kernel: a visible token stays, as in MDLM). At t = 1 this is p(x_0 | x_1) itself.

    Paper: Austin et al. (D3PM), arXiv:2107.03006v3, Sec. 3.3, the x_0-parameterised reverse step, eq. (4), which
    weights the joint q(x_{t-1}, x_t | x_0) (an extra factor q(x_t | x_0) against the sum above); the sum above is
    Gu et al.'s (VQ-Diffusion), arXiv:2111.14822v3, Sec. 4.2, eq. [unverified].
    """
    check_instance(schedule, DiscreteSchedule, "schedule")
    if x0_probs.shape[-1] != schedule.K or x0_probs.shape[:-1] != x_t.shape:
        raise ValueError(f"x0_probs must have shape x_t.shape + (K = {schedule.K},), got {tuple(x0_probs.shape)}")
    post = posterior(schedule, t)  # [x_0, x_t, x_{t-1}]
    cum = cumulative_matrix(schedule, t)[: schedule.K]  # [x_0, x_t]
    w = x0_probs * (cum.T[x_t] > 0)  # drop impossible x_0
    total = w.sum(-1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("x0_probs puts no mass on any x_0 from which x_t is reachable")
    return torch.einsum("...k,k...s->...s", w / total, post[:, x_t])


def sample_forward(schedule: DiscreteSchedule, x0: Tensor, t: int, generator: torch.Generator | None = None) -> Tensor:
    """x_t ~ Cat(Qbar_t[x_0]) for every token of x0 (...) long.

    Paper: Austin et al. (D3PM), arXiv:2107.03006v3, x_t ~ Cat(Qbar_t[x_0]), eq. [unverified].
    """
    check_instance(schedule, DiscreteSchedule, "schedule")
    rows = cumulative_matrix(schedule, t)[x0]
    return torch.multinomial(rows.reshape(-1, schedule.n_states), 1, generator=generator).reshape(x0.shape)


Denoiser = Callable[[Tensor, int], Tensor]


def sample_reverse(
    denoiser: Denoiser, schedule: DiscreteSchedule, n: int, L: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Ancestral sampling x_T -> x_0 with ``denoiser(x_t, t) -> p(x_0 | x_t)`` (n, L, K); returns (n, L) codes.

    x_T starts from the all-mask sequence (with a mask state) or uniform codes (uniform kernel, whose
    Qbar_T is uniform for ``uniform_schedule``). Tokens are drawn independently given x_t.

    Paper: Hu et al. (VQ-DDM), arXiv:2112.01799v2, ancestral sampling of the indices, eq. [unverified].
    """
    check_instance(schedule, DiscreteSchedule, "schedule")
    S = schedule.n_states
    if schedule.mask:
        x = torch.full((n, L), schedule.K, dtype=torch.long)
    else:
        x = torch.randint(schedule.K, (n, L), generator=generator)
    for t in range(schedule.T, 0, -1):
        probs = reverse_probs(schedule, t, denoiser(x, t), x)
        x = torch.multinomial(probs.reshape(-1, S), 1, generator=generator).reshape(n, L)
    if bool((x >= schedule.K).any()):
        raise ValueError("a token is still masked at t = 0 (the denoiser's output did not reveal it)")
    return x


def exact_denoiser(law: SequenceLaw, schedule: DiscreteSchedule) -> Denoiser:
    """p(x_0^l | x_t) for a known joint law on sequences: Bayes over all V^L sequences (V = K).

    Posterior weight of a sequence s: p_0(s) prod_l Qbar_t[s_l, x_t^l]; marginals per position.

    Helper, no paper equation: the exact p(x_0 | x_t) for a known law, by Bayes over all sequences.
    """
    check_instance(law, SequenceLaw, "law")
    check_instance(schedule, DiscreteSchedule, "schedule")
    if law.V != schedule.K:
        raise ValueError(f"the law's vocabulary V = {law.V} must equal the codebook size K = {schedule.K}")
    onehot = torch.nn.functional.one_hot(law.sequences, law.V).to(torch.float64)  # (V^L, L, V)

    def denoise(x_t: Tensor, t: int) -> Tensor:
        cum = cumulative_matrix(schedule, t)
        lik = cum[law.sequences[None, :, :], x_t[:, None, :]].prod(-1)  # (B, V^L)
        w = lik * law.probs
        return torch.einsum("bs,slv->blv", w / w.sum(-1, keepdim=True), onehot)

    return denoise


# --- a small learned denoiser ------------------------------------------------------------------------------


class TokenDenoiser(torch.nn.Module):
    """An MLP from (one-hot x_t, t / T) to logits of x_0 per position: (B, L) long -> (B, L, K) probabilities.

    Helper, no paper equation: a small MLP, the stand-in for VQ-DDM's network (Hu et al. (VQ-DDM),
    arXiv:2112.01799v2).
    """

    def __init__(self, K: int, L: int, n_states: int, T: int, hidden: int = 128) -> None:
        super().__init__()
        for name, value in (("K", K), ("L", L), ("n_states", n_states), ("T", T), ("hidden", hidden)):
            check_integer(value, name, 1)
        self.K, self.L, self.S, self.T = K, L, n_states, T
        self.net = torch.nn.Sequential(
            torch.nn.Linear(L * n_states + 1, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, L * K),
        ).to(torch.float32)  # float32 whatever the default dtype: a learned model, not an exact formula

    def logits(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Helper, no paper equation: the network's logits of x_0 (B, L, K) from x_t (B, L) and t (B,)."""
        h = torch.nn.functional.one_hot(x_t, self.S).to(torch.float32).flatten(1)
        h = torch.cat([h, (t.to(torch.float32) / self.T)[:, None]], -1)
        return self.net(h).reshape(-1, self.L, self.K)

    @torch.no_grad()
    def forward(self, x_t: Tensor, t: int) -> Tensor:
        """Helper, no paper equation: p(x_0 | x_t) (B, L, K) in float64, no gradient: the denoiser for
        ``sample_reverse``.
        """
        tt = torch.full((x_t.shape[0],), float(t))
        return torch.softmax(self.logits(x_t, tt).to(torch.float64), -1)


def train_denoiser(
    tokens: Tensor, schedule: DiscreteSchedule, *, steps: int = 1500, batch: int = 256, lr: float = 2e-3, seed: int = 0
) -> tuple[TokenDenoiser, list[float]]:
    """Fit ``TokenDenoiser`` by cross-entropy on x_0 at uniformly drawn t (the x_0-prediction loss of
    VQ-DDM / VQ-Diffusion, without the variational terms). Returns the model and the loss per step.

    Paper: Hu et al. (VQ-DDM), arXiv:2112.01799v2 and Gu et al. (VQ-Diffusion), arXiv:2111.14822v3, the x_0 cross-
    entropy part of their losses, eq. [unverified].
    """
    check_instance(schedule, DiscreteSchedule, "schedule")
    gen = torch.Generator().manual_seed(seed)
    N, L = tokens.shape
    with torch.random.fork_rng(devices=[]):  # the initialisation of seed, the caller's global RNG left as it was
        torch.manual_seed(seed)
        model = TokenDenoiser(schedule.K, L, schedule.n_states, schedule.T)
    opt = Adam(list(model.parameters()), lr=lr)  # torch.optim's first use imports torch._dynamo (seconds)
    cums = torch.stack([cumulative_matrix(schedule, t) for t in range(1, schedule.T + 1)])  # (T, S, S)
    losses = []
    for _ in range(steps):
        x0 = tokens[torch.randint(N, (batch,), generator=gen)]
        t = torch.randint(1, schedule.T + 1, (batch,), generator=gen)
        rows = cums[t - 1][torch.arange(batch)[:, None], x0]  # (B, L, S): Qbar_t[x_0]
        u = torch.rand(batch, L, 1, generator=gen, dtype=rows.dtype)
        x_t = (rows.cumsum(-1) < u).sum(-1).clamp(max=schedule.n_states - 1)  # inverse-CDF draw from Qbar_t[x_0]
        loss = torch.nn.functional.cross_entropy(model.logits(x_t, t).flatten(0, 1), x0.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses
