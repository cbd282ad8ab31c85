"""Chapter 7b: gradients through a few DDIM steps (REFace, InstructVideo) and MMD fine-tuning (MMD-DDM)."""

from __future__ import annotations

import pytest
import torch
from tolerances import FD_DELTA, FD_RTOL, ORDER_TOL, clt_difference_bound

from refimpl import grids
from refimpl.differentiable.few_step import DifferentiableNetwork, central_difference, finetune_reward, partial_chain
from refimpl.differentiable.mmd import finetune_mmd, mmd2_unbiased
from refimpl.distillation.flow_maps import affine_map_of
from refimpl.reference import convergence_order
from refimpl.samplers import sample_ddim
from refimpl.schedules import get_schedule
from toy_models import ExactModel, anisotropic_gaussian, ring, zoo
from toy_models.trained import load_mlp, load_unet


def test_gradient_through_k_step_ddim_on_the_digits_unet_equals_finite_differences():
    model = DifferentiableNetwork.from_checkpoint(load_unet(), label=3)
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(1, 64, generator=gen, dtype=torch.float64)
    target = torch.zeros(1, 64, dtype=torch.float64)
    for k in (2, 3):
        ts = grids.uniform_lambda(model.schedule, k)

        def loss(x, ts=ts):
            return ((sample_ddim(model, x, ts) - target) ** 2).sum()

        xg = x_T.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(xg), xg)
        u = torch.randn(x_T.shape, generator=gen, dtype=torch.float64)
        fd = central_difference(loss, x_T, u, FD_DELTA)
        assert abs(fd - float((grad * u).sum())) <= FD_RTOL * float((grad.abs() * u.abs()).sum())


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_partial_chain_returns_to_the_data_law_at_first_order(name):
    """x_{t_s} = alpha x_0 + sigma eps has the exact law p_{t_s}; the deterministic DDIM chain back is affine on
    Gaussian data, so its output law is exact: its distance to p_{t_min} shrinks like 1/n (DDIM's order)."""
    schedule = get_schedule(name)
    g = anisotropic_gaussian(2, seed=3)
    model = ExactModel(g, schedule)
    t_s = float(grids.uniform_lambda(schedule, 4)[1])
    start = model.marginal(t_s)
    end = model.marginal(schedule.t_min)
    steps, errors = [8, 16, 32], []
    for n in steps:
        ts = grids.uniform_lambda(schedule, n, t_s)
        M, b = affine_map_of(lambda x, ts=ts: sample_ddim(model, x, ts), 2)
        mean, cov = M @ start.means[0] + b, M @ start.covariances[0] @ M.T
        errors.append(max(float((mean - end.means[0]).abs().max()), float((cov - end.covariances[0]).abs().max())))
    assert abs(convergence_order(steps, errors).order - 1.0) <= ORDER_TOL


def test_reward_gradient_through_the_partial_chain_equals_finite_differences():
    schedule = get_schedule("vp_linear")
    model = ExactModel(ring(), schedule)
    gen = torch.Generator().manual_seed(1)
    x0 = ring().sample(3, gen)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    aim = torch.tensor([0.0, 2.0], dtype=torch.float64)

    def reward(x):
        return -((partial_chain(model, x, 0.4, 5, noise) - aim) ** 2).sum()

    xg = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reward(xg), xg)
    u = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    fd = central_difference(reward, x0, u, FD_DELTA)
    assert abs(fd - float((grad * u).sum())) <= FD_RTOL * float((grad.abs() * u.abs()).sum())
    with pytest.raises(ValueError, match="n_steps"):
        partial_chain(model, x0, 0.4, 0, noise)
    with pytest.raises(ValueError, match="delta"):
        central_difference(reward, x0, u, 0.0)


def test_reward_loop_through_the_partial_chain_raises_the_held_out_reward():
    """InstructVideo's loop on the trained ring MLP: edits of data by a 3-step partial chain from t_s = 0.5, reward
    r(x) = x_2 (move up). 15 Adam steps raise the held-out mean reward (fixed data and noise) by more than the CLT
    bound of the difference of the two means; lr = 3e-4 and batch = 64 off any default (there is none)."""
    checkpoint = load_mlp()
    model = DifferentiableNetwork.from_checkpoint(checkpoint)
    mixture = getattr(zoo, checkpoint.config.mixture)()
    data = mixture.sample(2000, torch.Generator().manual_seed(1))
    held = mixture.sample(500, torch.Generator().manual_seed(2))
    noise = torch.randn(held.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def reward(x):
        return x[:, 1]

    def held_out():
        with torch.no_grad():
            return reward(partial_chain(model, held, 0.5, 3, noise))

    before = held_out()
    history = finetune_reward(
        model,
        model.parameters(),
        data,
        reward,
        t_start=0.5,
        n_steps=3,
        steps=15,
        lr=3e-4,
        batch=64,
        generator=torch.Generator().manual_seed(4),
    )
    after = held_out()
    assert len(history) == 15
    bound = clt_difference_bound(float(before.std()), 500, float(after.std()), 500)
    assert float(after.mean()) > float(before.mean()) + bound
    kw = dict(t_start=0.5, n_steps=3, lr=1e-4, generator=torch.Generator())
    with pytest.raises(ValueError, match="steps"):
        finetune_reward(model, model.parameters(), data, reward, steps=0, batch=8, **kw)
    with pytest.raises(ValueError, match="batch"):
        finetune_reward(model, model.parameters(), data, reward, steps=1, batch=0, **kw)


def test_mmd_finetuning_through_two_ddim_steps_lowers_held_out_mmd():
    """MMD-DDM on the trained ring MLP with a 2-step DDIM: the held-out MMD (mean over 5 disjoint chunks) falls by more
    than the CLT bound of the difference of the two means."""
    checkpoint = load_mlp()
    model = DifferentiableNetwork.from_checkpoint(checkpoint)
    mixture = getattr(zoo, checkpoint.config.mixture)()
    data = mixture.sample(4000, torch.Generator().manual_seed(1))
    held = mixture.sample(1000, torch.Generator().manual_seed(2))
    ts = grids.uniform_lambda(model.schedule, 2)
    x_T = torch.randn(1000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def held_out() -> torch.Tensor:
        with torch.no_grad():
            x = sample_ddim(model, x_T, ts)
        return torch.stack([mmd2_unbiased(x[i::5], held[i::5], 0.5) for i in range(5)])

    before = held_out()
    losses = finetune_mmd(
        model,
        model.parameters(),
        data,
        ts,
        steps=20,
        lr=1e-4,
        batch=128,
        bandwidth=0.5,
        generator=torch.Generator().manual_seed(4),
    )
    after = held_out()
    assert len(losses) == 20
    bound = clt_difference_bound(float(before.std()), 5, float(after.std()), 5)
    assert float(after.mean()) + bound < float(before.mean())
    with pytest.raises(ValueError, match="steps"):
        finetune_mmd(
            model, model.parameters(), data, ts, steps=0, lr=1e-4, batch=8, bandwidth=0.5, generator=torch.Generator()
        )
