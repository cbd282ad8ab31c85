"""Feynman-Kac correctors with SMC (Skreta et al. 2025): the weight rate, systematic resampling, ESS, and the
weighted estimates against exact targets.

* the rate (FK) equals d_tau log q~ - L* q~ / q~ computed by autograd from the exact noised log densities, up to
  the particle-independent f d (sum a - 1), for the tilt, the annealed and the product targets (two schedules);
* systematic resampling copies particle i floor(N w_i) or ceil(N w_i) times, N w_i in expectation (CLT);
* ESS lies in [1, N], equals N for equal weights and 1 for one non-zero weight;
* weighted moments of the CFG target p_c^w p_u^(1 - w) match its closed form within a CLT bound plus the grid's
  own discretisation bias, while naive score mixing misses it by more; bad input is refused.
"""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import IDENTITY_RTOL, Z

from refimpl import grids
from refimpl.guidance import effective_sample_size, fk_log_weight_rate, prior_particles, sample_fk, systematic_resample
from refimpl.schedules import get_schedule
from toy_models import ExactModel, GaussianMixture, labelled_pair
from toy_models.targets import conditional, gaussian_tilt


def _log_q(models, a, x, t):
    return sum(ai * m.log_prob(x, t) for ai, m in zip(a, models, strict=True))


@pytest.mark.parametrize("schedule_name", ["vp_linear", "edm"])
@pytest.mark.parametrize("a", [(3.0, -2.0), (2.5,), (1.0, 1.0)], ids=["cfg", "annealed", "product"])
def test_fk_rate_is_the_feynman_kac_weight_of_the_target_path(schedule_name: str, a: tuple[float, ...]) -> None:
    """Autograd check of the derivation in ``refimpl.guidance.smc``, at 8 points of the labelled pair in 2-D.

    Tolerance 1e-9 relative: second derivatives by autograd of log-sum-exp densities, a few hundred operations
    with condition up to ~1e3 at these noise levels (roundoff(300, condition=1e3) ~ 3e-11), with margin."""
    pair, s = labelled_pair(), get_schedule(schedule_name)
    models = [ExactModel(conditional(pair, 1), s), ExactModel(pair, s)][: len(a)]
    coeffs = torch.tensor(a)
    t = torch.tensor(0.3 * s.t_min + 0.7 * s.t_max if schedule_name == "vp_linear" else 1.0)
    x = ExactModel(pair, s).sample_xt(8, t, torch.Generator().manual_seed(0))[1].requires_grad_(True)
    v = s(t)
    f = v.d_alpha / v.alpha
    g2 = 2 * v.sigma * v.d_sigma - 2 * f * v.sigma**2
    tt = t.clone().requires_grad_(True)
    log_q = _log_q(models, a, x, tt)
    per_point_dt = torch.stack(
        [torch.autograd.grad(_log_q(models, a, x[i : i + 1], tt).sum(), tt)[0] for i in range(8)]
    )
    (S,) = torch.autograd.grad(log_q.sum(), x, create_graph=True)
    div_S = sum(torch.autograd.grad(S[:, j].sum(), x, retain_graph=True)[0][:, j] for j in range(2))
    b_tau = -f * x + g2 * S  # drift of the reverse SDE in tau = -t
    div_b = -f * 2 + g2 * div_S
    L_star = -div_b - (b_tau * S).sum(-1) + 0.5 * g2 * (div_S + (S**2).sum(-1))
    rate = -per_point_dt - L_star
    scores = [m.score(x.detach(), t) for m in models]
    expected = fk_log_weight_rate(scores, coeffs, g2) + f * 2 * (coeffs.sum() - 1)
    torch.testing.assert_close(rate.detach(), expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))


def test_systematic_resampling_counts_and_their_expectation() -> None:
    g = torch.Generator().manual_seed(1)
    n, R = 10, 4000
    w = torch.softmax(torch.randn(n, generator=g), 0)
    idx = systematic_resample(w.expand(R, n), g)  # R independent uniforms
    counts = torch.nn.functional.one_hot(idx, n).sum(1).to(torch.float64)  # (R, n)
    assert bool((counts >= torch.floor(n * w)).all() and (counts <= torch.ceil(n * w)).all())
    # each count takes two neighbouring values, so its SD is at most 1/2
    assert bool(((counts.mean(0) - n * w).abs() <= Z * 0.5 / math.sqrt(R)).all())
    assert systematic_resample(w, g).shape == (n,)
    with pytest.raises(ValueError, match="non-negative"):
        systematic_resample(torch.tensor([0.5, -0.1, 0.6]))
    with pytest.raises(ValueError, match="N >= 1"):
        systematic_resample(torch.zeros(0))


def test_effective_sample_size_bounds() -> None:
    n = 7
    assert float(effective_sample_size(torch.zeros(n) + 3.0)) == pytest.approx(n, rel=IDENTITY_RTOL)
    one = torch.full((n,), -torch.inf)
    one[2] = 0.0
    assert float(effective_sample_size(one)) == pytest.approx(1.0, rel=IDENTITY_RTOL)
    lw = torch.randn(5, n, generator=torch.Generator().manual_seed(2))
    ess = effective_sample_size(lw)
    assert bool(((ess >= 1) & (ess <= n)).all())


def _gauss(mean: float, var: float) -> GaussianMixture:
    return GaussianMixture(torch.ones(1), torch.tensor([[mean]]), torch.tensor([[[var]]]))


def test_fk_reaches_the_cfg_target_where_naive_mixing_does_not() -> None:
    """Tilt of N(1, 1/4) and N(0, 1) with w = 3 (closed form N(1.2, 0.1) at sigma = 0), EDM, 32 Karras steps,
    R = 16 populations of N = 512. Allowance: Z standard errors of the population means plus the grid's own
    discretisation bias, measured on the plain reverse SDE (a = (1,)) whose target p_c is exact."""
    s, w = get_schedule("edm"), 3.0
    pc, pu = _gauss(1.0, 0.25), _gauss(0.0, 1.0)
    models = [ExactModel(pc, s), ExactModel(pu, s)]
    ts = grids.timesteps(s, 32, "karras")
    g = torch.Generator().manual_seed(3)
    R, N = 16, 512
    sig_T = float(s.sigma_t(s.t_max))
    a, sg = s.alpha_t(s.t_min), s.sigma_t(s.t_min)

    def error_and_se(result, exact_mean):
        m = result.mean()[:, 0]
        return abs(float(m.mean()) - exact_mean), float(m.std()) / math.sqrt(R)

    plain = sample_fk(models[:1], [1.0], prior_particles(R, N, 1, sig_T, 1.0, g), ts, generator=g)
    e_plain, se_plain = error_and_se(plain, float(pc.noised(a, sg).moments()[0][0]))
    bias = e_plain + Z * se_plain
    target_mean = float(gaussian_tilt(pc.noised(a, sg), pu.noised(a, sg), w).moments()[0][0])
    x = prior_particles(R, N, 1, sig_T, 1.0, g)
    fk = sample_fk(models, [w, 1 - w], x, ts, generator=g)
    naive = sample_fk(models, [w, 1 - w], x, ts, reweight=False, generator=g)
    e_fk, se_fk = error_and_se(fk, target_mean)
    e_naive, se_naive = error_and_se(naive, target_mean)
    assert e_fk <= Z * se_fk + bias, (e_fk, se_fk, bias)
    assert e_naive > Z * se_naive + bias, (e_naive, se_naive, bias)
    torch.testing.assert_close(fk.weights.sum(-1), torch.ones(R), rtol=0, atol=IDENTITY_RTOL)
    assert bool(torch.isfinite(fk.weights).all() and (fk.ess >= 1).all() and (fk.ess <= N * (1 + 1e-12)).all())
    assert fk.n_resampled > 0 and naive.n_resampled == 0


def test_fk_bad_input() -> None:
    s = get_schedule("edm")
    models = [ExactModel(_gauss(0.0, 1.0), s)]
    ts = grids.timesteps(s, 2)
    with pytest.raises(ValueError, match="R, N >= 1"):
        sample_fk(models, [1.0], torch.zeros(1, 0, 1), ts)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, inf\]"):
        prior_particles(1, 0, 1, 1.0, 1.0)
    with pytest.raises(ValueError, match="one coefficient per model"):
        sample_fk(models, [1.0, 2.0], torch.zeros(1, 3, 1), ts)
    with pytest.raises(ValueError, match="resample_below"):
        sample_fk(models, [1.0], torch.zeros(1, 3, 1), ts, resample_below=1.5)
