"""Checkers for the exercises of the distillation chapter (``notebooks/12_distillation.md``)."""

from __future__ import annotations

from typing import Any

import torch

from refimpl import grids
from refimpl.distillation.flow_maps import affine_map_of, gaussian_flow_map
from refimpl.distillation.progressive import ModelTeacher, progressive_target, run_steps
from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, steps_tolerance, sympy_equal
from refimpl.schedules import get_schedule
from toy_models import ExactModel, anisotropic_gaussian

CHAPTER = "12_distillation"


def _gaussian_teacher(n: int) -> tuple[Any, Any, ModelTeacher]:
    """The chapter's set-up: vp_linear, a 2-d anisotropic Gaussian, its exact model as an n-step DDIM teacher."""
    schedule, gauss = get_schedule("vp_linear"), anisotropic_gaussian(2, seed=0)
    return schedule, gauss, ModelTeacher(ExactModel(gauss, schedule), grids.uniform_lambda(schedule, n))


@exercise(
    "ex-distill-k4",
    chapter=CHAPTER,
    goal="the progressive-distillation target",
    kind="implement",
    difficulty=2,
    minutes=20,
    stub="""
# answer: a function my_target(teacher, z, i, k) returning the x0 target of student step i from k teacher steps
def my_target(teacher, z, i, k):
    raise NotImplementedError


answer = my_target
""",
)
def _k4(answer: Any) -> str:
    my_target = callable_answer(answer, "my_target")
    _, _, teacher = _gaussian_teacher(8)
    values = teacher.schedule(teacher.timesteps)
    z = 3 * torch.randn(16, 2, generator=torch.Generator().manual_seed(21), dtype=torch.float64)
    messages = []
    for k in (4, 2, 1, 8):
        for i in range(8 // k):
            expected = progressive_target(teacher, z, i, k)
            got = call(my_target, teacher, z, i, k, what=f"my_target(teacher, z, {i}, {k})")
            v_s, v_t = values[i * k], values[(i + 1) * k]
            ratio = v_t.sigma / v_s.sigma
            denominator = float((v_t.alpha - ratio * v_s.alpha).abs())
            # k DDIM steps and the difference z_t - ratio z, each a few roundings of the states' size, are divided
            # by the denominator alpha_t - ratio alpha_s; then the target itself is rounded
            scale = float(run_steps(teacher, z, i * k, (i + 1) * k).abs().max() + z.abs().max())
            tol = steps_tolerance(k + 1, scale) / denominator + 64 * U64 * float(expected.abs().max())
            messages.append(
                close(
                    got,
                    expected,
                    tol,
                    f"the target of student step {i} from k = {k} teacher steps",
                    "run k DDIM steps z -> z_t, then solve alpha_t x0 + (sigma_t / sigma_s)(z - alpha_s x0) = z_t",
                )
            )
    return messages[0] + f" So do the other {len(messages) - 1} targets (k = 1, 2, 4, 8)."


@exercise(
    "ex-distill-backward-sweep",
    chapter=CHAPTER,
    goal="consistency distillation's fixed point and its teacher's error",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the max-abs distance of the one-sweep CD model's matrix f(., t_0) to the exact flow map's, for N = 8, 16, 32
answer = None
""",
)
def _backward_sweep(answer: Any) -> str:
    got = as_array(answer, "the three distances", (3,))
    expected, tols = [], []
    for n in (8, 16, 32):
        schedule, gauss, teacher = _gaussian_teacher(n)
        # the fixed point of CD with a DDIM teacher is the teacher's own n-step map, which one backward sweep reaches
        M_teacher = affine_map_of(teacher.sample, 2)[0]
        M_exact = gaussian_flow_map(gauss, schedule, teacher.timesteps[0], teacher.timesteps[-1])[0]
        expected.append(float((M_teacher - M_exact).abs().max()))
        # n least-squares fits in a row (3 unknowns per coordinate, well-conditioned designs of 64 noised points),
        # each a handful of roundings of maps of size |M|
        tols.append(steps_tolerance(n, float(M_exact.abs().max())))
    return (
        close(
            got,
            torch.tensor(expected),
            max(tols),
            "the list of distances to the exact map",
            "the fixed point is the DDIM teacher's N-step map: measure the matrix of f(., t_0), the map from t_0",
        )
        + " They halve with N: the student keeps its teacher's first-order error."
    )


@exercise(
    "ex-distill-sigma-data",
    chapter=CHAPTER,
    goal="the consistency parameterisation and its boundary condition",
    kind="derive",
    difficulty=1,
    minutes=15,
    stub="""
# answer: [d c_skip / d rho_t, d c_out / d rho_t] at rho_t = rho_eps, sympy expressions in the symbols sigma_d, rho_eps
answer = None
""",
)
def _sigma_data(answer: Any) -> str:
    import sympy as sp

    if not isinstance(answer, list | tuple) or len(answer) != 2:
        raise ExerciseFailed(
            f"the answer should be a list of two sympy expressions [dc_skip, dc_out], got {type(answer).__name__}"
        )
    sigma_d, rho_eps = sp.symbols("sigma_d rho_eps", positive=True)
    symbols = {"sigma_d": sigma_d, "rho_eps": rho_eps}
    skip = sympy_equal(answer[0], sp.Integer(0), "d c_skip / d rho_t at rho_eps", symbols)
    out = sympy_equal(answer[1], sigma_d / sp.sqrt(sigma_d**2 + rho_eps**2), "d c_out / d rho_t at rho_eps", symbols)
    return f"{skip} {out} Near epsilon f = x + (rho_t - rho_eps) c_out' F + O((rho_t - rho_eps)^2)."
