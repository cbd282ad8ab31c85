"""The committed trained models: they load, reproduce their logged held-out error, beat an untrained
network, are ``DiffusionModel``s every registered sampler runs on, and refuse a mismatched checkpoint.

Nothing here trains (see ``test_trained_training.py`` for the short determinism run).
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import pytest
import torch
from tolerances import WELL_BELOW_UNTRAINED, clt_difference_bound, roundoff

from refimpl import grids
from refimpl.guidance import classifier_free_guidance
from refimpl.models import DiffusionModel, check_model
from refimpl.registry import get_sampler, samplers
from refimpl.schedules import DiscreteVP, get_schedule
from toy_models.digits import digits_images, digits_split, gaussian_fit
from toy_models.mlp import MLPConfig
from toy_models.train import EVAL_SEED, _data, eps_errors
from toy_models.trained import (
    CHECKPOINT_DIR,
    CONTINUOUS_TIME_SCALE,
    TrainedModel,
    build_network,
    load_checkpoint,
    load_mlp,
    load_unet,
    network_time,
)
from toy_models.unet import UNetConfig

MAX_CHECKPOINT_BYTES = 5 * 2**20  # the limit: each committed file under 5 MB
KINDS = ["mlp", "unet"]


@pytest.fixture(scope="module")
def checkpoints():
    return {"mlp": load_mlp(), "unet": load_unet()}


def test_committed_checkpoints_are_small() -> None:
    files = sorted(CHECKPOINT_DIR.glob("*.pt"))
    assert {f.name for f in files} >= {"mlp.pt", "unet.pt", "digits_classifier.pt"}
    for f in files:
        assert f.stat().st_size < MAX_CHECKPOINT_BYTES, f"{f.name}: {f.stat().st_size} bytes"


def test_checkpoints_hold_the_code_recipe_and_data_split(checkpoints) -> None:
    assert checkpoints["mlp"].config == MLPConfig()
    assert checkpoints["unet"].config == UNetConfig()
    train, held_out = digits_split()
    assert torch.equal(checkpoints["unet"].data["train_idx"], train)
    assert torch.equal(checkpoints["unet"].data["held_out_idx"], held_out)
    assert not set(train.tolist()) & set(held_out.tolist())
    assert len(train) + len(held_out) == len(digits_images()[1])


@pytest.mark.parametrize("kind", KINDS)
def test_heldout_eps_error_reproduces_the_log(checkpoints, kind: str) -> None:
    """A fresh Monte Carlo estimate (new seed) of the held-out eps error agrees with the logged one (CLT bound)."""
    ckpt = checkpoints[kind]
    log = ckpt.log
    logged, logged_std, logged_n = float(log["heldout_eps_mse"][-1]), float(log["heldout_eps_std"][-1]), log["eval_n"]
    assert int(log["eval_step"][-1]) == ckpt.config.steps
    _, heldout_x, _, _ = _data(kind, ckpt.config)
    errors = eps_errors(ckpt.model(), heldout_x, ckpt.config.eval_repeats, torch.Generator().manual_seed(EVAL_SEED + 1))
    bound = clt_difference_bound(float(errors.std()), errors.numel(), logged_std, logged_n)
    assert abs(float(errors.mean()) - logged) <= bound, (float(errors.mean()), logged, bound)


@pytest.mark.parametrize("kind", KINDS)
def test_trained_error_is_well_below_an_untrained_networks(checkpoints, kind: str) -> None:
    ckpt = checkpoints[kind]
    _, heldout_x, _, _ = _data(kind, ckpt.config)
    with torch.random.fork_rng(devices=[]):  # the initialisation training starts from; the global RNG is restored
        torch.manual_seed(ckpt.config.seed)
        untrained = TrainedModel(build_network(kind, ckpt.config), get_schedule(ckpt.config.schedule))
    g = torch.Generator
    trained_err = eps_errors(ckpt.model(), heldout_x, 1, g().manual_seed(7))
    untrained_err = eps_errors(untrained, heldout_x, 1, g().manual_seed(7))
    n = heldout_x.shape[0]
    trained_hi = float(trained_err.mean()) + clt_difference_bound(float(trained_err.std()), n, 0.0, 1)
    untrained_lo = float(untrained_err.mean()) - clt_difference_bound(float(untrained_err.std()), n, 0.0, 1)
    assert trained_hi < WELL_BELOW_UNTRAINED * untrained_lo, (trained_hi, untrained_lo)


@pytest.mark.slow
def test_unet_beats_the_best_linear_denoiser(checkpoints) -> None:
    """On held-out digits the UNet's eps error is below that of the exact eps of the training set's Gaussian fit
    (the Wiener filter, the best denoiser that is linear in x_t), paired on the same (x_0, t, eps)."""
    ckpt = checkpoints["unet"]
    train_x, heldout_x, _, _ = _data("unet", ckpt.config)
    from toy_models import ExactModel

    wiener = ExactModel(gaussian_fit(train_x.reshape(-1, 64).to(torch.float64)), ckpt.model().schedule)
    flat = heldout_x.reshape(-1, 64)
    d = eps_errors(ckpt.model(), flat, 2, torch.Generator().manual_seed(3)) - eps_errors(
        wiener, flat, 2, torch.Generator().manual_seed(3)
    )
    assert float(d.mean()) + clt_difference_bound(float(d.std()), d.numel(), 0.0, 1) < 0


def test_network_time_maps_discrete_knots_to_step_indices() -> None:
    """t = (n + 1) / N <-> network step n (DPM-Solver's map); continuous schedules: s = 1000 t."""
    s = DiscreteVP.ddpm_linear()
    n = torch.tensor([0, 1, 499, 998, 999], dtype=torch.float64)
    # t = (n + 1) / N rounds once, N t once more and the subtraction once, each relative to at most N: 3 u N
    torch.testing.assert_close(network_time(s, (n + 1) / s.N), n, rtol=0, atol=roundoff(3, s.N))
    c = get_schedule("vp_linear")
    torch.testing.assert_close(network_time(c, torch.tensor(0.25)), torch.tensor(0.25 * CONTINUOUS_TIME_SCALE))
    with pytest.raises(ValueError, match="must lie in"):
        network_time(s, torch.tensor(0.0))


def test_model_at_a_knot_is_the_network_at_that_step(checkpoints) -> None:
    ckpt = checkpoints["unet"]
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    n = torch.tensor([0, 10, 200, 500, 900, 999])
    y = torch.arange(6)
    direct = ckpt.net(x, n.to(torch.float32), y)
    via_model = ckpt.model(y)(x, (n + 1).to(torch.float64) / 1000)
    torch.testing.assert_close(via_model, direct, rtol=0, atol=0)


def test_models_follow_the_protocol_and_keep_dtype_and_shape(checkpoints) -> None:
    for model, shape in [(checkpoints["mlp"].model(), (5, 2)), (checkpoints["unet"].model(3), (5, 1, 8, 8))]:
        assert isinstance(model, DiffusionModel)
        check_model(model)
        assert model.prediction == "eps"
        for dtype in (torch.float32, torch.float64):
            x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
            out = model(x, torch.tensor(0.5))
            assert out.shape == x.shape and out.dtype == dtype
    unet = checkpoints["unet"].model(3)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(unet(x.reshape(4, 64), torch.tensor(0.3)), unet(x, torch.tensor(0.3)).reshape(4, 64))


def _inputs(kind: str, ckpt, n: int):
    """(model, x_T, grid) for a run of n steps: the MLP on a uniform-lambda grid, the UNet on uniform t."""
    g = torch.Generator().manual_seed(11)
    if kind == "mlp":
        model = ckpt.model()
        return model, torch.randn(16, 2, generator=g), grids.uniform_lambda(model.schedule, n)
    model = ckpt.model(torch.arange(10))
    return model, torch.randn(10, 1, 8, 8, generator=g), grids.uniform_t(model.schedule, n)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", [s.name for s in samplers()])
def test_every_registered_sampler_runs_on_the_trained_models(checkpoints, kind: str, name: str) -> None:
    spec = get_sampler(name)
    model, x, ts = _inputs(kind, checkpoints[kind], max(spec.min_steps, 6))
    kwargs = {"generator": torch.Generator().manual_seed(0)} if spec.stochastic else {}
    out = spec(model, x, ts, **kwargs)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert bool(torch.isfinite(out).all())
    if spec.encode is not None:  # encode, then decode from the latent (a tensor, or a sampler's own state)
        again = spec(model, spec.encode(model, out, ts), ts)
        assert again.shape == x.shape and bool(torch.isfinite(again).all())


def test_classifier_free_guidance_on_the_unet(checkpoints) -> None:
    net = checkpoints["unet"]
    cond, uncond = net.model(torch.arange(10)), net.model(None)
    x, t = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor(0.4)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 1.0)(x, t), cond(x, t), rtol=0, atol=0)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 0.0)(x, t), uncond(x, t), rtol=0, atol=0)
    guided = classifier_free_guidance(cond, uncond, 3.0)
    out = get_sampler("ddim")(guided, x, grids.uniform_t(guided.schedule, 5))
    assert bool(torch.isfinite(out).all())
    assert float((cond(x, t) - uncond(x, t)).abs().max()) > 0  # the label changes the prediction


def test_bad_labels_raise(checkpoints) -> None:
    with pytest.raises(ValueError, match="takes no class label"):
        TrainedModel(checkpoints["mlp"].net, get_schedule("vp_linear"), 1)
    with pytest.raises(ValueError, match="labels must lie in"):
        checkpoints["unet"].model(10)
    with pytest.raises(ValueError, match="3 labels for a batch of 4"):
        checkpoints["unet"].model(torch.tensor([1, 2, 3]))(torch.zeros(4, 1, 8, 8), torch.tensor(0.5))
    with pytest.raises(TypeError, match="label must be"):
        checkpoints["unet"].model(torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"shape \(B, 64\) or \(B, 1, 8, 8\)"):
        checkpoints["unet"].model(1)(torch.zeros(4, 3, 8, 8), torch.tensor(0.5))


def test_mismatched_checkpoints_raise_clear_errors(checkpoints, tmp_path) -> None:
    path = CHECKPOINT_DIR / "unet.pt"
    with pytest.raises(ValueError, match=r"differs from the expected one .*'channels': \(32, 48\)"):
        load_checkpoint(path, "unet", expect=replace(UNetConfig(), channels=48))
    with pytest.raises(ValueError, match="holds a 'unet' network, not a 'mlp' one"):
        load_checkpoint(path, "mlp")
    with pytest.raises(ValueError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt", "unet")
    payload = torch.load(path, weights_only=True)
    # A config that does not describe the stored weights.
    bad = dict(payload, config=asdict(replace(UNetConfig(), channels=48)))
    torch.save(bad, tmp_path / "wrong_width.pt")
    with pytest.raises(ValueError, match="weights do not fit the network its config describes"):
        load_checkpoint(tmp_path / "wrong_width.pt", "unet")
    # A config with a key this code does not know.
    torch.save(dict(payload, config={**payload["config"], "attention": True}), tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match=r"unknown keys \['attention'\]"):
        load_checkpoint(tmp_path / "unknown.pt", "unet")
    # Trained on another split.
    data = dict(payload["data"], held_out_idx=payload["data"]["held_out_idx"][:-1])
    torch.save(dict(payload, data=data), tmp_path / "split.pt")
    with pytest.raises(ValueError, match=r"data\['held_out_idx'\] does not match"):
        load_checkpoint(tmp_path / "split.pt", "unet")
    torch.save(dict(payload, format=99), tmp_path / "format.pt")
    with pytest.raises(ValueError, match="format 99"):
        load_checkpoint(tmp_path / "format.pt", "unet")


def test_logged_training_curve_is_complete(checkpoints) -> None:
    for kind in KINDS:
        ckpt = checkpoints[kind]
        assert ckpt.log["loss"].shape == (ckpt.config.steps,)
        assert bool(torch.isfinite(ckpt.log["loss"]).all())
        assert math.isfinite(float(ckpt.log["wall_s"]))
        assert ckpt.snapshots["step"].tolist() == list(ckpt.config.snapshots)
        assert bool(torch.isfinite(ckpt.snapshots["samples"].to(torch.float64)).all())


def test_deterministic_training_context_restores_the_global_rng() -> None:
    """toy_models.train.deterministic seeds torch for the weight initialisation and restores the caller's RNG."""
    from toy_models.train import deterministic

    state = torch.get_rng_state()
    with deterministic(123, None):
        inside = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), state)
    with deterministic(123, None):
        assert torch.equal(torch.rand(3), inside)
