"""Euler, Heun and LMS in the EDM sigma parameterisation: identities, diffusers' schedulers, counts, bad input."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from diffusers import EulerDiscreteScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler
from hypothesis import given
from hypothesis import strategies as st
from strategies import schedules
from tolerances import IDENTITY_RTOL

from refimpl import grids
from refimpl.models import CountingModel
from refimpl.samplers import sample_ddim, sample_edm_euler, sample_edm_heun, sample_lms
from refimpl.samplers.edm import euler_step, lms_step
from refimpl.samplers.multistep import lagrange_integrals
from refimpl.samplers.pndm import PLMS_WEIGHTS
from refimpl.schedules import DiscreteVP, get_schedule
from toy_models import ExactModel, random_mixture, ring


@given(s=schedules(), n=st.integers(1, 12), spacing=st.sampled_from(sorted(grids.GRIDS)))
def test_euler_in_sigma_is_ddim(s, n: int, spacing: str) -> None:
    """x~_s = x~_t + (sigma_s - sigma_t) eps is DDIM's x_s = alpha_s x0 + sigma_s eps (Song et al. 2021, Eq. 14).

    The scale of the identity is that of the terms that cancel: alpha_s x~_t = (alpha_s / alpha_t) x_t, up to
    1 / alpha_T ~ 150 times the result for a single step from T.
    """
    model = ExactModel(ring(), s)
    x = model.sample_xt(6, s.t_max, torch.Generator().manual_seed(n))[1]
    ts = grids.timesteps(s, n, spacing)
    a, b = sample_edm_euler(model, x, ts), sample_ddim(model, x, ts)
    v = s(ts)
    scale = float(b.abs().max()) + float(x.abs().max()) * float((v.alpha[1:] / v.alpha[:-1]).max())
    assert float((a - b).abs().max()) <= IDENTITY_RTOL * scale


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_lms_weights_integrate_the_lagrange_basis_exactly(k: int) -> None:
    """Each LMS weight is int_{sigma_cur}^{sigma_next} of a Lagrange basis polynomial: sympy's exact integral
    against the engine's ``lagrange_integrals`` (the weights of the ``"lms"`` setting)."""
    sig = [sp.Rational(31, 10), sp.Rational(23, 10), sp.Rational(17, 10), sp.Rational(6, 5), sp.Rational(4, 5)]
    nodes, target, tau = sig[:k], sig[k], sp.Symbol("tau")
    got = lagrange_integrals(
        torch.tensor([float(v) for v in nodes]), torch.tensor(float(nodes[-1])), torch.tensor(float(target))
    )
    for j in range(k):
        basis = sp.prod([(tau - nodes[m]) / (nodes[j] - nodes[m]) for m in range(k) if m != j])
        exact = float(sp.integrate(basis, (tau, nodes[-1], target)))
        assert float(got[j]) == pytest.approx(exact, rel=IDENTITY_RTOL, abs=IDENTITY_RTOL)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_lms_weights_on_equal_steps_are_adams_bashforth(k: int) -> None:
    """Equal steps in sigma: the weights are the PLMS (Adams-Bashforth) weights times the step."""
    delta = -0.3
    sigmas = 2.0 - delta * torch.arange(k - 1, -1, -1, dtype=torch.float64)  # oldest first, step delta
    got = lagrange_integrals(sigmas, sigmas[-1], sigmas[-1] + delta).flip(0)  # newest first, like PLMS_WEIGHTS
    expected = delta * torch.tensor(PLMS_WEIGHTS[k], dtype=torch.float64)
    assert float((got - expected).abs().max()) <= IDENTITY_RTOL


def _run_diffusers(scheduler, sigmas_layout: list[float], grid_sigmas: list[float], ts, model, x, n_calls: int):
    """Drive a diffusers k-diffusion-style scheduler with our sigmas (float64) and the exact model.

    diffusers works on x~ = x / alpha (its ``init_noise_sigma`` convention) and asks the model at
    ``scale_model_input(x~) = x~ / sqrt(sigma^2 + 1)``, which is x_t for a VP schedule; the model time is the
    grid time whose sigma the scheduler is at (its own discrete timestep labels are not used).
    """
    scheduler.sigmas = torch.tensor(sigmas_layout, dtype=torch.float64)
    x_tilde = x * math.sqrt(1.0 + grid_sigmas[0] ** 2)
    for _ in range(n_calls):
        i = scheduler.step_index or 0
        t = ts[grid_sigmas.index(float(scheduler.sigmas[i]))]
        eps = model(scheduler.scale_model_input(x_tilde, scheduler.timesteps[0]), t)
        x_tilde = scheduler.step(eps, scheduler.timesteps[0], x_tilde).prev_sample
    return x_tilde


@pytest.mark.parametrize("which", ["euler", "heun", "lms"])
def test_agrees_with_diffusers(which: str) -> None:
    """diffusers' EulerDiscreteScheduler, HeunDiscreteScheduler and LMSDiscreteScheduler (order 4, its warm-up
    with orders 1, 2, 3) on our Karras grid, states compared in diffusers' x~ = x / alpha.

    Conventions modelled: diffusers' sigmas are float32 and end with sigma = 0, so we hand it our float64 sigmas
    and stop before its final step to 0; Heun's sigmas are interleaved ([s0, s1, s1, s2, s2, ...]).
    EulerDiscreteScheduler.step rounds its input x~ to float32 (``sample.to(torch.float32)``) before a float64
    update, so for Euler we run our ``euler_step`` from x~ rounded the same way.
    """
    s = DiscreteVP.ddpm_linear()
    model = ExactModel(random_mixture(K=3, d=2, seed=2), s)
    n = 8
    ts = grids.karras(s, n)
    sig = [float(v) for v in s(ts).rho]
    x = model.sample_xt(5, s.t_max, torch.Generator().manual_seed(4))[1]
    kwargs = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    if which == "euler":
        scheduler, layout, calls = EulerDiscreteScheduler(**kwargs), [*sig, 0.0], n
        ours, v = x, s(ts)
        for i in range(n):  # the model sees x; the update starts from x~ rounded to float32, as in diffusers
            rounded = v.alpha[i] * (ours / v.alpha[i]).float().double()
            ours = euler_step(rounded, model(ours, ts[i]), v[i], v[i + 1])
    elif which == "heun":
        layout = [sig[0], *[v for v in sig[1:] for _ in range(2)], 0.0]
        scheduler, calls, ours = HeunDiscreteScheduler(**kwargs), 2 * n, sample_edm_heun(model, x, ts)
    else:
        scheduler, layout, calls = LMSDiscreteScheduler(**kwargs), [*sig, 0.0], n
        ours = sample_lms(model, x, ts, order=4, warmup="lower_order")
    scheduler.set_timesteps(n)
    theirs = _run_diffusers(scheduler, layout, sig, ts, model, x, calls)
    ours_tilde = ours * math.sqrt(1.0 + sig[-1] ** 2)
    assert float((ours_tilde - theirs).abs().max()) <= IDENTITY_RTOL * float(theirs.abs().max())


def test_model_calls() -> None:
    s = get_schedule("edm")
    for n in (1, 2, 3, 5):
        counts = {}
        for name, run in [
            (
                "heun",
                lambda m, n=n: sample_edm_heun(
                    m, torch.randn(2, 2, generator=torch.Generator().manual_seed(901)), grids.karras(s, n)
                ),
            ),
            (
                "lms_rk4",
                lambda m, n=n: sample_lms(
                    m, torch.randn(2, 2, generator=torch.Generator().manual_seed(902)), grids.karras(s, n)
                ),
            ),
            (
                "lms_low",
                lambda m, n=n: sample_lms(
                    m,
                    torch.randn(2, 2, generator=torch.Generator().manual_seed(903)),
                    grids.karras(s, n),
                    warmup="lower_order",
                ),
            ),
            (
                "lms_rk4_2",
                lambda m, n=n: sample_lms(
                    m, torch.randn(2, 2, generator=torch.Generator().manual_seed(904)), grids.karras(s, n), order=2
                ),
            ),
        ]:
            model = CountingModel(ExactModel(ring(), s))
            run(model)
            counts[name] = model.calls
        assert counts == {"heun": 2 * n, "lms_rk4": n + 3 * min(n, 3), "lms_low": n, "lms_rk4_2": n + 3 * min(n, 1)}


def test_bad_input() -> None:
    s = get_schedule("edm")
    model, x, ts = (
        ExactModel(ring(), s),
        torch.randn(3, 2, generator=torch.Generator().manual_seed(905)),
        grids.karras(s, 4),
    )
    for order in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="order"):
            sample_lms(model, x, ts, order=order)
    with pytest.raises(ValueError, match="warmup"):
        sample_lms(model, x, ts, warmup="heun")
    with pytest.raises(ValueError, match="2 stored derivatives for 3 noise levels"):
        lms_step(x, [x, x], torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64), s(ts[0]), s(ts[1]))
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_edm_heun(model, x, torch.cat([ts[:2], ts[1:]]))
