"""DMD2: distribution matching distillation of a one-step generator, with exact scores on Gaussian data.

The generator x = G_theta(z) is trained to minimise KL(p_fake || p_real) through the noised laws; its gradient
(Yin et al. 2024a, DMD, arXiv:2311.18828v4, Eq. 7) is

    grad_theta KL = E_{t, z, eps}[ -w_t (s_real(x_t) - s_fake(x_t)) . dx/dtheta ],   x_t = alpha_t x + sigma_t eps,

with s = grad log p_t. Writing s = (alpha_t D(x_t) - x_t) / sigma_t^2 with D the x0-denoiser, DMD2's code
(Yin et al. 2024b, arXiv:2405.14867v2, Sec. 4.1; main/edm/edm_guidance.py, commit of the paper's release) pushes x
along

    g = (p_real - p_fake) / mean|p_real|,   p = x - D(x_t),                                               (1)

i.e. w_t = sigma_t^2 / (alpha_t mean|p_real|) in the equation above (DMD's Eq. 8 weight), via the surrogate
0.5 || x - stopgrad(x - g) ||^2. For a Gaussian generator x = A z + b, z ~ N(0, I), the fake law is N(b, A A^T),
so s_fake is exact (``fake="exact"``); DMD2's two-time-scale rule instead trains a fake denoiser on generator
samples, ``fake_updates`` times per generator step (their 5): here a Gaussian-family denoiser N(m, L L^T)
trained by denoising score matching, whose exact optimum is the generator's law, so its error is measured.
The data law is one Gaussian N(mu, Sigma); KL(N(b, A A^T) || N(mu, Sigma)) is exact at every step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from refimpl import reference
from refimpl._validation import as_float_tensor, check_finite, check_finite_result, check_float_tensors, check_instance
from refimpl.differentiable._optim import Adam
from refimpl.schedules import NoiseSchedule
from toy_models.gmm import GaussianMixture

__all__ = [
    "DMDHistory",
    "MixtureGenerator",
    "dmd2_direction",
    "gaussian_denoiser",
    "gaussian_kl",
    "train_dmd2",
    "train_dmd2_mixture",
]


def gaussian_kl(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor) -> Tensor:
    """Deprecated alias of ``refimpl.reference.gaussian_kl`` (moved to the spine; emits ``DeprecationWarning``)."""
    warnings.warn(
        "refimpl.distillation.dmd.gaussian_kl moved to refimpl.reference.gaussian_kl", DeprecationWarning, stacklevel=2
    )
    return reference.gaussian_kl(m1, S1, m2, S2)


def gaussian_denoiser(mean: Tensor, cov: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """E[x_0 | x_t] for x_0 ~ N(mean, cov): mean + alpha cov (alpha^2 cov + sigma^2 I)^-1 (x_t - alpha mean).

    alpha, sigma: (B, 1) per-sample coefficients, sigma > 0; x_t (B, d); cov symmetric positive semi-definite.
    Differentiable in mean and cov.
    """
    check_float_tensors(mean=mean, cov=cov, x_t=x_t, alpha=alpha, sigma=sigma)
    for name, v in (("mean", mean), ("cov", cov), ("x_t", x_t), ("alpha", alpha), ("sigma", sigma)):
        check_finite(v, name)
    d = mean.shape[-1] if mean.ndim == 1 else 0
    B = x_t.shape[0] if x_t.ndim == 2 else 0
    if d < 1 or cov.shape != (d, d) or x_t.shape != (B, d) or alpha.shape != (B, 1) or sigma.shape != (B, 1):
        raise ValueError(
            f"mean must be (d,), cov (d, d), x_t (B, d), alpha and sigma (B, 1); got {tuple(mean.shape)}, "
            f"{tuple(cov.shape)}, {tuple(x_t.shape)}, {tuple(alpha.shape)}, {tuple(sigma.shape)}"
        )
    if not bool((sigma > 0).all()):
        raise ValueError(f"sigma must be positive, smallest entry {float(sigma.min()):g}")
    C = alpha[:, :, None] ** 2 * cov + sigma[:, :, None] ** 2 * torch.eye(d, dtype=cov.dtype)
    if not bool((torch.linalg.cholesky_ex(C)[1] == 0).all()):
        raise ValueError("alpha^2 cov + sigma^2 I is not positive definite: cov must be positive semi-definite")
    return check_finite_result(_denoiser(mean, cov, x_t, alpha, sigma), "mean, cov, x_t, alpha and sigma (overflow)")


def _denoiser(mean: Tensor, cov: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """``gaussian_denoiser`` without its checks, for the training loops (their arguments are built inside)."""
    eye = torch.eye(mean.shape[-1], dtype=mean.dtype)
    C = alpha[:, :, None] ** 2 * cov + sigma[:, :, None] ** 2 * eye  # (B, d, d)
    r = torch.linalg.solve(C, (x_t - alpha * mean)[..., None])[..., 0]
    return mean + alpha * (r @ cov.T)


def dmd2_direction(x: Tensor, d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Eq. (1): g = (p_real - p_fake) / mean|p_real| per sample, p = x - D(x_t); x, d_real, d_fake (B, d).

    Homogeneous of degree 0: scaling x and both denoisers by c > 0 leaves g unchanged (the normaliser makes the step
    size independent of the data's scale)."""
    x = check_finite(as_float_tensor(x, "x"), "x")
    d_real = check_finite(as_float_tensor(d_real, "d_real"), "d_real")
    d_fake = check_finite(as_float_tensor(d_fake, "d_fake"), "d_fake")
    for name, v in (("x", x), ("d_real", d_real), ("d_fake", d_fake)):
        if v.ndim != 2 or v.shape != x.shape:
            raise ValueError(f"{name} must be a (B, d) batch of the shape of x, got {tuple(v.shape)}")
    p_real, p_fake = x - d_real, x - d_fake
    scale = p_real.abs().mean(-1, keepdim=True)
    if not bool((scale > 0).all()):
        raise ValueError("d_real equals x for some sample: the normaliser mean|x - d_real| is zero")
    return (p_real - p_fake) / scale


@dataclass
class DMDHistory:
    """Per generator step: the exact KL to the data law and, with a learned fake score, the fake law's error."""

    kl: list[float] = field(default_factory=list)
    fake_error: list[float] = field(default_factory=list)
    A: Tensor | None = None
    b: Tensor | None = None


def train_dmd2(
    data: GaussianMixture,
    schedule: NoiseSchedule,
    *,
    steps: int = 300,
    batch: int = 512,
    lr: float = 0.05,
    fake: str = "exact",
    fake_updates: int = 5,
    fake_lr: float = 0.05,
    t_range: tuple[float, float] = (0.02, 0.98),
    generator: torch.Generator | None = None,
) -> DMDHistory:
    """Train x = A z + b (from A = I, b = 0) with the DMD2 gradient (1) and Adam; returns the history.

    The noise level is drawn uniformly in log-SNR between the fractions ``t_range`` of the schedule's lambda span
    (DMD2's min/max step percent, 0.02 and 0.98, which it applies to the index of the teacher's discrete grid).
    ``fake``: "exact" (s_fake of N(b, A A^T)) or "learned" (the two-time-scale fake denoiser, ``fake_updates``
    denoising-score-matching steps of Adam(``fake_lr``) per generator step).
    """
    if not isinstance(data, GaussianMixture):
        raise TypeError(f"data must be a GaussianMixture, got {type(data).__name__}")
    if data.K != 1:
        raise ValueError(f"data must be a single Gaussian (K = 1), got K = {data.K}")
    check_instance(schedule, NoiseSchedule, "schedule")
    if fake not in ("exact", "learned"):
        raise ValueError(f"fake must be 'exact' or 'learned', got {fake!r}")
    if not isinstance(fake_updates, int) or fake_updates < 1:
        raise ValueError(f"fake_updates must be a positive integer, got {fake_updates!r}")
    lo, hi = t_range
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"t_range must satisfy 0 <= lo < hi <= 1, got {t_range}")
    d, dtype = data.d, data.dtype
    mu, Sigma = data.means[0], data.covariances[0]
    A = torch.eye(d, dtype=dtype, requires_grad=True)
    b = torch.zeros(d, dtype=dtype, requires_grad=True)
    opt = Adam([A, b], lr=lr)
    m_f = torch.zeros(d, dtype=dtype, requires_grad=True)  # the learned fake law N(m_f, L_f L_f^T)
    L_f = torch.eye(d, dtype=dtype, requires_grad=True)
    opt_f = Adam([m_f, L_f], lr=fake_lr)
    lam_hi, lam_lo = schedule.lambda_max, schedule.lambda_min
    history = DMDHistory()

    def draw(n: int) -> tuple[Tensor, Tensor, Tensor]:
        p = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=dtype)
        v = schedule(schedule.t_of_lambda(lam_hi + p * (lam_lo - lam_hi)))
        eps = torch.randn(n, d, generator=generator, dtype=dtype)
        return v.alpha[:, None].to(dtype), v.sigma[:, None].to(dtype), eps

    for _ in range(steps):
        if fake == "learned":  # two time-scale: several fake-score updates per generator step (DMD2, Sec. 4.1)
            for _ in range(fake_updates):
                with torch.no_grad():
                    x = torch.randn(batch, d, generator=generator, dtype=dtype) @ A.T + b
                a, s, eps = draw(batch)
                cov_f = L_f @ L_f.T
                dsm = ((_denoiser(m_f, cov_f, a * x + s * eps, a, s) - x) ** 2).sum(-1).mean()
                opt_f.zero_grad()
                dsm.backward()
                opt_f.step()
            with torch.no_grad():
                gap = torch.cat([(m_f - b).reshape(-1), (L_f @ L_f.T - A @ A.T).reshape(-1)])
                history.fake_error.append(float(gap.abs().max()))
        x = torch.randn(batch, d, generator=generator, dtype=dtype) @ A.T + b
        a, s, eps = draw(batch)
        with torch.no_grad():
            x_t = a * x + s * eps
            d_real = _denoiser(mu, Sigma, x_t, a, s)
            if fake == "exact":
                d_fake = _denoiser(b, A @ A.T, x_t, a, s)
            else:
                d_fake = _denoiser(m_f, L_f @ L_f.T, x_t, a, s)
            g = dmd2_direction(x, d_real, d_fake)
        loss = 0.5 * ((x - (x - g).detach()) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            history.kl.append(float(reference.gaussian_kl(b, A @ A.T, mu, Sigma)))
    history.A, history.b = A.detach(), b.detach()
    return history


@dataclass
class MixtureGenerator:
    """A one-step generator x = b_k + A_k z, k uniform in {1..K}, z ~ N(0, I): its law is a Gaussian mixture, so the
    fake score of DMD is exact (``toy_models.gmm.GaussianMixture``). A (K, d, d), b (K, d)."""

    A: Tensor
    b: Tensor

    def law(self) -> GaussianMixture:
        K = self.b.shape[0]
        with torch.no_grad():
            cov = self.A @ self.A.mT + 1e-9 * torch.eye(self.b.shape[1], dtype=self.b.dtype)
            return GaussianMixture(torch.full((K,), 1.0 / K, dtype=self.b.dtype), self.b.clone(), cov)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        K, d = self.b.shape
        k = torch.randint(0, K, (n,), generator=generator)
        z = torch.randn(n, d, generator=generator, dtype=self.b.dtype)
        return self.b[k] + torch.einsum("nij,nj->ni", self.A[k], z)


def train_dmd2_mixture(
    data: GaussianMixture,
    schedule: NoiseSchedule,
    n_components: int,
    *,
    steps: int = 300,
    batch: int = 512,
    lr: float = 0.02,
    t_range: tuple[float, float] = (0.02, 0.98),
    generator: torch.Generator | None = None,
) -> MixtureGenerator:
    """DMD2's update (1) for a ``MixtureGenerator`` on the mixture lab, with exact real (data) and fake (generator)
    denoisers; starts from means drawn near the origin and A_k = 0.5 I. Returns the trained generator."""
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
    lo, hi = t_range
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"t_range must satisfy 0 <= lo < hi <= 1, got {t_range}")
    d, dtype = data.d, data.dtype
    b = (0.5 * torch.randn(n_components, d, generator=generator, dtype=dtype)).requires_grad_(True)
    A = (0.5 * torch.eye(d, dtype=dtype).repeat(n_components, 1, 1)).requires_grad_(True)
    gen_model = MixtureGenerator(A, b)
    opt = Adam([A, b], lr=lr)
    lam_hi, lam_lo = schedule.lambda_max, schedule.lambda_min
    for _ in range(steps):
        x = gen_model.sample(batch, generator)
        p = lo + (hi - lo) * torch.rand(batch, generator=generator, dtype=dtype)
        v = schedule(schedule.t_of_lambda(lam_hi + p * (lam_lo - lam_hi)))
        a, s = v.alpha[:, None].to(dtype), v.sigma[:, None].to(dtype)
        with torch.no_grad():
            x_t = a * x + s * torch.randn(x.shape, generator=generator, dtype=dtype)
            d_real = data.x0_eps(x_t, a[:, 0], s[:, 0])[0]
            d_fake = gen_model.law().x0_eps(x_t, a[:, 0], s[:, 0])[0]
            g = dmd2_direction(x, d_real, d_fake)
        loss = 0.5 * ((x - (x - g).detach()) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return MixtureGenerator(A.detach(), b.detach())
