"""Reproducers of issue 18's bad-input findings in chapters 7b, 8 and 9 (``refimpl.differentiable``,
``refimpl.distillation``): one per class of finding, each now a clear error naming the argument.

The classes: an object argument of the wrong kind reached an attribute lookup (AttributeError); a tensor where a
function belongs was called (TypeError naming no argument); a tensor where a number belongs was compared
("Boolean value of Tensor is ambiguous"); integer, boolean or complex tensors reached autograd or a kernel; shapes
were not checked and failed deep inside (IndexError, a size mismatch); NaN or overflow came back as a result.
"""

from __future__ import annotations

import math

import pytest
import torch

from refimpl.differentiable.adjoint import MixtureEps, autograd_gradients, rk38_step, solve_y
from refimpl.differentiable.mmd import gaussian_rbf_expectation, mmd2_unbiased, rbf_kernel
from refimpl.differentiable.reversible import coupling_forward, coupling_inverse, range_null_projector, reversible_chain
from refimpl.distillation.dmd import dmd2_direction, gaussian_denoiser
from refimpl.distillation.flow_maps import apply_affine
from refimpl.distillation.progressive import NetworkX0Student
from refimpl.distillation.score_distillation import (
    IntervalPaths,
    mixture_kernel_mean,
    mmd2_to_mixture,
    particle_flow,
    tsm_gradient,
    within_mode_spread,
)
from refimpl.schedules import get_schedule
from toy_models import ExactModel, ring


def _eps_setup():
    mix = ring(K=3, radius=2.0, std=0.3)
    schedule = get_schedule("vp_linear")
    eps_fn = MixtureEps(mix.covariances, schedule)
    params = [mix.means.clone(), torch.log(mix.weights), torch.zeros(2)]
    lambdas = torch.linspace(-2.0, 2.0, 3, dtype=torch.float64)
    return eps_fn, schedule, params, lambdas


def test_an_object_argument_of_the_wrong_kind_is_named() -> None:
    """Was: AttributeError ('Tensor' object has no attribute 't_of_lambda' / 'weights' / 'schedule')."""
    eps_fn, schedule, params, lambdas = _eps_setup()
    with pytest.raises(TypeError, match="schedule"):
        solve_y(eps_fn, torch.arange(3), params, torch.zeros(4, 2), lambdas)
    with pytest.raises(TypeError, match="mixture"):
        mixture_kernel_mean(torch.zeros(3), 0.5)
    with pytest.raises(TypeError, match="mixture"):
        mmd2_to_mixture(torch.zeros(4, 2), torch.zeros(3), 0.5)
    with pytest.raises(TypeError, match="model"):
        particle_flow(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(TypeError, match="params"):
        solve_y(eps_fn, schedule, "nope", torch.zeros(4, 2), lambdas)


def test_a_tensor_where_a_function_belongs_is_named() -> None:
    """Was: "'Tensor' object is not callable", naming no argument."""
    x = torch.zeros(4, 2)
    with pytest.raises(TypeError, match="F must be callable"):
        coupling_forward(x, x, torch.zeros(3), 0.5)
    with pytest.raises(TypeError, match="F must be callable"):
        coupling_inverse(x, x, 1.0, 0.5)
    with pytest.raises(TypeError, match="f must be callable"):
        rk38_step(torch.zeros(3), torch.tensor(0.0), torch.tensor(0.1), x)
    with pytest.raises(TypeError, match=r"layers\[1\] must be callable"):
        reversible_chain([lambda z: z, torch.zeros(3)], [0.5, 0.5], x)
    with pytest.raises(TypeError, match="layers must be a list"):
        reversible_chain(torch.zeros(3), [0.5], x)


def test_a_tensor_where_a_number_belongs_is_named() -> None:
    """Was: "Boolean value of Tensor with more than one value is ambiguous"."""
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="bandwidth"):
        rbf_kernel(x, x, torch.tensor([0.5, 0.3]))
    with pytest.raises(ValueError, match="bandwidth"):
        rbf_kernel(x, x, 1e-200)  # its square underflows: exp(-0/0)
    with pytest.raises(ValueError, match="v"):
        coupling_forward(x, x, lambda z: z, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="vs\\[0\\] must be nonzero"):
        reversible_chain([lambda z: z], [0.0], x)
    model = ExactModel(ring(K=3), get_schedule("vp_linear"))
    with pytest.raises(ValueError, match="gamma"):
        tsm_gradient(x, model, model, x, s=0.2, t=0.5, gamma=torch.tensor([0.1, 0.2]), t_start=0.1, inversion_steps=1)
    with pytest.raises(ValueError, match="rcond"):
        range_null_projector(torch.eye(2), rcond=math.nan)


@pytest.mark.parametrize(
    "bad",
    [torch.arange(8).reshape(4, 2), torch.ones(4, 2, dtype=torch.bool), torch.ones(4, 2, dtype=torch.complex128)],
    ids=["integer", "bool", "complex"],
)
def test_integer_bool_and_complex_tensors_are_refused(bad: torch.Tensor) -> None:
    """Was: RuntimeError from autograd ('only Tensors of floating point dtype can require gradients') or a kernel
    ('"gt_cpu" not implemented for ComplexDouble')."""
    eps_fn, schedule, params, lambdas = _eps_setup()
    with pytest.raises(TypeError, match="x_T"):
        autograd_gradients(eps_fn, schedule, params, bad, lambdas, lambda x0: x0.sum())
    with pytest.raises(TypeError, match="x1"):
        coupling_forward(bad, bad, lambda z: z, 0.5)


def test_mmd_points_are_real_numbers() -> None:
    """Was: '"gt_cpu" not implemented for ComplexDouble' and a RuntimeError from cdist on integers."""
    y = torch.zeros(4, 2)
    with pytest.raises(TypeError, match="x must be real"):
        mmd2_unbiased(torch.ones(4, 2, dtype=torch.complex128), y, 0.5)
    with pytest.raises(TypeError, match="x must be real"):
        mmd2_unbiased(torch.ones(4, 2, dtype=torch.bool), y, 0.5)
    assert torch.equal(rbf_kernel(torch.zeros(4, 2, dtype=torch.long), y, 0.5), torch.ones(4, 4))  # integers: exact


def test_shapes_are_checked_before_the_arithmetic() -> None:
    """Was: IndexError or a size mismatch from deep inside."""
    mean, cov, x_t = torch.zeros(2), torch.eye(2), torch.zeros(4, 2)
    with pytest.raises(ValueError, match="alpha and sigma"):
        gaussian_denoiser(mean, cov, x_t, torch.full((4,), 0.5), torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="theta"):
        within_mode_spread(torch.zeros(3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="M must be"):
        apply_affine(torch.eye(3), torch.zeros(2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="S1"):
        gaussian_rbf_expectation(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2), 0.5)
    with pytest.raises(ValueError, match="S1"):  # not positive semi-definite: det(I + S / l^2) < 0, a NaN root
        gaussian_rbf_expectation(torch.zeros(2), -torch.eye(2), torch.zeros(2), torch.eye(2), 0.5)
    with pytest.raises(ValueError, match="d_real"):
        dmd2_direction(torch.zeros(4, 2), -1.0, torch.zeros(4, 2))
    with pytest.raises(TypeError, match="d must be an integer"):
        NetworkX0Student(get_schedule("vp_linear"), torch.tensor([0.9, 0.5, 0.1]), "nope")
    with pytest.raises(ValueError, match="timesteps"):
        NetworkX0Student(get_schedule("vp_linear"), torch.tensor([0.1, 0.5, 0.9]), 2)


def test_nan_and_overflow_never_come_back_as_a_result() -> None:
    """Was: NaN or inf returned silently (apply_affine on NaN or huge input; IntervalPaths holding NaN)."""
    with pytest.raises(ValueError, match="x"):
        apply_affine(torch.eye(2), torch.zeros(2), torch.full((4, 2), math.nan))
    with pytest.raises(ValueError, match="overflow"):
        apply_affine(torch.full((2, 2), 1e300), torch.zeros(2), torch.full((4, 2), 1e300))
    with pytest.raises(ValueError, match="x_t"):
        IntervalPaths(torch.zeros(4, 2), torch.full((4, 2), math.nan), torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="sigma must be positive"):  # alpha^2 cov + sigma^2 I singular
        gaussian_denoiser(torch.zeros(2), torch.zeros(2, 2), torch.zeros(4, 2), torch.ones(4, 1), torch.zeros(4, 1))


def test_valid_input_still_works_at_the_edges() -> None:
    """The checks refuse nothing valid: a point mass (S = 0) in the Gaussian kernel expectation, a float v."""
    one = gaussian_rbf_expectation(torch.zeros(2), torch.zeros(2, 2), torch.zeros(2), torch.zeros(2, 2), 0.5)
    assert float(one) == 1.0
    x = torch.ones(3, 2)
    y1, y2 = coupling_forward(x, 2 * x, lambda z: 3 * z, 0.25)
    assert torch.equal(y1, 0.75 * 3 * x + 0.25 * 2 * x) and torch.equal(y2, x)
