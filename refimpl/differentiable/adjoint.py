"""AdjointDPM: gradients of a loss on the probability-flow ODE's output by the adjoint method.

Pan et al. (2023, arXiv:2307.10711v2, Sec. 3-4) write the probability-flow ODE with the exponential-integrator change
of variables y = x / alpha, rho = sigma / alpha (DDIM's ODE, Song et al. 2021, arXiv:2010.02502v4, Eq. 14):

    dy/drho = eps_theta(alpha y, t(rho)),                                                          (1)

which has no stiff linear part. Here time is lambda = -log rho (so the grid is the samplers' uniform-lambda grid):
dy/dlambda = f(y, lambda) = -rho eps_theta(alpha y, t(lambda)). For a loss L(x_0), the adjoint a = dL/dy solves
backwards (Chen et al. 2018, arXiv:1806.07366v5, Eq. 4 and 5; AdjointDPM Eq. 8-10)

    da/dlambda = -a^T df/dy = sigma a^T d eps/dx,     d a_theta/dlambda = -a^T df/dtheta,          (2)

from a(lambda_0) = alpha_0 dL/dx_0, a_theta(lambda_0) = 0 down to the start, where dL/dx_T = a / alpha_T and
dL/dtheta = a_theta: parameters theta and conditioning c are both just inputs of eps. The state y is recomputed
backwards together with (a, a_theta), so only O(1) states are stored whatever the number of steps (measured with
``SavedTensorCounter``). Both passes use the classic fourth-order Runge-Kutta 3/8 rule (torchdiffeq's ``rk4``), so
``torchdiffeq.odeint_adjoint`` on the same grid computes the same numbers (``torchdiffeq_gradients``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._validation import as_float_tensor, check_callable, check_finite, check_float_tensors, check_instance
from refimpl.schedules import NoiseSchedule

__all__ = [
    "AdjointResult",
    "MixtureEps",
    "SavedTensorCounter",
    "adjoint_gradients",
    "autograd_gradients",
    "rk38_step",
    "solve_y",
    "torchdiffeq_gradients",
]

EpsFn = Callable[[Tensor, Tensor, Sequence[Tensor]], Tensor]


@dataclass
class MixtureEps:
    """The exact eps of the mixture lab as a differentiable function of parameters (means, logits, c).

    Data law sum_k softmax(logits)_k N(means_k + c, covariances_k), c a conditioning vector shifting every mean. With
    C_k = alpha^2 Sigma_k + sigma^2 I and responsibilities r_k, E[eps | x_t] = sigma sum_k r_k C_k^-1 (x - alpha mu_k)
    (the formula of ``toy_models.gmm.GaussianMixture.x0_eps``, written here so that autograd reaches the parameters).
    """

    covariances: Tensor
    schedule: NoiseSchedule

    def __call__(self, x: Tensor, t: Tensor, params: Sequence[Tensor]) -> Tensor:
        means, logits, c = params
        v = self.schedule(t)
        a, s = v.alpha.to(x.dtype), v.sigma.to(x.dtype)
        d = x.shape[-1]
        C = a**2 * self.covariances + s**2 * torch.eye(d, dtype=x.dtype)  # (K, d, d)
        diff = x[:, None, :] - a * (means + c)  # (B, K, d)
        L = torch.linalg.cholesky(C)
        sol = torch.cholesky_solve(diff[..., None].transpose(0, 1), L[:, None]).squeeze(-1).transpose(0, 1)
        log_n = -0.5 * (diff * sol).sum(-1) - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        r = torch.softmax(torch.log_softmax(logits, 0) + log_n, -1)  # (B, K)
        return s * (r[..., None] * sol).sum(1)


def _field(eps_fn: EpsFn, schedule: NoiseSchedule) -> Callable[[Tensor, Tensor, Sequence[Tensor]], Tensor]:
    """f(lambda, y, params) = -rho eps(alpha y, t(lambda)): Eq. (1) in lambda time."""

    def f(lam: Tensor, y: Tensor, params: Sequence[Tensor]) -> Tensor:
        t = schedule.t_of_lambda(lam.detach())
        v = schedule(t)
        return -v.rho * eps_fn(v.alpha * y, t, params)

    return f


def rk38_step(f: Callable[[Tensor, Tensor], Tensor], lam: Tensor, h: Tensor, y: Tensor) -> Tensor:
    """One step of the Runge-Kutta 3/8 rule (Kutta 1901; torchdiffeq's ``rk4_alt_step_func``)."""
    check_callable(f, "f")
    check_float_tensors(lam=lam, h=h, y=y)
    k1 = f(lam, y)
    k2 = f(lam + h / 3, y + h * k1 / 3)
    k3 = f(lam + 2 * h / 3, y + h * (k2 - k1 / 3))
    k4 = f(lam + h, y + h * (k1 - k2 + k3))
    return y + (k1 + 3 * (k2 + k3) + k4) * h * 0.125


def _check_inputs(
    eps_fn: EpsFn, schedule: NoiseSchedule, params: Sequence[Tensor], x_T: Tensor, lambdas: Tensor
) -> Tensor:
    """Check the arguments every solve shares; returns ``lambdas`` as a float64 tensor."""
    check_callable(eps_fn, "eps_fn")
    check_instance(schedule, NoiseSchedule, "schedule")
    if isinstance(params, str | Tensor) or not isinstance(params, Sequence):
        raise TypeError(f"params must be a list or tuple of tensors, got {type(params).__name__}")
    for i, p in enumerate(params):
        check_float_tensors(**{f"params[{i}]": p})
        check_finite(p, f"params[{i}]")
    check_float_tensors(x_T=x_T)
    check_finite(x_T, "x_T")
    lambdas = check_finite(as_float_tensor(lambdas, "lambdas", torch.float64), "lambdas")
    if lambdas.ndim != 1 or len(lambdas) < 2 or not bool((lambdas.diff() > 0).all()):
        raise ValueError("lambdas must be a strictly increasing 1-D grid of log-SNR values (noise to data)")
    return lambdas


def solve_y(eps_fn: EpsFn, schedule: NoiseSchedule, params: Sequence[Tensor], x_T: Tensor, lambdas: Tensor) -> Tensor:
    """x_0 from x_T by RK 3/8 on Eq. (1) over the grid ``lambdas`` (increasing); differentiable when run with grad."""
    lambdas = _check_inputs(eps_fn, schedule, params, x_T, lambdas)
    f = _field(eps_fn, schedule)
    y = x_T / schedule(schedule.t_of_lambda(lambdas[0])).alpha
    for i in range(len(lambdas) - 1):
        y = rk38_step(lambda lam, z: f(lam, z, params), lambdas[i], lambdas[i + 1] - lambdas[i], y)
    return schedule(schedule.t_of_lambda(lambdas[-1])).alpha * y


@dataclass
class AdjointResult:
    """The loss, dL/dx_T and dL/dparams (one tensor per parameter)."""

    loss: Tensor
    grad_x: Tensor
    grad_params: tuple[Tensor, ...]


def autograd_gradients(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    params: Sequence[Tensor],
    x_T: Tensor,
    lambdas: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
) -> AdjointResult:
    """Backpropagation through the solver (discretise-then-differentiate): stores every stage of every step."""
    _check_inputs(eps_fn, schedule, params, x_T, lambdas)
    check_callable(loss_fn, "loss_fn")
    x = x_T.detach().clone().requires_grad_(True)
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    loss = loss_fn(solve_y(eps_fn, schedule, ps, x, lambdas))
    grads = torch.autograd.grad(loss, [x, *ps])
    return AdjointResult(loss.detach(), grads[0], tuple(grads[1:]))


def adjoint_gradients(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    params: Sequence[Tensor],
    x_T: Tensor,
    lambdas: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
) -> AdjointResult:
    """The adjoint method (2): forward solve without a graph, then (y, a, a_theta) backwards with RK 3/8."""
    lambdas = _check_inputs(eps_fn, schedule, params, x_T, lambdas)
    check_callable(loss_fn, "loss_fn")
    f = _field(eps_fn, schedule)
    params = [p.detach() for p in params]
    with torch.no_grad():
        x_0 = solve_y(eps_fn, schedule, params, x_T, lambdas)
    x_0 = x_0.requires_grad_(True)
    loss = loss_fn(x_0)
    (dl_dx0,) = torch.autograd.grad(loss, x_0)
    alpha_0 = schedule(schedule.t_of_lambda(lambdas[-1])).alpha
    state = [x_0.detach() / alpha_0, alpha_0 * dl_dx0, *[torch.zeros_like(p) for p in params]]

    def augmented(lam: Tensor, s: list[Tensor]) -> list[Tensor]:
        """(f, -a^T df/dy, -a^T df/dtheta), Eq. (2), one vector-Jacobian product."""
        with torch.enable_grad():
            y = s[0].detach().requires_grad_(True)
            ps = [p.requires_grad_(True) for p in (q.detach() for q in params)]
            out = f(lam, y, ps)
            vjps = torch.autograd.grad(out, [y, *ps], s[1], allow_unused=True)
        vjps = [torch.zeros_like(p) if g is None else g for g, p in zip(vjps, [y, *ps], strict=True)]
        return [out.detach(), *(-g for g in vjps)]

    def add(s: list[Tensor], k: list[Tensor], c: Tensor) -> list[Tensor]:
        return [a + c * b for a, b in zip(s, k, strict=True)]

    for i in range(len(lambdas) - 1, 0, -1):  # RK 3/8 on the augmented state, from lambda_i down to lambda_{i-1}
        lam, h = lambdas[i], lambdas[i - 1] - lambdas[i]
        k1 = augmented(lam, state)
        k2 = augmented(lam + h / 3, add(state, k1, h / 3))
        k3 = augmented(lam + 2 * h / 3, add(state, [b - a / 3 for a, b in zip(k1, k2, strict=True)], h))
        k4 = augmented(lam + h, add(state, [a - b + c for a, b, c in zip(k1, k2, k3, strict=True)], h))
        incr = [(a + 3 * (b + c) + d) * h * 0.125 for a, b, c, d in zip(k1, k2, k3, k4, strict=True)]
        state = [s + d for s, d in zip(state, incr, strict=True)]
    alpha_T = schedule(schedule.t_of_lambda(lambdas[0])).alpha
    return AdjointResult(loss.detach(), state[1] / alpha_T, tuple(state[2:]))


def torchdiffeq_gradients(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    params: Sequence[Tensor],
    x_T: Tensor,
    lambdas: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
    method: str = "rk4",
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> AdjointResult:
    """The same gradients from ``torchdiffeq.odeint_adjoint`` (Chen et al. 2018) on Eq. (1) in lambda time.

    ``method="rk4"`` integrates on the grid ``lambdas`` (both directions), the algorithm of ``adjoint_gradients``;
    an adaptive method (e.g. "dopri5") uses ``rtol``/``atol`` and ignores the inner grid points.
    """
    from torchdiffeq import odeint_adjoint

    lambdas = _check_inputs(eps_fn, schedule, params, x_T, lambdas)
    check_callable(loss_fn, "loss_fn")
    f = _field(eps_fn, schedule)
    ps = [torch.nn.Parameter(p.detach().clone()) for p in params]

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ps = torch.nn.ParameterList(ps)

        def forward(self, lam: Tensor, y: Tensor) -> Tensor:
            return f(lam, y, list(self.ps))

    def grid(func: object, y0: Tensor, t: Tensor) -> Tensor:
        return lambdas if t[0] < t[-1] else lambdas.flip(0)

    options = {"grid_constructor": grid} if method == "rk4" else None
    kwargs = {"rtol": rtol, "atol": atol} if method != "rk4" else {}
    x = x_T.detach().clone().requires_grad_(True)
    y_T = x / schedule(schedule.t_of_lambda(lambdas[0])).alpha
    field = Field()
    ys = odeint_adjoint(
        field, y_T, lambdas[[0, -1]], method=method, options=options, adjoint_params=tuple(ps), **kwargs
    )
    loss = loss_fn(schedule(schedule.t_of_lambda(lambdas[-1])).alpha * ys[-1])
    grads = torch.autograd.grad(loss, [x, *ps])
    return AdjointResult(loss.detach(), grads[0], tuple(grads[1:]))


class SavedTensorCounter:
    """Counts the tensors autograd saves for backward while they are alive, and their peak number and bytes.

    Uses ``torch.autograd.graph.saved_tensors_hooks``: every saved tensor is packed into a holder whose lifetime is
    the graph's; ``peak`` is the largest number alive at once, ``peak_bytes`` their largest total size.
    """

    def __init__(self) -> None:
        self.alive = self.alive_bytes = self.peak = self.peak_bytes = 0

    class _Holder:
        def __init__(self, tensor: Tensor):
            self.tensor = tensor

    def _pack(self, tensor: Tensor) -> object:
        holder = self._Holder(tensor)
        size = tensor.numel() * tensor.element_size()
        self.alive += 1
        self.alive_bytes += size
        self.peak, self.peak_bytes = max(self.peak, self.alive), max(self.peak_bytes, self.alive_bytes)
        weakref.finalize(holder, self._release, size)
        return holder

    def _release(self, size: int) -> None:
        self.alive -= 1
        self.alive_bytes -= size

    @staticmethod
    def _unpack(holder: object) -> Tensor:
        return holder.tensor  # type: ignore[attr-defined]

    def __enter__(self) -> SavedTensorCounter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
