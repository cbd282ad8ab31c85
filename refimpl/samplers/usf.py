"""USF/S3: a unified per-step decision space of exponential-integrator solvers, with exact NFE accounting.

Liu et al. (2024), "A Unified Sampling Framework for Solver Searching of Diffusion Probabilistic Models",
arXiv:2312.07243v2, Sec. 3 [equation numbers unverified]. Every step s -> t (h = lambda_t - lambda_s) is the
exponential integral of the model output m (data prediction x0 or noise prediction eps) in lambda, with m replaced by
its Taylor polynomial at s:

    x_t = c x_s + k_t sum_{n < K} m^(n)(lambda_s) h^{n+1} phi_{n+1}(z),
    (c, k_t, z) = (sigma_t / sigma_s, alpha_t, -h) for x0,  (alpha_t / alpha_s, -sigma_t, h) for eps,

and the derivatives m^(n) estimated by differentiating the Lagrange interpolant of the last q outputs. The decisions
of one step (``StepChoice``) are the prediction type, the Taylor order K, the derivative-estimation order
(q = K - 1 + derivative_order points: 1 gives the interpolant of degree K - 1 itself, 2 one point more, whose
derivatives are one order more accurate and whose Taylor polynomial is then truncated), and whether a corrector
re-does the step with the output at its end added (UniC with the solved coefficients, Zhao et al. 2023,
arXiv:2302.04867v4 Eq. 7-8). The whole solver (``SolverSchedule``) adds the timesteps and the analytical first step
(AFS: the first output is x0 = 0 or x0 = the data mean, not a model call).

NFE accounting (``nfe``): a step calls the model once at its start, except the first with AFS; a corrector needs the
output at the step's end, which the next step needs anyway, so it is free except at the last step, where it costs
one call. An NFE budget B therefore fixes the number of steps n = B + [AFS] - [last corrector] (``steps_for_budget``).
With q = K (derivative order 1) the step is the multistep engine's exact Lagrange step (``multistep_weights``), so
(x0, order 1, no corrector) is DDIM and (x0, order 2, corrector) is UniPC-2 with solved coefficients (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import (
    as_float_tensor,
    check_finite_result,
    check_float_tensors,
    check_integer,
    check_kinds,
    check_strictly_decreasing,
)
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.samplers._exponential import phi
from refimpl.samplers.multistep import SETTINGS, multistep_weights
from refimpl.schedules import ScheduleValues

__all__ = [
    "AFS_CHOICES",
    "PREDICTIONS",
    "SolverSchedule",
    "StepChoice",
    "sample_usf",
    "steps_for_budget",
    "taylor_integrals",
    "usf_step",
]

PREDICTIONS = ("x0", "eps")
#: Analytical first step: none, x0 = 0, or x0 = the data mean (USF's evo_search.yml: no_afs, zero_x0, average_x0).
AFS_CHOICES = ("none", "zero_x0", "average_x0")
MAX_TAYLOR_ORDER = 3
DERIVATIVE_ORDERS = (1, 2)
#: The engine's exact-Lagrange rows for each prediction type (B(h) cancels; arXiv:2302.04867v4 Eq. 7-8).
_EXACT = {"x0": SETTINGS["dpm_solver_pp_exact"], "eps": SETTINGS["deis_logrho"]}


@dataclass(frozen=True)
class StepChoice:
    """The decisions of one step: prediction type, Taylor order K, derivative order (q = K - 1 + it), corrector."""

    prediction: str = "x0"
    taylor_order: int = 1
    derivative_order: int = 1
    corrector: bool = False

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        k = self.taylor_order
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TAYLOR_ORDER:
            raise ValueError(f"taylor_order must be an integer in 1..{MAX_TAYLOR_ORDER}, got {k!r}")
        if self.derivative_order not in DERIVATIVE_ORDERS or isinstance(self.derivative_order, bool):
            raise ValueError(f"derivative_order must be one of {DERIVATIVE_ORDERS}, got {self.derivative_order!r}")
        if not isinstance(self.corrector, bool):
            raise ValueError(f"corrector must be a bool, got {self.corrector!r}")


@dataclass(frozen=True)
class SolverSchedule:
    """A decoded USF solver: ``timesteps`` (n + 1,) decreasing, one ``StepChoice`` per step, and the AFS choice."""

    timesteps: Tensor
    steps: tuple[StepChoice, ...]
    afs: str = "none"

    def __post_init__(self) -> None:
        check_float_tensors(timesteps=self.timesteps)
        check_strictly_decreasing(self.timesteps, "timesteps")
        check_kinds((tuple, list), steps=self.steps)
        if len(self.steps) != len(self.timesteps) - 1 or not all(isinstance(c, StepChoice) for c in self.steps):
            raise ValueError(f"steps must hold one StepChoice per step ({len(self.timesteps) - 1}), got {self.steps}")
        if self.afs not in AFS_CHOICES:
            raise ValueError(f"afs must be one of {AFS_CHOICES}, got {self.afs!r}")

    @property
    def nfe(self) -> int:
        """Model calls: one per step, none for an AFS first step, one more for a corrector at the last step."""
        return len(self.steps) - (self.afs != "none") + int(self.steps[-1].corrector)


def steps_for_budget(nfe: int, afs: str = "none", last_corrector: bool = False) -> int:
    """The number of steps n that spends exactly ``nfe`` model calls: n = nfe + [AFS] - [last corrector]."""
    if afs not in AFS_CHOICES:
        raise ValueError(f"afs must be one of {AFS_CHOICES}, got {afs!r}")
    if isinstance(nfe, bool) or not isinstance(nfe, int):
        raise ValueError(f"nfe must be an integer, got {nfe!r}")
    n = nfe + (afs != "none") - int(last_corrector)
    if n < 1:
        raise ValueError(f"an NFE budget of {nfe} cannot be met with afs={afs!r}, last_corrector={last_corrector}")
    return n


def taylor_integrals(nodes: Tensor, a: Tensor, b: Tensor, z: Tensor | float, n_terms: int) -> Tensor:
    """(b - a) int_0^1 e^{(1 - theta) z} T_j(theta) dtheta for T_j the Taylor polynomial at a, of ``n_terms`` terms,
    of the Lagrange basis polynomial l_j of ``nodes`` (q,): returns (q,).

    With theta_k = (u_k - a) / (b - a), l_j(theta) = sum_m C_mj theta^m with C the inverse of the Vandermonde matrix
    V_km = theta_k^m; powers of theta are powers of (u - a), so truncating at m < n_terms is the Taylor
    truncation, and int_0^1 theta^m e^{(1 - theta) z} dtheta = m! phi_{m+1}(z). With n_terms = q this is
    ``lagrange_integrals`` (tested). Distinct finite nodes, a != b and a finite z are needed (``ValueError``)."""
    check_float_tensors(nodes=nodes, a=a, b=b)
    if nodes.ndim != 1 or a.ndim != 0 or b.ndim != 0:
        raise ValueError(f"nodes must be 1-D and a, b numbers (0-d), got shapes {nodes.shape}, {a.shape}, {b.shape}")
    q = nodes.numel()
    check_integer(n_terms, "n_terms", 1, q)
    z = as_float_tensor(z, "z", nodes.dtype)
    length = b - a
    theta = (nodes - a) / length
    C, info = torch.linalg.inv_ex(theta[:, None] ** torch.arange(q, dtype=theta.dtype))  # (m, j)
    if int(info) != 0:
        raise ValueError("the nodes must be distinct and a != b (the Vandermonde matrix is singular)")
    z = torch.as_tensor(z, dtype=theta.dtype)
    moments = torch.stack([math.factorial(m) * phi(m + 1, z) for m in range(n_terms)])
    return check_finite_result(length * (moments @ C[:n_terms]), "that nodes, a, b and z are finite")


def usf_step(
    x: Tensor, points: Sequence[tuple[Tensor, Tensor]], v_s: ScheduleValues, v_t: ScheduleValues, prediction: str,
    n_terms: int,
) -> Tensor:  # fmt: skip
    """One USF step s -> t: ``points`` = [(lambda_j, m_j)], points[0] at s, m of kind ``prediction``; the Taylor
    polynomial of ``n_terms`` terms at s of their interpolant is integrated exactly. n_terms = len(points) is the
    multistep engine's exact step (its weights are used as they are)."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x)
    check_kinds((list, tuple), points=points)
    if not isinstance(prediction, str) or prediction not in _EXACT:
        raise ValueError(f"prediction must be one of {tuple(_EXACT)}, got {prediction!r}")
    check_integer(n_terms, "n_terms", 1, max(1, len(points)))
    if not points:
        raise ValueError("points must hold at least the model output at s")
    nodes = torch.stack([torch.as_tensor(u) for u, _ in points])
    if n_terms == len(points):
        c, k_t, w = multistep_weights(_EXACT[prediction], nodes, v_s, v_t)
    else:  # the engine's transfer (c, k_t), then the truncated weights
        c, k_t, _ = multistep_weights(_EXACT[prediction], nodes[:1], v_s, v_t)
        h = v_t.lambda_ - v_s.lambda_
        w = taylor_integrals(nodes, v_s.lambda_, v_t.lambda_, -h if prediction == "x0" else h, n_terms)
    return expand_like(c, x) * x + expand_like(k_t, x) * sum(
        expand_like(w_j, x) * m for w_j, (_, m) in zip(w, points, strict=True)
    )


def _afs_output(afs: str, x: Tensor, v: ScheduleValues, data_mean: Tensor | None) -> tuple[Tensor, Tensor]:
    """(x0, eps) of the analytical first step: x0 = 0 or the data mean, eps = (x - alpha x0) / sigma."""
    if afs == "zero_x0":
        x0 = torch.zeros_like(x)
    else:
        if data_mean is None:
            raise ValueError("afs='average_x0' needs data_mean")
        x0 = torch.as_tensor(data_mean, dtype=x.dtype).expand_as(x)
    return x0, (x - v.alpha * x0) / v.sigma


def sample_usf(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    steps: StepChoice | Sequence[StepChoice] | None = None,
    prediction: str = "x0",
    taylor_order: int = 1,
    derivative_order: int = 1,
    corrector: bool = False,
    afs: str = "none",
    data_mean: Tensor | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Run the USF solver with ``steps`` (one ``StepChoice`` per step, or one for every step; None: the
    ``StepChoice(prediction, taylor_order, derivative_order, corrector)`` of the keywords for every step).

    Spends exactly ``SolverSchedule(timesteps, steps, afs).nfe`` model calls. The predictor of step i uses the
    last q = min(K - 1 + derivative_order, points known) outputs and min(K, q) Taylor terms; its corrector uses
    [s, t, the K - 1 before s] with all terms (UniC). A later step sees the output at the predicted point.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    n = len(ts) - 1
    if steps is None:
        steps = StepChoice(prediction, taylor_order, derivative_order, corrector)
    choices = tuple([steps] * n) if isinstance(steps, StepChoice) else tuple(steps)
    solver = SolverSchedule(ts, choices, afs)
    values = model.schedule(ts)
    points: list[tuple[Tensor, Tensor, Tensor]] = []  # (lambda, x0, eps), newest first
    out = _afs_output(afs, x, values[0], data_mean) if afs != "none" else predict_x0_eps(model, x, ts[0], values[0])
    for i, choice in enumerate(solver.steps):
        v_s, v_t = values[i], values[i + 1]
        pick = 1 if choice.prediction == "x0" else 2
        points = [(v_s.lambda_, *out), *points][: MAX_TAYLOR_ORDER + 1]
        q = min(choice.taylor_order - 1 + choice.derivative_order, len(points))
        chosen = [(p[0], p[pick]) for p in points[:q]]
        x_next = usf_step(x, chosen, v_s, v_t, choice.prediction, min(choice.taylor_order, q))
        if i < n - 1 or choice.corrector:
            out = predict_x0_eps(model, x_next, ts[i + 1], v_t)
        if choice.corrector:  # UniC: the step again with the output at its end added (free but at the last step)
            k = min(choice.taylor_order, len(points))
            corrected = [chosen[0], (v_t.lambda_, out[pick - 1]), *[(p[0], p[pick]) for p in points[1:k]]]
            x_next = usf_step(x, corrected, v_s, v_t, choice.prediction, len(corrected))
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, points[0][1]))
        x = x_next
    return x


register(
    SamplerSpec(
        name="usf_taylor2_d2",
        sample=sample_usf,
        order=2,
        stochastic=False,
        paper="liu2024usf",
        equation="arXiv:2312.07243v2 Sec. 3 [unverified]: x0 prediction, Taylor order 2, derivative order 2 (three "
        "points, truncated), no corrector",
        options={"prediction": "x0", "taylor_order": 2, "derivative_order": 2},
        order_steps=(32, 64, 128, 256),  # the third-order term of the truncated interpolant fades late (EDM: 2.3 at 16)
    )
)
