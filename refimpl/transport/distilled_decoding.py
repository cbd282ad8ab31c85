"""Distilled Decoding's deterministic noise -> token map: flow matching onto a finite codebook (Liu et al. 2024,
arXiv:2412.17153v1, Sec. 3.1-3.2).

For one token, the autoregressive model gives a categorical p over V codebook embeddings c_v (V, d). Flow matching
from N(0, I) to the discrete law sum_v p_v delta_{c_v} along the straight path x_t = (1 - t) x_0 + t eps (refimpl's
time: t = 1 is the noise; DD writes the reversed time) has the closed-form marginal velocity

    w_v(x, t) = softmax_v( log p_v - |x - (1 - t) c_v|^2 / (2 t^2) )         (posterior P(x_0 = c_v | x_t = x))
    u_t(x) = alpha_t' E[x_0 | x] + sigma_t' E[eps | x] = (x - sum_v w_v c_v) / t,

since E[eps | x] = (x - (1 - t) E[x_0 | x]) / t (``refimpl.transport.paths``; the finite-target case of Lipman et al.
2023, arXiv:2210.02747v2, Eq. 8; DD's paper writes it in its own time as (E[x_1 | x_t] - x_t) / (1 - t)). The score
grad log p_t(x) = -(x - (1 - t) sum_v w_v c_v) / t^2 is the gradient of a log-sum-exp (checked against autograd).
The flow pushes N(0, I) exactly onto the categorical: each noise eps ends at one codebook entry, the token. DD chains
these maps token by token (each token's categorical conditioned on the tokens decoded so far), so the noise tokens fix
the whole sequence; a network trained on (noise, sequence) pairs then jumps along the map in one step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._validation import (
    as_float_tensor,
    check_callable,
    check_finite,
    check_instance,
    check_real_tensor,
    check_tensor,
)

__all__ = ["CodebookFlow", "autoregressive_decode", "codebook_posterior", "codebook_velocity"]


def _check_probs(probs: Tensor, V: int, B: int | None = None) -> Tensor:
    """probs (V,) or (B, V): non-negative rows summing to one, else ValueError naming ``probs``."""
    probs = check_finite(as_float_tensor(probs, "probs"), "probs")
    if probs.shape[-1] != V or probs.ndim not in (1, 2) or (probs.ndim == 2 and B is not None and probs.shape[0] != B):
        raise ValueError(f"probs must have shape ({V},) or (B, {V}), got {tuple(probs.shape)}")
    if bool((probs < 0).any()) or bool(((probs.sum(-1) - 1.0).abs() > 1e-9).any()):
        raise ValueError("probs must be non-negative and sum to 1 over the codebook")
    return probs


def _check_time(t: object) -> Tensor:
    t = check_finite(as_float_tensor(t, "t"), "t")
    if bool((t <= 0).any()) or bool((t > 1).any()):
        raise ValueError(
            f"t must lie in (0, 1] (0 is the codebook itself), got values in [{float(t.min()):g}, {float(t.max()):g}]"
        )
    return t


def codebook_posterior(x: Tensor, t: object, codebook: Tensor, probs: Tensor) -> Tensor:
    """w_v(x, t) = P(x_0 = c_v | x_t = x) on the straight path: (B, V). t a number or (B,) in (0, 1]."""
    x, codebook = check_real_tensor(x, "x", 2), check_real_tensor(codebook, "codebook", 2)
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(f"x must have shape (B, {codebook.shape[1]}) like the codebook's rows, got {tuple(x.shape)}")
    t = _check_time(t).to(x.dtype).reshape(-1, 1)
    probs = _check_probs(probs, codebook.shape[0], x.shape[0])
    return _posterior(x, t, codebook.to(x.dtype), torch.log(probs.to(x.dtype)))


def _posterior(x: Tensor, t: Tensor | float, cb: Tensor, log_p: Tensor) -> Tensor:
    """``codebook_posterior`` on checked inputs: t a number or (B, 1), cb (V, d) and log_p = log probs in x's dtype
    (the flow's inner loop calls it four times a step, after checking its inputs once)."""
    a = 1.0 - t  # alpha_t; -|x - a c_v|^2 / (2 t^2) up to the term -|x|^2 / (2 t^2), the same for every v
    logits = log_p + (a * (x @ cb.T) - 0.5 * a**2 * (cb**2).sum(-1)) / t**2  # (B, V)
    return torch.softmax(logits, -1)


def codebook_velocity(x: Tensor, t: object, codebook: Tensor, probs: Tensor) -> Tensor:
    """u_t(x) = (x - E[x_0 | x]) / t, the exact flow-matching velocity to a categorical over the codebook: (B, d)."""
    w = codebook_posterior(x, t, codebook, probs)
    tt = _check_time(t).to(x.dtype).reshape(-1, 1)
    return (x - w @ codebook.to(x.dtype)) / tt


@dataclass(frozen=True)
class CodebookFlow:
    """The probability-flow map of one token: noise (B, d) -> token index (B,) under probs (V,) or (B, V)."""

    codebook: Tensor
    t_end: float = 1e-2
    n_steps: int = 64

    def velocity(self, x: Tensor, t: object, probs: Tensor) -> Tensor:
        return codebook_velocity(x, t, self.codebook, probs)

    def transport(self, noise: Tensor, probs: Tensor, t_end: float | None = None) -> Tensor:
        """x at t_end of the flow started from x_1 = noise: (B, d).

        Integrated in s = log t, where dx/ds = t u_t(x) = x - E[x_0 | x] stays bounded as the posterior sharpens,
        by classical RK4 with ``n_steps`` equal steps from s = 0 to log t_end (checked against DOP853 in the tests).
        """
        t_end = self.t_end if t_end is None else t_end
        _check_time(t_end)
        probs = _check_probs(probs, self.codebook.shape[0], noise.shape[0])
        cb, log_p = self.codebook.to(noise.dtype), torch.log(probs.to(noise.dtype))

        def f(x: Tensor, s: float) -> Tensor:  # dx/ds = x - E[x_0 | x_t], t = e^s
            return x - _posterior(x, math.exp(s), cb, log_p) @ cb

        x, h = noise, math.log(t_end) / self.n_steps
        for i in range(self.n_steps):
            s = i * h
            k1 = f(x, s)
            k2 = f(x + 0.5 * h * k1, s + 0.5 * h)
            k3 = f(x + 0.5 * h * k2, s + 0.5 * h)
            k4 = f(x + h * k3, s + h)
            x = x + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return x

    def decode(self, noise: Tensor, probs: Tensor) -> Tensor:
        """The token of each noise: the codebook entry the flow reaches (the posterior's argmax at t_end): (B,)."""
        x = self.transport(noise, probs)
        return codebook_posterior(x, self.t_end, self.codebook.to(torch.float64), probs).argmax(-1)

    def one_step_euler(self, noise: Tensor, probs: Tensor) -> Tensor:
        """One Euler step from t = 1 to 0: x_0 = eps - u_1(eps) = sum_v p_v c_v, the codebook mean for every noise."""
        return noise - codebook_velocity(noise, 1.0, self.codebook.to(noise.dtype), probs)


def autoregressive_decode(noise: Tensor, flow: CodebookFlow, conditional: Callable[[Tensor], Tensor]) -> Tensor:
    """Decode a sequence token by token from noise tokens (B, L, d): token i = the flow map of noise[:, i] under
    ``conditional(prefix)`` (B, V), the AR model's categorical given the tokens prefix (B, i). Returns (B, L)."""
    check_instance(flow, CodebookFlow, "flow")
    check_callable(conditional, "conditional")
    noise = check_tensor(noise, "noise")
    if noise.ndim != 3 or noise.shape[-1] != flow.codebook.shape[1]:
        raise ValueError(f"noise must have shape (B, L, {flow.codebook.shape[1]}), got {tuple(noise.shape)}")
    B, L, _ = noise.shape
    tokens = torch.zeros(B, 0, dtype=torch.long)
    for i in range(L):
        probs = conditional(tokens)
        tokens = torch.cat([tokens, flow.decode(noise[:, i], probs)[:, None]], dim=1)
    return tokens
