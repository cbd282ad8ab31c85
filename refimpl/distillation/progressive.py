"""Progressive distillation: an n-step student reproduces k steps of an (n k)-step DDIM teacher per step.

Salimans & Ho (2022, arXiv:2202.00512v2, Algorithm 2) distil a DDIM teacher into a student of half the steps;
ProDiff (Huang et al. 2022, arXiv:2207.06389v1, Sec. 3.3) applies it to an x0-parameterised TTS model,
teacher N steps -> student N/2. In x0-parameterisation one DDIM step from s to t with prediction x0 is

    z_t = alpha_t x0 + (sigma_t / sigma_s) (z_s - alpha_s x0),                                   (1)

(Song et al. 2021, arXiv:2010.02502v4, Eq. 12 with eta = 0). The student's target at z_s is the x0 that makes
*one* step (1) from s land where k teacher steps from s land, z_t^teacher (Salimans & Ho, Algorithm 2, k = 2):

    x0_target = (z_t^teacher - (sigma_t / sigma_s) z_s) / (alpha_t - (sigma_t / sigma_s) alpha_s).       (2)

On Gaussian data with the exact model every DDIM step is affine, so (2) is affine in z_s and known in closed
form (``gaussian_ddim_step_map``, ``progressive_target_map``); an affine student (``AffineX0Student``) then
represents the target exactly and least squares on any d + 1 generic points recovers it to round-off.
A teacher or student is anything with ``schedule``, ``timesteps`` (n + 1, decreasing) and ``x0(i, z)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from refimpl._validation import as_float_tensor, check_finite, check_instance, check_integer, check_strictly_decreasing
from refimpl.differentiable._optim import Adam
from refimpl.models import DiffusionModel, check_model, predict_x0_eps
from refimpl.samplers.ddim import ddim_step
from refimpl.schedules import NoiseSchedule, ScheduleValues
from toy_models.gmm import GaussianMixture

__all__ = [
    "AffineX0Student",
    "ModelTeacher",
    "NetworkX0Student",
    "StepModel",
    "ddim_x0_step",
    "distill_round",
    "distill_round_network",
    "fit_affine",
    "gaussian_ddim_step_map",
    "progressive_distillation",
    "progressive_target",
    "progressive_target_map",
    "run_steps",
]


class StepModel(Protocol):
    """A few-step sampler on a fixed grid: x0 prediction at grid point i."""

    schedule: NoiseSchedule
    timesteps: Tensor

    def x0(self, i: int, z: Tensor) -> Tensor: ...


def _check_step_model(model: object, name: str) -> None:
    """A ``StepModel``: ``schedule``, ``timesteps`` and ``x0``."""
    if not all(hasattr(model, a) for a in ("schedule", "timesteps", "x0")):
        raise TypeError(f"{name} must have .schedule, .timesteps and .x0 (a StepModel), got {type(model).__name__}")


def ddim_x0_step(z: Tensor, x0: Tensor, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """Eq. (1): the DDIM step s -> t written with the x0 prediction only (eps = (z - alpha_s x0) / sigma_s)."""
    check_finite(z, "z")
    check_finite(x0, "x0")
    check_instance(v_s, ScheduleValues, "v_s")
    check_instance(v_t, ScheduleValues, "v_t")
    eps = (z - v_s.alpha * x0) / v_s.sigma
    return ddim_step(x0, eps, v_t)


def run_steps(model: StepModel, z: Tensor, start: int, stop: int) -> Tensor:
    """DDIM steps of ``model`` from grid index ``start`` to ``stop`` (start <= stop)."""
    _check_step_model(model, "model")
    n = len(model.timesteps) - 1
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in (start, stop)) or not 0 <= start <= stop <= n:
        raise ValueError(f"start and stop must be grid indices with 0 <= start <= stop <= {n}, got {start}, {stop}")
    values = model.schedule(model.timesteps)
    for i in range(start, stop):
        z = ddim_x0_step(z, model.x0(i, z), values[i], values[i + 1])
    return z


def _check_data(data: object) -> None:
    check_finite(data, "data")
    if data.ndim != 2 or not data.is_floating_point():
        raise ValueError(f"data must be a floating (B, d) batch, got {data.dtype} of shape {tuple(data.shape)}")


def _check_gaussian(mixture: object) -> None:
    if not isinstance(mixture, GaussianMixture) or mixture.K != 1:
        raise TypeError(f"mixture must be a GaussianMixture with one component, got {type(mixture).__name__}")


def _n_steps(model: StepModel) -> int:
    return len(model.timesteps) - 1


@dataclass
class ModelTeacher:
    """A diffusion model used as a DDIM teacher on ``timesteps`` (decreasing, n + 1 points)."""

    model: DiffusionModel
    timesteps: Tensor

    def __post_init__(self) -> None:
        check_model(self.model)
        self.timesteps = self.model.schedule.check_t(torch.as_tensor(self.timesteps, dtype=torch.float64))

    @property
    def schedule(self) -> NoiseSchedule:
        return self.model.schedule

    def x0(self, i: int, z: Tensor) -> Tensor:
        """The model's x0 prediction at (z, timesteps[i])."""
        return predict_x0_eps(self.model, z, self.timesteps[i])[0]

    def sample(self, z: Tensor) -> Tensor:
        """All n DDIM steps from timesteps[0] to timesteps[-1]."""
        return run_steps(self, z, 0, _n_steps(self))


@dataclass
class AffineX0Student:
    """A student whose x0 prediction at grid point i is affine: x0 = W_i z + c_i; weights (n, d, d), biases (n, d)."""

    schedule: NoiseSchedule
    timesteps: Tensor
    weights: Tensor
    biases: Tensor

    def x0(self, i: int, z: Tensor) -> Tensor:
        return z @ self.weights[i].T + self.biases[i]

    def sample(self, z: Tensor) -> Tensor:
        """The student's n DDIM steps."""
        return run_steps(self, z, 0, _n_steps(self))


def progressive_target(teacher: StepModel, z: Tensor, i: int, k: int) -> Tensor:
    """Eq. (2): the x0 target of student step i, from k teacher steps starting at teacher index i k."""
    _check_step_model(teacher, "teacher")
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in (i, k)) or i < 0 or k < 1:
        raise ValueError(f"i must be a non-negative and k a positive integer, got i = {i!r}, k = {k!r}")
    values = teacher.schedule(teacher.timesteps)
    v_s, v_t = values[i * k], values[(i + 1) * k]
    z_t = run_steps(teacher, z, i * k, (i + 1) * k)
    ratio = v_t.sigma / v_s.sigma
    return (z_t - ratio * z) / (v_t.alpha - ratio * v_s.alpha)


def fit_affine(z: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Least squares target ~ W z + c over the batch: returns W (d, d), c (d,). Needs B >= d + 1 points."""
    check_finite(z, "z")
    check_finite(target, "target")
    if z.ndim != 2 or target.ndim != 2 or target.shape[0] != z.shape[0]:
        raise ValueError(
            f"z and target must be (B, d) batches of one size, got {tuple(z.shape)}, {tuple(target.shape)}"
        )
    if z.shape[0] < z.shape[1] + 1:
        raise ValueError(f"need at least d + 1 = {z.shape[1] + 1} points to fit an affine map, got {z.shape[0]}")
    design = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], 1)
    sol = torch.linalg.lstsq(design, target).solution  # (d + 1, d)
    return sol[:-1].T, sol[-1]


def distill_round(
    teacher: StepModel, n_student: int, data: Tensor, generator: torch.Generator | None = None
) -> AffineX0Student:
    """One round: an affine student of ``n_student`` steps fitted to targets (2) on z_s = alpha_s x + sigma_s eps.

    ``data`` (B, d) are samples of x_0 (Salimans & Ho, Algorithm 2, draw z_t from the data); the student's grid is
    every k-th teacher point, k = n_teacher / n_student, which must be an integer.
    """
    _check_step_model(teacher, "teacher")
    n_teacher = _n_steps(teacher)
    if isinstance(n_student, bool) or not isinstance(n_student, int) or n_student < 1:
        raise ValueError(f"n_student must be a positive integer, got {n_student!r}")
    _check_data(data)
    if n_teacher % n_student:
        raise ValueError(f"n_student = {n_student} does not divide the teacher's {n_teacher} steps")
    k = n_teacher // n_student
    values = teacher.schedule(teacher.timesteps)
    weights, biases = [], []
    for i in range(n_student):
        v_s = values[i * k]
        eps = torch.randn(data.shape, generator=generator, dtype=data.dtype)
        z = v_s.alpha * data + v_s.sigma * eps
        W, c = fit_affine(z, progressive_target(teacher, z, i, k))
        weights.append(W)
        biases.append(c)
    return AffineX0Student(teacher.schedule, teacher.timesteps[::k].clone(), torch.stack(weights), torch.stack(biases))


def progressive_distillation(
    teacher: StepModel, rounds: int, data: Tensor, generator: torch.Generator | None = None
) -> list[AffineX0Student]:
    """``rounds`` rounds of halving (n -> n/2 -> ...); each student is the next round's teacher."""
    _check_step_model(teacher, "teacher")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    students = []
    for _ in range(rounds):
        n = _n_steps(teacher)
        if n % 2:
            raise ValueError(f"cannot halve {n} steps: rounds = {rounds} is too many for this teacher")
        teacher = distill_round(teacher, n // 2, data, generator)
        students.append(teacher)
    return students


def gaussian_ddim_step_map(
    mixture: GaussianMixture, schedule: NoiseSchedule, t_from: float | Tensor, t_to: float | Tensor
) -> tuple[Tensor, Tensor]:
    """(M, b) of one exact-model DDIM step on one Gaussian: x0 = mu + G (z - alpha_s mu) (Wiener gain G) in (1)."""
    _check_gaussian(mixture)
    check_instance(schedule, NoiseSchedule, "schedule")
    v_s, v_t = schedule(schedule.check_t(t_from, "t_from")), schedule(schedule.check_t(t_to, "t_to"))
    a_s, s_s, a_t, s_t = (float(v) for v in (v_s.alpha, v_s.sigma, v_t.alpha, v_t.sigma))
    G, mu = mixture.wiener_gain(a_s, s_s), mixture.means[0]
    r = s_t / s_s
    c = a_t - r * a_s
    return r * torch.eye(mixture.d, dtype=mu.dtype) + c * G, c * (mu - a_s * (G @ mu))


def progressive_target_map(
    mixture: GaussianMixture, schedule: NoiseSchedule, timesteps: Tensor
) -> tuple[Tensor, Tensor]:
    """Closed form of (2) on one Gaussian: x0_target = W z_s + c for the teacher steps along ``timesteps``."""
    _check_gaussian(mixture)
    check_instance(schedule, NoiseSchedule, "schedule")
    ts = schedule.check_t(torch.as_tensor(timesteps, dtype=torch.float64), "timesteps")
    d = mixture.d
    M, b = torch.eye(d, dtype=mixture.dtype), torch.zeros(d, dtype=mixture.dtype)
    for j in range(len(ts) - 1):
        M_j, b_j = gaussian_ddim_step_map(mixture, schedule, ts[j], ts[j + 1])
        M, b = M_j @ M, M_j @ b + b_j  # compose: the later step acts last
    v_s, v_t = schedule(ts[0]), schedule(ts[-1])
    ratio = float(v_t.sigma / v_s.sigma)
    den = float(v_t.alpha) - ratio * float(v_s.alpha)
    return (M - ratio * torch.eye(d, dtype=M.dtype)) / den, b / den


class NetworkX0Student(nn.Module):
    """A small MLP student x0 = net([z, one-hot(i)]) on a grid of n steps (the nonlinear student of the mixture lab).

    With a ``generator`` the initial weights are drawn from it (the law of PyTorch's default ``nn.Linear``
    initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases) and the global RNG is not touched;
    without one, from the global RNG as ``nn.Linear`` does.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        timesteps: Tensor,
        d: int,
        hidden: int = 64,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        check_instance(schedule, NoiseSchedule, "schedule")
        timesteps = schedule.check_t(as_float_tensor(timesteps, "timesteps"), "timesteps")
        check_strictly_decreasing(timesteps, "timesteps")
        d, hidden = check_integer(d, "d", 1), check_integer(hidden, "hidden", 1)
        if generator is not None:
            check_instance(generator, torch.Generator, "generator")
        self.schedule, self.timesteps = schedule, timesteps
        n = len(timesteps) - 1
        sizes = [(d + n, hidden), (hidden, hidden), (hidden, d)]
        if generator is None:
            layers = [nn.Linear(i, o, dtype=torch.float64) for i, o in sizes]
        else:  # allocated uninitialised, then drawn from the caller's generator with nn.Linear's default law
            layers = [nn.utils.skip_init(nn.Linear, i, o, dtype=torch.float64) for i, o in sizes]
            with torch.no_grad():
                for layer in layers:
                    bound = layer.in_features**-0.5
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)
        self.net = nn.Sequential(layers[0], nn.SiLU(), layers[1], nn.SiLU(), layers[2])

    def x0(self, i: int, z: Tensor) -> Tensor:
        onehot = torch.zeros(z.shape[0], len(self.timesteps) - 1, dtype=z.dtype)
        onehot[:, i] = 1.0
        return self.net(torch.cat([z, onehot], 1))

    def sample(self, z: Tensor) -> Tensor:
        return run_steps(self, z, 0, len(self.timesteps) - 1)


def distill_round_network(
    teacher: StepModel,
    n_student: int,
    data: Tensor,
    *,
    train_steps: int = 300,
    batch: int = 256,
    lr: float = 3e-3,
    hidden: int = 64,
    generator: torch.Generator | None = None,
) -> NetworkX0Student:
    """One round with an MLP student trained by Adam on the targets (2) (mean squared error in x0, Salimans & Ho,
    Algorithm 2, with their weighting max(SNR, 1) left out); the student's grid is every k-th teacher point. With a
    ``generator`` every draw (initial weights, batches, noise) comes from it and the global RNG is left alone."""
    _check_step_model(teacher, "teacher")
    n_teacher = _n_steps(teacher)
    _check_data(data)
    if isinstance(n_student, bool) or not isinstance(n_student, int) or n_student < 1 or n_teacher % n_student:
        raise ValueError(f"n_student = {n_student!r} must be a positive integer dividing the teacher's {n_teacher}")
    k = n_teacher // n_student
    student = NetworkX0Student(
        teacher.schedule, teacher.timesteps[::k].clone(), data.shape[1], hidden, generator=generator
    )
    values = teacher.schedule(teacher.timesteps)
    opt = Adam(list(student.parameters()), lr=lr)
    for _ in range(train_steps):
        i = int(torch.randint(0, n_student, (1,), generator=generator))
        x = data[torch.randint(0, data.shape[0], (batch,), generator=generator)]
        v_s = values[i * k]
        z = v_s.alpha * x + v_s.sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        with torch.no_grad():
            aim = progressive_target(teacher, z, i, k)
        loss = ((student.x0(i, z) - aim) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student
