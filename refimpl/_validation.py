"""Input checks shared by every module: one place, one wording.

Each check raises ``ValueError`` (bad value) or ``TypeError`` (bad kind) naming
the offending argument, so bad input never turns into a silent NaN later on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "all_finite",
    "as_finite_float",
    "as_float_tensor",
    "as_positive_float",
    "as_real_array",
    "check_array",
    "check_callable",
    "check_finite",
    "check_finite_result",
    "check_float_tensors",
    "check_generator",
    "check_in_range",
    "check_instance",
    "check_integer",
    "check_kinds",
    "check_labels",
    "check_number",
    "check_probability_vector",
    "check_real_tensor",
    "check_resolvable_steps",
    "check_strictly_decreasing",
    "check_symmetric_positive_definite",
    "check_tensor",
]


def as_float_tensor(value: object, name: str, dtype: torch.dtype | None = None) -> Tensor:
    """Return ``value`` as a real floating tensor (float64 unless it already is floating).

    Complex and boolean values raise ``TypeError``: casting would drop the imaginary part or turn True into 1.
    """
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be real numbers, got {value.dtype}")
        if dtype is not None:
            return value.to(dtype)
        return value if value.is_floating_point() else value.to(torch.float64)
    try:
        kind = np.asarray(value).dtype.kind  # inspect without rounding (torch would read Python floats as float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}") from err
    if kind in "cb":
        raise TypeError(f"{name} must be real numbers, got {'complex' if kind == 'c' else 'bool'}")
    if kind not in "iuf":
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    return torch.as_tensor(value, dtype=dtype or torch.float64)


def check_instance(value: object, cls: type | tuple[type, ...], name: str) -> None:
    """Raise ``TypeError`` unless ``value`` is an instance of ``cls`` (an object argument, e.g. a schedule)."""
    if not isinstance(value, cls):
        wanted = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise TypeError(f"{name} must be a {wanted}, got {type(value).__name__}")


def check_callable(value: object, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` can be called (a sampler, a function argument)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def check_kinds(cls: type | tuple[type, ...], **values: object) -> None:
    """Raise ``TypeError`` unless every keyword value is a ``cls``, naming the first that is not (``check_kinds(
    ScheduleValues, v_s=v_s, v_t=v_t)``). O(1): cheap enough for the step helpers a sampler calls once a step."""
    for name, value in values.items():
        check_instance(value, cls, name)


def check_float_tensors(**values: object) -> None:
    """Raise ``TypeError`` unless every keyword value is a floating ``torch.Tensor``, naming the first that is not.
    O(1) (no look at the entries): the step helpers' check of their state and model outputs."""
    for name, value in values.items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            kind = value.dtype if isinstance(value, Tensor) else type(value).__name__
            raise TypeError(f"{name} must be a floating torch.Tensor, got {kind}")


def as_real_array(value: object, name: str) -> np.ndarray:
    """``value`` as a finite float64 NumPy array; complex, boolean, non-numeric or non-finite values raise."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of real numbers, got {type(value).__name__}") from err
    if raw.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {raw.dtype}")
    array = raw.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(array)).sum())} non-finite value(s) (NaN or inf)")
    return array


def all_finite(x: Tensor) -> bool:
    """Whether every entry of the real tensor ``x`` is finite.

    x * 0 is 0 where x is finite and NaN where it is inf or NaN, so the sum is NaN exactly when some entry is not
    finite: two small kernels and no overflow, where ``isfinite().all()`` takes five (this runs several times in
    every sampler step)."""
    x = torch.view_as_real(x) if x.is_complex() else x
    return not math.isnan(float((x.detach() * 0).sum()))


def check_finite(x: Tensor, name: str) -> Tensor:
    """Raise if ``x`` holds NaN or infinity."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be real numbers, got {x.dtype}")
    if not all_finite(x):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or inf)")
    return x


def check_finite_result(result: Tensor | tuple[Tensor, ...], inputs: str) -> Tensor | tuple[Tensor, ...]:
    """Return ``result`` (a tensor or a tuple of them) if it is finite; otherwise raise ``ValueError`` naming the
    ``inputs`` it came from (finite inputs near the end of the float range, or ones a formula cannot take, e.g.
    coinciding nodes). For public helpers; the loops call their unchecked private versions."""
    for r in result if isinstance(result, tuple) else (result,):
        if not all_finite(r):
            raise ValueError(f"non-finite result ({r.dtype} overflow or a division by zero): check {inputs}")
    return result


def check_integer(value: object, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` if it is an integer (not a bool) in [lo, hi] (either bound may be None); else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ValueError(f"{name} must be an integer in {bounds}, got {value}")
    return int(value)


def as_finite_float(value: object, name: str) -> float:
    """``value`` (a real number or a one-element tensor or array) as a finite Python float; else raise."""
    t = as_float_tensor(value, name)
    if t.numel() != 1:
        raise ValueError(f"{name} must be a single number, got shape {tuple(t.shape)}")
    f = float(t)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {f}")
    return f


def as_positive_float(value: object, name: str) -> float:
    """``value`` (a real number or a one-element tensor or array) as a finite Python float > 0; else raise."""
    f = as_finite_float(value, name)
    if not f > 0:
        raise ValueError(f"{name} must be positive, got {f}")
    return f


def check_real_tensor(
    value: object, name: str, ndim: int | tuple[int, ...] | None = None, *, log_weights: bool = False
) -> Tensor:
    """``value``, a real ``torch.Tensor``, as a floating tensor with ``ndim`` dimensions (one of them, if a tuple) and
    at least one entry. Finite, except that ``log_weights=True`` lets -inf through (a log-weight or log-probability
    of zero); NaN and +inf are always refused."""
    check_instance(value, Tensor, name)
    x = as_float_tensor(value, name)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and x.ndim not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimension(s), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if not log_weights:
        return check_finite(x, name)
    if bool(torch.isnan(x).any() | (x == math.inf).any()):
        raise ValueError(f"{name} holds NaN or +inf")
    return x


def check_labels(value: object, name: str, n: int, n_classes: int) -> Tensor:
    """``value``, a ``torch.Tensor`` of n integer class labels in [0, n_classes), as int64."""
    check_instance(value, Tensor, name)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool or value.shape != (n,):
        raise TypeError(f"{name} must be {n} integer labels, got {value.dtype} of shape {tuple(value.shape)}")
    if bool(((value < 0) | (value >= n_classes)).any()):
        raise ValueError(f"{name} must lie in [0, {n_classes})")
    return value.to(torch.long)


def check_in_range(t: Tensor, lo: float, hi: float, name: str) -> Tensor:
    """Raise unless every entry of ``t`` lies in the closed interval [lo, hi]."""
    if isinstance(t, Tensor) and t.numel() == 1 and lo <= float(t.detach()) <= hi:
        return t  # one time inside the interval (every sampler step); NaN fails the comparison
    check_finite(t, name)
    # A relative slack of a few ulps lets grids computed by t(lambda(t)) hit the endpoints.
    slack = 8 * torch.finfo(t.dtype).eps * max(abs(lo), abs(hi), 1.0)
    t_lo, t_hi = (float(v) for v in t.detach().aminmax()) if t.numel() else (lo, hi)
    if t_lo < lo - slack or t_hi > hi + slack:
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}]; got values in [{t_lo:g}, {t_hi:g}]")
    return t


def check_strictly_decreasing(t: Tensor, name: str = "timesteps") -> Tensor:
    """Raise unless ``t`` is a 1-D tensor of at least two strictly decreasing values."""
    check_finite(t, name)
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"{name} must be a 1-D tensor with at least 2 entries, got shape {tuple(t.shape)}")
    diffs = t[1:] - t[:-1]
    if not bool((diffs < 0).all()):
        i = int(torch.nonzero(diffs >= 0)[0])
        raise ValueError(
            f"{name} must be strictly decreasing; entry {i + 1} ({float(t[i + 1]):g}) "
            f"does not go below entry {i} ({float(t[i]):g})"
        )
    return t


# A step must move lambda by this many ulps of max(1, |lambda|). Derivation: a schedule computes lambda_t =
# log alpha_t - log sigma_t from t with at most ~8 ulps of max(1, |lambda|) of round-off (a log, an exp or an
# interpolation, a subtraction), so a computed h = lambda_t - lambda_s carries up to 16 ulps; with 64 ulps the
# computed h keeps its sign and 3/4 of its size, so h / 2 midpoints lie between the ends, step ratios
# h_{i-1} / h_i are finite, and phi-functions of h are evaluated in their valid range. Any real grid is many
# orders of magnitude coarser (1e5 uniform-lambda steps over [-10, 10] have h = 2e-4, 64 ulps are 1.4e-14).
RESOLVABLE_STEP_ULPS = 64


def check_resolvable_steps(lambdas: Tensor, name: str = "timesteps") -> Tensor:
    """Raise unless consecutive log-SNRs ``lambdas`` (n,) differ by more than ``RESOLVABLE_STEP_ULPS`` ulps of
    max(1, |lambda|): a smaller step does not move lambda (nor rho = e^-lambda) in the working precision, and the
    solvers' step sizes, midpoints and step ratios become 0/0."""
    check_finite(lambdas, f"lambda of the {name}")
    if lambdas.ndim != 1:
        raise ValueError(f"{name} must be a 1-D tensor, got shape {tuple(lambdas.shape)}")
    h = (lambdas[1:] - lambdas[:-1]).abs()
    scale = torch.maximum(lambdas[1:].abs(), lambdas[:-1].abs()).clamp_min(1.0)
    floor = RESOLVABLE_STEP_ULPS * torch.finfo(lambdas.dtype).eps * scale
    small = torch.nonzero(h <= floor).reshape(-1)
    if small.numel():
        i = int(small[0])
        raise ValueError(
            f"{name}: step {i} (entries {i} -> {i + 1}) changes lambda by {float(h[i]):.3g}, below "
            f"{RESOLVABLE_STEP_ULPS} ulps of |lambda| ({float(floor[i]):.3g}); {lambdas.dtype} cannot resolve it. "
            "Merge the two times or space the grid further apart."
        )
    return lambdas


def check_probability_vector(w: Tensor, name: str = "weights", atol: float = 1e-9) -> Tensor:
    """Raise unless ``w`` is a 1-D vector of non-negative entries summing to one."""
    check_finite(w, name)
    if w.ndim != 1 or w.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be non-negative; smallest entry is {float(w.min()):g}")
    total = float(w.sum())
    if abs(total - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1 (within {atol:g}); they sum to {total:.12g}")
    return w


def check_symmetric_positive_definite(cov: Tensor, name: str = "covariances") -> Tensor:
    """Raise unless every matrix in the batch ``cov`` (..., d, d) is symmetric positive definite."""
    check_finite(cov, name)
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"{name} must have shape (..., d, d), got {tuple(cov.shape)}")
    scale = cov.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1.0)
    if not bool(((cov - cov.mT).abs() <= 1e-10 * scale).all()):
        raise ValueError(f"{name} must be symmetric")
    _, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        k = int(torch.nonzero(info.reshape(-1))[0])
        raise ValueError(f"{name}[{k}] is not positive definite")
    return cov


def check_number(value: object, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """``value`` as a finite real float in [lo, hi] (an int, a float or a 0-d array or tensor)."""
    array = as_real_array(value, name)
    if array.ndim != 0:
        raise ValueError(f"{name} must be a single number, got shape {array.shape}")
    x = float(array)
    if not lo <= x <= hi:
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}], got {x:g}")
    return x


def check_array(value: object, name: str, ndim: int | None = None, *, nonempty: bool = True) -> np.ndarray:
    """``value`` as a finite float64 array with ``ndim`` dimensions (any if None), non-empty unless told."""
    array = as_real_array(value, name)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    if nonempty and array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    return array


def check_generator(rng: object, name: str = "rng") -> np.random.Generator:
    """Raise ``TypeError`` unless ``rng`` is a ``numpy.random.Generator``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name} must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def check_tensor(value: object, name: str, ndim: int | None = None) -> Tensor:
    """``value`` as a finite real floating tensor (numbers and arrays are converted, float64 unless floating)."""
    if isinstance(value, str) or value is None:
        raise TypeError(f"{name} must be a tensor of real numbers, got {type(value).__name__}")
    x = check_finite(as_float_tensor(value, name), name)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}")
    return x
