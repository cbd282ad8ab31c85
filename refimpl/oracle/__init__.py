"""The correctness oracle: check a fast sampler step by step against refimpl on exact toys.

from refimpl.oracle import check
print(check(my_sampler, method="dpm_solver_pp_2m"))   # a plain function with refimpl's sampler signature

from refimpl.oracle import Config
from refimpl.oracle.adapters import DiffusersScheduler
print(check(DiffusersScheduler("DDIMScheduler"), Config("ddim", n_steps=10)).table())
"""

from refimpl.oracle.config import Config
from refimpl.oracle.own import Verdict, assert_agrees, check, default_configs
from refimpl.oracle.report import Report, smallest_failure
from refimpl.oracle.running import Implementation, Run

__all__ = [
    "Config",
    "Implementation",
    "Report",
    "Run",
    "Verdict",
    "assert_agrees",
    "check",
    "default_configs",
    "smallest_failure",
]
