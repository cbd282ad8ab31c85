"""Post-training quantisation of a trained denoiser with a time-aware calibration set (PTQ4DM).

PTQ4DM (Shang et al. 2023, arXiv:2211.15736v3, Sec. 4 [unverified section numbers]; in the CVPR 2023 open-access
version the calibration study is Sec. 3.3: the observations Sec. 3.3.1, NDTC Sec. 3.3.2 with Eq. 15 and Algorithm 1)
quantises a trained diffusion model's weights and activations to b bits after training. Its two findings for
diffusion models are about the *calibration set*, the few inputs whose activations fix the quantisers' ranges:

- the inputs should be the model's own denoising states x_t (Sec. 4.2, "generated from the full-precision
  model's denoising process"), not noised training images;
- the time steps should follow a normal distribution, NDTC (Sec. 4.3): the step index k of the denoising loop
  is drawn as k = floor(N(mu, s) K), clipped to [0, K - 1] (official code: ``generate_t``,
  ``calib_t_mode=normal``, mu = s = 0.4 in ``quant_sample_ddim_in_backward_DNTC.sh``), k = 0 the noisiest step.

The quantiser is uniform with b bits on a range [lo, hi] (Jacob et al. 2018, arXiv:1712.05877v1, Eq. 1):

    Q(x) = lo' + Delta clamp(round((x - lo') / Delta), 0, 2^b - 1),   Delta = (hi - lo) / (2^b - 1),

with lo' = Delta round(lo / Delta) so that 0 is a grid point (zero-padding and ReLU outputs stay exact). Inside
the range |Q(x) - x| <= Delta / 2; Q(Q(x)) = Q(x). Weights are quantised per output channel on [-max|w|,
max|w|]; the input activation of every ``Conv2d`` and ``Linear`` layer is quantised per layer on the [min, max]
range seen over the calibration set (the network's output is not quantised, as in the official code's
``disable_network_output_quantization``). Differences from the official code (QDrop/BRECQ-based): ranges are
min-max here, not MSE-searched, and no AdaRound/block reconstruction follows, so the effect of the calibration
set is seen in the ranges alone.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from refimpl._validation import as_float_tensor, check_finite, check_instance
from refimpl.samplers import Trajectory, sample_ddim
from toy_models.trained import TrainedModel

__all__ = [
    "CALIBRATION_MODES",
    "calibration_set",
    "calibration_steps",
    "quantization_step",
    "quantize_model",
    "uniform_quantize",
]

#: How the denoising steps of the calibration set are drawn: PTQ4DM's NDTC, uniform steps, or one step.
CALIBRATION_MODES = ("normal", "uniform", "single")
#: Layers whose input activations and weights are quantised.
_QUANTISED = (nn.Conv2d, nn.Linear)


def _check_bits(n_bits: object, name: str = "n_bits") -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, int):
        raise TypeError(f"{name} must be an int, got {type(n_bits).__name__}")
    if not 2 <= n_bits <= 16:
        raise ValueError(f"{name} must lie in [2, 16], got {n_bits}")
    return n_bits


def quantization_step(lo: Tensor, hi: Tensor, n_bits: int) -> Tensor:
    """Delta = (hi - lo) / (2^b - 1) of a b-bit uniform quantiser on [lo, hi] (a zero-width range gets Delta = 1)."""
    lo, hi = as_float_tensor(lo, "lo"), as_float_tensor(hi, "hi")
    n_bits = _check_bits(n_bits)
    if bool((check_finite(hi, "hi") < check_finite(lo, "lo")).any()):
        raise ValueError("hi must be >= lo")
    delta = (hi - lo) / (2**n_bits - 1)
    return torch.where(delta > 0, delta, torch.ones_like(delta))


def uniform_quantize(x: Tensor, lo: Tensor, hi: Tensor, n_bits: int) -> Tensor:
    """Q(x) of the b-bit uniform quantiser on [lo, hi] with 0 on its grid (module docstring); lo, hi broadcast
    against x. Inside the range the error is at most Delta / 2; outside it x is clipped to the nearest end."""
    x = check_finite(as_float_tensor(x, "x"), "x")
    delta = quantization_step(lo, hi, n_bits).to(x.dtype)
    zero = torch.round(torch.as_tensor(lo, dtype=x.dtype) / delta)  # lo' = zero * Delta
    q = torch.clamp(torch.round(x / delta) - zero, 0, 2**n_bits - 1)
    return (q + zero) * delta


def calibration_steps(
    n: int,
    K: int,
    mode: str,
    generator: torch.Generator,
    *,
    mean: float = 0.4,
    std: float = 0.4,
    single: int | None = None,
) -> Tensor:
    """Step indices k in [0, K - 1] (0 = the noisiest step) of n calibration inputs, (n,) int64.

    ``normal``: PTQ4DM's NDTC, k = floor(N(mean, std) K) clipped (arXiv:2211.15736v3, Sec. 4.3 [unverified eq.
    number; the rule is the official ``generate_t``; the CVPR 2023 version's Eq. 15 writes t_i ~ N(mu, T/2), mu <= T/2,
    with t counted from the data end); ``uniform``: k uniform on {0, ..., K - 1}; ``single``: every
    k = ``single`` (default K - 1, the step nearest the data: a single-time baseline).
    """
    for value, name in ((n, "n"), (K, "K")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if mode not in CALIBRATION_MODES:
        raise ValueError(f"mode must be one of {CALIBRATION_MODES}, got {mode!r}")
    check_instance(generator, torch.Generator, "generator")
    if mode == "normal":
        if not (std > 0 and abs(mean) < 1e6 and std < 1e6):
            raise ValueError(f"std must be > 0 and mean, std finite, got mean={mean!r}, std={std!r}")
        draw = mean + std * torch.randn(n, generator=generator, dtype=torch.float64)
        return torch.floor(draw * K).clamp(0, K - 1).to(torch.long)
    if mode == "uniform":
        return torch.randint(0, K, (n,), generator=generator)
    k = K - 1 if single is None else single
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < K:
        raise ValueError(f"single must be an int in [0, {K - 1}], got {single!r}")
    return torch.full((n,), k, dtype=torch.long)


def calibration_set(model: TrainedModel, x_T: Tensor, timesteps: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
    """PTQ4DM's calibration inputs from the model's own denoising: run DDIM from x_T (n, d) on ``timesteps``
    (K + 1 times) and keep, for sample i, the state entering step ``steps[i]`` with its time: (x (n, d), t (n,)).

    The official code feeds the network the loop index as its time (``t = diffusion._scale_timesteps(t)`` with t
    the step counted from the noisy end); here each state is paired with its own time.
    """
    x_T = check_finite(as_float_tensor(x_T, "x_T"), "x_T")
    steps = torch.as_tensor(steps)
    K = len(timesteps) - 1
    if x_T.ndim != 2 or steps.shape != (x_T.shape[0],):
        raise ValueError(f"x_T must be (n, d) and steps (n,), got {tuple(x_T.shape)} and {tuple(steps.shape)}")
    if steps.is_floating_point() or bool(((steps < 0) | (steps >= K)).any()):
        raise ValueError(f"steps must be integers in [0, {K - 1}]")
    run = Trajectory()
    sample_ddim(model, x_T, timesteps, callback=run)
    rows = torch.arange(x_T.shape[0])
    return run.xs[steps, rows], run.times[steps]


def _layer_ranges(net: nn.Module, model: TrainedModel, x: Tensor, t: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """[min, max] of the input of every quantised layer over the calibration inputs (x, t)."""
    ranges: dict[str, tuple[Tensor, Tensor]] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            lo, hi = args[0].min().detach(), args[0].max().detach()
            old = ranges.get(name)
            ranges[name] = (lo, hi) if old is None else (torch.minimum(old[0], lo), torch.maximum(old[1], hi))

        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in net.named_modules() if isinstance(m, _QUANTISED)]
    try:
        model(x, t)  # one batched call, each input at its own time
    finally:
        for h in handles:
            h.remove()
    return ranges


def quantize_model(
    model: TrainedModel, calib_x: Tensor, calib_t: Tensor, *, n_bits_w: int = 8, n_bits_a: int = 8
) -> TrainedModel:
    """A copy of ``model`` with weights (per output channel) and layer-input activations (per layer, ranges from
    the calibration inputs (calib_x (n, d), calib_t (n,))) fake-quantised to n_bits_w and n_bits_a bits."""
    check_instance(model, TrainedModel, "model")
    n_bits_w, n_bits_a = _check_bits(n_bits_w, "n_bits_w"), _check_bits(n_bits_a, "n_bits_a")
    calib_x = check_finite(as_float_tensor(calib_x, "calib_x"), "calib_x")
    calib_t = check_finite(as_float_tensor(calib_t, "calib_t"), "calib_t")
    if calib_x.ndim != 2 or calib_x.shape[0] == 0 or calib_t.shape != (calib_x.shape[0],):
        raise ValueError(
            f"calib_x must be (n, d) with n >= 1 and calib_t (n,), "
            f"got {tuple(calib_x.shape)} and {tuple(calib_t.shape)}"
        )
    net = copy.deepcopy(model.net)
    ranges = _layer_ranges(model.net, model, calib_x, calib_t)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, _QUANTISED):
                w = module.weight
                bound = w.abs().reshape(w.shape[0], -1).amax(1).reshape(-1, *[1] * (w.ndim - 1))
                w.copy_(uniform_quantize(w, -bound, bound, n_bits_w))
    for name, module in net.named_modules():
        if isinstance(module, _QUANTISED) and name in ranges:
            lo, hi = ranges[name]
            module.register_forward_pre_hook(
                lambda _m, args, lo=lo, hi=hi: (uniform_quantize(args[0], lo, hi, n_bits_a), *args[1:])
            )
    return TrainedModel(net, model.schedule, model.label, model.prediction)
