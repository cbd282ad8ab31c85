"""Chapter 10's fitted flows: a small MLP trained on the conditional flow-matching loss approaches the exact marginal
velocity, and OT-CFM pairs give straighter flows than independent pairs.

Both nets (independent and minibatch-OT pairs) are trained once per module, seeded with their own generators
(weights included), on the ring under the straight path. The bounds are derived, not copied from a run:

* Lipman et al. 2023 (arXiv:2210.02747v2), Theorem 2: for every field v, L_CFM(v) = L_FM(v) + C with C the
  conditional variance E|u_cond - u_t(x_t)|^2. So the fitted net's marginal error E|v - u|^2 is predicted by its
  held-out CFM loss minus C, and its relative error by (L_CFM - C) / E|u|^2; the zero field has relative error 1.
  The test asserts that the direct measurement agrees with the prediction within 5 standard errors of the
  difference (CLT on paired per-sample terms), and that the prediction is below 1/2 (the net has closed more than
  half the gap between the zero field and the exact field).
* Straightness (Liu et al. 2023, arXiv:2209.03003v1): both nets are integrated from the same noises; the paired
  differences of straightness (and of one-step error) over groups of noises have a positive mean beyond 5 standard
  errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from refimpl import grids
from refimpl.differentiable._optim import Adam
from refimpl.models import FunctionModel
from refimpl.samplers import Trajectory
from refimpl.samplers.flow import sample_flow_euler, sample_flow_heun
from refimpl.schedules import RectifiedFlow
from refimpl.transport import cfm_loss, conditional_path, marginal_velocity, minibatch_ot_pairs, straightness
from toy_models import ring

STEPS, BATCH, HIDDEN = 150, 128, 64
N_EVAL = 20000
N_FLOW, GROUPS = 800, 20
Z = 5.0  # standard errors of every Monte Carlo comparison below


def _net(generator: torch.Generator) -> nn.Module:
    """A 3 -> 64 -> 64 -> 2 SiLU MLP on (x, t), initialised like nn.Linear (U(+-1/sqrt(fan_in))) from ``generator``."""
    f32 = {"dtype": torch.float32}  # float32 weights: training is the slow part; the comparisons stay float64
    net = nn.Sequential(
        nn.Linear(3, HIDDEN, **f32), nn.SiLU(), nn.Linear(HIDDEN, HIDDEN, **f32), nn.SiLU(), nn.Linear(HIDDEN, 2, **f32)
    )
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                for p in (layer.weight, layer.bias):
                    p.copy_((2 * torch.rand(p.shape, generator=generator, dtype=torch.float32) - 1) * bound)
    return net


def _field(net: nn.Module):
    """The net as a float64 field v(x, t) (its float32 output cast back)."""
    return lambda x, t: net(
        torch.cat([x, torch.as_tensor(t, dtype=x.dtype).expand(len(x)).reshape(-1, 1)], 1).float()
    ).to(x.dtype)


@pytest.fixture(scope="module")
def fitted() -> dict[str, nn.Module]:
    """Two nets trained by the same loop on independent and on minibatch-OT pairs (OT-CFM, Tong et al. 2024)."""
    mix, rf = ring(), RectifiedFlow()
    nets = {}
    for coupling in ["independent", "ot"]:
        net = _net(torch.Generator().manual_seed(0))
        opt = Adam(list(net.parameters()), lr=3e-3)  # torch.optim's first use imports torch._dynamo (seconds)
        gen = torch.Generator().manual_seed(3)
        for _ in range(STEPS):
            xb, eb = mix.sample(BATCH, gen), torch.randn(BATCH, 2, generator=gen)
            if coupling == "ot":
                eb = eb[minibatch_ot_pairs(xb, eb)]
            tb = rf.t_min + (rf.t_max - rf.t_min) * torch.rand(BATCH, generator=gen)
            loss = cfm_loss(_field(net), xb, eb, tb, rf)
            opt.zero_grad()
            loss.backward()
            opt.step()
        nets[coupling] = net.requires_grad_(False)
    return nets


def test_cfm_fit_approaches_the_exact_marginal_velocity(fitted) -> None:
    """The net never sees u_t, yet its error against it is what its own held-out CFM loss predicts, and small."""
    mix, rf = ring(), RectifiedFlow()
    g = torch.Generator().manual_seed(11)
    x0, eps = mix.sample(N_EVAL, g), torch.randn(N_EVAL, 2, generator=g)
    t = rf.t_min + (rf.t_max - rf.t_min) * torch.rand(N_EVAL, generator=g)
    x_t, u_cond = conditional_path(x0, eps, t, rf)
    u = marginal_velocity(mix, x_t, t, rf)
    with torch.no_grad():
        v = _field(fitted["independent"])(x_t, t)
    direct = ((v - u) ** 2).sum(-1)  # per-sample marginal error
    predicted = ((v - u_cond) ** 2).sum(-1) - ((u_cond - u) ** 2).sum(-1)  # L_CFM - C, per sample
    scale = (u**2).sum(-1).mean()
    diff = direct - predicted  # mean zero by Theorem 2 (= -2 (v - u).(u_cond - u))
    se = diff.std() / math.sqrt(N_EVAL)
    assert abs(float(diff.mean())) <= Z * float(se)
    rel_predicted = float(predicted.mean() / scale)
    rel_direct = float(direct.mean() / scale)
    assert rel_predicted + Z * float(predicted.std() / math.sqrt(N_EVAL) / scale) < 0.5
    assert rel_direct < 0.5


def test_ot_pairs_give_straighter_flows_than_independent_pairs(fitted) -> None:
    """Paired over the same noises: OT-CFM's flow is straighter and its one-step error smaller, beyond 5 SE."""
    rf = RectifiedFlow()
    x1 = rf.t_max * torch.randn(N_FLOW, 2, generator=torch.Generator().manual_seed(4))
    ts = grids.uniform_t(rf, 32)
    per_group = {}
    for coupling, net in fitted.items():
        model = FunctionModel(_field(net), rf, "velocity")
        traj = Trajectory()
        with torch.no_grad():
            end = sample_flow_heun(model, x1, ts, callback=traj)
            one = sample_flow_euler(model, x1, ts[[0, -1]])
        xs = traj.xs.reshape(len(ts), GROUPS, N_FLOW // GROUPS, 2)
        s = torch.stack([straightness(xs[:, k], traj.times) for k in range(GROUPS)])
        e1 = ((one - end) ** 2).sum(-1).reshape(GROUPS, -1).mean(-1)
        per_group[coupling] = (s, e1)
    for k in range(2):  # straightness, one-step squared error
        d = per_group["independent"][k] - per_group["ot"][k]
        assert float(d.mean()) > Z * float(d.std() / math.sqrt(GROUPS))
