"""TrojDiff: a Trojan forward process and its generative process (Chen, Song & Li 2023, arXiv:2303.05762v2).

The attacker diffuses target data x_0 ~ q_target into a biased Gaussian N(mu, gamma^2 I) instead of N(0, I)
(their Eq. 5-7 [unverified]; the official ``functions/losses_attack.py``):

    q*(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1} + k_t mu, (1 - alpha_t) gamma^2 I),
    k_t = sqrt(1 - abar_t) - sqrt(alpha_t (1 - abar_{t-1})),
    q*(x_t | x_0)     = N(sqrt(abar_t) x_0 + sqrt(1 - abar_t) mu, (1 - abar_t) gamma^2 I),

i.e. x*_t = alpha_t x_0 + sigma_t (mu + gamma eps) in the book's notation. A blend trigger delta gives
mu = (1 - gamma) delta. One network is trained on clean pairs (x_t, eps) and on Trojan pairs (x*_t, eps); the
attacker samples from x_T ~ N(mu, gamma^2 I) with the Trojan generative process, whose x0 is
(x - sigma (gamma eps_hat + mu)) / alpha (``functions/denoising.py``, ``generalized_steps_bd``).

``PoisonedModel`` is that network made exact: the Bayes-optimal eps of the poisoned training law for Gaussian-
mixture clean and target data. ``marginal_symbolic`` derives k_t and the posterior in sympy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import as_float_tensor, check_finite, check_instance, check_number, check_tensor
from refimpl.models import DiffusionModel, check_model, predict
from refimpl.samplers._common import Callback, NoiseSource, StepInfo, check_sampler_inputs
from refimpl.samplers.ddim import ddim_sigma, ddim_step
from refimpl.schedules import NoiseSchedule, ScheduleValues
from toy_models.gmm import GaussianMixture

__all__ = ["PoisonedModel", "marginal_symbolic", "sample_trojan", "trojan_forward", "trojan_marginal"]


def _check_trigger(mu: object, gamma: float, d: int) -> Tensor:
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 < gamma <= 1:
        raise ValueError(f"gamma must lie in (0, 1], got {gamma!r}")
    mu = check_finite(as_float_tensor(mu, "mu"), "mu")
    if mu.shape != (d,):
        raise ValueError(f"mu must have shape ({d},), got {tuple(mu.shape)}")
    return mu


def trojan_forward(x0: Tensor, v_t: ScheduleValues, eps: Tensor, mu: Tensor, gamma: float) -> Tensor:
    """x*_t = alpha_t x_0 + sigma_t (mu + gamma eps) (Eq. 7 [unverified]; ``losses_attack.py``)."""
    x0, eps = check_tensor(x0, "x0"), check_tensor(eps, "eps")
    check_instance(v_t, ScheduleValues, "v_t")
    mu = _check_trigger(mu, gamma, x0.shape[-1]).to(x0.dtype)
    return expand_like(v_t.alpha, x0) * x0 + expand_like(v_t.sigma, eps) * (mu + gamma * eps)


def trojan_marginal(target: GaussianMixture, v_t: ScheduleValues, mu: Tensor, gamma: float) -> GaussianMixture:
    """The exact law of x*_t for x_0 ~ target.

    Its components are N(alpha mu_k + sigma mu, alpha^2 Sigma_k + gamma^2 sigma^2 I)."""
    check_instance(target, GaussianMixture, "target")
    check_instance(v_t, ScheduleValues, "v_t")
    mu = _check_trigger(mu, gamma, target.d).to(target.dtype)
    noised = target.noised(v_t.alpha, gamma * float(v_t.sigma))
    return GaussianMixture(noised.weights, noised.means + float(v_t.sigma) * mu, noised.covariances, noised.labels)


@dataclass
class PoisonedModel:
    """The exact eps network of TrojDiff's training law: clean pairs from ``clean`` with probability
    1 - ``poison``, Trojan pairs from ``target`` with probability ``poison``.

    E[eps | x] = (1 - r) E_clean[eps | x] + r E_trojan[eps | x], r = P(Trojan | x) by Bayes' rule. The Trojan part
    is the ordinary lab in y = (x - sigma_t mu) / gamma = (alpha_t / gamma) x_0 + sigma_t eps.
    """

    clean: GaussianMixture
    target: GaussianMixture
    mu: Tensor
    gamma: float
    schedule: NoiseSchedule
    poison: float = 0.1
    prediction: str = "eps"

    def __post_init__(self) -> None:
        check_instance(self.clean, GaussianMixture, "clean")
        check_instance(self.target, GaussianMixture, "target")
        check_instance(self.schedule, NoiseSchedule, "schedule")
        check_number(self.poison, "poison")
        if self.clean.d != self.target.d:
            raise ValueError(f"clean and target must share the dimension, got {self.clean.d} and {self.target.d}")
        self.mu = _check_trigger(self.mu, self.gamma, self.clean.d)
        if not 0 < self.poison < 1:
            raise ValueError(f"poison must lie in (0, 1), got {self.poison!r}")
        if self.prediction != "eps":
            raise ValueError("PoisonedModel predicts eps (TrojDiff's loss targets eps)")
        check_model(self)

    def _parts(self, x: Tensor, t: object) -> tuple[Tensor, Tensor, Tensor]:
        """(r, E_clean[eps | x], E_trojan[eps | x])."""
        v = self.schedule(t)
        y = (x - expand_like(v.sigma, x) * self.mu.to(x.dtype)) / self.gamma
        a_y = v.alpha / self.gamma
        log_clean = math.log1p(-self.poison) + self.clean.log_prob_t(x, v.alpha, v.sigma)
        log_troj = math.log(self.poison) + self.target.log_prob_t(y, a_y, v.sigma) - x.shape[-1] * math.log(self.gamma)
        r = torch.sigmoid(log_troj - log_clean)
        return r, self.clean.x0_eps(x, v.alpha, v.sigma)[1], self.target.x0_eps(y, a_y, v.sigma)[1]

    def trojan_responsibility(self, x: Tensor, t: object) -> Tensor:
        """P(Trojan | x_t = x): (B,)."""
        return self._parts(x, t)[0]

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        r, eps_clean, eps_troj = self._parts(x, t)
        return eps_clean + r[:, None] * (eps_troj - eps_clean)


def sample_trojan(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    mu: Tensor,
    gamma: float,
    eta: float = 1.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """The attacker's sampler (``generalized_steps_bd``; eta = 1 has the Trojan posterior of ``ddpm_steps_bd``).

    With eps_hat = model(x_s, s): x0 = (x_s - sigma_s (gamma eps_hat + mu)) / alpha_s and
    x_t = alpha_t x0 + sigma_t mu + gamma (sqrt(sigma_t^2 - sigma~^2) eps_hat + sigma~ z), sigma~ DDIM's for eta.
    ``model`` must predict eps.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if model.prediction != "eps":
        raise ValueError(f"the Trojan sampler reads the network's eps; model.prediction is {model.prediction!r}")
    mu = _check_trigger(mu, gamma, x.shape[-1]).to(x.dtype)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    noise_at = NoiseSource(noise, generator, len(ts) - 1, x)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        eps = predict(model, x, ts[i], "eps")
        x0 = (x - v_s.sigma * (gamma * eps + mu)) / v_s.alpha
        sigma_tilde = ddim_sigma(eta, v_s, v_t)
        z = gamma * noise_at(i) if eta > 0 else None
        x_next = ddim_step(x0, gamma * eps, v_t, sigma_tilde, z) + v_t.sigma * mu
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def marginal_symbolic() -> dict[str, Any]:
    """Sympy: the chain with k_t keeps q*(x_t | x_0) of the stated form, and its posterior's mu coefficient.

    From the marginal at t - 1 (mean sqrt(abar_p) x_0 + sqrt(1 - abar_p) mu, variance gamma^2 (1 - abar_p)) one
    transition gives mean sqrt(alpha abar_p) x_0 + (sqrt(alpha (1 - abar_p)) + k) mu and variance
    gamma^2 (1 - alpha abar_p); ``k`` solves for the stated mean. The posterior q*(x_{t-1} | x_t, x_0) is found by
    completing the square; ``coef_mu`` is its mu coefficient and ``code_coef_mu`` the official code's
    ``coef_miu / (1 - abar_t)``.
    """
    import sympy as sp

    abar_p, alpha, gamma = sp.symbols("abar_p alpha gamma", positive=True)
    x_p, x_t, x_0, mu, k = sp.symbols("x_p x_t x_0 mu k", real=True)
    abar_t = alpha * abar_p
    k_t = sp.solve(sp.Eq(sp.sqrt(alpha * (1 - abar_p)) + k, sp.sqrt(1 - abar_t)), k)[0]
    mean_t = sp.sqrt(alpha) * (sp.sqrt(abar_p) * x_0 + sp.sqrt(1 - abar_p) * mu) + k_t * mu
    var_t = alpha * gamma**2 * (1 - abar_p) + (1 - alpha) * gamma**2
    log_joint = -((x_t - sp.sqrt(alpha) * x_p - k_t * mu) ** 2) / (2 * (1 - alpha) * gamma**2) - (
        x_p - sp.sqrt(abar_p) * x_0 - sp.sqrt(1 - abar_p) * mu
    ) ** 2 / (2 * gamma**2 * (1 - abar_p))
    poly = sp.Poly(sp.expand(log_joint), x_p)
    variance = sp.factor(-1 / (2 * poly.coeff_monomial(x_p**2)))
    mean = sp.expand(poly.coeff_monomial(x_p) * variance)
    beta = 1 - alpha
    code_coef_mu = (sp.sqrt(1 - abar_p) * beta - (1 - abar_p) * sp.sqrt(alpha) * k_t) / (1 - abar_t)
    return {
        "abar_p": abar_p,
        "alpha": alpha,
        "gamma": gamma,
        "k_t": k_t,
        "mean_t": sp.expand(mean_t),
        "var_t": sp.factor(var_t),
        "variance": variance,
        "coef_x0": sp.factor(mean.coeff(x_0)),
        "coef_xt": sp.factor(mean.coeff(x_t)),
        "coef_mu": sp.factor(mean.coeff(mu)),
        "code_coef_mu": code_coef_mu,
    }
