"""diffusers PNDMScheduler (with its Runge-Kutta warm-up, skip_prk_steps=False) fails for fewer than 4 steps.

set_timesteps(n) for n < 4 raises "operands could not be broadcast" instead of a clear error (PNDM's warm-up needs
three Runge-Kutta steps; the paper's Algorithm 2 takes them inside the step budget).
Status: not found reported in huggingface/diffusers; the same error in a copy of the scheduler is
tenstorrent/tt-metal issue #8196.
"""

from diffusers import PNDMScheduler

failed = []
for n in (1, 2, 3, 4):
    s = PNDMScheduler()
    try:
        s.set_timesteps(n)
        print(f"{n} steps: {len(s.timesteps)} model calls")
    except ValueError as err:
        failed.append(n)
        print(f"{n} steps: ValueError: {err}")
assert failed == [1, 2, 3], "the defect is gone in this diffusers version"
