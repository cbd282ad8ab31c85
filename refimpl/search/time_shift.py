"""The Time-Shift sampler (TS-DPM): alleviating exposure bias by moving the next time step to match the state.

Li et al. (2024), "Alleviating Exposure Bias in Diffusion Models through Sampling with Shifted Time Steps",
arXiv:2305.15583v7, Sec. 4 and Algorithm 1 [unverified numbering]. A trained model's errors leave the state x at a
noise level that differs from the nominal next time; TS-DPM measures it by the per-sample variance of x over its
coordinates ("pixels") and, while the nominal time is above a ``cutoff``, replaces the next time t by the candidate
tau in a window of ``window`` candidates centred on t that minimises

    (Var_pixels(x) - (1 - abar_tau))^2,        1 - abar_tau = sigma_tau^2 (VP schedules),

the rule of their code (sampler/pnm_solver.py): the variance is compared with sigma_tau^2, i.e. as if the signal's own
pixel variance v0 were zero. With an exact model Var(x_t) = alpha_t^2 v0 + sigma_t^2 (per sample, for large d), so
the rule moves towards larger t unless v0 = 0 (``time_shift_target``). The model is then evaluated at (x, tau), per
sample, and the step goes on to the next nominal time; the base step here is DDIM (their Sec. 5 applies the rule to
DDIM, F-PNDM and DPM-Solver).
"""

from __future__ import annotations

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import as_finite_float, as_float_tensor, check_strictly_decreasing
from refimpl.models import DiffusionModel, ModelWrapper, check_model, predict_x0_eps
from refimpl.parameterization import from_x0_eps
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.samplers.ddim import ddim_step
from refimpl.schedules import NoiseSchedule

__all__ = ["ScaledDataModel", "sample_time_shift", "time_shift", "time_shift_target"]


def _check_window(window: int, n_candidates: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if window > n_candidates:
        raise ValueError(f"window ({window}) is larger than the grid of candidate times ({n_candidates})")


def time_shift(x: Tensor, t: Tensor | float, candidates: Tensor, window: int, schedule: NoiseSchedule) -> Tensor:
    """The shifted times (B,): per sample, the candidate among the ``window`` nearest t (clipped to the ends of
    ``candidates``, a decreasing grid) whose sigma^2 is closest to the variance of that sample over its coordinates
    (torch.var, the unbiased estimate)."""
    cand = check_strictly_decreasing(as_float_tensor(candidates, "candidates", torch.float64), "candidates")
    _check_window(window, len(cand))
    k = int(torch.argmin((cand - torch.as_tensor(t, dtype=cand.dtype)).abs()))
    lo = min(max(k - window // 2, 0), len(cand) - window)  # the window slides inwards at both ends
    near = cand[lo : lo + window]
    var = x.reshape(x.shape[0], -1).var(dim=1)  # (B,)
    return near[torch.argmin((var[:, None] - schedule.sigma_t(near) ** 2) ** 2, dim=1)]


def time_shift_target(schedule: NoiseSchedule, t: Tensor | float, v0: float) -> Tensor:
    """sigma^2 that the rule aims at with an exact model: the pixel variance alpha_t^2 v0 + sigma_t^2 of x_t."""
    values = schedule(torch.as_tensor(t, dtype=torch.float64))
    return values.alpha**2 * v0 + values.sigma**2


def sample_time_shift(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    candidates: Tensor,
    window: int,
    cutoff: float,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM on ``timesteps`` with TS-DPM's shift: after each step whose nominal end time is above ``cutoff`` (and
    not the last), the next step starts from ``time_shift`` of the state instead. One model call per step; with
    ``cutoff`` at or above timesteps[0] it is DDIM itself."""
    ts = check_sampler_inputs(model, x, timesteps)
    _check_window(window, len(candidates))
    schedule = model.schedule
    n = len(ts) - 1
    t_cur = ts[0].expand(x.shape[0])
    for i in range(n):
        v_s, v_t = schedule(t_cur), schedule(ts[i + 1])
        x0, eps = predict_x0_eps(model, x, t_cur, v_s)
        x_next = ddim_step(x0, eps, v_t)
        if callback is not None:
            callback(StepInfo(i, t_cur, ts[i + 1], x, x_next, x0))
        x = x_next
        shift = i < n - 1 and float(ts[i + 1]) > cutoff
        t_cur = time_shift(x, ts[i + 1], candidates, window, schedule) if shift else ts[i + 1].expand(x.shape[0])
    return x


class ScaledDataModel(ModelWrapper):
    """A model whose data prediction is scaled by ``1 + delta`` (eps re-derived from it): a simulated exposure bias.
    delta > 0 overshoots the signal at every step, an injected variance error of the model."""

    def __init__(self, model: DiffusionModel, delta: float):
        super().__init__(check_model(model))
        self.delta = as_finite_float(delta, "delta")

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        values = self.schedule(t)
        x0, _ = predict_x0_eps(self.model, x, values.t, values)
        x0 = (1 + self.delta) * x0
        eps = (x - expand_like(values.alpha, x) * x0) / expand_like(values.sigma, x)
        return from_x0_eps(self.prediction, x0, eps, values)
