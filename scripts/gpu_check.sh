#!/usr/bin/env bash
# GPU check of the trained toy models (issue 7), for a machine with a CUDA GPU; about 1 to 3 minutes.
#
# Trains the 2-D MLP and the digits UNet for a fixed number of steps on CUDA and on the CPU of the same
# machine (2 CPU threads, like the project's 2-core reference machine), with the same seeds and data
# stream, and prints seconds per training step, seconds for a 50-step DDIM batch, and the CPU/GPU ratios.
# The sampler loop itself stays on the CPU; the network runs on the device (toy_models.trained.TrainedModel).
#
# Usage:  scripts/gpu_check.sh            (PYTHON=/path/to/python to choose the interpreter)
# Needs torch with CUDA, numpy, scipy, scikit-learn and tqdm; nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CUBLAS_WORKSPACE_CONFIG=:4096:8   # deterministic cuBLAS (torch.use_deterministic_algorithms)
UNET_STEPS=${UNET_STEPS:-200}
MLP_STEPS=${MLP_STEPS:-300}
CPU_THREADS=${CPU_THREADS:-2}

timeout 240 "$PYTHON" - "$UNET_STEPS" "$MLP_STEPS" "$CPU_THREADS" <<'PY'
import sys
import time

missing = []
for module in ("torch", "numpy", "scipy", "sklearn", "tqdm"):
    try:
        __import__(module)
    except ImportError:
        missing.append(module)
if missing:
    sys.exit(f"gpu_check: missing Python packages: {', '.join(missing)}")

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device; nothing to compare")

from toy_models.train import time_training

unet_steps, mlp_steps, cpu_threads = (int(v) for v in sys.argv[1:4])
print(f"torch {torch.__version__}, GPU {torch.cuda.get_device_name(0)}, CPU threads {cpu_threads}", flush=True)
start = time.perf_counter()
for kind, steps in (("mlp", mlp_steps), ("unet", unet_steps)):
    gpu = time_training(kind, "cuda", steps)
    cpu = time_training(kind, "cpu", steps, threads=cpu_threads)
    print(
        f"{kind:>4s} ({steps} steps): train {cpu['train_s_per_step'] * 1e3:8.2f} ms/step CPU, "
        f"{gpu['train_s_per_step'] * 1e3:7.2f} ms/step GPU, ratio CPU/GPU {cpu['train_s_per_step'] / gpu['train_s_per_step']:6.1f}"
        f" | DDIM-50 batch: {cpu['ddim50_s']:6.2f} s CPU, {gpu['ddim50_s']:6.2f} s GPU, "
        f"ratio {cpu['ddim50_s'] / gpu['ddim50_s']:6.1f}"
        f" | last loss CPU {cpu['last_loss']:.4f}, GPU {gpu['last_loss']:.4f}",
        flush=True,
    )
print(f"gpu_check: done in {time.perf_counter() - start:.0f} s")
PY
