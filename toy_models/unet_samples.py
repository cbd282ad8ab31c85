"""The committed sample cache of the trained-models chapter (``notebooks/04_trained_models.md``).

Sampling the digits UNet is the chapter's largest cost: DDPM and DDIM at 1000 steps on 200 images are 2000 network
calls, about 8 CPU-minutes. The chapter reads them from ``toy_models/checkpoints/unet_samples.pt``, written by this
module's command::

    python -m toy_models.unet_samples        # about 8 CPU-minutes on one thread

The file holds

* ``ddpm_ddim``: the samples of DDPM and DDIM (eta = 0) at 10, 50 and 1000 equal steps in t, from the noise
  ``start(N_SAMPLES)`` with the labels 0, 1, ..., 9, 0, ... (float32, as the network computes), DDPM's noise drawn
  by :func:`ddpm_noise`, computed in batches of ``CHUNK`` images (:func:`chunk_runs`, which can run in parallel;
  :func:`assemble` joins them);
* ``checkpoints``: the states of the 1000-step runs every ``SEGMENT`` steps, for the first ``N_CHECKED`` images,
  so that any stretch of a 1000-step run can be recomputed on its own (:func:`run_segment`) and compared.

Nothing is faked: ``tests/test_unet_samples.py`` recomputes the first and the last stretch of both 1000-step runs
for the first images and compares them with the file, and the chapter recomputes the first images of the 10-step
runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from refimpl import grids
from refimpl.samplers import sample_ddim, sample_ddpm
from toy_models.trained import CHECKPOINT_DIR, TrainedModel

__all__ = [
    "CACHE_PATH",
    "CHUNK",
    "N_CHECKED",
    "N_SAMPLES",
    "SAMPLERS",
    "SEGMENT",
    "STEPS",
    "assemble",
    "chunk_runs",
    "ddpm_noise",
    "load_cache",
    "run_segment",
    "start",
    "write_cache",
]

CACHE_PATH = CHECKPOINT_DIR / "unet_samples.pt"
N_SAMPLES = 200
STEPS = (10, 50, 1000)
SEGMENT = 100  # the 1000-step runs keep a state every SEGMENT steps
N_CHECKED = 8  # ... for this many images
CHUNK = 50  # the runs are computed in batches of this many images (the network's float32 round-off depends on it)
SAMPLERS = ("DDPM", "DDIM")


def start(n: int = N_SAMPLES) -> tuple[Tensor, Tensor]:
    """The starting noise x_T of the first n images, (n, 1, 8, 8) float64 (seed 1), and their labels 0, 1, ..., 9, 0."""
    x_T = torch.randn(N_SAMPLES, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return x_T[:n], torch.arange(n) % 10


def ddpm_noise(steps: int, rows: slice = slice(None)) -> Tensor:
    """DDPM's noise for a run of ``steps`` steps on the images ``rows``, (steps, n, 1, 8, 8): one draw for all
    N_SAMPLES images (seed 2 + steps), so that a slice of the images gets the noise it has in the whole batch."""
    gen = torch.Generator().manual_seed(2 + steps)
    return torch.randn(steps, N_SAMPLES, 1, 8, 8, generator=gen, dtype=torch.float32)[:, rows].to(torch.float64)


def run_segment(model: TrainedModel, sampler: str, steps: int, x: Tensor, rows: slice, first: int, last: int) -> Tensor:
    """Steps ``first`` to ``last`` of the ``steps``-step run of ``sampler`` ("DDPM" or "DDIM") on the images
    ``rows``, from their state ``x`` at step ``first``; ``model`` is conditioned on those images' labels."""
    ts = grids.uniform_t(model.schedule, steps)[first : last + 1]
    if sampler == "DDIM":
        return sample_ddim(model, x, ts)
    if sampler == "DDPM":
        return sample_ddpm(model, x, ts, noise=ddpm_noise(steps, rows)[first:last])
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def chunk_runs(sampler: str, chunk: int) -> tuple[dict[str, Tensor], Tensor]:
    """The runs of ``sampler`` at every step count of ``STEPS`` on the images of batch ``chunk`` (``CHUNK`` images
    from ``chunk * CHUNK``), and the states of its longest run every ``SEGMENT`` steps, (STEPS[-1] / SEGMENT + 1,
    CHUNK, 1, 8, 8)."""
    from toy_models.trained import load_unet

    rows = slice(chunk * CHUNK, (chunk + 1) * CHUNK)
    x_T, labels = start()
    x_T, model = x_T[rows], load_unet().model(labels[rows])
    runs: dict[str, Tensor] = {}
    for steps in STEPS[:-1]:
        runs[f"{sampler}_{steps}"] = run_segment(model, sampler, steps, x_T, rows, 0, steps).float()
    x, states = x_T, [x_T]
    for first in range(0, STEPS[-1], SEGMENT):
        x = run_segment(model, sampler, STEPS[-1], x, rows, first, first + SEGMENT)
        states.append(x)
    runs[f"{sampler}_{STEPS[-1]}"] = x.float()
    return runs, torch.stack(states).float()


def assemble(parts: dict[tuple[str, int], tuple[dict[str, Tensor], Tensor]]) -> dict[str, Any]:
    """The cache from :func:`chunk_runs` of every (sampler, chunk): the runs joined over the chunks, and the states
    of the first ``N_CHECKED`` images."""
    chunks = range(N_SAMPLES // CHUNK)
    runs = {
        f"{sampler}_{steps}": torch.cat([parts[sampler, c][0][f"{sampler}_{steps}"] for c in chunks])
        for sampler in SAMPLERS
        for steps in STEPS
    }
    checkpoints = {sampler: parts[sampler, 0][1][:, :N_CHECKED].clone() for sampler in SAMPLERS}  # not the view
    return {"format": 1, "ddpm_ddim": runs, "checkpoints": checkpoints}


def write_cache(path: Path = CACHE_PATH) -> None:
    """Compute every cached run (one thread; float64 samplers around the float32 network) and write the file."""
    torch.set_num_threads(1)
    parts = {(s, c): chunk_runs(s, c) for s in SAMPLERS for c in range(N_SAMPLES // CHUNK)}
    torch.save(assemble(parts), path)


def load_cache(path: Path = CACHE_PATH) -> dict[str, Any]:
    """The cache written by :func:`write_cache` (FileNotFoundError naming the command that writes it)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing: write it with python -m toy_models.unet_samples")
    return torch.load(path, weights_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=CACHE_PATH, help=f"default: {CACHE_PATH}")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    write_cache(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
