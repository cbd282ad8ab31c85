"""The 2-D eps-MLP against the exact eps of the mixture it was trained on.

At moderate noise the exact eps of the ring is far from that of the ring's single-Gaussian moment fit (the
best denoiser linear in x_t); a network that learned the mixture must be closer to the exact eps than that
baseline. Paired comparison on the same exact samples x_t ~ p_t, with a CLT bound on the mean difference.
"""

from __future__ import annotations

import pytest
import torch
from tolerances import clt_difference_bound

from toy_models import ExactModel, GaussianMixture, zoo
from toy_models.trained import load_mlp

MODERATE_LAMBDAS = [-1.0, 0.0, 1.0]  # log-SNR where the ring's components overlap but are not yet merged


@pytest.fixture(scope="module")
def setting():
    ckpt = load_mlp()
    mixture = getattr(zoo, ckpt.config.mixture)()
    exact = ExactModel(mixture, ckpt.model().schedule)
    mean, cov = mixture.moments()
    baseline = ExactModel(GaussianMixture(torch.ones(1), mean[None], cov[None]), exact.schedule)
    return ckpt.model(), exact, baseline


@pytest.mark.parametrize("lam", MODERATE_LAMBDAS)
def test_learned_eps_is_closer_to_the_exact_eps_than_the_gaussian_fit(setting, lam: float) -> None:
    mlp, exact, baseline = setting
    t = exact.schedule.t_of_lambda(torch.tensor(lam))
    _, x_t = exact.sample_xt(4000, t, torch.Generator().manual_seed(int(10 * lam) + 100))
    eps = exact(x_t, t)
    d = (mlp(x_t, t) - eps).pow(2).sum(1) - (baseline(x_t, t) - eps).pow(2).sum(1)
    assert float(d.mean()) + clt_difference_bound(float(d.std()), d.numel(), 0.0, 1) < 0
