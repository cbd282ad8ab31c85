"""DiffuseVAE formulation 2: DDPM conditioned on a VAE reconstruction x_hat (Pandey et al. 2022, arXiv:2201.00308v3).

The paper's formulation 2 (Sec. 3.2 [unverified]) shifts the forward chain towards x_hat:

    q(x_t | x_{t-1}, x_hat) = N(sqrt(1 - beta_t) x_{t-1} + (1 - sqrt(1 - beta_t)) x_hat, beta_t I),
    q(x_t | x_0, x_hat)     = N(sqrt(abar_t) x_0 + (1 - sqrt(abar_t)) x_hat, (1 - abar_t) I),

the process of ``refimpl.forward.shifted`` with kappa_t = 1 - alpha_t (``form="paper"``). The official code
(``ddpm_form2.py``) diffuses x_t = sqrt(abar_t) x_0 + x_hat + sqrt(1 - abar_t) eps instead, kappa_t = 1 at every
t > 0, and removes x_hat after the last step (``form="code"``). Both are DDPM on z_t = x_t - kappa_t x_hat, so the
posterior of a step from s to t < s has the DDPM coefficients (c_x0, c_xs) and the shift term
(kappa_t - c_xs kappa_s) x_hat: 1 - c_x0 - c_xs in the paper's form, 1 - c_xs in the code's (its
``post_coeff_3``). ``posterior_symbolic`` derives the paper's three coefficients in sympy from the chain.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl.forward.shifted import ShiftedModel, check_shift, kappa_one, kappa_residual
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.samplers._common import Callback, NoiseSource, StepInfo, check_sampler_inputs
from refimpl.samplers.ddpm import ddpm_posterior

__all__ = ["FORMS", "posterior_symbolic", "sample_diffusevae"]

FORMS = {"paper": kappa_residual, "code": kappa_one}


def sample_diffusevae(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    x_hat: Tensor | None = None,
    form: str = "paper",
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling of formulation 2 (their Algorithm 2 [unverified]; ``ddpm_form2.py``, ``sample``).

    ``model`` is a network of the shifted process (it sees x_t and knows x_hat); x starts at timesteps[0] (about
    x_hat + N(0, I) there). Each step draws x_t ~ N(c_x0 x0 + c_xs x_s + (kappa_t - c_xs kappa_s) x_hat, var) with
    DDPM's posterior coefficients and variance. ``form="code"`` subtracts x_hat from the final state, as the
    official sampler does. x_hat = None (zero) is DDPM exactly (``refimpl.samplers.ddpm.sample_ddpm``).
    """
    ts = check_sampler_inputs(model, x, timesteps)
    x_hat = check_shift(x_hat, x, "x_hat")
    if form not in FORMS:
        raise ValueError(f"form must be one of {sorted(FORMS)}, got {form!r}")
    kappa = FORMS[form]
    view = ShiftedModel(model, -x_hat, kappa)  # the model of z_t = x_t - kappa_t x_hat
    noise_at = NoiseSource(noise, generator, len(ts) - 1, x)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        z_s = x - expand_like(kappa(v_s), x) * x_hat
        x0, _ = predict_x0_eps(view, z_s, ts[i], v_s)
        mean, var = ddpm_posterior(z_s, x0, v_s, v_t)  # DDPM in z: c_x0 x0 + c_xs z_s
        x_next = mean + expand_like(kappa(v_t), x) * x_hat + expand_like(torch.sqrt(var), x) * noise_at(i)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x - x_hat if form == "code" else x


def posterior_symbolic() -> dict[str, Any]:
    """q(x_{t-1} | x_t, x_0, x_hat) of the paper's chain, by completing the square in sympy (one coordinate).

    With abar_p = abar_{t-1}, alpha = alpha_t (DDPM's letters), the chain q(x_t | x_{t-1}, x_hat) above and the
    marginal q(x_{t-1} | x_0, x_hat) multiply to a Gaussian in x_{t-1}. Returns the symbols and the simplified
    ``coef_x0``, ``coef_xt``, ``coef_xhat`` and ``variance``.
    """
    import sympy as sp

    abar_p, alpha = sp.symbols("abar_p alpha", positive=True)
    x_p, x_t, x_0, x_hat = sp.symbols("x_p x_t x_0 x_hat", real=True)
    beta = 1 - alpha
    log_joint = -((x_t - sp.sqrt(alpha) * x_p - (1 - sp.sqrt(alpha)) * x_hat) ** 2) / (2 * beta) - (
        x_p - sp.sqrt(abar_p) * x_0 - (1 - sp.sqrt(abar_p)) * x_hat
    ) ** 2 / (2 * (1 - abar_p))
    poly = sp.Poly(sp.expand(log_joint), x_p)
    variance = sp.factor(-1 / (2 * poly.coeff_monomial(x_p**2)))
    mean = sp.expand(sp.factor(poly.coeff_monomial(x_p) * variance))
    return {
        "abar_p": abar_p,
        "alpha": alpha,
        "variance": variance,
        "coef_x0": sp.factor(mean.coeff(x_0)),
        "coef_xt": sp.factor(mean.coeff(x_t)),
        "coef_xhat": sp.factor(mean.coeff(x_hat)),
    }
