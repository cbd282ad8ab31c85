"""Chapter 10, Distilled Decoding: the closed-form velocity to a categorical over a codebook, its push-forward law
(chi-square), the autoregressive noise -> token map and the one-step collapse of a plain Euler jump."""

from __future__ import annotations

import pytest
import torch
from tolerances import DD_STATE_ATOL, U64, chi2_bound, pearson_chi2, roundoff

from refimpl.parameterization import to_x0_eps, velocity_from_x0_eps
from refimpl.schedules import RectifiedFlow
from refimpl.transport import CodebookFlow, autoregressive_decode, codebook_posterior, codebook_velocity

torch.set_default_dtype(torch.float64)

CODEBOOK = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
PROBS = torch.tensor([0.1, 0.2, 0.3, 0.4])
# A toy AR model of two tokens: p(q1) = PROBS, p(q2 | q1) = row q1 of TRANSITION.
TRANSITION = torch.tensor(
    [[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.05, 0.05, 0.1, 0.8], [0.4, 0.4, 0.1, 0.1]]
)


def _log_density(x: torch.Tensor, t: float) -> torch.Tensor:
    """log sum_v p_v N(x; (1 - t) c_v, t^2 I), the noised law of the categorical."""
    d2 = ((x[:, None, :] - (1 - t) * CODEBOOK) ** 2).sum(-1)
    return torch.logsumexp(torch.log(PROBS) - d2 / (2 * t**2), -1) - 2 * torch.log(torch.tensor(t))


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 0.99])
def test_closed_form_velocity_is_the_autograd_score_converted(t: float) -> None:
    """The velocity equals the velocity implied by the autograd score of the log-sum-exp under the straight path."""
    s = RectifiedFlow()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    score = torch.autograd.grad(_log_density(x, t).sum(), x)[0]
    v = s(torch.tensor(t))
    x0, eps = to_x0_eps("score", score, x.detach(), v)
    expected = velocity_from_x0_eps(x0, eps, v.d_alpha, v.d_sigma)
    ours = codebook_velocity(x.detach(), t, CODEBOOK, PROBS)
    scale = float(x.detach().abs().max()) / t**2
    assert float((ours - expected).abs().max()) <= roundoff(64, scale, U64, 1 / (1 - t))


def test_push_forward_of_the_noise_is_the_categorical() -> None:
    """Pearson's chi-square of the tokens of n noises against PROBS stays below its 1 - 1e-6 quantile."""
    n = 6000
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
    tokens = CodebookFlow(CODEBOOK).decode(noise, PROBS)
    stat, dof = pearson_chi2(torch.bincount(tokens, minlength=4), PROBS)
    assert stat <= chi2_bound(dof), stat


def test_rk4_in_log_time_matches_dop853() -> None:
    from scipy.integrate import solve_ivp

    noise = torch.randn(20, 2, generator=torch.Generator().manual_seed(2))
    flow = CodebookFlow(CODEBOOK)

    def rhs(t: float, y):
        return codebook_velocity(torch.from_numpy(y).reshape(20, 2), t, CODEBOOK, PROBS).reshape(-1).numpy()

    sol = solve_ivp(rhs, (1.0, flow.t_end), noise.reshape(-1).numpy(), method="DOP853", rtol=1e-11, atol=1e-11)
    reference = torch.from_numpy(sol.y[:, -1]).reshape(20, 2)
    assert float((flow.transport(noise, PROBS) - reference).abs().max()) <= DD_STATE_ATOL


def test_autoregressive_map_has_the_joint_law_and_is_deterministic() -> None:
    """Tokens decoded from noise tokens (n, 2, 2) follow p(q1) p(q2 | q1) (chi-square over 16 cells); same noise,
    same sequence."""
    n = 6000
    noise = torch.randn(n, 2, 2, generator=torch.Generator().manual_seed(3))
    flow = CodebookFlow(CODEBOOK)

    def conditional(prefix: torch.Tensor) -> torch.Tensor:
        return PROBS.expand(prefix.shape[0], 4) if prefix.shape[1] == 0 else TRANSITION[prefix[:, -1]]

    seq = autoregressive_decode(noise, flow, conditional)
    joint = (PROBS[:, None] * TRANSITION).reshape(-1)
    stat, dof = pearson_chi2(torch.bincount(seq[:, 0] * 4 + seq[:, 1], minlength=16), joint)
    assert stat <= chi2_bound(dof), stat
    again = autoregressive_decode(noise[:100], flow, conditional)
    assert torch.equal(again, seq[:100])


def test_one_euler_jump_collapses_to_the_codebook_mean() -> None:
    """A single Euler step from t = 1 to 0 lands every noise on sum_v p_v c_v: why DD trains a network to jump."""
    noise = torch.randn(50, 2, generator=torch.Generator().manual_seed(4))
    out = CodebookFlow(CODEBOOK).one_step_euler(noise, PROBS)
    torch.testing.assert_close(out, (PROBS @ CODEBOOK).expand(50, 2), rtol=0, atol=roundoff(16, 4.0))


def test_posterior_at_t_one_is_the_prior_and_bad_input_raises() -> None:
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(901))
    # softmax(log p) at t = 1: each log rounds by u |log p|, the max-shift as much again, exp turns that absolute error
    # into a relative one, and the sum of V = 4 terms and the division add V + 1 roundings: 8 u x 2 max |log p|.
    atol = roundoff(8, scale=2 * float(torch.log(PROBS).abs().max()))
    torch.testing.assert_close(codebook_posterior(x, 1.0, CODEBOOK, PROBS), PROBS.expand(5, 4), rtol=0, atol=atol)
    with pytest.raises(ValueError, match="x must have 2"):
        codebook_velocity(torch.zeros(0), 0.5, CODEBOOK, PROBS)
    with pytest.raises(ValueError, match="x must have shape"):
        codebook_velocity(torch.zeros(5, 3), 0.5, CODEBOOK, PROBS)
    with pytest.raises(TypeError, match="codebook"):
        codebook_velocity(x, 0.5, -1.0, PROBS)
    with pytest.raises(ValueError, match="probs"):
        codebook_velocity(x, 0.5, CODEBOOK, torch.tensor([0.5, 0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="probs"):
        codebook_velocity(x, 0.5, CODEBOOK, torch.tensor([0.5, 0.5]))
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="t must lie"):
            codebook_velocity(x, bad, CODEBOOK, PROBS)
    with pytest.raises(ValueError, match="noise"):
        autoregressive_decode(
            torch.randn(5, 2, generator=torch.Generator().manual_seed(902)), CodebookFlow(CODEBOOK), lambda p: PROBS
        )
