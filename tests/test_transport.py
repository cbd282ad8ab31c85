"""Chapter 10, paths and flow matching: conversions under every path, the exact marginal velocity (continuity
equation), the CFM / FM gradient identity, and side-by-side agreement with ``flow_matching`` and ``torchcfm``."""

from __future__ import annotations

import pytest
import torch
from strategies import SCHEDULE_NAMES
from tolerances import (
    CONTINUITY_ATOL,
    CONTINUITY_DT,
    FLOW_GROWTH,
    FLOW_STEP_OPS,
    U64,
    Z,
    clt_bound,
    roundoff,
    straight_line_bound,
)

from refimpl import grids
from refimpl.parameterization import PREDICTIONS, convert, to_x0_eps, velocity_from_x0_eps
from refimpl.samplers.flow import sample_flow_euler, sample_flow_heun, sample_flow_midpoint
from refimpl.schedules import RectifiedFlow, get_schedule
from refimpl.transport import (
    cfm_loss,
    conditional_batch,
    conditional_path,
    from_library_time,
    marginal_fm_loss,
    marginal_velocity,
    straightness,
    to_library_time,
)
from toy_models import ExactModel, random_mixture, ring

torch.set_default_dtype(torch.float64)


def _kappa(v) -> float:
    """Condition of a round trip through (x0, eps): the 2x2 map (x0, eps) -> (x, u) has condition number
    cond([[alpha, sigma], [alpha', sigma']]), and recovering one of x0, eps from x and the other divides by alpha or
    sigma, losing max(alpha / sigma, sigma / alpha) more (eps = (x - alpha x0) / sigma at small sigma)."""
    m = torch.tensor([[float(v.alpha), float(v.sigma)], [float(v.d_alpha), float(v.d_sigma)]])
    ratio = float(v.alpha / v.sigma)
    return float(torch.linalg.cond(m)) * max(ratio, 1.0 / ratio)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("frac", [0.0, 0.3, 0.7, 1.0])
def test_velocity_round_trips_with_every_prediction(name: str, frac: float) -> None:
    """velocity -> kind -> velocity for every kind, in float64, at interior and end times of every path."""
    s = get_schedule(name)
    t = s.t_of_lambda(s.lambda_max + frac * (s.lambda_min - s.lambda_max))
    v = s(t)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
    x = v.alpha * x0 + v.sigma * eps
    u = velocity_from_x0_eps(x0, eps, v.d_alpha, v.d_sigma)
    scale = max(float(u.abs().max()), float(x.abs().max()))
    for kind in PREDICTIONS:
        back = convert(convert(u, "velocity", kind, x, v), kind, "velocity", x, v)
        bound = roundoff(64, scale, U64, _kappa(v))
        assert float((back - u).abs().max()) <= bound, (name, kind)
    x0_back, eps_back = to_x0_eps("velocity", u, x, v)
    assert float((x0_back - x0).abs().max()) <= roundoff(64, scale, U64, _kappa(v))
    assert float((eps_back - eps).abs().max()) <= roundoff(64, scale, U64, _kappa(v))


def test_rectified_flow_velocity_is_eps_minus_x0() -> None:
    """On the straight path the conditional velocity is eps - x0 and the conversion's determinant is 1."""
    s = RectifiedFlow()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    t = torch.rand(8, generator=g) * 0.9 + 0.05
    x_t, u = conditional_path(x0, eps, t, s)
    scale = float(x0.abs().max() + eps.abs().max())
    # u = alpha' x0 + sigma' eps with alpha' = -1, sigma' = 1 exactly: two products and a sum, against one subtraction
    torch.testing.assert_close(u, eps - x0, rtol=0, atol=roundoff(4, scale))
    # x_t = alpha x0 + sigma eps with alpha = 1 - t against the same formula written out: 1 - t, two products, a sum
    torch.testing.assert_close(x_t, (1 - t)[:, None] * x0 + t[:, None] * eps, rtol=0, atol=roundoff(8, scale))


@pytest.mark.parametrize("name", ["rectified_flow", "vp_linear", "vp_cosine", "edm"])
def test_marginal_velocity_solves_the_continuity_equation(name: str) -> None:
    """d/dt log p_t + div u_t + u_t . grad log p_t = 0 for the exact mixture (autograd divergence, central FD in t)."""
    s = get_schedule(name)
    mix = random_mixture(3, 2, seed=4)
    model = ExactModel(mix, s)
    for frac in (0.2, 0.5, 0.8):
        t = float(s.t_of_lambda(s.lambda_max + frac * (s.lambda_min - s.lambda_max)))
        x = model.sample_xt(32, t, torch.Generator().manual_seed(2))[1].requires_grad_(True)
        u = marginal_velocity(mix, x, t, s)
        div = sum(torch.autograd.grad(u[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
        dt = CONTINUITY_DT * t
        dlogp = (model.log_prob(x, t + dt) - model.log_prob(x, t - dt)) / (2 * dt)
        residual = dlogp + div + (u * model.score(x, t)).sum(-1)
        assert float(residual.detach().abs().max()) <= CONTINUITY_ATOL * max(1.0, float(dlogp.detach().abs().max())), (
            name,
            t,
        )


def test_cfm_and_fm_losses_differ_by_a_constant() -> None:
    """Lipman et al. 2023, Thm 2: L_CFM(theta) - L_FM(theta) does not depend on theta, so the gradients agree.

    For v_theta(x, t) = x A + b the per-sample differences of the two gradients, 2 (u_t(x_t) - u_t(x_t | x0, eps))
    (for b) and the same times x_t (for A), have mean zero: their sample means stay within the CLT bound Z std / sqrt n.
    """
    s = RectifiedFlow()
    mix = ring()
    g = torch.Generator().manual_seed(5)
    n = 20000
    x0, eps = mix.sample(n, g), torch.randn(n, 2, generator=g)
    t = s.t_min + (s.t_max - s.t_min) * torch.rand(n, generator=g)
    x_t, u_c = conditional_path(x0, eps, t, s)
    u_m = marginal_velocity(mix, x_t, t, s)
    diff_b = 2 * (u_m - u_c)  # d/db of |v - u_c|^2 - |v - u_m|^2, per sample
    diff_a = diff_b[:, None, :] * x_t[:, :, None]  # d/dA
    for d in (diff_b, diff_a.reshape(n, -1)):
        assert bool((d.mean(0).abs() <= clt_bound(d.std(0), n)).all())
    # the loss gap at two parameter values: the difference of gaps is a mean of zero-mean terms
    params = [(torch.eye(2), torch.zeros(2)), (torch.tensor([[0.3, -1.0], [2.0, 0.5]]), torch.tensor([1.0, -2.0]))]
    gaps = []
    for A, b in params:

        def v(x, tt, A=A, b=b):
            return x @ A + b

        gaps.append(cfm_loss(v, x0, eps, t, s) - marginal_fm_loss(v, mix, x_t, t, s))
    terms = 2 * ((u_m - u_c) * ((x_t @ params[0][0] + params[0][1]) - (x_t @ params[1][0] + params[1][1]))).sum(-1)
    assert abs(float(gaps[0] - gaps[1])) <= clt_bound(float(terms.std()), n)
    # and the gap is the conditional variance E |u_c - u_m|^2 (per sample they differ by -2 (v - u_m).(u_c - u_m))
    v0 = x_t @ params[0][0] + params[0][1]
    spread = float((2 * ((v0 - u_m) * (u_c - u_m)).sum(-1)).std())
    assert abs(float(gaps[0]) - float(((u_c - u_m) ** 2).sum(-1).mean())) <= clt_bound(spread, n)


def test_cfm_gradient_check_catches_a_wrong_target() -> None:
    """The same CLT check rejects a target that is not the conditional mean (the marginal velocity scaled by 0.9)."""
    s = RectifiedFlow()
    mix = ring()
    g = torch.Generator().manual_seed(6)
    n = 20000
    x0, eps = mix.sample(n, g), torch.randn(n, 2, generator=g)
    t = 0.2 + 0.6 * torch.rand(n, generator=g)
    x_t, u_c = conditional_path(x0, eps, t, s)
    wrong = 0.9 * marginal_velocity(mix, x_t, t, s)
    d = (2 * (wrong - u_c)[:, None, :] * x_t[:, :, None]).reshape(n, -1)  # the gradient in A
    assert bool((d.mean(0).abs() > Z * d.std(0) / n**0.5).any())


def test_library_time_and_bad_times() -> None:
    torch.testing.assert_close(to_library_time(torch.tensor([0.0, 0.25, 1.0])), torch.tensor([1.0, 0.75, 0.0]))
    torch.testing.assert_close(from_library_time(0.25), torch.tensor(0.75))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="t"):
            to_library_time(bad)
        with pytest.raises(ValueError, match="tau"):
            from_library_time(bad)
    with pytest.raises(ValueError, match="must lie in"):
        RectifiedFlow()(1.2)
    with pytest.raises(ValueError, match="t_min"):
        RectifiedFlow(t_min=0.0)
    with pytest.raises(ValueError, match="same shape"):
        conditional_path(torch.zeros(2, 2), torch.zeros(3, 2), 0.5, RectifiedFlow())
    with pytest.raises(ValueError, match="coupling"):
        conditional_batch(torch.zeros(2, 2), torch.zeros(2, 2), torch.full((2,), 0.5), RectifiedFlow(), coupling="x")


def test_straightness_is_zero_on_lines_and_positive_on_curves() -> None:
    times = torch.linspace(1.0, 0.0, 11)
    a, b = (
        torch.randn(4, 2, generator=torch.Generator().manual_seed(901)),
        torch.randn(4, 2, generator=torch.Generator().manual_seed(902)),
    )
    line = times[:, None, None] * a + (1 - times)[:, None, None] * b
    assert float(straightness(line, times)) <= straight_line_bound(float(a.abs().max() + b.abs().max()), 0.1, 2)
    curve = line + torch.sin(torch.pi * times)[:, None, None] * torch.ones(4, 2)
    assert float(straightness(curve, times)) > 0.1
    with pytest.raises(ValueError, match="monotone"):
        straightness(line, torch.cat([times[:5], times[:6]]))


# --- side by side with flow_matching (facebookresearch) and torchcfm: same toy, same path ----------------------------


def test_flow_matching_cond_ot_path_and_conversions_agree() -> None:
    """CondOTProbPath in its time tau is refimpl's rectified flow at t = 1 - tau, with the velocity's sign flipped."""
    from flow_matching.path import CondOTProbPath

    s = RectifiedFlow()
    g = torch.Generator().manual_seed(7)
    data, noise = ring().sample(64, g), torch.randn(64, 2, generator=g)
    tau = 0.01 + 0.98 * torch.rand(64, generator=g)
    path = CondOTProbPath()
    ps = path.sample(x_0=noise, x_1=data, t=tau)
    t = from_library_time(tau)
    x_t, u = conditional_path(data, noise, t, s)
    atol = roundoff(16, float(x_t.abs().max() + 1))  # tau = 1 - t (an ulp of 1) and a dozen ops of the path
    torch.testing.assert_close(ps.x_t, x_t, rtol=0, atol=atol)
    torch.testing.assert_close(ps.dx_t, -u, rtol=0, atol=atol)
    values = s(t)
    x0, eps = to_x0_eps("velocity", u, x_t, values)
    # each conversion divides by tau or 1 - tau (alpha or sigma of the straight path): 64 ops amplified by that
    bound = roundoff(
        64, float(x_t.abs().max() + u.abs().max()), condition=1 / float(tau.min().clamp(max=1 - tau.max()))
    )
    # Its conversions do not broadcast a per-sample time (B,) against x (B, d) (sample() does): pass tau as (B, 1).
    tau_col = tau[:, None]
    torch.testing.assert_close(path.velocity_to_target(ps.dx_t, ps.x_t, tau_col), x0, rtol=0, atol=bound)
    torch.testing.assert_close(path.velocity_to_epsilon(ps.dx_t, ps.x_t, tau_col), eps, rtol=0, atol=bound)
    torch.testing.assert_close(path.target_to_velocity(data, ps.x_t, tau_col), -u, rtol=0, atol=bound)
    torch.testing.assert_close(path.epsilon_to_velocity(noise, ps.x_t, tau_col), -u, rtol=0, atol=bound)


@pytest.mark.parametrize(("ours", "theirs"), [("euler", "euler"), ("midpoint", "midpoint"), ("heun", "heun2")])
def test_flow_matching_ode_solver_agrees_with_the_flow_samplers(ours: str, theirs: str) -> None:
    """ODESolver (torchdiffeq fixed grids) on the time grid 1 - ts, velocity -u(x, 1 - tau): the same states."""
    from flow_matching.solver import ODESolver

    s = RectifiedFlow()
    mix = ring()
    model = ExactModel(mix, s, prediction="velocity")
    x = model.sample_xt(16, s.t_max, torch.Generator().manual_seed(8))[1]
    n = 12
    ts = grids.uniform_t(s, n)
    sample = {"euler": sample_flow_euler, "midpoint": sample_flow_midpoint, "heun": sample_flow_heun}[ours]
    mine = sample(model, x, ts)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -marginal_velocity(mix, x, from_library_time(t), s)

    theirs_out = ODESolver(velocity_model=velocity).sample(
        x_init=x, step_size=None, method=theirs, time_grid=to_library_time(ts)
    )
    scale = float(max(x.abs().max(), mine.abs().max()))
    calls = 1 if ours == "euler" else 2
    bound = FLOW_STEP_OPS * calls * n * U64 * scale * FLOW_GROWTH
    assert float((theirs_out - mine).abs().max()) <= bound


def test_torchcfm_conditional_flow_matcher_agrees() -> None:
    """ConditionalFlowMatcher(sigma=0): x_t and u_t are refimpl's at t = 1 - tau, velocity negated.

    torchcfm's sigma > 0 adds N(0, sigma^2) around the straight path (its Eq. 14): a different path (refimpl's
    rectified flow is sigma = 0), so the comparison is made at sigma = 0.
    """
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

    s = RectifiedFlow()
    g = torch.Generator().manual_seed(9)
    data, noise = ring().sample(64, g), torch.randn(64, 2, generator=g)
    tau = 0.01 + 0.98 * torch.rand(64, generator=g)
    _, xt, ut = ConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow(noise, data, t=tau)
    x_t, u = conditional_path(data, noise, from_library_time(tau), s)
    atol = roundoff(16, float(x_t.abs().max() + 1))  # tau = 1 - t (an ulp of 1) and a dozen ops of the path
    torch.testing.assert_close(xt, x_t, rtol=0, atol=atol)
    torch.testing.assert_close(ut, -u, rtol=0, atol=atol)
