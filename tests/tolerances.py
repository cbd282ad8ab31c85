"""Every tolerance the tests use, with its derivation, in one place.

* Round-off: an expression evaluated with k floating-point operations on values of size S has error
  below about k * u * S, u the unit round-off (2^-53 ~ 1.1e-16 in float64, 2^-24 ~ 6e-8 in float32).
  We allow a safety factor for the condition number of the formula and say which.
* Monte Carlo: with a fixed seed, an average of n i.i.d. terms of standard deviation s deviates from
  its mean by less than z s / sqrt(n); z = 5 gives a one-sided false-alarm probability under 3e-7
  for each check, if the seed were drawn at random (CLT; Berry-Esseen corrections are O(1/sqrt n)).
"""

from __future__ import annotations

import math

import torch

U64 = torch.finfo(torch.float64).eps / 2  # unit round-off, float64
U32 = torch.finfo(torch.float32).eps / 2  # unit round-off, float32

#: Identities between two float64 formulas of a few dozen operations on O(1) values:
#: 64 ops x 1.1e-16 x condition number <= ~100 gives ~7e-13; we use 1e-12, the issues' figure.
IDENTITY_RTOL = 1e-12

#: Z score of every CLT bound.
Z = 5.0

#: Order of convergence: measured slope within this of the declared order (house rule 12).
ORDER_TOL = 0.15


def roundoff(n_ops: int, scale: float = 1.0, unit: float = U64, condition: float = 1.0) -> float:
    """k * u * S * condition: the forward error bound of a k-operation formula (see module docstring)."""
    return n_ops * unit * scale * condition


def clt_bound(std: float | torch.Tensor, n: int, z: float = Z) -> float | torch.Tensor:
    """z * std / sqrt(n): the deviation a mean of n i.i.d. terms stays within (see module docstring)."""
    return z * std / math.sqrt(n)


# --- discrete laws (chapters 11 and 12) -------------------------------------------------------------------

#: False-alarm probability of each chi-square goodness-of-fit check with a fixed seed (as Z = 5 for the
#: CLT bounds: a check this strict fails by chance once in a million seeds).
CHI2_FALSE_ALARM = 1e-6

#: The linear program (HiGHS, feasibility tolerances 1e-10, O(1) data) against the subset formula: the
#: issue's figure 1e-9, ten times the solver's tolerance.
LP_ATOL = 1e-9


def chi2_bound(dof: int, false_alarm: float = CHI2_FALSE_ALARM) -> float:
    """The (1 - false_alarm) quantile of chi-square with ``dof`` degrees of freedom."""
    from scipy.stats import chi2

    return float(chi2.ppf(1.0 - false_alarm, dof))


def pearson_chi2(counts: object, probs: object) -> tuple[float, int]:
    """Pearson's statistic sum (O - E)^2 / E over the cells with E > 0, and its degrees of freedom.

    Cells of expected count below 5 are pooled into one (the chi-square approximation needs E >~ 5).
    """
    import numpy as np

    counts = np.asarray(counts, dtype=np.float64)
    expected = counts.sum() * np.asarray(probs, dtype=np.float64)
    if np.any(counts[expected <= 0] > 0):  # an impossible outcome was observed
        return float("inf"), int((expected > 0).sum()) - 1
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    return stat, int(keep.sum()) - 1


#: Gumbel-max with lattice uniforms: the derived law against the implementation evaluated exactly on the
#: lattice. Per token, the derivation neglects the competitor's own lattice near u = 1 (at most one lattice
#: point, mass delta, at each of the J = 60/c points that matter: relative J delta (e^c - 1)/c <= 5e-5 for
#: c <= 4), -log(1 - j delta) ~ j delta (relative j delta / 2 < 1e-5) and second-order abstentions (delta^2);
#: 1e-4 covers these for p >= delta / 4. A tail of n equal tokens adds their mutual lattice interaction,
#: relative at most n delta (``gumbel_lattice_rtol``).
GUMBEL_LATTICE_RTOL = 1e-4


def gumbel_lattice_rtol(n_tail: int, delta: float) -> float:
    """Tolerance of the derived lattice law for a tail of n_tail equal tokens (see GUMBEL_LATTICE_RTOL)."""
    return GUMBEL_LATTICE_RTOL + n_tail * delta


#: Rounding operations per step of an encode-then-decode round trip that act on state-sized numbers: each
#: direction evaluates one or two DDIM transfers a x + b eps (3 operations each), a combination or mixing of
#: states (3) and the model's eps (its rounding is a couple of units relative to the state): about 8 per
#: direction, 16 per round-trip step. Rounding is relative to the largest state computed (the data or the
#: latent), and the method's amplification factor multiplies the bound (see SamplerSpec.amplification).
ROUNDTRIP_OPS_PER_STEP = 16


def roundtrip_bound(n_steps: int, scale: float, unit: float = U64, amplification: float = 1.0) -> float:
    """Round-off bound of an n-step exact round trip: ROUNDTRIP_OPS_PER_STEP n u scale amplification."""
    return roundoff(ROUNDTRIP_OPS_PER_STEP * n_steps, scale, unit, amplification)


# --- trained toy models (tests/test_trained_*.py) ---------------------------------------------------------------


def clt_difference_bound(std_1: float, n_1: int, std_2: float, n_2: int, z: float = Z) -> float:
    """z * sqrt(std_1^2 / n_1 + std_2^2 / n_2): how far two independent Monte Carlo means of one expectation
    may differ (CLT for the difference of means; see the module docstring). Two estimates that share their
    data points and differ only in the noise drawn are positively correlated, so this bound is conservative."""
    return z * math.sqrt(std_1**2 / n_1 + std_2**2 / n_2)


#: "Well below an untrained network": the trained network's held-out eps error must be at most this fraction of
#: a freshly initialised one's (each taken at the unfavourable end of its CLT interval). An untrained network's
#: output is nearly independent of eps, so its error is at least E|eps|^2 / d = 1; a network that has learned
#: anything about the data removes a large part of it (the Bayes-optimal denoiser of the digits removes most).
WELL_BELOW_UNTRAINED = 0.5

#: "Far smaller": the digits-FD floor (training vs held-out images) must be below this fraction of the ceiling
#: (uniform noise vs held-out images), an order of magnitude, so the metric separates data from noise by a
#: margin that sample-size bias (of order F / n for F features and n images) cannot close.
FD_FLOOR_OVER_CEILING = 0.1

#: The issue's bar for the shipped digits classifier on the held-out split.
CLASSIFIER_MIN_ACCURACY = 0.9


#: Floating-point operations per solver step on state-sized values, for comparisons with float32 code
#: (diffusers keeps its schedule and state in float32): each step's rounding, about this many U32 relative
#: to the state's scale, is carried forward by a non-expanding step, so n steps differ by at most
#: roundoff(SOLVER_OPS_PER_STEP * n, scale, U32).
SOLVER_OPS_PER_STEP = 10


def gaussian_covariance_clt(cov: torch.Tensor, n: int, z: float = Z) -> torch.Tensor:
    """z * sd of each entry of a sample covariance of n Gaussian draws: sd(S_ij) = sqrt((C_ii C_jj + C_ij^2) / n)."""
    var = torch.diagonal(cov)
    return z * torch.sqrt((var[:, None] * var[None, :] + cov**2) / n)


# --- chapters 11-13 completed: VQ discrete diffusion, greedy selection, hashing, allocation (issue 17) --------


#: A product of t stochastic (S, S) matrices against its closed form: each entry of each product is a sum of S
#: products of entries in [0, 1], so each factor adds at most about 2 S units of round-off to entries bounded
#: by one; t factors: 2 S t u (``transition_product_bound``).
def transition_product_bound(n_states: int, t: int) -> float:
    """Round-off bound of Q_1 ... Q_t against the closed form Qbar_t (see above)."""
    return roundoff(2 * n_states * max(t, 1) + 8)


#: A posterior row q(x_{t-1} | x_t, x_0) divides by Qbar_t[x_0, x_t]: absolute round-off of the numerator
#: (a few ops on values <= 1) becomes relative to the smallest positive denominator.
def posterior_bound(n_ops: int, smallest_denominator: float) -> float:
    """n_ops u / smallest_denominator: the error of a ratio whose numerator is O(1)-exact (see above)."""
    return roundoff(n_ops) / smallest_denominator


#: diffusers' VQDiffusionScheduler keeps log alpha, log beta, log gamma (and their cumulative versions) in
#: float32: |log| <= 12 for the default schedule (log 9e-6 = -11.6), so each stored log is off by at most
#: 12 U32 and its exponential by that much relatively. Its posterior adds about six such logs and one
#: logsumexp over K classes (a few float32 ops on values of size <= 12): 8 x 12 x U32 ~ 5.7e-6 relative.
DIFFUSERS_VQ_LOG_SCALE = 12.0
DIFFUSERS_VQ_RTOL = roundoff(8, scale=DIFFUSERS_VQ_LOG_SCALE, unit=U32)

#: diffusers writes log 0 as log(1e-30) (index_to_log_onehot clamps the one-hot), so a transition that is
#: impossible (probability exactly 0) comes back as at most 1e-30 times a ratio of transition probabilities
#: bounded by 1 / min Qbar_t entry (>= 1e-7 for the default schedule): below 1e-22; we allow 1e-20.
DIFFUSERS_VQ_ZERO_ATOL = 1e-20
