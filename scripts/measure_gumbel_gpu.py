"""Device check for chapter 11: the float32 Gumbel-max tail deficit measured by Monte Carlo at scale.

Run on a GPU from the repository root: ``python scripts/measure_gumbel_gpu.py`` (writes
``$OUT/gumbel_gpu.json``; about 90 s on an H200; on a CPU it runs a tiny version). Modes: 'cuda32' =
torch.rand float32 on the GPU (its own lattice), 'cpu32' = the CPU lattice k 2^-24 (emulated exactly:
randint(0, 2^24) * 2^-24 in float32), 'f64' = float64 uniforms (the fix). The numbers quoted in
notebooks/15_discrete_tokens.md came from one run on an NVIDIA H200.
"""

import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from refimpl.discrete.categorical import gumbel_lattice_law, gumbel_tail_win_probability

dev = "cuda" if torch.cuda.is_available() else "cpu"
QUICK = dev == "cpu"
D = 2.0**-24
out = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__, "runs": []}


def uniforms(b, V, mode):
    if mode == "cuda32":
        return torch.rand(b, V, device=dev)
    if mode == "cpu32":
        return torch.randint(0, 2**24, (b, V), device=dev, dtype=torch.int32).float() * D
    return torch.rand(b, V, device=dev, dtype=torch.float64)


def count_hits(logp, n, mode, chunk, counts=None):
    """Draw n Gumbel-max samples of the law with log-probabilities logp; return #draws of index > 0."""
    hits = 0
    V = logp.numel()
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        u = uniforms(b, V, mode)
        x = torch.argmax(logp.to(u.dtype) - torch.log(-torch.log(u)), -1)
        hits += int((x > 0).sum())
        if counts is not None:
            counts += torch.bincount(x, minlength=V).to(counts.dtype)
    return hits


g = torch.Generator(device=dev)
torch.manual_seed(0)
T = 2**16 if not QUICK else 2**8
for ratio in [0.25, 0.5, 1.0, 4.0, 64.0]:
    p = ratio * D if not QUICK else ratio * 2.0**-12
    probs = np.full(T + 1, p)
    probs[0] = 1 - T * p
    logp = torch.log(torch.tensor(probs, device=dev))
    mass = T * p
    derived = float(gumbel_lattice_law(probs, D)[1:].sum())
    exact_cpu = gumbel_tail_win_probability(p, T, dtype=torch.float32) if not QUICK else float("nan")
    for mode, n in [("cuda32", 2**22), ("cpu32", 2**22), ("f64", 2**20)]:
        n = n if not QUICK else 2**10
        if QUICK and mode == "cuda32":
            continue
        torch.cuda.synchronize() if dev == "cuda" else None
        t0 = time.time()
        hits = count_hits(logp, n, mode, chunk=2**13 if mode != "f64" else 2**12)
        torch.cuda.synchronize() if dev == "cuda" else None
        freq = hits / n
        out["runs"].append(
            dict(
                ratio=ratio,
                T=T,
                mode=mode,
                n=n,
                hits=hits,
                freq=freq,
                se=math.sqrt(max(freq, 1e-300) * (1 - freq) / n),
                mass=mass,
                derived_cpu_lattice=derived,
                exact_cpu_lattice=exact_cpu,
                seconds=time.time() - t0,
            )
        )
        print(json.dumps(out["runs"][-1]), flush=True)

# A masked-diffusion step: stay masked with 1 - s, else a token of a Zipf law over a GPT-2-sized vocabulary.
V = 50257 if not QUICK else 1000
z = 1.0 / np.arange(1, V + 1)
z /= z.sum()
for s in [2e-3, 2e-4]:
    probs = np.concatenate([[1 - s], s * z])
    logp = torch.log(torch.tensor(probs, device=dev))
    law32 = gumbel_lattice_law(probs, D)
    for mode, n in [("cuda32", 2**23), ("cpu32", 2**23), ("f64", 2**22)]:
        n = n if not QUICK else 2**10
        if QUICK and mode == "cuda32":
            continue
        counts = torch.zeros(V + 1, device=dev, dtype=torch.float64)
        t0 = time.time()
        hits = count_hits(logp, n, mode, chunk=2**11 if mode != "f64" else 2**10, counts=counts)
        c = counts.cpu().numpy()[1:]
        tail = slice(1000, None)  # tokens of rank > 1000
        res = dict(
            s=s,
            V=V,
            mode=mode,
            n=n,
            reveals=hits,
            reveal_freq=hits / n,
            reveal_prob=s,
            reveal_derived_cpu=float(law32[1:].sum()),
            tail_share=float(c[tail].sum() / max(c.sum(), 1)),
            tail_share_exact=float(z[tail].sum()),
            tail_share_derived_cpu=float(law32[1:][tail].sum() / law32[1:].sum()),
            seconds=time.time() - t0,
        )
        out["runs"].append(res)
        print(json.dumps(res), flush=True)

# throughput of the fix: float32 vs float64 Gumbel-max, one (4096 x 50257) batch
for mode in ["cuda32", "f64"]:
    logp = torch.log(torch.tensor(np.concatenate([[1 - 2e-3], 2e-3 * z]), device=dev))
    for _ in range(2):
        count_hits(logp, 4096, mode, 4096)
    torch.cuda.synchronize() if dev == "cuda" else None
    t0 = time.time()
    for _ in range(10):
        count_hits(logp, 4096, mode, 4096)
    torch.cuda.synchronize() if dev == "cuda" else None
    out["runs"].append(dict(throughput=mode, seconds_per_4096x50258=(time.time() - t0) / 10))
    print(json.dumps(out["runs"][-1]), flush=True)

json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "gumbel_gpu.json"), "w"), indent=1)
