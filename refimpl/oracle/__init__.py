"""The correctness oracle: check a fast sampler step by step against refimpl on exact toys.

from refimpl.oracle import Config, check
from refimpl.oracle.adapters import DiffusersScheduler
print(check(DiffusersScheduler("DDIMScheduler"), Config("ddim", n_steps=10)).table())
"""

from refimpl.oracle.core import Config, Implementation, Report, Run, check, smallest_failure

__all__ = ["Config", "Implementation", "Report", "Run", "check", "smallest_failure"]
