"""Checkers for the exercises of the trained-models chapter (``notebooks/04_trained_models.md``)."""

from __future__ import annotations

import math
from typing import Any

import torch

from refimpl.exercises import ExerciseFailed, exercise
from refimpl.exercises._compare import U64, as_array, call, callable_answer, close, sympy_equal

CHAPTER = "04_trained_models"
U32 = torch.finfo(torch.float32).eps / 2  # unit round-off of the networks' float32


@exercise(
    "ex-trained-time",
    chapter=CHAPTER,
    goal="from discrete steps to continuous time",
    kind="implement",
    difficulty=1,
    minutes=10,
    stub="""
# answer: a function my_network_time(N, t): the network time of model time t for a discrete schedule of N steps
def my_network_time(N, t):
    raise NotImplementedError


answer = my_network_time
""",
)
def _time(answer: Any) -> str:
    from toy_models.trained import load_unet, network_time

    my_network_time = callable_answer(answer, "my_network_time")
    schedule = load_unet().model().schedule
    N = schedule.N
    t = torch.cat([torch.tensor([1.0, 101.0, 101.5, 1000.0], dtype=torch.float64) / N, torch.linspace(0.01, 1, 7)])
    got = call(my_network_time, N, t, what="my_network_time")
    return close(got, network_time(schedule, t), 8 * U64 * N, "the network times", "step n sits at t = (n + 1) / N")


@exercise(
    "ex-trained-x0",
    chapter=CHAPTER,
    goal="where a learned epsilon is wrong",
    kind="derive",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the error of x0_hat when eps_hat is off by delta, a sympy expression in the symbols lam and delta
answer = None
""",
)
def _x0(answer: Any) -> str:
    import sympy as sp

    lam, delta = sp.symbols("lam delta", real=True)
    return sympy_equal(answer, -sp.exp(-lam) * delta, "the error of x0_hat", {"lam": lam, "delta": delta})


@exercise(
    "ex-trained-cfg",
    chapter=CHAPTER,
    goal="classifier-free guidance on a network",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: a dict {w: the classifier's predicted classes of the guided samples} for w = 0.0, 1.0 and 4.0
answer = None
""",
)
def _cfg(answer: Any) -> str:
    if not isinstance(answer, dict) or sorted(answer) != [0.0, 1.0, 4.0]:
        raise ExerciseFailed("the answer should be a dict with the keys 0.0, 1.0 and 4.0")
    accuracy = {}
    for w, classes in answer.items():
        predicted = as_array(classes, f"the classes at w = {w}")
        labels = torch.arange(predicted.numel()) % 10
        accuracy[w] = float((predicted.flatten() == labels).double().mean())
    n = as_array(answer[0.0], "the classes at w = 0").numel()
    band = 4 * math.sqrt(0.1 * 0.9 / n)  # 4 binomial standard errors around chance
    if abs(accuracy[0.0] - 0.1) > band:
        raise ExerciseFailed(
            f"at w = 0 (the unconditional model) the accuracy {accuracy[0.0]:.2f} should be chance, 0.1 within "
            f"{band:.2f}: is w = 0 the unconditional model, and are the labels 0, 1, ..., 9, 0, ...?"
        )
    if min(accuracy[1.0], accuracy[4.0]) < 0.9:
        raise ExerciseFailed(
            f"accuracies {accuracy[1.0]:.2f} (w = 1) and {accuracy[4.0]:.2f} (w = 4): a guided run should draw the "
            "requested class nearly always"
        )
    return f"chance at w = 0 ({accuracy[0.0]:.2f}), {accuracy[1.0]:.2f} at w = 1 and {accuracy[4.0]:.2f} at w = 4."


@exercise(
    "ex-trained-n1000",
    chapter=CHAPTER,
    goal="reading a digits-FD against its floor",
    kind="measure",
    difficulty=2,
    minutes=15,
    stub="""
# answer: a dict {"spread_200": ..., "spread_1000": ..., "DDPM": digits-FD, "DDIM": digits-FD}
answer = None
""",
)
def _n1000(answer: Any) -> str:
    from toy_models.metrics import load_metric

    keys = ["DDIM", "DDPM", "spread_1000", "spread_200"]
    if not isinstance(answer, dict) or sorted(answer) != keys:
        raise ExerciseFailed(f"the answer should be a dict with the keys {keys}")
    metric = load_metric()
    spreads = []
    for n in (200, 1000):
        draws = metric.floor_draws(n)
        spreads.append(float(draws.max() - draws.min()))
        # the floor's draws are seeded: the same float32 features, summed in float64
        close(answer[f"spread_{n}"], torch.tensor(spreads[-1]), 1e3 * U32 * spreads[-1], f"the spread at n = {n}")
    for name in ("DDPM", "DDIM"):
        if not float(as_array(answer[name], f"the digits-FD of {name}", ())) > 0:
            raise ExerciseFailed(f"a digits-FD is a positive number, got {answer[name]} for {name}")
    return f"the floor's spread falls from {spreads[0]:.1f} at n = 200 to {spreads[1]:.1f} at n = 1000."


@exercise(
    "ex-trained-overfit",
    chapter=CHAPTER,
    goal="the loss and its floor",
    kind="measure",
    difficulty=1,
    minutes=10,
    stub="""
# answer: the pair (train_err, held_err) of per-sample eps errors from eps_errors (tensors)
answer = None
""",
)
def _overfit(answer: Any) -> str:
    from toy_models.train import _data, eps_errors
    from toy_models.trained import load_unet

    if not isinstance(answer, tuple | list) or len(answer) != 2:
        raise ExerciseFailed("the answer should be the pair (train_err, held_err)")
    ckpt = load_unet()
    unet = ckpt.model()
    train, held, _, _ = _data("unet", ckpt.config)
    expected = [eps_errors(unet, images, 2, torch.Generator().manual_seed(8)) for images in (train[:200], held)]
    for got, ref, name in zip(answer, expected, ("train_err", "held_err"), strict=True):
        # the same float32 network calls: a few float32 roundings of errors of this size
        close(got, ref, 64 * U32 * float(ref.abs().max()), name, "eps_errors(unet, images, 2, generator), seed 8")
    gap = float(expected[0].mean() - expected[1].mean())
    se = math.hypot(*(float(e.std()) / math.sqrt(e.numel()) for e in expected))
    return f"the two mean errors differ by {gap:.4f}, {abs(gap) / se:.1f} standard errors: no memorisation."
