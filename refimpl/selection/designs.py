"""Space-filling designs and their discrepancy: the sampling side of DATED (numpy, float64).

Picard et al., DATED: Guidelines for Creating Synthetic Datasets for Engineering Design Applications
(arXiv:2305.09018v2, Sec. 3): a synthetic data set starts from a design of experiments over the parameter box;
space-filling designs (Latin hypercube, Sobol) cover it more evenly than i.i.d. uniform points, measured by a
discrepancy. Their finding that "design diversity does not equate to performance diversity" is a statement about
the map from designs to performance: a uniform design is pushed forward to a law of performances that can be far
from uniform (``performance_toy``).

* Latin hypercube (McKay, Beckman & Conover 1979): each coordinate has exactly one point in each of the n strata.
* Centered L2 discrepancy (Hickernell 1998, eq. (5.1c)), squared:
  CD^2 = (13/12)^d - (2/n) sum_i prod_k (1 + |x_ik - 1/2|/2 - |x_ik - 1/2|^2/2)
         + (1/n^2) sum_ij prod_k (1 + |x_ik - 1/2|/2 + |x_jk - 1/2|/2 - |x_ik - x_jk|/2).
"""

from __future__ import annotations

import numpy as np

from refimpl._validation import check_array, check_generator, check_integer, check_number

__all__ = ["centered_discrepancy", "latin_hypercube", "performance_toy"]


def latin_hypercube(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """n points in [0, 1)^d, one per stratum [i/n, (i+1)/n) in every coordinate, strata paired at random.

    Paper: Picard et al. (DATED), arXiv:2305.09018v2, Sec. 3; Latin hypercube of McKay, Beckman & Conover (1979), no
    arXiv, eq. [unverified].
    """
    n, d = check_integer(n, "n", 1), check_integer(d, "d", 1)
    check_generator(rng)
    strata = np.stack([rng.permutation(n) for _ in range(d)], 1)  # (n, d)
    return (strata + rng.uniform(size=(n, d))) / n


def centered_discrepancy(x: np.ndarray) -> float:
    """Squared centered L2 discrepancy of the rows of x (n, d) in [0, 1]^d (Hickernell 1998).

    Paper: Picard et al. (DATED), arXiv:2305.09018v2, Sec. 3; Hickernell (1998), eq. (5.1c) (no arXiv; number from the
    module docstring, [unverified] here).
    """
    x = check_array(x, "x")
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (n >= 1, d), got {x.shape}")
    if bool(((x < 0) | (x > 1)).any()):
        raise ValueError("x must lie in the unit cube [0, 1]^d")
    n, d = x.shape
    c = np.abs(x - 0.5)
    term1 = (13.0 / 12.0) ** d
    term2 = np.prod(1 + 0.5 * c - 0.5 * c**2, axis=1).sum() * 2.0 / n
    pair = 1 + 0.5 * c[:, None, :] + 0.5 * c[None, :, :] - 0.5 * np.abs(x[:, None, :] - x[None, :, :])
    term3 = np.prod(pair, axis=2).sum() / n**2
    return float(term1 - term2 + term3)


def performance_toy(x: np.ndarray, sharpness: float = 8.0) -> np.ndarray:
    """A performance map of the design box with a plateau: sigmoid(sharpness (x_1 + x_2 - 1)) (rows of x (n, >= 2)).

    Uniform designs give performances piled up near 0 and 1: design diversity is not performance diversity.

    Helper, no paper equation: a performance map with a plateau, for DATED's design-vs-performance point.
    """
    x = check_array(x, "x", 2, nonempty=False)
    if x.shape[1] < 2:
        raise ValueError(f"x must have at least 2 columns, got shape {x.shape}")
    if check_number(sharpness, "sharpness") <= 0:
        raise ValueError(f"sharpness must be positive, got {sharpness}")
    return 1.0 / (1.0 + np.exp(-sharpness * (x[:, 0] + x[:, 1] - 1.0)))
