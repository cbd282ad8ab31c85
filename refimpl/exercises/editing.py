"""Checkers for the exercises of chapter 9, editing (``notebooks/09_editing.md``)."""

from __future__ import annotations

from typing import Any

from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import as_array

CHAPTER = "09_editing"


def _falls_like(gaps: Any, factors: tuple[float, float], what: str) -> str:
    """Gaps measured at sigma_max growing by ``factors`` fall by those factors (1 / sigma_max), within 25 %."""
    values = as_array(gaps, what, (3,))
    ratios = (values[:-1] / values[1:]).tolist()
    if not (values > 0).all() or not all(0.75 < r / f < 1.25 for r, f in zip(ratios, factors, strict=True)):
        raise ExerciseFailed(
            f"{what} should fall like 1 / sigma_max (by {factors[0]:g} and {factors[1]:g}); "
            f"they fall by {ratios[0]:.2f} and {ratios[1]:.2f}"
        )
    return f"{what} fall like 1 / sigma_max (ratios {ratios[0]:.1f} and {ratios[1]:.1f})."


@exercise(
    "ex-edit-zscore",
    chapter=CHAPTER,
    goal="what an exact edit preserves",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the max gaps between the exact ODE edit and the z-score formula at sigma_max = 8, 80 and 800
answer = None
""",
)
def _zscore(answer: Any) -> str:
    return _falls_like(answer, (10.0, 10.0), "the gaps")


@exercise(
    "ex-edit-infedit-noise",
    chapter=CHAPTER,
    goal="InfEdit",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: (spread of ten InfEdit edits of one point, spread of ten BDIA edits of it): max coordinate std each
answer = None
""",
)
def _infedit_noise(answer: Any) -> str:
    infedit_spread, bdia_spread = as_array(answer, "the two spreads", (2,)).tolist()
    if not infedit_spread > 1e-3:
        raise ExerciseFailed(f"InfEdit draws fresh noise: ten edits should spread, got a std of {infedit_spread:.1e}")
    if not bdia_spread < 1e-12:
        raise ExerciseFailed(f"BDIA editing is deterministic: its std should be 0, got {bdia_spread:.1e}")
    return "InfEdit's edits depend on the noise drawn; inversion editors are deterministic."


@exercise(
    "ex-edit-counterfactual",
    chapter=CHAPTER,
    goal="counterfactuals by inversion",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: the max gaps |ODE counterfactual - Pearl| at sigma_max = 10, 80 and 640
answer = None
""",
)
def _counterfactual(answer: Any) -> str:
    return _falls_like(answer, (8.0, 8.0), "the gaps")


@exercise(
    "ex-edit-lowband",
    chapter=CHAPTER,
    goal="frequency-filtered start points",
    kind="implement",
    difficulty=1,
    minutes=10,
    stub="""
# answer: a function reduce_low(z, P, keep) scaling the band of the projector P in the rows of z (B, d) by keep
def reduce_low(z, P, keep):
    raise NotImplementedError


answer = reduce_low
""",
)
def _lowband(answer: Any) -> str:
    import torch

    from refimpl.editing import reduce_low_frequencies
    from refimpl.exercises._compare import U64, call, callable_answer, close

    reduce_low = callable_answer(answer, "reduce_low")
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64))
    projector = q[:, :5] @ q[:, :5].T  # an orthogonal projector of rank 5
    z = torch.randn(4, 16, generator=gen, dtype=torch.float64)
    for keep in (1.0, 0.5, 0.0):
        tol = 16 * 16 * U64 * float(z.abs().max())  # a matrix product of length 16, a few roundings each
        close(
            call(reduce_low, z, projector, keep, what="reduce_low"),
            reduce_low_frequencies(z, projector, keep),
            tol,
            f"reduce_low at keep = {keep:g}",
            "z - (1 - keep) P z, with P applied to each row",
        )
    return "reduce_low scales the low band by keep and leaves the rest alone."


@exercise(
    "ex-edit-cons",
    chapter=CHAPTER,
    goal="InfEdit",
    kind="derive",
    difficulty=1,
    minutes=10,
    stub="""
# answer: eps_cons, the noise prediction making x0_hat = x_0, a sympy expression in x_t, x_0, alpha_t, sigma_t
answer = None
""",
)
def _cons(answer: Any) -> str:
    import sympy as sp

    from refimpl.exercises._compare import sympy_equal

    names = {n: sp.Symbol(n) for n in ("x_t", "x_0", "alpha_t", "sigma_t")}
    expected = (names["x_t"] - names["alpha_t"] * names["x_0"]) / names["sigma_t"]
    return sympy_equal(answer, expected, "eps_cons", names)
