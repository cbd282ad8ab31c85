"""Trained networks as ``refimpl`` diffusion models, and their committed checkpoints.

``TrainedModel`` wraps an eps-predicting network so that every sampler of the registry runs on it
unchanged: it has ``schedule`` and ``prediction = "eps"`` and is called as ``model(x, t)`` with the
continuous time t of the schedule. The network itself sees the *network time* s = ``network_time(t)``:

* discrete schedule of N steps (``DiscreteVP``): DDPM's step n = 0, ..., N - 1 (0-based, diffusers'
  and DPM-Solver's convention) sits at t = (n + 1) / N, so s = N t - 1. This is the map of DPM-Solver's
  ``model_wrapper`` (Lu et al. 2022, arXiv:2206.00927v3, App. D; their code writes
  t_input = 1000 (t - 1/N) for N = 1000). At a knot t = (n + 1)/N the schedule's alpha_t is exactly
  sqrt(alpha-bar) of the step the network was trained on; between knots s is fractional and the network
  interpolates through its sinusoidal embedding.
* continuous schedules: s = 1000 t, so both kinds of network see times on the same scale.

The network computes in float32 on its own device; inputs of any floating dtype and device are moved
there and the output comes back in the input's dtype and device (the samplers may run in float64).
Digits images are (B, 1, 8, 8); flat (B, 64) inputs are accepted and returned flat.

Checkpoints (``toy_models/checkpoints/*.pt``, read with ``torch.load(weights_only=True)``) hold: ``format``,
``kind`` (mlp, unet or classifier), ``config`` (the dataclass of the recipe, as a dict), ``state_dict`` (the
EMA weights for the diffusion models), ``data`` (what they were trained on: the digits split indices or the
mixture's seeds), ``log`` (training curve, held-out eps error, wall time, device) and ``snapshots`` (samples
drawn during training). ``load_checkpoint`` refuses one whose kind, config or data split does not match.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from refimpl.schedules import DiscreteVP, NoiseSchedule, get_schedule
from toy_models.mlp import MLPConfig, MLPDenoiser
from toy_models.unet import UNet, UNetConfig

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_FORMAT",
    "CONTINUOUS_TIME_SCALE",
    "Checkpoint",
    "TrainedModel",
    "build_network",
    "config_from_dict",
    "load_checkpoint",
    "load_mlp",
    "load_unet",
    "network_time",
]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
CHECKPOINT_FORMAT = 1
#: Network time of a continuous schedule: s = CONTINUOUS_TIME_SCALE * t.
CONTINUOUS_TIME_SCALE = 1000.0


def network_time(schedule: NoiseSchedule, t: Tensor) -> Tensor:
    """The time the network sees for model time t: N t - 1 (discrete, N steps) or 1000 t (continuous)."""
    t = schedule.check_t(t)
    if isinstance(schedule, DiscreteVP):
        return schedule.N * t - 1.0  # t = (n + 1) / N  <=>  n = N t - 1 (DPM-Solver, App. D)
    return CONTINUOUS_TIME_SCALE * t


@dataclass
class TrainedModel:
    """An eps-predicting network under ``schedule``, as a ``refimpl.models.DiffusionModel``.

    ``label`` binds class-conditional networks to a class: an int for the whole batch, a (B,) integer
    tensor for one class per sample, or None for the unconditional model (the network's null label).
    Networks without labels (the MLP) take ``label=None`` only.
    """

    net: nn.Module
    schedule: NoiseSchedule
    label: int | Tensor | None = None
    prediction: str = "eps"

    def __post_init__(self) -> None:
        if self.label is not None and not isinstance(self.net, UNet):
            raise ValueError(f"a {type(self.net).__name__} takes no class label, got label={self.label!r}")
        if self.label is not None:
            self._labels(1 if isinstance(self.label, int) else len(self.label), "cpu")  # validate now
        self.net.eval()

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def with_label(self, label: int | Tensor | None) -> TrainedModel:
        """The same network bound to ``label`` (None: unconditional)."""
        return TrainedModel(self.net, self.schedule, label, self.prediction)

    def _labels(self, batch: int, device: torch.device | str) -> Tensor:
        null = self.net.null_label
        if self.label is None:
            return torch.full((batch,), null, dtype=torch.long, device=device)
        y = torch.as_tensor(self.label)
        if y.is_floating_point() or y.ndim > 1:
            raise TypeError(f"label must be an int or a 1-D integer tensor, got {self.label!r}")
        if bool(((y < 0) | (y >= null)).any()):
            raise ValueError(f"labels must lie in [0, {null - 1}], got {y.tolist()}")
        if y.ndim == 1 and y.numel() != batch:
            raise ValueError(f"{y.numel()} labels for a batch of {batch}")
        return y.to(device=device, dtype=torch.long).expand(batch)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """eps_hat(x, t) for x (B, ...) and t a 0-d or (B,) tensor in the schedule's domain."""
        s = network_time(self.schedule, torch.as_tensor(t))
        device = self.device
        s = s.to(device=device, dtype=torch.float32).expand(x.shape[0]).contiguous()
        with torch.no_grad():
            if isinstance(self.net, UNet):
                from toy_models.digits import as_images

                out = self.net(as_images(x).to(device, torch.float32), s, self._labels(x.shape[0], device))
                out = out.reshape(x.shape)
            else:
                out = self.net(x.to(device, torch.float32), s)
        return out.to(device=x.device, dtype=x.dtype)


def config_class(kind: str) -> type:
    """The config dataclass of a checkpoint kind."""
    from toy_models.metrics import ClassifierConfig

    classes = {"mlp": MLPConfig, "unet": UNetConfig, "classifier": ClassifierConfig}
    try:
        return classes[kind]
    except KeyError:
        raise ValueError(f"unknown checkpoint kind {kind!r}; choose one of {sorted(classes)}") from None


def config_from_dict(kind: str, config: dict[str, Any]) -> Any:
    """Rebuild the config dataclass of ``kind`` from a checkpoint's dict, refusing unknown or missing keys."""
    cls = config_class(kind)
    names = {f.name for f in fields(cls)}
    unknown, missing = sorted(set(config) - names), sorted(names - set(config))
    if unknown or missing:
        raise ValueError(f"a {kind} config with unknown keys {unknown} and missing keys {missing}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def build_network(kind: str, config: Any) -> nn.Module:
    """A freshly initialised network of ``kind`` for ``config`` (initialised from the global torch RNG)."""
    from toy_models.metrics import DigitsClassifier

    builders = {"mlp": MLPDenoiser, "unet": UNet, "classifier": DigitsClassifier}
    return builders[kind](config, dtype=torch.float32)  # float32 weights, initialised alike whatever the default


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network (eval mode, on ``device``) with everything saved beside it."""

    kind: str
    config: Any
    net: nn.Module
    data: dict[str, Any]
    log: dict[str, Any]
    snapshots: dict[str, Any]
    path: Path

    def model(self, label: int | Tensor | None = None) -> TrainedModel:
        """The network as a ``DiffusionModel`` under its schedule (diffusion kinds only)."""
        if self.kind == "classifier":
            raise ValueError("a classifier checkpoint is not a diffusion model")
        return TrainedModel(self.net, get_schedule(self.config.schedule), label)


def save_checkpoint(path: Path | str, kind: str, config: Any, net: nn.Module, **extra: dict[str, Any]) -> Path:
    """Write a checkpoint (float32 weights on the CPU); ``extra`` holds data, log and snapshots."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in net.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "kind": kind, "config": asdict(config), "state_dict": state}
    payload.update({k: extra.get(k, {}) for k in ("data", "log", "snapshots")})
    torch.save(payload, path)
    return path


def expected_data(kind: str, config: Any) -> dict[str, Any]:
    """What a network of ``kind`` trained under ``config`` was trained on (the checkpoint's ``data``)."""
    if kind == "mlp":
        return {"mixture": config.mixture, "n_train": config.n_train, "data_seed": config.data_seed}
    from toy_models.digits import digits_split

    train, held_out = digits_split()
    return {"dataset": "sklearn.datasets.load_digits", "train_idx": train, "held_out_idx": held_out}


def _check_data(kind: str, config: Any, data: dict[str, Any], path: Path) -> None:
    for key, want in expected_data(kind, config).items():
        got = data.get(key)
        same = torch.equal(got, want) if isinstance(want, Tensor) and isinstance(got, Tensor) else got == want
        if not same:
            raise ValueError(f"{path.name}: its data[{key!r}] does not match what this code would train on")


def load_checkpoint(
    path: Path | str, kind: str, expect: Any | None = None, device: torch.device | str = "cpu"
) -> Checkpoint:
    """Load the checkpoint at ``path`` as a network of ``kind`` (mlp, unet, classifier).

    Raises ``ValueError`` naming the problem if the file is of another kind or format, if its config does
    not rebuild the network its weights belong to, if ``expect`` (a config) is given and differs from the
    stored one, or if its data split differs from the one this code uses.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}; train one with `python -m toy_models.train {kind}`")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path.name}: checkpoint format {payload.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    if payload.get("kind") != kind:
        raise ValueError(f"{path.name} holds a {payload.get('kind')!r} network, not a {kind!r} one")
    config = config_from_dict(kind, payload["config"])
    if expect is not None and expect != config:
        diff = {
            f.name: (getattr(config, f.name), getattr(expect, f.name))
            for f in fields(config)
            if getattr(config, f.name) != getattr(expect, f.name)
        }
        raise ValueError(
            f"{path.name}: its config differs from the expected one in (stored, expected): {diff}; "
            f"retrain with `python -m toy_models.train {kind}`"
        )
    _check_data(kind, config, payload.get("data", {}), path)
    net = build_network(kind, config)
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[1:3]
        raise ValueError(f"{path.name}: its weights do not fit the network its config describes: {first}") from None
    net.to(device).eval()
    return Checkpoint(kind, config, net, payload["data"], payload["log"], payload["snapshots"], path)


def load_mlp(path: Path | str | None = None, device: torch.device | str = "cpu") -> Checkpoint:
    """The 2-D eps-MLP at ``path``; by default the committed one, which must hold the recipe ``MLPConfig()``."""
    if path is None:
        return load_checkpoint(CHECKPOINT_DIR / "mlp.pt", "mlp", expect=MLPConfig(), device=device)
    return load_checkpoint(path, "mlp", device=device)


def load_unet(path: Path | str | None = None, device: torch.device | str = "cpu") -> Checkpoint:
    """The digits UNet at ``path``; by default the committed one, which must hold the recipe ``UNetConfig()``."""
    if path is None:
        return load_checkpoint(CHECKPOINT_DIR / "unet.pt", "unet", expect=UNetConfig(), device=device)
    return load_checkpoint(path, "unet", device=device)
