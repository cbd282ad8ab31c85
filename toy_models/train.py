"""Train the toy networks and write their checkpoints: ``python -m toy_models.train {mlp,unet,classifier,all}``.

* ``mlp``: the 2-D eps-MLP on samples of an analytic mixture (``toy_models.mlp.MLPConfig``), continuous
  VP-linear time, t ~ U[t_min, t_max].
* ``unet``: the class-conditional digits UNet (``toy_models.unet.UNetConfig``) under DDPM's discrete
  schedule, step n uniform in {0, ..., N - 1} (Ho et al. 2020, arXiv:2006.11239v2, Algorithm 1), the label
  replaced by the null label with probability p_uncond (Ho & Salimans 2022, arXiv:2207.12598v1, Algorithm 1).
* ``classifier``: the digits classifier of the sample-quality metric (``toy_models.metrics``).

Both diffusion models minimise the eps-prediction loss E |eps_hat(alpha_t x_0 + sigma_t eps, t) - eps|^2
(Ho et al. 2020, Eq. 14) with Adam, a linear warm-up and cosine decay of the learning rate, and keep an
exponential moving average (EMA) of the weights, which is what the checkpoint stores and the log evaluates.

Determinism: the weights are initialised from ``torch.manual_seed(seed)``; every batch, time and noise is
drawn on the CPU from one ``torch.Generator`` seeded with ``seed``, so a CUDA run sees the same data as a
CPU run; ``torch.use_deterministic_algorithms(True)`` and a fixed thread count (``--threads``) make two CPU
runs give identical weights: ``python -m toy_models.train all`` reproduces the committed checkpoints bit for
bit. The default is one thread: on a 2-core machine shared with other work two threads contend and run
several times slower than one (on a quiet machine ``--threads 2`` is faster, with other rounding, so other
weights). ``--quick`` (the size knob) trains a tenth of the steps and writes to a temporary folder unless
``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.utils.deterministic
from torch import Tensor, nn
from tqdm import tqdm

from refimpl import grids
from refimpl.samplers import forward_sample, sample_ddim
from refimpl.schedules import DiscreteVP, NoiseSchedule, get_schedule
from toy_models.metrics import ClassifierConfig
from toy_models.mlp import MLPConfig
from toy_models.trained import (
    CHECKPOINT_DIR,
    TrainedModel,
    build_network,
    expected_data,
    network_time,
    save_checkpoint,
)
from toy_models.unet import UNetConfig

__all__ = [
    "CONFIGS",
    "EVAL_SEED",
    "deterministic",
    "draw_times",
    "eps_errors",
    "main",
    "pick_device",
    "quick_config",
    "time_training",
    "train",
]

CONFIGS: dict[str, Any] = {"mlp": MLPConfig(), "unet": UNetConfig(), "classifier": ClassifierConfig()}
CHECKPOINT_NAMES = {"mlp": "mlp.pt", "unet": "unet.pt", "classifier": "digits_classifier.pt"}
#: Seed of the held-out evaluation noise (and of the snapshot noise): fixed, and not the training seed.
EVAL_SEED = 12345
WARMUP_STEPS = 100
QUICK_FRACTION = 10


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; or the device called ``name``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


@contextlib.contextmanager
def deterministic(seed: int, threads: int | None) -> Iterator[None]:
    """Seed torch, use deterministic algorithms and a fixed thread count; restore the settings on exit, the
    global RNG's state included (the seed reaches the weight initialisation, never the caller's RNG; torch.manual_seed
    also seeds every CUDA device, so their generators are forked and restored too)."""
    old_det, old_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        # On CUDA some kernels have no deterministic version; warn instead of failing there.
        torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
        # Deterministic mode would also fill every new buffer with NaN (a debugging aid that cost half the
        # training time on the CPU); the results do not depend on it.
        torch.utils.deterministic.fill_uninitialized_memory = False
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(old_det)
            torch.utils.deterministic.fill_uninitialized_memory = old_fill
            torch.set_num_threads(old_threads)


def quick_config(config: Any) -> Any:
    """The size knob: a tenth of the steps (evaluations and snapshots scaled alike)."""
    steps = max(config.steps // QUICK_FRACTION, 1)
    changes: dict[str, Any] = {"steps": steps, "eval_every": max(config.eval_every // QUICK_FRACTION, 1)}
    if hasattr(config, "snapshots"):
        changes["snapshots"] = tuple(sorted({max(s // QUICK_FRACTION, 1) for s in config.snapshots}))
    return replace(config, **changes)


def draw_times(schedule: NoiseSchedule, n: int, generator: torch.Generator) -> Tensor:
    """Training times (n,) float64: t = (k + 1) / N with k uniform in {0..N-1} (discrete), else U[t_min, t_max]."""
    if isinstance(schedule, DiscreteVP):
        k = torch.randint(0, schedule.N, (n,), generator=generator)
        return (k + 1).to(torch.float64) / schedule.N
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return schedule.t_min + (schedule.t_max - schedule.t_min) * u


def eps_errors(model: TrainedModel, x0: Tensor, repeats: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Per-sample eps errors mean_i (eps_hat_i - eps_i)^2, (repeats * n,), at training-distributed times.

    Each data point x0 (n, ...) is noised ``repeats`` times with fresh (t, eps) from ``generator``; the
    model is called through its ``DiffusionModel`` interface, as a sampler would call it.
    """
    x0 = x0.to(torch.float64).repeat(repeats, *([1] * (x0.ndim - 1)))
    values = model.schedule(draw_times(model.schedule, x0.shape[0], generator))
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    out = []
    for chunk in torch.arange(x0.shape[0]).split(1024):  # bounded memory
        v = values[chunk]
        eps_hat = model(forward_sample(x0[chunk], v, eps[chunk]), v.t)
        out.append((eps_hat - eps[chunk]).pow(2).flatten(1).mean(1))
    return torch.cat(out)


def _data(kind: str, config: Any) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """(train x0, held-out x0, train labels, held-out labels); float32, images (n, 1, 8, 8)."""
    if kind == "mlp":
        from toy_models import zoo

        mixture = getattr(zoo, config.mixture)()
        train = mixture.sample(config.n_train, torch.Generator().manual_seed(config.data_seed))
        held_out = mixture.sample(config.n_heldout, torch.Generator().manual_seed(config.heldout_seed))
        return train.to(torch.float32), held_out.to(torch.float32), None, None
    from toy_models.digits import HELDOUT_EVERY, as_images, digits_images, digits_split

    if config.heldout_every != HELDOUT_EVERY:
        raise ValueError(f"heldout_every={config.heldout_every} but the digits split uses {HELDOUT_EVERY}")
    x, y = digits_images()
    train, held_out = digits_split()
    images = as_images(x.to(torch.float32))
    return images[train], images[held_out], y[train], y[held_out]


def _lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over WARMUP_STEPS, then cosine decay to zero at ``steps``."""
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    return 0.5 * (1.0 + math.cos(math.pi * (step - WARMUP_STEPS) / max(steps - WARMUP_STEPS, 1)))


@torch.no_grad()
def _ema_update(ema: nn.Module, net: nn.Module, step: int, decay: float) -> None:
    # Polyak averaging with the warm-up of TensorFlow's ExponentialMovingAverage: decay_k = min(d, (1+k)/(10+k)).
    d = min(decay, (1.0 + step) / (10.0 + step))
    for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
        p_ema.lerp_(p, 1.0 - d)


def _snapshot(kind: str, config: Any, model: TrainedModel) -> Tensor:
    """Samples of the EMA network from fixed noise: DDIM (eta = 0), 50 steps; float16."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    s = model.schedule
    if kind == "mlp":
        x_T = torch.randn(config.n_snapshot, config.dim, generator=g, dtype=torch.float32)
        return sample_ddim(model, x_T, grids.uniform_lambda(s, 50)).to(torch.float16)
    labels = torch.arange(config.n_snapshot) % config.num_classes
    x_T = torch.randn(config.n_snapshot, 1, 8, 8, generator=g, dtype=torch.float32)
    ts = grids.uniform_t(s, config.snapshot_ddim_steps)
    return sample_ddim(model.with_label(labels), x_T, ts).clamp(-1, 1).to(torch.float16)


def _train_diffusion(
    kind: str, config: Any, device: torch.device, progress: bool
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    schedule = get_schedule(config.schedule)
    train_x, heldout_x, train_y, _ = _data(kind, config)
    net = build_network(kind, config).to(device)  # initialised from torch.manual_seed(seed)
    ema = build_network(kind, config).to(device)
    ema.load_state_dict(net.state_dict())
    ema_model = TrainedModel(ema, schedule)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: _lr_factor(k, config.steps))
    g = torch.Generator().manual_seed(config.seed)  # every batch, time, label drop and noise
    losses = torch.zeros(config.steps, dtype=torch.float32)
    log: dict[str, Any] = {"eval_step": [], "heldout_eps_mse": [], "heldout_eps_std": []}
    snapshots: dict[str, Any] = {"step": [], "samples": []}
    start = time.perf_counter()
    for step in tqdm(range(config.steps), desc=f"train {kind}", disable=not progress, mininterval=1.0):
        idx = torch.randint(0, train_x.shape[0], (config.batch,), generator=g)
        x0 = train_x[idx]
        t = draw_times(schedule, config.batch, g)
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float32)
        x_t = forward_sample(x0, schedule(t), eps)  # Ho et al. 2020, Eq. 4
        s = network_time(schedule, t).to(torch.float32)
        args: tuple[Tensor, ...] = (x_t.to(device), s.to(device))
        if kind == "unet":
            drop = torch.rand(config.batch, generator=g, dtype=torch.float32) < config.p_uncond
            y = torch.where(drop, torch.full_like(train_y[idx], config.num_classes), train_y[idx])
            args = (*args, y.to(device))
        loss = (net(*args) - eps.to(device)).pow(2).mean()  # Ho et al. 2020, Eq. 14
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        _ema_update(ema, net, step, config.ema)
        losses[step] = loss.detach().to("cpu")
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            errors = eps_errors(ema_model, heldout_x, config.eval_repeats, torch.Generator().manual_seed(EVAL_SEED))
            log["eval_step"].append(done)
            log["heldout_eps_mse"].append(float(errors.mean()))
            log["heldout_eps_std"].append(float(errors.std()))
        if done in config.snapshots:
            snapshots["step"].append(done)
            snapshots["samples"].append(_snapshot(kind, config, ema_model))
    log = {
        "loss": losses,
        "eval_step": torch.tensor(log["eval_step"]),
        "heldout_eps_mse": torch.tensor(log["heldout_eps_mse"], dtype=torch.float64),
        "heldout_eps_std": torch.tensor(log["heldout_eps_std"], dtype=torch.float64),
        "eval_n": heldout_x.shape[0] * config.eval_repeats,
        "eval_seed": EVAL_SEED,
        "wall_s": time.perf_counter() - start,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
    }
    if snapshots["step"]:
        snapshots = {"step": torch.tensor(snapshots["step"]), "samples": torch.stack(snapshots["samples"])}
    if kind == "unet":
        snapshots["labels"] = torch.arange(config.n_snapshot) % config.num_classes
    return ema.cpu(), log, snapshots


def _train_classifier(
    config: ClassifierConfig, device: torch.device, progress: bool
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    train_x, heldout_x, train_y, heldout_y = _data("classifier", config)
    net = build_network("classifier", config).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: _lr_factor(k, config.steps))
    g = torch.Generator().manual_seed(config.seed)
    losses, eval_step, accuracy = torch.zeros(config.steps, dtype=torch.float32), [], []
    start = time.perf_counter()
    for step in tqdm(range(config.steps), desc="train classifier", disable=not progress, mininterval=1.0):
        idx = torch.randint(0, train_x.shape[0], (config.batch,), generator=g)
        loss = nn.functional.cross_entropy(net(train_x[idx].to(device)), train_y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses[step] = loss.detach().to("cpu")
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            with torch.no_grad():
                pred = net.eval()(heldout_x.to(device)).argmax(1).cpu()
            net.train()
            eval_step.append(step + 1)
            accuracy.append(float((pred == heldout_y).to(torch.float64).mean()))
    log = {
        "loss": losses,
        "eval_step": torch.tensor(eval_step),
        "heldout_accuracy": torch.tensor(accuracy, dtype=torch.float64),
        "wall_s": time.perf_counter() - start,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
    }
    return net.cpu(), log, {}


def train(
    kind: str,
    config: Any | None = None,
    device: torch.device | str = "cpu",
    threads: int | None = 1,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Train a network of ``kind`` (mlp, unet, classifier) under ``config`` (default: ``CONFIGS[kind]``).

    Returns (network on the CPU, log, snapshots). Deterministic for a fixed config, device and thread count.
    """
    if kind not in CONFIGS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(CONFIGS)}")
    config = CONFIGS[kind] if config is None else config
    if type(config) is not type(CONFIGS[kind]):
        raise TypeError(f"a {kind} needs a {type(CONFIGS[kind]).__name__}, got {type(config).__name__}")
    device = torch.device(device)
    with deterministic(config.seed, threads if device.type == "cpu" else None):
        if kind == "classifier":
            return _train_classifier(config, device, progress)
        return _train_diffusion(kind, config, device, progress)


def time_training(
    kind: str, device: str, steps: int, threads: int = 1, sample_batch: int = 500, warmup: int = 5
) -> dict[str, float]:
    """Seconds per training step and seconds for one 50-step DDIM batch of ``sample_batch`` on ``device``.

    After one untimed run, the step time is (time of warmup + steps) - (time of warmup steps), divided by
    steps, so start-up costs (CUDA context, kernel selection, data, the final evaluation) cancel; sampling
    is timed after a 2-step warm-up run.
    Also returns the last training loss, to compare devices (same data stream, different arithmetic).
    """
    if kind not in ("mlp", "unet"):
        raise ValueError(f"time_training covers the diffusion models (mlp, unet), got {kind!r}")

    def run(n: int) -> tuple[float, nn.Module, dict[str, Any]]:
        config = replace(CONFIGS[kind], steps=n, eval_every=10**9, snapshots=())
        _sync(device)
        start = time.perf_counter()
        net, log, _ = train(kind, config, device, threads)
        _sync(device)
        return time.perf_counter() - start, net, log

    run(warmup)  # imports, data, CUDA context and kernel selection
    t_warm, _, _ = run(warmup)
    t_all, net, log = run(warmup + steps)
    schedule = get_schedule(CONFIGS[kind].schedule)
    model = TrainedModel(net.to(device), schedule, 0 if kind == "unet" else None)
    shape = (sample_batch, 1, 8, 8) if kind == "unet" else (sample_batch, CONFIGS[kind].dim)
    # The sampler's state stays on the CPU; the model moves each batch to the network's device and back.
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    with deterministic(0, threads if device == "cpu" else None):
        sample_ddim(model, x_T, grids.uniform_t(schedule, 2))  # warm-up
        _sync(device)
        start = time.perf_counter()
        sample_ddim(model, x_T, grids.uniform_t(schedule, 50))
        _sync(device)
        sampling = time.perf_counter() - start
    return {"train_s_per_step": (t_all - t_warm) / steps, "ddim50_s": sampling, "last_loss": float(log["loss"][-1])}


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _write(kind: str, config: Any, out_dir: Path, device: torch.device, threads: int, progress: bool) -> Path:
    net, log, snapshots = train(kind, config, device, threads, progress)
    data = expected_data(kind, config)  # the mixture's seeds, or the digits split
    if kind == "mlp":
        data.update(n_heldout=config.n_heldout, heldout_seed=config.heldout_seed)
    path = save_checkpoint(out_dir / CHECKPOINT_NAMES[kind], kind, config, net, data=data, log=log, snapshots=snapshots)
    summary = f"{kind}: {log['wall_s']:.1f} s on {device}, checkpoint {path} ({path.stat().st_size / 1e6:.2f} MB)"
    if "heldout_eps_mse" in log:
        summary += f", held-out eps MSE {float(log['heldout_eps_mse'][-1]):.4f}"
    if "heldout_accuracy" in log:
        summary += f", held-out accuracy {float(log['heldout_accuracy'][-1]):.3f}"
    print(summary, flush=True)
    return path


def main(argv: list[str] | None = None) -> None:
    """The command line: ``python -m toy_models.train {mlp,unet,classifier,all} [--quick] [--device ...]``."""
    parser = argparse.ArgumentParser(prog="python -m toy_models.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=[*CONFIGS, "all"])
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps (writes to a temp folder)")
    parser.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (fixed, for determinism); default 1")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint folder")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    default_out = Path(tempfile.gettempdir()) / "refimpl-quick" if args.quick else CHECKPOINT_DIR
    out_dir = args.out or default_out
    kinds = ["classifier", "mlp", "unet"] if args.kind == "all" else [args.kind]
    start = time.perf_counter()
    for kind in kinds:
        config: Any = quick_config(CONFIGS[kind]) if args.quick else CONFIGS[kind]
        if args.steps is not None:
            config = replace(config, steps=args.steps)
        _write(kind, config, out_dir, device, args.threads, progress=True)
    print(f"total {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":  # pragma: no cover
    main()
