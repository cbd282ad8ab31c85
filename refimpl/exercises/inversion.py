"""Checkers for the exercises of chapter 8, exact inversion (``notebooks/08_inversion.md``)."""

from __future__ import annotations

from typing import Any

import torch

from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, sympy_equal
from refimpl.samplers import edict_unmix
from refimpl.schedules import get_schedule

CHAPTER = "08_inversion"
STEPS = 50
U32 = torch.finfo(torch.float32).eps / 2


def _round_trip_bound(amplification: float) -> float:
    """The registry's bound (eq-inv-bound), 16 n u S A(n) at 50 steps, with S the largest state the transfer maps
    compute: the ring's states (|x| < 4) divided by alpha at t_max, where DDIM's transfer rescales by 1 / alpha."""
    schedule = get_schedule("vp_linear")
    largest = 4.0 / float(schedule.alpha_t(schedule.t_max))
    return 16 * STEPS * U64 * largest * amplification


@exercise(
    "ex-inv-p",
    chapter=CHAPTER,
    goal="EDICT's mixing weight",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: a dict {p: round-trip max-abs error} for p = 1.0, 0.93, 0.8 at 50 uniform-lambda steps, in float64
answer = None
""",
)
def _p(answer: Any) -> str:
    if not isinstance(answer, dict) or sorted(answer) != [0.8, 0.93, 1.0]:
        raise ExerciseFailed("the answer should be a dict with the keys 1.0, 0.93 and 0.8")
    for p, error in answer.items():
        bound = _round_trip_bound(p ** (-2 * STEPS))
        if not float(as_array(error, f"the error at p = {p}", ())) <= bound:
            raise ExerciseFailed(
                f"a round-trip error {float(error):.2e} at p = {p} is above the round-off bound "
                f"16 n u S p^(-2n) = {bound:.1e}: is the decoder sample_edict with the same p?"
            )
    return "every p in (0, 1] inverts exactly, to round-off."


@exercise(
    "ex-inv-float32",
    chapter=CHAPTER,
    goal="exactness up to round-off",
    kind="measure",
    difficulty=2,
    minutes=10,
    stub="""
# answer: the ratio (float32 round-trip error) / (float64 round-trip error) of EDICT at 50 steps
answer = None
""",
)
def _float32(answer: Any) -> str:
    ratio = float(as_array(answer, "the ratio", ()))
    expected = U32 / U64  # 2^29: round-off scales with the unit round-off
    # maxima of a few hundred rounding errors: the ratio of two such maxima is within two decades of u32 / u64
    if not expected / 100 <= ratio <= expected * 100:
        raise ExerciseFailed(
            f"a ratio of {ratio:.2e} is not of the order of 2^29 = {expected:.2e}: "
            "compare the same method on the same data, in the two precisions"
        )
    return f"ratio {ratio:.1e}, of the order of u32 / u64 = 2^29: the errors are round-off."


@exercise(
    "ex-inv-bdia-pair",
    chapter=CHAPTER,
    goal="BDIA's exact inverse",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: (error of the start recovered from the pair, from the last state alone, decode error of that latent)
answer = None
""",
)
def _bdia_pair(answer: Any) -> str:
    errors = as_array(answer, "the three errors", (3,))
    bound = _round_trip_bound(1.0)  # gamma = 1: no amplification
    if not (errors[0] <= bound and errors[2] <= bound):
        raise ExerciseFailed(
            f"the pair and the re-decoding should be exact to round-off ({bound:.1e}); "
            f"got {errors[0]:.1e} and {errors[2]:.1e}"
        )
    if errors[1] < 1e3 * bound:
        raise ExerciseFailed(
            "from the last state alone the first inverse step is DDIM inversion, an O(h^2) error; "
            f"an error of {errors[1]:.1e} suggests you inverted the pair twice"
        )
    return "the pair inverts exactly; the last state alone gives another exact latent of the same sample."


@exercise(
    "ex-inv-unmix",
    chapter=CHAPTER,
    goal="EDICT's coupling",
    kind="implement",
    difficulty=1,
    minutes=10,
    stub="""
# answer: a function unmix(x_next, y_next, p) returning (x_inter, y_inter), the inverse of EDICT's mixing layers
def unmix(x_next, y_next, p):
    raise NotImplementedError


answer = unmix
""",
)
def _unmix(answer: Any) -> str:
    unmix = callable_answer(answer, "unmix")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    for p in (0.93, 0.8, 1.0):
        got = call(unmix, x, y, p, what="unmix")
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise ExerciseFailed("unmix should return the pair (x_inter, y_inter)")
        tol = 8 * U64 / p**2 * float(torch.cat([x, y]).abs().max())  # two divisions by p
        for g, e, name in zip(got, edict_unmix(x, y, p), ("x_inter", "y_inter"), strict=True):
            close(g, e, tol, f"{name} at p = {p}", "undo the fourth line of (eq-inv-edict) first, then the third")
    return "unmix undoes EDICT's mixing layers at p = 0.93, 0.8 and 1."


@exercise(
    "ex-inv-bdia-solve",
    chapter=CHAPTER,
    goal="BDIA's exact inverse",
    kind="derive",
    difficulty=1,
    minutes=10,
    stub="""
# answer: z_prev solved from (eq-inv-bdia), a sympy expression in z_next, T_fwd, T_bwd and gamma
answer = None
""",
)
def _bdia_solve(answer: Any) -> str:
    import sympy as sp

    names = {n: sp.Symbol(n) for n in ("z_next", "T_fwd", "T_bwd", "gamma")}
    expected = names["T_bwd"] + (names["z_next"] - names["T_fwd"]) / names["gamma"]
    return sympy_equal(answer, expected, "z_prev", names)
