"""The samplers a perfectly trained few-step student runs, with the shared signature (chapter 8).

A trained student (``refimpl.distillation``) lives on the one grid it was distilled on. What *does* have the shared
signature is the ideal student of a given teacher on any grid: the student that fits its distillation target
exactly, computed on the fly from the teacher ``model``. These are the registered entries:

* ``sample_progressive_student``: after ``rounds`` rounds of progressive distillation (Salimans & Ho 2022,
  arXiv:2202.00512v2, Algorithm 2; ProDiff, arXiv:2207.06389v1, Sec. 3.3) each student step s -> t is one DDIM
  step whose x0 is the target (2) of ``refimpl.distillation.progressive``, built from k = 2^rounds teacher DDIM
  steps on the uniform-lambda subdivision of [t, s]. It lands where the teacher lands, so the ideal student *is*
  DDIM on the k-times finer grid: order 1 in its own step count, k model calls per step.
* ``sample_consistency_multistep``: multistep consistency sampling (Song et al. 2023, arXiv:2303.01469v2,
  Algorithm 1) with the fixed point of consistency distillation with the DDIM (ODE) teacher on the grid
  t_0 > ... > t_N = epsilon, which is f(x, t_n) = the teacher's DDIM steps t_n -> ... -> t_N (``refimpl.distillation
  .consistency``, tested there). Step n predicts x_eps = f(x, t_n) and re-noises it exactly to t_{n+1}
  (``renoise``); the last step returns f(x, t_{N-1}). N - n model calls at step n: N (N + 1) / 2 in all.

One *trained* student is registered too, with the registry's kind "fixed" (``SamplerSpec.fixed_grid``): ``sample_
trained_progressive_student`` runs the 2-step affine student that two rounds of progressive distillation
(``refimpl.distillation.progressive.progressive_distillation``) fit to the 8-step DDIM teacher of the exact model of
``toy_models.anisotropic_gaussian(2, seed=0)`` on the ``vp_linear`` schedule (least squares on 64 seeded data
points: milliseconds, done on first call). Like any distilled network it no longer calls a model (the ``model``
argument is validated only) and is defined only on its grid, every 4th point of the teacher's uniform-lambda grid.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from refimpl import grids
from refimpl._validation import check_float_tensors, check_kinds
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, NoiseSource, StepInfo, check_sampler_inputs
from refimpl.samplers.ddim import ddim_step
from refimpl.schedules import ScheduleValues, get_schedule

__all__ = [
    "STUDENT_GRID",
    "renoise",
    "sample_consistency_multistep",
    "sample_progressive_student",
    "sample_trained_progressive_student",
    "trained_progressive_student",
]

#: The teacher's grid (8 uniform-lambda steps on vp_linear) and the trained 2-step student's: every 4th point.
TEACHER_GRID = grids.uniform_lambda(get_schedule("vp_linear"), 8)
STUDENT_GRID = TEACHER_GRID[::4].clone()


def sample_progressive_student(
    model: DiffusionModel, x: Tensor, timesteps: Tensor, *, rounds: int = 1, callback: Callback | None = None
) -> Tensor:
    """The ideal student of ``model`` after ``rounds`` halvings: one DDIM step (1) per step of ``timesteps`` with
    x0 = target (2) of k = 2^rounds teacher DDIM steps, uniform in lambda inside the step (Salimans & Ho 2022,
    Algorithm 2)."""
    from refimpl.distillation import progressive  # on first call: the samplers load no chapter package

    ts = check_sampler_inputs(model, x, timesteps)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be a non-negative integer, got {rounds!r}")
    k, schedule = 2**rounds, model.schedule
    values = schedule(ts)
    for i in range(len(ts) - 1):
        teacher = progressive.ModelTeacher(model, grids.uniform_lambda(schedule, k, float(ts[i]), float(ts[i + 1])))
        x0 = progressive.progressive_target(teacher, x, 0, k)
        x_next = progressive.ddim_x0_step(x, x0, values[i], values[i + 1])
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def renoise(x_eps: Tensor, v_eps: ScheduleValues, v_t: ScheduleValues, z: Tensor) -> Tensor:
    """The exact forward transition from epsilon to t > epsilon: (alpha_t / alpha_eps) x_eps + sqrt(sigma_t^2 -
    (alpha_t / alpha_eps)^2 sigma_eps^2) z (Song et al. 2023, Algorithm 1, in variance-preserving form)."""
    check_kinds(ScheduleValues, v_eps=v_eps, v_t=v_t)
    check_float_tensors(x_eps=x_eps, z=z)
    a = v_t.alpha / v_eps.alpha
    return a * x_eps + torch.sqrt(v_t.sigma**2 - a**2 * v_eps.sigma**2) * z


def sample_consistency_multistep(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1) with f = the DDIM teacher's map to
    epsilon = timesteps[-1] along the grid, the consistency-distillation fixed point; re-noised at every t_n.

    ``noise`` (n_steps, *x.shape): noise[n] re-noises step n's prediction to t_{n+1} (the last one is unused)."""
    ts = check_sampler_inputs(model, x, timesteps)
    n_steps = len(ts) - 1
    noise_at = NoiseSource(noise, generator, n_steps, x)
    values = model.schedule(ts)
    for n in range(n_steps):
        x_eps = x
        for j in range(n, n_steps):  # f(x, t_n): the teacher's DDIM steps to epsilon
            x0, eps = predict_x0_eps(model, x_eps, ts[j], values[j])
            x_eps = ddim_step(x0, eps, values[j + 1])
        x_next = x_eps if n == n_steps - 1 else renoise(x_eps, values[n_steps], values[n + 1], noise_at(n))
        if callback is not None:
            callback(StepInfo(n, ts[n], ts[n + 1], x, x_next, x_eps))
        x = x_next
    return x


@functools.cache
def trained_progressive_student():
    """The 2-step ``AffineX0Student`` of two progressive-distillation rounds (8 -> 4 -> 2) of the exact-model DDIM
    teacher of ``anisotropic_gaussian(2, seed=0)`` on vp_linear, from 64 data points (seeds 0 and 1)."""
    from refimpl.distillation import progressive  # on first call: the samplers load no chapter package
    from toy_models import ExactModel, anisotropic_gaussian

    data_law = anisotropic_gaussian(2, seed=0)
    teacher = progressive.ModelTeacher(ExactModel(data_law, get_schedule("vp_linear")), TEACHER_GRID)
    data = data_law.sample(64, torch.Generator().manual_seed(0))
    return progressive.progressive_distillation(teacher, 2, data, torch.Generator().manual_seed(1))[-1]


def sample_trained_progressive_student(
    model: DiffusionModel, x: Tensor, timesteps: Tensor, *, callback: Callback | None = None
) -> Tensor:
    """The trained 2-step student (``trained_progressive_student``) on its grid ``STUDENT_GRID`` of vp_linear only;
    x (B, 2).
    ``model`` is validated but not called: the student has replaced it (Salimans & Ho 2022, Algorithm 2)."""
    from refimpl.distillation.progressive import ddim_x0_step

    ts = check_sampler_inputs(model, x, timesteps)
    if model.schedule.name != "vp_linear":
        raise ValueError(f"model must be on the student's schedule vp_linear, got {model.schedule.name!r}")
    if ts.shape != STUDENT_GRID.shape or not torch.equal(ts, STUDENT_GRID):
        raise ValueError(f"timesteps must be the student's fixed grid {STUDENT_GRID.tolist()}, got {ts.tolist()}")
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (B, 2) (the student's data dimension), got {tuple(x.shape)}")
    student = trained_progressive_student()
    values = student.schedule(ts)
    for i in range(len(ts) - 1):
        x0 = student.x0(i, x)
        x_next = ddim_x0_step(x, x0, values[i], values[i + 1])
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


register(
    SamplerSpec(
        name="progressive_student",
        sample=sample_progressive_student,
        order=1,
        stochastic=False,
        paper="salimans2022progressive",
        equation="arXiv:2202.00512v2 Algorithm 2 (ideal student, 2 rounds: 4 DDIM teacher steps per step)",
        nfe=lambda n: 4 * n,
        options={"rounds": 2},
        order_steps=(8, 16, 32, 64),  # 32 to 256 teacher steps: the asymptotic regime of DDIM
        order_check="gaussian",
        order_note="the ideal student is DDIM on the 4x finer grid to round-off (tests/test_distillation.py), "
        "so its order on the mixtures is the ddim entry's, measured there",
    )
)
register(
    SamplerSpec(
        name="consistency_multistep",
        sample=sample_consistency_multistep,
        order=1,  # weak order
        stochastic=True,
        paper="song2023consistency",
        equation="arXiv:2303.01469v2 Algorithm 1 with the CD fixed point of the DDIM teacher (Eq. 7)",
        nfe=lambda n: n * (n + 1) // 2,
        order_steps=(16, 32, 64),  # N (N + 1) / 2 model calls: 2080 at N = 64
    )
)
register(
    SamplerSpec(
        name="progressive_student_trained",
        sample=sample_trained_progressive_student,
        order=1,  # its teacher's (DDIM); not measurable on one grid
        stochastic=False,
        paper="salimans2022progressive",
        equation="arXiv:2202.00512v2 Algorithm 2 (two rounds, 8 -> 2 steps, affine student on Gaussian data)",
        nfe=lambda n: 0,
        kind="fixed",
        fixed_grid=("vp_linear", tuple(STUDENT_GRID.tolist())),
        order_check="gaussian",
        order_note="a trained student is defined on its one grid: no step count to refine; its map equals the "
        "8-step teacher's to least-squares round-off (tests/test_distillation.py)",
    )
)
