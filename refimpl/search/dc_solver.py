"""DC-Solver: dynamic compensation of the UniPC predictor-corrector (Zhao et al. 2024, arXiv:2409.03755v1).

A multistep predictor uses the model output m_s at the step's start; DC-Solver replaces it by the Lagrange interpolant
(in t) of the last ``dc_order + 1`` outputs evaluated at a shifted time (their Sec. 3.2 [equation number unverified])

    t~_i = t_{i-1} + rho_i (t_i - t_{i-1}),       m_s <- sum_j l_j(t~_i) m_j,

with t_i the current point and t_{i-1} the one before it (rho_i = 1 gives t~ = t_i, the output itself: the sampler is
UniPC bit for bit; the official code skips the compensation when rho = 1, and so does ``sample_dc_solver``). The
compensated output stays in the history and is also the m_s of the step's corrector (official dc_solver.py). The
ratios are fitted per step, in order, against a ground-truth trajectory (``fit_dc_ratios``: AdamW, lr 0.1, the MSE of
the state after the step's predictor and corrector against the reference state, as the official
``find_optim_ratio``; DOP853 here instead of 200 or 999 DDIM steps). The cascade polynomial regression
(``cpr_predict``, ``fit_cpr``) predicts rho from (CFG scale w, NFE, step) as the official
``cascade_polynomial_regression``: with W = w / 12, N = NFE / 50 and x = step / NFE (step counted from 1),

    rho = sum_i c_i x^i,   c_i = sum_j d_ij W^(2 - j),   d_ij = sum_k e_ijk N^(2 - k),

and rho = 1 for steps 1 and 2 (not enough outputs to interpolate). rho is linear in the coefficients e, so fitting
them to measured ratios is linear least squares (the official code calls scipy's curve_fit on the same model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from refimpl._validation import as_finite_float, as_float_tensor, check_finite, check_integer
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.samplers._common import Callback, StepInfo, Trajectory, check_sampler_inputs
from refimpl.samplers.multistep import lagrange_basis, step_orders
from refimpl.samplers.unipc import unipc_corrector_step, unipc_predictor_step

__all__ = ["cpr_features", "cpr_predict", "dynamic_compensation", "fit_cpr", "fit_dc_ratios", "sample_dc_solver"]

#: The official scheme's constants: CFG scale / 12, NFE / 50, a quadratic at each level of the cascade.
CPR_CFG_SCALE, CPR_NFE_SCALE, CPR_DEGREE = 12.0, 50.0, 2


def dynamic_compensation(outputs: Sequence[Tensor], times: Tensor, ratio: float | Tensor) -> Tensor:
    """sum_j l_j(t~) m_j with t~ = times[1] + ratio (times[0] - times[1]): the Lagrange interpolant in t of
    ``outputs`` (newest first, at ``times`` (q,), q >= 2) at the compensated time. Exact on polynomials of degree
    q - 1 in t (tested). ``ratio`` may be a tensor that requires grad."""
    if isinstance(outputs, Tensor | str) or not isinstance(outputs, Sequence):
        raise TypeError(f"outputs must be a sequence of tensors, got {type(outputs).__name__}")
    outputs = [check_finite(as_float_tensor(m, "outputs"), "outputs") for m in outputs]
    times = check_finite(as_float_tensor(times, "times"), "times")
    if times.ndim != 1:
        raise ValueError(f"times must be 1-D, got shape {tuple(times.shape)}")
    if len(set(times.tolist())) != len(times):
        raise ValueError("times must be distinct")
    if any(m.shape != outputs[0].shape for m in outputs):
        raise ValueError("outputs must all have one shape")
    if not (isinstance(ratio, Tensor) and ratio.requires_grad):
        ratio = as_finite_float(ratio, "ratio")
    if len(outputs) != len(times) or len(times) < 2:
        raise ValueError(f"need one time per output and at least two outputs, got {len(outputs)} and {len(times)}")
    t_tilde = times[1] + torch.as_tensor(ratio, dtype=times.dtype) * (times[0] - times[1])
    basis = lagrange_basis(times, t_tilde.reshape(1))[0]
    return sum(b * m for b, m in zip(basis, outputs, strict=True))


def sample_dc_solver(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    ratios: Sequence[float | Tensor] | None = None,
    order: int = 2,
    dc_order: int = 2,
    variant: str = "bh2",
    prediction: str = "x0",
    callback: Callback | None = None,
) -> Tensor:
    """UniPC-``order`` (UniP + UniC, B(h) ``variant``, official 1/2 coefficients) with dynamic compensation.

    ``ratios`` holds rho_i for every step (None: all 1, which is ``sample_unipc`` bit for bit). Step i can be
    compensated once dc_order + 1 outputs are known (i >= dc_order); a ratio other than 1 before that is an error.
    One model call per step, like UniPC.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    n = len(ts) - 1
    ratios = [1.0] * n if ratios is None else list(ratios)
    if isinstance(dc_order, bool) or not isinstance(dc_order, int) or dc_order < 1:
        raise ValueError(f"dc_order must be a positive integer, got {dc_order!r}")
    if len(ratios) != n:
        raise ValueError(f"ratios must hold one rho per step ({n}), got {len(ratios)}")
    early = [i for i, r in enumerate(ratios[:dc_order]) if not _is_one(r)]
    if early:
        raise ValueError(f"ratios[{early[0]}] must be 1: step {early[0]} has fewer than dc_order + 1 outputs")
    orders = step_orders(n, order)
    kw = {"variant": variant, "prediction": prediction}
    values = model.schedule(ts)
    buffer = max(order, dc_order + 1)
    points: list[tuple[Tensor, Tensor, Tensor]] = []  # (lambda, output, t), newest first
    x_prev = x
    for i in range(n):
        v_s, v_t = values[i], values[i + 1]
        x0, eps = predict_x0_eps(model, x, ts[i], v_s)
        m = x0 if prediction == "x0" else eps
        if i > 0:  # UniC for the previous step, with the output just computed at its end
            history = [(lam, out) for lam, out, _ in points[1 : orders[i - 1]]]
            x = unipc_corrector_step(x_prev, points[0][1], history, m, values[i - 1], v_s, **kw)
        points = [(v_s.lambda_, m, ts[i]), *points][:buffer]
        if not _is_one(ratios[i]):  # the compensation (DC-Solver Sec. 3.2)
            last = points[: dc_order + 1]
            m_dc = dynamic_compensation([p[1] for p in last], torch.stack([p[2] for p in last]), ratios[i])
            points[0] = (v_s.lambda_, m_dc, ts[i])
        history = [(lam, out) for lam, out, _ in points[1 : orders[i]]]
        x_next = unipc_predictor_step(x, points[0][1], history, v_s, v_t, **kw)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x_prev, x = x, x_next
    return x


def _is_one(r: float | Tensor) -> bool:
    return not isinstance(r, Tensor) and r == 1.0


def fit_dc_ratios(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    reference: Tensor,
    *,
    iterations: int = 20,
    lr: float = 0.1,
    **options: object,
) -> list[float]:
    """Fit rho_i step by step (the official search): rho_i minimises the MSE between the state at t_{i+1} (after the
    step's predictor and, except at the last step, its corrector) and ``reference`` (n + 1, *x.shape), the
    ground-truth states at the grid times; AdamW (lr ``lr``, ``iterations`` steps, from rho = 1), earlier ratios
    fixed at their fitted values. ``options`` go to ``sample_dc_solver``. Returns the n ratios."""
    ts = check_sampler_inputs(model, x, timesteps)
    n = len(ts) - 1
    if reference.shape != (n + 1, *x.shape):
        raise ValueError(f"reference must have shape {(n + 1, *x.shape)}, got {tuple(reference.shape)}")
    dc_order = int(options.get("dc_order", 2))
    ratios: list[float] = [1.0] * n
    for i in range(dc_order, n):
        rho = torch.nn.Parameter(torch.ones((), dtype=x.dtype))
        optimizer = torch.optim.AdamW([rho], lr=lr)
        for _ in range(iterations):
            optimizer.zero_grad()
            state = _state_after(model, x, ts, [*ratios[:i], rho, *[1.0] * (n - i - 1)], i, options)
            loss = torch.mean((state - reference[i + 1]) ** 2)
            loss.backward()
            optimizer.step()
        ratios[i] = float(rho.detach())
    return ratios


def _state_after(model, x, ts, ratios, i, options) -> Tensor:
    """The state at ts[i + 1] after step i's predictor and (except at the last step) its corrector."""
    n = len(ts) - 1
    if i == n - 1:
        return sample_dc_solver(model, x, ts, ratios=ratios, **options)
    trajectory = Trajectory()
    sample_dc_solver(model, x, ts[: i + 3], ratios=ratios[: i + 2], callback=trajectory, **options)
    return trajectory.steps[i + 1].x  # the corrector of step i runs before step i + 1


def cpr_features(cfg: float, nfe: int, step: int, degree: int = CPR_DEGREE) -> Tensor:
    """The monomials x^i W^(degree - j) N^(degree - k) of the cascade, (degree + 1)^3 of them, index (i, j, k)."""
    cfg, nfe, degree = as_finite_float(cfg, "cfg"), check_integer(nfe, "nfe", 1), check_integer(degree, "degree", 0)
    if check_integer(step, "step", 0) > nfe:
        raise ValueError(f"step must lie in [0, nfe = {nfe}], got {step}")
    w, nn, xx = cfg / CPR_CFG_SCALE, nfe / CPR_NFE_SCALE, step / nfe
    r = range(degree + 1)
    return torch.tensor(
        [xx**i * w ** (degree - j) * nn ** (degree - k) for i in r for j in r for k in r], dtype=torch.float64
    )


def cpr_predict(coefficients: Tensor, cfg: float, nfe: int) -> list[float]:
    """The ratios of all NFE steps predicted by the cascade (``coefficients`` of shape ((degree + 1)^3,)); rho = 1
    for steps 1 and 2, as the official code."""
    coefficients = check_finite(as_float_tensor(coefficients, "coefficients"), "coefficients")
    if coefficients.ndim != 1 or len(coefficients) == 0:
        raise ValueError(f"coefficients must be a non-empty 1-D tensor, got shape {tuple(coefficients.shape)}")
    check_integer(nfe, "nfe", 1)
    degree = round(len(coefficients) ** (1 / 3)) - 1
    if (degree + 1) ** 3 != len(coefficients):
        raise ValueError(f"coefficients must number (degree + 1)^3, got {len(coefficients)}")
    return [
        1.0 if step < 3 else float(cpr_features(cfg, nfe, step, degree) @ coefficients) for step in range(1, nfe + 1)
    ]


def fit_cpr(samples: Sequence[tuple[float, int, int, float]], degree: int = CPR_DEGREE) -> Tensor:
    """Least-squares cascade coefficients from (cfg, nfe, step, rho) samples (steps >= 3); minimum-norm where the
    samples do not determine them (e.g. a single CFG scale)."""
    if isinstance(samples, Tensor | str) or not isinstance(samples, Sequence):
        raise TypeError(f"samples must be a sequence of (cfg, nfe, step, rho) tuples, got {type(samples).__name__}")
    if any(not isinstance(r, Sequence) or isinstance(r, str) or len(r) != 4 for r in samples):
        raise ValueError("samples must hold (cfg, nfe, step, rho) tuples of 4 numbers")
    check_integer(degree, "degree", 0)
    checked = [
        (as_finite_float(c, "samples"), n, check_integer(s, "samples", 0), as_finite_float(r, "samples"))
        for c, n, s, r in samples
    ]
    rows = [row for row in checked if row[2] >= 3]
    if not rows or any(not math.isfinite(r[3]) for r in rows):
        raise ValueError("fit_cpr needs finite (cfg, nfe, step, rho) samples with step >= 3")
    X = torch.stack([cpr_features(c, n, s, degree) for c, n, s, _ in rows])
    y = torch.tensor([r[3] for r in rows], dtype=torch.float64)
    return torch.linalg.lstsq(X, y[:, None], driver="gelsd").solution[:, 0]
