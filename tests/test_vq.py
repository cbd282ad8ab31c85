"""VQ discrete diffusion: closed-form products, exact posteriors, absorbing = masked diffusion, diffusers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from tolerances import (
    DIFFUSERS_VQ_RTOL,
    DIFFUSERS_VQ_ZERO_ATOL,
    chi2_bound,
    pearson_chi2,
    posterior_bound,
    roundoff,
    transition_product_bound,
)

from refimpl.discrete import masked, vq

KINDS = {
    "uniform": lambda K, T: vq.uniform_schedule(K, T),
    "absorbing": lambda K, T: vq.absorbing_schedule(K, T),
    "mask_and_replace": lambda K, T: vq.vq_diffusion_schedule(K, T),
}


@pytest.mark.parametrize("kind", KINDS)
def test_the_closed_form_qbar_is_the_product_of_the_step_matrices(kind: str) -> None:
    """Qbar_t (alphabar, betabar, gammabar from products of the step factors) = Q_1 ... Q_t for every t."""
    sched = KINDS[kind](5, 16)
    for t in range(sched.T + 1):
        err = float((vq.cumulative_matrix(sched, t) - vq.cumulative_by_product(sched, t)).abs().max())
        assert err <= transition_product_bound(sched.n_states, t)
        vq.check_transition_matrix(vq.cumulative_matrix(sched, t), atol=roundoff(4 * sched.n_states))


def _path_posterior(sched: vq.DiscreteSchedule, t: int) -> torch.Tensor:
    """q(x_{t-1} | x_t, x_0) by enumerating every path x_1, ..., x_t of the chain (no closed form used)."""
    S, K = sched.n_states, sched.K
    Qs = [vq.step_matrix(sched, i) for i in range(1, t + 1)]
    joint = torch.zeros(K, S, S)  # [x_0, x_{t-1}, x_t]
    for x0 in range(K):
        for path in itertools.product(range(S), repeat=t):
            prob, prev = 1.0, x0
            for Q, x in zip(Qs, path, strict=True):
                prob *= float(Q[prev, x])
                prev = x
            joint[x0, path[-2] if t > 1 else x0, path[-1]] += prob
    total = joint.sum(1, keepdim=True)  # q(x_t | x_0)
    return torch.where(total > 0, joint / torch.where(total > 0, total, 1.0), 0.0).permute(0, 2, 1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [1, 2, 4])
def test_the_posterior_is_bayes_rule_by_enumeration_and_its_rows_sum_to_one(kind: str, t: int) -> None:
    sched = KINDS[kind](3, 6)
    post = vq.posterior(sched, t)
    possible = vq.cumulative_matrix(sched, t)[: sched.K] > 0
    smallest = float(vq.cumulative_matrix(sched, t)[: sched.K][possible].min())
    tol = posterior_bound(8 * sched.n_states * t, smallest)
    assert float((post.sum(-1)[possible] - 1).abs().max()) <= tol
    assert bool((post.sum(-1)[~possible] == 0).all())
    assert float((post - _path_posterior(sched, t)).abs().max()) <= tol


@pytest.mark.parametrize("kind", KINDS)
def test_forward_samples_follow_qbar_t(kind: str) -> None:
    """x_t drawn by ``sample_forward`` from a fixed x_0 has the law of row x_0 of Qbar_t (chi-square)."""
    sched = KINDS[kind](4, 10)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.full((20_000,), 2, dtype=torch.long)
    for t in (3, 7):
        counts = np.bincount(vq.sample_forward(sched, x0, t, gen).numpy(), minlength=sched.n_states)
        stat, dof = pearson_chi2(counts, vq.cumulative_matrix(sched, t)[2].numpy())
        assert stat <= chi2_bound(max(dof, 1))


def test_the_uniform_kernel_keeps_the_uniform_law_and_ends_there() -> None:
    """Q_t is doubly stochastic (the uniform law is stationary) and the linear schedule's Qbar_T is uniform."""
    sched = vq.uniform_schedule(6, 8)
    u = torch.full((6,), 1 / 6)
    for t in range(1, 9):
        assert float((u @ vq.step_matrix(sched, t) - u).abs().max()) <= roundoff(12)
    assert float((vq.cumulative_matrix(sched, 8) - 1 / 6).abs().max()) <= roundoff(12)


def test_absorbing_is_chapter_11s_masking_with_alpha_equal_to_alphabar() -> None:
    """Row x of Qbar_t is alphabar_t e_x + (1 - alphabar_t) e_mask (each token masked independently), and the
    posterior at a masked token is mdlm_step's kernel with alpha_t -> alphabar_t, alpha_s -> alphabar_{t-1}."""
    K, T = 3, 8
    sched = vq.absorbing_schedule(K, T)
    lin = masked.get_mask_schedule("linear")
    for t in range(1, T + 1):
        a_t = float(lin.alpha(torch.tensor(t / T)))  # chapter 11's linear schedule at time t / T
        a_s = float(lin.alpha(torch.tensor((t - 1) / T)))
        expected = torch.zeros(K, K + 1)
        expected[:, :K] = a_t * torch.eye(K)
        expected[:, K] = 1 - a_t
        assert float((vq.cumulative_matrix(sched, t)[:K] - expected).abs().max()) <= roundoff(4 * T)
        p = torch.softmax(torch.randn(5, K, generator=torch.Generator().manual_seed(t)), -1)
        z = torch.full((5,), K)
        got = vq.reverse_probs(sched, t, p, z)
        reveal = (a_s - a_t) / (1 - a_t)  # masked.mdlm_step's reveal probability
        want = torch.cat([reveal * p, torch.full((5, 1), 1 - reveal)], -1)
        assert float((got - want).abs().max()) <= roundoff(8 * T)


def test_the_exact_absorbing_denoiser_is_chapter_11s_time_agnostic_denoiser() -> None:
    law = masked.random_sequence_law(3, 3, seed=2)
    sched = vq.absorbing_schedule(3, 6)
    denoise = vq.exact_denoiser(law, sched)
    z = torch.tensor([[3, 0, 3], [3, 3, 3], [2, 1, 3], [0, 0, 1]])
    for t in range(1, 6):
        assert float((denoise(z, t) - law.denoise(z)).abs().max()) <= roundoff(64)


def test_absorbing_ancestral_sampling_has_chapter_11s_step_sampler_law() -> None:
    """With the exact denoiser, ancestral sampling of the absorbing VQ chain on T steps has the law that
    masked.exact_law_steps computes on the grid t_k = 1 - alphabar_k (chi-square over the 27 sequences)."""
    L, K, T = 3, 3, 4
    law = masked.random_sequence_law(L, K, seed=3)
    sched = vq.absorbing_schedule(K, T)
    x = vq.sample_reverse(vq.exact_denoiser(law, sched), sched, 20_000, L, generator=torch.Generator().manual_seed(4))
    ts = torch.linspace(1, 0, T + 1)  # alphabar_t = 1 - t / T, chapter 11's linear alpha at time t / T
    expected = masked.exact_law_steps(law, ts, masked.get_mask_schedule("linear"))
    stat, dof = pearson_chi2(np.bincount(law.index(x).numpy(), minlength=K**L), expected)
    assert stat <= chi2_bound(dof)


@pytest.mark.parametrize("kind", ["uniform", "mask_and_replace"])
def test_reverse_probabilities_are_laws(kind: str) -> None:
    sched = KINDS[kind](4, 10)
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, 5, 4, generator=gen), -1)
    x_t = torch.randint(sched.n_states, (6, 5), generator=gen)
    for t in (1, 5, 10):
        r = vq.reverse_probs(sched, t, p, x_t)
        smallest = float(vq.cumulative_matrix(sched, t)[:4].min())
        assert bool((r >= 0).all()) and float((r.sum(-1) - 1).abs().max()) <= posterior_bound(64, smallest)


def test_diffusers_vq_scheduler_agrees_with_the_exact_products_and_posterior() -> None:
    """diffusers 0.42.1 ``VQDiffusionScheduler`` against refimpl on K = 6 codes, T = 20 steps: its per-step and
    cumulative (alpha, beta / K, gamma) equal refimpl's step matrices and the *product* of them, and its
    ``q_posterior`` equals ``reverse_probs``, to float32 accuracy. Documented difference: diffusers returns
    about 1e-30 (its log of zero) where the exact probability is 0. Its timestep t is refimpl's step t + 1."""
    from diffusers import VQDiffusionScheduler

    K, T = 6, 20
    sched = vq.vq_diffusion_schedule(K, T)
    ours = VQDiffusionScheduler(num_vec_classes=K + 1, num_train_timesteps=T)
    for t in range(1, T + 1):
        Q, cum = vq.step_matrix(sched, t), vq.cumulative_by_product(sched, t)
        pairs = [
            (ours.log_at[t - 1], Q[0, 0] - Q[0, 1]),
            (ours.log_bt[t - 1], Q[0, 1]),
            (ours.log_ct[t - 1], Q[0, K]),
            (ours.log_cumprod_at[t - 1], cum[0, 0] - cum[0, 1]),
            (ours.log_cumprod_bt[t - 1], cum[0, 1]),
            (ours.log_cumprod_ct[t - 1], cum[0, K]),
        ]
        for log_theirs, exact in pairs:
            assert abs(float(log_theirs.double().exp()) / float(exact) - 1) <= DIFFUSERS_VQ_RTOL
    gen = torch.Generator().manual_seed(0)
    p0 = torch.softmax(torch.randn(4, 9, K, generator=gen), -1)  # (B, L, K)
    for t in (1, 2, 10, 19):
        x_t = torch.randint(K + 1, (4, 9), generator=gen)
        log_p = torch.log(p0).permute(0, 2, 1).float()  # diffusers: (B, K, L) log-probabilities
        theirs = ours.q_posterior(log_p, x_t, torch.tensor(t)).double().exp().permute(0, 2, 1)
        exact = vq.reverse_probs(sched, t + 1, p0, x_t)
        possible = exact > 0
        assert float(((theirs - exact).abs() / exact)[possible].max()) <= DIFFUSERS_VQ_RTOL
        assert float(theirs[~possible].max()) <= DIFFUSERS_VQ_ZERO_ATOL


def test_vq_diffusion_schedule_steps_are_valid_kernels() -> None:
    """beta_t = 1 - alpha_t - gamma_t from the linear cumulative ends stays >= 0 (else diffusers takes log < 0)."""
    sched = vq.vq_diffusion_schedule(6, 100)
    assert bool((sched.betas >= 0).all())
    for t in (1, 50, 100):
        vq.check_transition_matrix(vq.step_matrix(sched, t), atol=roundoff(16))


def test_kmeans_lowers_the_distortion_and_patches_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(40, 64, generator=gen)
    patches = vq.patchify(images, 2)
    assert patches.shape == (40, 16, 4)
    assert torch.equal(vq.unpatchify(patches, 2), images)
    assert torch.equal(vq.patchify(images, 4)[:, 0], images.reshape(40, 8, 8)[:, :4, :4].reshape(40, 16))
    x = patches.reshape(-1, 4)
    codebook, distortion = vq.kmeans(x, 8, iters=12, generator=gen)
    assert all(b <= a + roundoff(64) for a, b in itertools.pairwise(distortion))
    idx = vq.quantise(x, codebook)
    brute = ((x[:, None] - codebook[None]) ** 2).sum(-1).argmin(-1)
    assert torch.equal(idx, brute)
    assert torch.equal(vq.decode(idx, codebook), codebook[brute])


def test_the_trained_denoiser_beats_the_marginal_predictor() -> None:
    """A few hundred steps: the x_0 cross-entropy at small t falls below the entropy of the code marginals."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 3, (200, 4), generator=gen)
    tokens[:, 1] = tokens[:, 0]  # a dependence the network can learn
    sched = vq.absorbing_schedule(3, 8)
    model, losses = vq.train_denoiser(tokens, sched, steps=120, batch=64, lr=3e-3, seed=1)
    marginal = torch.bincount(tokens.flatten(), minlength=3) / tokens.numel()
    h = float(-(marginal * marginal.log()).sum())
    assert np.mean(losses[-30:]) < h
    assert model(tokens[:5], 1).shape == (5, 4, 3)


def test_train_denoiser_leaves_the_global_rng_alone_and_is_reproducible() -> None:
    """Its initialisation comes from ``seed`` under fork_rng: the caller's global stream is untouched, and the
    same seed gives the same network bit for bit whatever the global state was."""
    tokens = torch.randint(0, 3, (50, 4), generator=torch.Generator().manual_seed(0))
    sched = vq.absorbing_schedule(3, 4)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, _ = vq.train_denoiser(tokens, sched, steps=3, batch=8, seed=2)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(7)
    b, _ = vq.train_denoiser(tokens, sched, steps=3, batch=8, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="rows of Q must sum to one"):
        vq.check_transition_matrix(torch.tensor([[0.5, 0.4], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        vq.check_transition_matrix(torch.ones(2, 3) / 3)
    with pytest.raises(ValueError, match="non-negative"):
        vq.check_transition_matrix(torch.tensor([[1.5, -0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="beta_t \\+ gamma_t <= 1"):
        vq.DiscreteSchedule(3, torch.tensor([0.7]), torch.tensor([0.6]), mask=True)
    with pytest.raises(ValueError, match="gammas must be zero"):
        vq.DiscreteSchedule(3, torch.tensor([0.1]), torch.tensor([0.1]), mask=False)
    with pytest.raises(ValueError, match="t must be an integer"):
        vq.step_matrix(vq.uniform_schedule(3, 4), 0)
    with pytest.raises(ValueError, match="t must be an integer"):
        vq.cumulative_matrix(vq.uniform_schedule(3, 4), 5)
    with pytest.raises(ValueError, match="K must"):
        vq.kmeans(torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match="patch must divide"):
        vq.patchify(torch.zeros(2, 64), 3)
    with pytest.raises(ValueError, match="x0_probs"):
        vq.reverse_probs(vq.uniform_schedule(3, 4), 2, torch.ones(2, 4) / 4, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary"):
        vq.exact_denoiser(masked.random_sequence_law(2, 3), vq.uniform_schedule(4, 4))


def test_non_default_options_of_the_vq_pieces() -> None:
    """TokenDenoiser(hidden), check_transition_matrix(name), patchify/unpatchify(patch, side), the schedule's ends."""
    net = vq.TokenDenoiser(5, 4, 6, 10, hidden=8)
    shapes = [tuple(p.shape) for p in net.parameters() if p.ndim == 2]
    assert shapes == [(8, 4 * 6 + 1), (8, 8), (4 * 5, 8)]
    probs = net(torch.zeros(3, 4, dtype=torch.long), 2)
    assert probs.shape == (3, 4, 5) and float((probs.sum(-1) - 1).abs().max()) <= roundoff(16)
    with pytest.raises(ValueError, match="Qbar_3"):
        vq.check_transition_matrix(torch.tensor([[0.5, 0.4], [0.0, 1.0]]), name="Qbar_3")
    images = torch.arange(3 * 36, dtype=torch.float64).reshape(3, 36)
    patches = vq.patchify(images, 3, side=6)
    assert patches.shape == (3, 4, 9)
    assert torch.equal(patches[:, 0], images.reshape(3, 6, 6)[:, :3, :3].reshape(3, 9))
    assert torch.equal(vq.unpatchify(patches, 3, side=6), images)
    sched = vq.vq_diffusion_schedule(
        6, 20, alpha_cum_start=0.9, alpha_cum_end=0.1, gamma_cum_start=0.05, gamma_cum_end=0.8
    )
    assert sched.T == 20
    for t, frac in [(1, 0.0), (20, 1.0), (11, 10 / 19)]:  # alphabar_t, gammabar_t linear between the given ends
        abar, _, gbar = sched.cumulative(t)
        assert abs(abar - (0.9 + frac * (0.1 - 0.9))) <= roundoff(4 * t)
        assert abs(gbar - (0.05 + frac * (0.8 - 0.05))) <= roundoff(4 * t)
