"""Invertible sampling for compressed sensing (IDM): a reversible coupling of DDIM + range-null-space steps.

Compressed sensing observes y = A x_0 with A (m, d), m < d. A range-null-space step (Wang et al. 2023, DDNM,
arXiv:2212.00490v2, Eq. 7-8) keeps the null-space part of an estimate and replaces its range-space part by the
measurements,

    x <- x - A^+ (A x - y),   A^+ = A^T (A A^T)^-1,   so that A x = y exactly,                       (1)

which needs A A^T invertible (full row rank); for orthonormal rows A^+ = A^T. IDM (Chen et al. 2024,
arXiv:2403.17006v2, Sec. 3.3, Eq. 11-12; code ``backprop.py``) makes every sampling step F (here: DDIM with the
x0-prediction projected by (1)) a reversible coupling of two streams,

    y_1 = (1 - v) F(x_1) + v x_2,   y_2 = x_1;      inverse:   x_1 = y_2,   x_2 = (y_1 - (1 - v) F(y_2)) / v,     (2)

with a learnable v (initialised 0.5), so that backpropagation recomputes each layer's input from its output instead
of storing activations: memory independent of depth (``reversible_gradients``, measured with
``refimpl.differentiable.adjoint.SavedTensorCounter``). The chain starts from (x_T, x_T) and its output is x_1
projected once more by (1), so the measurements hold exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from refimpl._validation import (
    as_finite_float,
    check_callable,
    check_finite,
    check_float_tensors,
    check_number,
    check_tensor,
)
from refimpl.models import DiffusionModel, check_model, predict_x0_eps
from refimpl.samplers import ddim_step

__all__ = [
    "coupling_forward",
    "coupling_inverse",
    "cs_ddim_step",
    "range_null_projector",
    "reversible_chain",
    "reversible_gradients",
]

Layer = Callable[[Tensor], Tensor]


def _check_coupling(a: Tensor, b: Tensor, F: Layer, v: Tensor | float, names: tuple[str, str]) -> None:
    """The two streams are floating tensors of one shape, F is callable and v a finite nonzero number."""
    check_float_tensors(**{names[0]: a, names[1]: b})
    check_finite(a, names[0])
    check_finite(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    check_callable(F, "F")
    if as_finite_float(v.detach() if isinstance(v, Tensor) else v, "v") == 0.0:
        raise ValueError("v must be nonzero: the coupling's inverse divides by v")


def _check_sequence(value: object, name: str) -> None:
    if isinstance(value, str | Tensor) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list or tuple, got {type(value).__name__}")


def coupling_forward(x1: Tensor, x2: Tensor, F: Layer, v: Tensor | float) -> tuple[Tensor, Tensor]:
    """Eq. (2), forward: (y_1, y_2) = ((1 - v) F(x_1) + v x_2, x_1); v must be nonzero (else not invertible)."""
    _check_coupling(x1, x2, F, v, ("x1", "x2"))
    return (1 - v) * F(x1) + v * x2, x1


def coupling_inverse(y1: Tensor, y2: Tensor, F: Layer, v: Tensor | float) -> tuple[Tensor, Tensor]:
    """Eq. (2), inverse: (x_1, x_2) = (y_2, (y_1 - (1 - v) F(y_2)) / v); v must be nonzero."""
    _check_coupling(y1, y2, F, v, ("y1", "y2"))
    return y2, (y1 - (1 - v) * F(y2)) / v


def range_null_projector(A: Tensor, rcond: float = 1e-10) -> Callable[[Tensor, Tensor], Tensor]:
    """Eq. (1) as a function proj(x, y) of a batch x (B, d) and measurements y (B, m).

    Raises ValueError when A A^T is singular (rank-deficient A: no x satisfies every measurement in general), judged
    by its smallest singular value below ``rcond`` times the largest.
    """
    A = check_tensor(A, "A", ndim=2)
    rcond = check_number(rcond, "rcond", 0.0, 1.0)
    if A.shape[0] > A.shape[1]:
        raise ValueError(f"A must be an (m, d) matrix with m <= d, got shape {tuple(A.shape)}")
    gram = A @ A.T
    s = torch.linalg.svdvals(gram)
    if not float(s[-1]) > rcond * float(s[0]):
        raise ValueError(f"A A^T is singular (singular values {s.tolist()}): A must have full row rank")
    pinv = A.T @ torch.linalg.inv(gram)  # A^+ (d, m)

    def proj(x: Tensor, y: Tensor) -> Tensor:
        return x - (x @ A.T - y) @ pinv.T

    return proj


def cs_ddim_step(
    model: DiffusionModel, timesteps: Tensor, i: int, proj: Callable[[Tensor, Tensor], Tensor], y: Tensor
) -> Layer:
    """F_i: the DDIM step timesteps[i] -> timesteps[i+1] with the model's x0 replaced by proj(x0, y) (DDNM Eq. 8)."""
    check_model(model)
    timesteps = model.schedule.check_t(torch.as_tensor(timesteps, dtype=torch.float64), "timesteps")
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(timesteps) - 1:
        raise ValueError(f"i must be a step index in 0..{len(timesteps) - 2}, got {i!r}")
    if not callable(proj):
        raise TypeError(f"proj must be callable, got {type(proj).__name__}")
    values = model.schedule(timesteps)

    def F(x: Tensor) -> Tensor:
        x0, eps = predict_x0_eps(model, x, timesteps[i], values[i])
        return ddim_step(proj(x0, y), eps, values[i + 1])

    return F


def _check_chain(layers: Sequence[Layer], vs: Sequence[Tensor], x: Tensor) -> None:
    _check_sequence(layers, "layers")
    _check_sequence(vs, "vs")
    if len(layers) != len(vs):
        raise ValueError(f"layers and vs must have one length, got {len(layers)} and {len(vs)}")
    for i, (F, v) in enumerate(zip(layers, vs, strict=True)):
        check_callable(F, f"layers[{i}]")
        if as_finite_float(v.detach() if isinstance(v, Tensor) else v, f"vs[{i}]") == 0.0:
            raise ValueError(f"vs[{i}] must be nonzero: the coupling's inverse divides by it")
    check_float_tensors(x=x)
    check_finite(x, "x")


def reversible_chain(layers: Sequence[Layer], vs: Sequence[Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Apply the couplings (2) from (x, x); returns the final pair (x_1, x_2)."""
    _check_chain(layers, vs, x)
    x1, x2 = x, x
    for F, v in zip(layers, vs, strict=True):
        x1, x2 = coupling_forward(x1, x2, F, v)
    return x1, x2


def reversible_gradients(
    layers: Sequence[Layer],
    vs: Sequence[Tensor],
    params: Sequence[Tensor],
    x: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """Loss, dL/dx, dL/dv_i and dL/dparams by reversible backpropagation: the forward keeps no graph; going back,
    each layer's input is recomputed by the inverse (2) and its vector-Jacobian product taken on the spot.
    ``loss_fn(x_1, x_2)`` is a scalar function of the final pair; ``layers`` close over ``params``."""
    _check_chain(layers, vs, x)
    check_float_tensors(**{f"vs[{i}]": v for i, v in enumerate(vs)})
    _check_sequence(params, "params")
    check_float_tensors(**{f"params[{i}]": p for i, p in enumerate(params)})
    check_callable(loss_fn, "loss_fn")
    with torch.no_grad():
        y1, y2 = reversible_chain(layers, vs, x)
    with torch.enable_grad():
        y1g, y2g = y1.requires_grad_(True), y2.requires_grad_(True)
        loss = loss_fn(y1g, y2g)
        g1, g2 = torch.autograd.grad(loss, [y1g, y2g], allow_unused=True)
    g1 = torch.zeros_like(y1) if g1 is None else g1
    g2 = torch.zeros_like(y2) if g2 is None else g2
    y1, y2 = y1.detach(), y2.detach()
    grad_v: list[Tensor] = [torch.zeros(()) for _ in vs]
    grad_p = [torch.zeros_like(p) for p in params]
    for i in range(len(layers) - 1, -1, -1):
        F, v = layers[i], vs[i]
        with torch.no_grad():
            x1, x2 = coupling_inverse(y1, y2, F, v)
        with torch.enable_grad():
            x1g, x2g = x1.requires_grad_(True), x2.requires_grad_(True)
            vg = v.detach().requires_grad_(True)
            out1, out2 = coupling_forward(x1g, x2g, F, vg)
            grads = torch.autograd.grad([out1, out2], [x1g, x2g, vg, *params], [g1, g2], allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, [x1, x2, vg, *params], strict=True)]
        g1, g2, grad_v[i] = grads[0], grads[1], grads[2]
        grad_p = [a + b for a, b in zip(grad_p, grads[3:], strict=True)]
        y1, y2 = x1.detach(), x2.detach()
    return loss.detach(), g1 + g2, grad_v, grad_p  # both streams start at x
