"""Noise schedules as data: x_t = alpha_t x_0 + sigma_t eps.

Every schedule gives alpha_t, sigma_t, their time derivatives, the half log-SNR
lambda_t = log(alpha_t / sigma_t) and its inverse t(lambda), the EDM noise level
rho_t = sigma_t / alpha_t = e^{-lambda_t} and its inverse t(rho), on a closed time
interval [t_min, t_max] where all of them are finite.

Families implemented (checked in ``tests/test_schedules.py`` by a lambda -> t -> lambda
round trip to 1e-12 and by autograd derivatives):

* ``VPLinear``   -- Song et al. 2021 (arXiv:2011.13456v2), Eq. (33): beta(t) from 0.1 to 20.
* ``VPCosine``   -- Nichol & Dhariwal 2021 (arXiv:2102.09672v1), Eq. (17), s = 0.008.
* ``DiscreteVP`` -- Ho et al. 2020 (arXiv:2006.11239v2) betas (linear 1e-4..0.02, N = 1000) and
  the "scaled linear" betas of latent diffusion (0.00085..0.012); continuous time by the
  piecewise-linear interpolation of log alpha of Lu et al. 2022 (arXiv:2206.00927v3), App. D.
* ``EDMSchedule`` -- Karras et al. 2022 (arXiv:2206.00364v2), Table 1: alpha_t = 1, sigma_t = t.
* ``RectifiedFlow`` -- the straight (conditional-OT) path alpha_t = 1 - t, sigma_t = t of Liu et al. 2023
  (arXiv:2209.03003v1, Eq. 1) and Lipman et al. 2023 (arXiv:2210.02747v2, Eq. 20 with sigma_min = 0), with
  t = 0 the data (flow-matching libraries use the reversed time 1 - t).

Times and results are float64 tensors unless the input is a tensor of another floating dtype.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._util import interp_with_slope
from refimpl._validation import as_float_tensor, check_finite, check_in_range, check_instance

__all__ = [
    "SCHEDULES",
    "DiscreteVP",
    "EDMSchedule",
    "NoiseSchedule",
    "RectifiedFlow",
    "ScheduleValues",
    "VPCosine",
    "VPLinear",
    "VPSchedule",
    "check_finite_parameters",
    "get_schedule",
]


def check_finite_parameters(**parameters: object) -> None:
    """Raise unless every schedule parameter is a finite real number (NaN fails every comparison silently)."""
    for name, value in parameters.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite real number, got {value!r}")


#: The former private name (``refimpl.forward.rddm`` imports it).
_check_finite_parameters = check_finite_parameters


@dataclass(frozen=True)
class ScheduleValues:
    """The schedule at times t, all of t's shape: a record of the values at one time reads as that time.

    ``v_s = schedule(s)`` holds ``v_s.alpha`` = alpha_s, ``v_s.sigma`` = sigma_s, their time derivatives
    ``v_s.d_alpha``, ``v_s.d_sigma``, the half log-SNR ``v_s.lambda_`` = lambda_s and the EDM noise level
    ``v_s.rho`` = sigma_s / alpha_s = e^{-lambda_s} (EDM's sigma, DEIS's rho).
    """

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor
    lambda_: Tensor

    @property
    def rho(self) -> Tensor:
        """rho = sigma / alpha = e^{-lambda}: the noise level of the scaled state x / alpha
        (Karras et al. 2022, arXiv:2206.00364v2, Eq. 4; Zhang & Chen 2022, arXiv:2204.13902v4, Sec. 4)."""
        return torch.exp(-self.lambda_)

    def __getitem__(self, i: int | slice) -> ScheduleValues:
        """The values at entry i of a grid (``schedule(ts)[i]``)."""
        return ScheduleValues(
            self.t[i], self.alpha[i], self.sigma[i], self.d_alpha[i], self.d_sigma[i], self.lambda_[i]
        )


class NoiseSchedule(ABC):
    """x_t = alpha_t x_0 + sigma_t eps on t in [t_min, t_max], with lambda_t = log(alpha_t / sigma_t).

    Subclasses give log alpha_t, log sigma_t, their derivatives and t(lambda); everything
    else is derived here once. lambda_t decreases strictly in t for every schedule.
    """

    name: str = "schedule"
    t_min: float
    t_max: float

    # --- what a family defines -------------------------------------------------------
    @abstractmethod
    def _log_alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _log_sigma(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _d_log_alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _d_log_sigma(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _t_of_lambda(self, lambda_: Tensor) -> Tensor: ...

    # --- checked public interface -----------------------------------------------------
    def check_t(self, t: object, name: str = "t") -> Tensor:
        """Return ``t`` as a floating tensor, raising ``ValueError`` if it leaves [t_min, t_max]."""
        t = as_float_tensor(t, name)
        return check_in_range(t, self.t_min, self.t_max, name).clamp(self.t_min, self.t_max)

    def log_alpha_t(self, t: object) -> Tensor:
        """log alpha_t."""
        return self._log_alpha(self.check_t(t))

    def log_sigma_t(self, t: object) -> Tensor:
        """log sigma_t."""
        return self._log_sigma(self.check_t(t))

    def alpha_t(self, t: object) -> Tensor:
        """alpha_t, the signal scale."""
        return torch.exp(self.log_alpha_t(t))

    def sigma_t(self, t: object) -> Tensor:
        """sigma_t, the noise scale."""
        return torch.exp(self.log_sigma_t(t))

    def d_alpha_t(self, t: object) -> Tensor:
        """d alpha_t / dt."""
        t = self.check_t(t)
        return torch.exp(self._log_alpha(t)) * self._d_log_alpha(t)

    def d_sigma_t(self, t: object) -> Tensor:
        """d sigma_t / dt."""
        t = self.check_t(t)
        return torch.exp(self._log_sigma(t)) * self._d_log_sigma(t)

    def lambda_t(self, t: object) -> Tensor:
        """lambda_t = log(alpha_t / sigma_t), half the log signal-to-noise ratio."""
        t = self.check_t(t)
        return self._log_alpha(t) - self._log_sigma(t)

    def d_lambda_t(self, t: object) -> Tensor:
        """d lambda_t / dt (negative)."""
        t = self.check_t(t)
        return self._d_log_alpha(t) - self._d_log_sigma(t)

    # The ends of the range, computed once: a schedule's parameters are fixed when it is built.
    @functools.cached_property
    def lambda_min(self) -> float:
        """lambda at t_max (the noisiest end)."""
        return float(self.lambda_t(self.t_max))

    @functools.cached_property
    def lambda_max(self) -> float:
        """lambda at t_min (the cleanest end)."""
        return float(self.lambda_t(self.t_min))

    def t_of_lambda(self, lambda_: object) -> Tensor:
        """The inverse map t(lambda), for lambda in [lambda(t_max), lambda(t_min)]."""
        lambda_ = check_finite(as_float_tensor(lambda_, "lambda_"), "lambda_")
        check_in_range(lambda_, self.lambda_min, self.lambda_max, "lambda_")
        return self._t_of_lambda(lambda_).clamp(self.t_min, self.t_max)

    def rho_t(self, t: object) -> Tensor:
        """rho_t = sigma_t / alpha_t = e^{-lambda_t}, the EDM noise level (DEIS's rho)."""
        return torch.exp(-self.lambda_t(t))

    @property
    def rho_min(self) -> float:
        """rho at t_min (the cleanest end)."""
        return math.exp(-self.lambda_max)

    @property
    def rho_max(self) -> float:
        """rho at t_max (the noisiest end)."""
        return math.exp(-self.lambda_min)

    def lambda_of_rho(self, rho: object) -> Tensor:
        """lambda = -log rho for rho in [rho_min, rho_max] (a few ulps of slack, then clamped onto the range)."""
        rho = check_finite(as_float_tensor(rho, "rho"), "rho")
        check_in_range(rho, self.rho_min, self.rho_max, "rho")
        return (-torch.log(rho)).clamp(self.lambda_min, self.lambda_max)

    def t_of_rho(self, rho: object) -> Tensor:
        """The inverse map t(rho) of ``rho_t``, for rho in [rho_min, rho_max]."""
        return self.t_of_lambda(self.lambda_of_rho(rho))

    def __call__(self, t: object) -> ScheduleValues:
        """All values at t in one typed record."""
        t = self.check_t(t)
        log_a, log_s = self._log_alpha(t), self._log_sigma(t)
        a, s = torch.exp(log_a), torch.exp(log_s)
        return ScheduleValues(t, a, s, a * self._d_log_alpha(t), s * self._d_log_sigma(t), log_a - log_s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, t in [{self.t_min:g}, {self.t_max:g}])"


class VPSchedule(NoiseSchedule):
    """Variance preserving: alpha_t^2 + sigma_t^2 = 1, defined by log alpha_t alone."""

    @abstractmethod
    def _t_of_log_alpha(self, log_alpha: Tensor) -> Tensor: ...

    @staticmethod
    def _log_sigma_of(log_alpha: Tensor) -> Tensor:
        # sigma^2 = 1 - alpha^2, written stably for alpha near 1.
        return 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    @staticmethod
    def _d_log_sigma_of(log_alpha: Tensor, log_sigma: Tensor, d_log_alpha: Tensor) -> Tensor:
        # d log sigma = -(alpha^2 / sigma^2) d log alpha, from sigma^2 = 1 - alpha^2.
        return -torch.exp(2.0 * (log_alpha - log_sigma)) * d_log_alpha

    def _log_sigma(self, t: Tensor) -> Tensor:
        return self._log_sigma_of(self._log_alpha(t))

    def _d_log_sigma(self, t: Tensor) -> Tensor:
        log_alpha = self._log_alpha(t)
        return self._d_log_sigma_of(log_alpha, self._log_sigma_of(log_alpha), self._d_log_alpha(t))

    def __call__(self, t: object) -> ScheduleValues:
        """All values at t in one typed record: ``NoiseSchedule.__call__`` with log alpha_t computed once (sigma_t
        and both derivatives follow from it), the same numbers in a third of the operations."""
        t = self.check_t(t)
        log_a, d_log_a = self._log_alpha(t), self._d_log_alpha(t)
        log_s = self._log_sigma_of(log_a)
        a, s = torch.exp(log_a), torch.exp(log_s)
        return ScheduleValues(t, a, s, a * d_log_a, s * self._d_log_sigma_of(log_a, log_s, d_log_a), log_a - log_s)

    def _t_of_lambda(self, lambda_: Tensor) -> Tensor:
        # alpha^2 = sigmoid(2 lambda), so log alpha = -softplus(-2 lambda) / 2
        # (Lu et al. 2022, arXiv:2206.00927v3, App. D).
        return self._t_of_log_alpha(-0.5 * torch.nn.functional.softplus(-2.0 * lambda_))


class VPLinear(VPSchedule):
    """Continuous VP with linear beta(t) = beta_0 + t (beta_1 - beta_0).

    log alpha_t = -(beta_1 - beta_0) t^2 / 4 - beta_0 t / 2
    (Song et al. 2021, arXiv:2011.13456v2, Eq. 33; Lu et al. 2022, arXiv:2206.00927v3, App. D).
    """

    name = "vp_linear"

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0, t_min: float = 1e-3, t_max: float = 1.0):
        check_finite_parameters(beta_0=beta_0, beta_1=beta_1, t_min=t_min, t_max=t_max)
        if not 0 < beta_0 < beta_1:
            raise ValueError(f"need 0 < beta_0 < beta_1, got beta_0={beta_0}, beta_1={beta_1}")
        if not 0 < t_min < t_max:
            raise ValueError(f"need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
        self.beta_0, self.beta_1, self.t_min, self.t_max = beta_0, beta_1, t_min, t_max

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * (self.beta_1 - self.beta_0) * t**2 - 0.5 * self.beta_0 * t

    def _d_log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * (self.beta_1 - self.beta_0) * t - 0.5 * self.beta_0

    def _t_of_log_alpha(self, log_alpha: Tensor) -> Tensor:
        # Solve (beta_1 - beta_0) t^2 / 2 + beta_0 t = c with c = -2 log alpha, in the
        # cancellation-free form t = 2c / (beta_0 + sqrt(beta_0^2 + 2 (beta_1 - beta_0) c)).
        c = -2.0 * log_alpha
        return 2.0 * c / (self.beta_0 + torch.sqrt(self.beta_0**2 + 2.0 * (self.beta_1 - self.beta_0) * c))


class VPCosine(VPSchedule):
    """The cosine schedule: alpha_t = cos(pi/2 (t+s)/(1+s)) / cos(pi/2 s/(1+s)).

    Nichol & Dhariwal 2021 (arXiv:2102.09672v1), Eq. 17 (their alpha-bar is alpha_t^2).
    alpha_t reaches 0 at t = 1, so t_max defaults to 0.9946 as in Lu et al. 2022
    (arXiv:2206.00927v3, App. D).
    """

    name = "vp_cosine"

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946):
        check_finite_parameters(s=s, t_min=t_min, t_max=t_max)
        if s <= 0:
            raise ValueError(f"s must be positive, got {s}")
        if not 0 < t_min < t_max < 1:
            raise ValueError(f"need 0 < t_min < t_max < 1, got t_min={t_min}, t_max={t_max}")
        self.s, self.t_min, self.t_max = s, t_min, t_max
        self._a0 = 0.5 * math.pi * s / (1.0 + s)  # the angle at t = 0

    # With a0 the angle at t = 0 and delta = pi/2 t/(1+s), alpha_t = cos(a0 + delta) / cos(a0)
    # = cos(delta) - tan(a0) sin(delta). Working in delta avoids the cancellation of
    # log cos(a0 + delta) - log cos(a0) near t = 0, where the round trip would lose 1e-12.
    def _delta(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * t / (1.0 + self.s)

    def _log_alpha(self, t: Tensor) -> Tensor:
        d = self._delta(t)
        return torch.log1p(-2.0 * torch.sin(0.5 * d) ** 2 - math.tan(self._a0) * torch.sin(d))

    def _d_log_alpha(self, t: Tensor) -> Tensor:
        return -torch.tan(self._a0 + self._delta(t)) * 0.5 * math.pi / (1.0 + self.s)

    def _t_of_log_alpha(self, log_alpha: Tensor) -> Tensor:
        # r = alpha_t = cos(a) / cos(a0), a = a0 + delta. Then sin(a) = sqrt(1 - r^2 cos^2 a0) and
        # sin(delta) = cos(a0) (1 - r^2) / (sin a + r sin a0), cos(delta) = r cos^2 a0 + sin a sin a0,
        # with 1 - r^2 = -expm1(2 log r) computed without cancellation.
        r = torch.exp(log_alpha)
        c0, s0 = math.cos(self._a0), math.sin(self._a0)
        sin_a = torch.sqrt(1.0 - (r * c0) ** 2)
        sin_d = c0 * -torch.expm1(2.0 * log_alpha) / (sin_a + r * s0)
        cos_d = r * c0**2 + sin_a * s0
        return torch.atan2(sin_d, cos_d) * 2.0 * (1.0 + self.s) / math.pi


class DiscreteVP(VPSchedule):
    """A discrete schedule of N betas, made continuous as in DPM-Solver.

    Step n = 1..N of Ho et al. 2020 sits at t_n = n / N with
    log alpha_{t_n} = (1/2) sum_{i <= n} log(1 - beta_i) (their alpha-bar_n = alpha_{t_n}^2),
    and log alpha_t is linear in t between the knots
    (Lu et al. 2022, arXiv:2206.00927v3, App. D). The domain is [1/N, 1].
    """

    def __init__(self, betas: Tensor, name: str = "discrete"):
        betas = as_float_tensor(betas, "betas", torch.float64)
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be a 1-D tensor of at least 2 values, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            lo, hi = float(betas.min()), float(betas.max())
            raise ValueError(f"every entry of betas must lie in (0, 1); got values in [{lo:g}, {hi:g}]")
        check_instance(name, str, "name")
        self.name = name
        self.betas = betas
        self.N = betas.numel()
        self.t_knots = torch.arange(1, self.N + 1, dtype=torch.float64) / self.N
        self.log_alpha_knots = 0.5 * torch.cumsum(torch.log1p(-betas), 0)
        self.t_min, self.t_max = float(self.t_knots[0]), float(self.t_knots[-1])

    @classmethod
    def ddpm_linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, N: int = 1000) -> DiscreteVP:
        """Linear betas of Ho et al. 2020 (arXiv:2006.11239v2, Sec. 4)."""
        return cls(torch.linspace(beta_start, beta_end, N, dtype=torch.float64), name="ddpm_linear")

    @classmethod
    def scaled_linear(cls, beta_start: float = 0.00085, beta_end: float = 0.012, N: int = 1000) -> DiscreteVP:
        """Betas linear in sqrt(beta), as in latent diffusion (Rombach et al. 2022, arXiv:2112.10752v2)."""
        sqrt_betas = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), N, dtype=torch.float64)
        return cls(sqrt_betas**2, name="scaled_linear")

    @property
    def alphas_cumprod(self) -> Tensor:
        """DDPM's alpha-bar_n, n = 1..N (it is alpha_{t_n}^2 here)."""
        return torch.exp(2.0 * self.log_alpha_knots)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return interp_with_slope(t.to(torch.float64), self.t_knots, self.log_alpha_knots)[0].to(t.dtype)

    def _d_log_alpha(self, t: Tensor) -> Tensor:
        return interp_with_slope(t.to(torch.float64), self.t_knots, self.log_alpha_knots)[1].to(t.dtype)

    def _t_of_log_alpha(self, log_alpha: Tensor) -> Tensor:
        # log alpha decreases in t: interpolate t against the reversed (increasing) knots.
        t, _ = interp_with_slope(log_alpha.to(torch.float64), self.log_alpha_knots.flip(0), self.t_knots.flip(0))
        return t.to(log_alpha.dtype)


class EDMSchedule(NoiseSchedule):
    """Variance exploding with sigma_t = t and alpha_t = 1 (Karras et al. 2022, arXiv:2206.00364v2, Table 1).

    The EDM noise level sigma is the time itself; lambda_t = -log t.
    """

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        check_finite_parameters(sigma_min=sigma_min, sigma_max=sigma_max)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.t_min, self.t_max = sigma_min, sigma_max

    def _log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(t)

    def _d_log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _d_log_sigma(self, t: Tensor) -> Tensor:
        return 1.0 / t

    def _t_of_lambda(self, lambda_: Tensor) -> Tensor:
        return torch.exp(-lambda_)


class RectifiedFlow(NoiseSchedule):
    """The conditional-OT / rectified-flow path alpha_t = 1 - t, sigma_t = t on [t_min, t_max] inside (0, 1).

    x_t = (1 - t) x_0 + t eps moves every pair (x_0, eps) on a straight line at constant velocity eps - x_0
    (Liu et al. 2023, arXiv:2209.03003v1, Eq. 1; Lipman et al. 2023, arXiv:2210.02747v2, Eq. 20-23 with
    sigma_min = 0, written in their reversed time 1 - t). lambda_t = log((1 - t) / t) = -logit(t), so
    t(lambda) = sigmoid(-lambda) (the logit-normal time sampling of Esser et al. 2024, arXiv:2403.03206v1,
    Eq. 19, is a normal law on lambda). The ends stay inside (0, 1), where lambda is finite: the defaults
    give alpha_{t_max} = 0.005 and sigma_{t_min} = 1e-3, the range of the VP schedules.
    """

    name = "rectified_flow"

    def __init__(self, t_min: float = 1e-3, t_max: float = 0.995):
        if not 0 < t_min < t_max < 1:
            raise ValueError(f"need 0 < t_min < t_max < 1, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max = t_min, t_max

    def _log_alpha(self, t: Tensor) -> Tensor:
        return torch.log1p(-t)  # exact for t near 0; 1 - t is exact for t in [1/2, 1] (Sterbenz)

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(t)

    def _d_log_alpha(self, t: Tensor) -> Tensor:
        return -1.0 / (1.0 - t)

    def _d_log_sigma(self, t: Tensor) -> Tensor:
        return 1.0 / t

    def _t_of_lambda(self, lambda_: Tensor) -> Tensor:
        return torch.sigmoid(-lambda_)


SCHEDULES = {
    "vp_linear": VPLinear,
    "vp_cosine": VPCosine,
    "ddpm_linear": DiscreteVP.ddpm_linear,
    "scaled_linear": DiscreteVP.scaled_linear,
    "edm": EDMSchedule,
    "rectified_flow": RectifiedFlow,
}


def get_schedule(name: str) -> NoiseSchedule:
    """The schedule called ``name`` (a key of ``SCHEDULES``) with its default settings."""
    check_instance(name, str, "name")
    try:
        return SCHEDULES[name]()
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}") from None
