"""Exact discrete optimal transport with POT, and the minibatch OT coupling of OT-CFM.

``ot_plan`` solves min_P <P, M> over P 1 = a, P^T 1 = b, P >= 0 with POT's network simplex ``ot.emd``
(Bonneel et al. 2011; Flamary et al. 2021, JMLR 22(78)), after checking the marginals and the cost matrix.
``minibatch_ot_pairs`` is the coupling of OT-CFM (Tong et al. 2024, arXiv:2302.00482v4, Sec. 3.2 and Alg. 3;
Pooladian et al. 2023, arXiv:2304.14772v2): for two minibatches of equal size n with uniform weights the exact plan
for the squared Euclidean cost is a permutation matrix / n (Birkhoff), so the pairs are (x0_i, x1_sigma(i)).
``torchcfm``'s ``OTPlanSampler.sample_plan`` instead draws n index pairs from the plan with replacement
(``replace=True`` by default): the same law of a pair, but a batch that repeats some pairs and drops others;
with ``replace=False`` it returns this permutation in a random order (checked in ``tests/test_transport_ot.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from refimpl._validation import as_float_tensor, check_finite, check_integer, check_probability_vector, check_tensor

__all__ = ["check_cost_matrix", "minibatch_ot_pairs", "ot_plan"]


def check_cost_matrix(cost: Tensor, n: int, m: int, name: str = "cost") -> Tensor:
    """Raise ValueError naming ``name`` unless ``cost`` is a finite (n, m) matrix."""
    if not isinstance(name, str):
        raise TypeError(f"name (of the cost, for messages) must be a string, got {type(name).__name__}")
    n, m = check_integer(n, "n", 0), check_integer(m, "m", 0)
    if not isinstance(cost, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({n}, {m}), got {type(cost).__name__}")
    if tuple(cost.shape) != (n, m):
        raise ValueError(f"{name} must have shape ({n}, {m}) to match the weights, got {tuple(cost.shape)}")
    return check_finite(as_float_tensor(cost, name), name)


def ot_plan(cost: Tensor, a: Tensor | None = None, b: Tensor | None = None) -> Tensor:
    """The exact OT plan (n, m) for ``cost`` between the weights a (n,) and b (m,) (uniform if None), float64.

    Weights must be non-negative and sum to one (to 1e-9); POT's ``ot.emd`` solves the linear program exactly.
    """
    if not isinstance(cost, Tensor) or cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D tensor (n, m), got {getattr(cost, 'shape', type(cost).__name__)}")
    n, m = cost.shape
    a = torch.full((n,), 1.0 / n, dtype=torch.float64) if a is None else torch.as_tensor(a, dtype=torch.float64)
    b = torch.full((m,), 1.0 / m, dtype=torch.float64) if b is None else torch.as_tensor(b, dtype=torch.float64)
    check_probability_vector(a, "a")
    check_probability_vector(b, "b")
    check_cost_matrix(cost, a.numel(), b.numel())
    import ot  # after the checks: bad input fails fast, without the import (seconds)

    plan = ot.emd(a.numpy(), b.numpy(), np.ascontiguousarray(cost.detach().to(torch.float64).numpy()))
    return torch.from_numpy(plan)


def minibatch_ot_pairs(x0: Tensor, x1: Tensor) -> Tensor:
    """sigma such that (x0[i], x1[sigma[i]]) is the exact OT pairing of two equal minibatches (B, ...) for |x0 - x1|^2.

    Tong et al. 2024 (arXiv:2302.00482v4), Alg. 3: the plan of ``ot.emd`` with uniform weights on the squared
    Euclidean cost of the flattened points, read as a permutation.
    """
    x0, x1 = check_tensor(x0, "x0"), check_tensor(x1, "x1")
    if x0.shape != x1.shape or x0.ndim < 2:
        raise ValueError(
            f"x0 and x1 must be minibatches of the same shape (B, ...), got {tuple(x0.shape)}, {tuple(x1.shape)}"
        )
    a, b = x0.reshape(x0.shape[0], -1).to(torch.float64), x1.reshape(x1.shape[0], -1).to(torch.float64)
    cost = torch.cdist(a, b) ** 2  # (B, B) squared distances, as torchcfm's get_map
    plan = ot_plan(cost)
    return plan.argmax(dim=1)  # each row holds a single entry 1/B
