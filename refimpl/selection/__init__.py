"""Choosing samples: determinantal point processes and volume sampling for weighted least squares.

* ``refimpl.selection.dpp`` -- projection DPPs (on [-1, 1] for a Legendre basis, and on finite ground sets),
  generalised volume sampling, optimal weighted least squares.
* ``refimpl.selection.greedy`` -- greedy diverse selection: GME (maximum entropy, approximate variant), Deita
  (score-first threshold filter), MIG (submodular information on a label graph); brute force for small sets.
* ``refimpl.selection.hashing`` -- SimHash signatures and SDIM's hashing estimate of kernel attention.
* ``refimpl.selection.allocation`` -- budget allocation across groups with learning curves: KKT, greedy, sequential.
* ``refimpl.selection.designs`` -- Latin hypercubes and the centered L2 discrepancy (the DATED sidebar).
"""

from refimpl.selection import allocation, designs, dpp, greedy, hashing

__all__ = ["allocation", "designs", "dpp", "greedy", "hashing"]
