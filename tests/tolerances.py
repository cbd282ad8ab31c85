"""Every tolerance the tests use, with its derivation, in one place.

* Round-off: an expression evaluated with k floating-point operations on values of size S has error
  below about k * u * S, u the unit round-off (2^-53 ~ 1.1e-16 in float64, 2^-24 ~ 6e-8 in float32).
  We allow a safety factor for the condition number of the formula and say which.
* Round-off of a sampler run: ``refimpl.reference.OPS_PER_STEP`` roundings a step (one derivation, shared with
  the oracle; see there), so ``steps_roundoff(n, S, u, passes)`` bounds ``passes`` n-step runs.
* Policies (not derived, chosen and said so): the order band ``ORDER_TOL``, the Z score of the CLT bounds, the
  false-alarm probability of the chi-square checks, and the "well below" fractions of the trained-model tests.
* Monte Carlo: with a fixed seed, an average of n i.i.d. terms of standard deviation s deviates from
  its mean by less than z s / sqrt(n); z = 5 gives a one-sided false-alarm probability under 3e-7
  for each check, if the seed were drawn at random (CLT; Berry-Esseen corrections are O(1/sqrt n)).
"""

from __future__ import annotations

import math

import torch

from refimpl.reference import OPS_PER_STEP, ORDER_TOL, REFERENCE_TOL, steps_roundoff

__all__ = [
    "OPS_PER_STEP",
    "ORDER_TOL",
    "steps_roundoff",
]  # re-exported: defined once in the package (the oracle uses them)

U64 = torch.finfo(torch.float64).eps / 2  # unit round-off, float64
U32 = torch.finfo(torch.float32).eps / 2  # unit round-off, float32

#: Identities between two float64 formulas of a few dozen operations on O(1) values:
#: 64 ops x 1.1e-16 x condition number <= ~100 gives ~7e-13; we use 1e-12, the issues' figure.
IDENTITY_RTOL = 1e-12

#: Agreement of the DOP853 reference solve (rtol = atol = REFERENCE_TOL = 1e-13) with an exact map, relative to
#: max(1, |state|): each accepted step commits at most about one tolerance of local error, the solver takes under
#: about 100 steps over a toy's lambda range, and the ODE may grow an early error by a factor up to about 10 on
#: the way (a policy bound on the toys' error growth): 100 x 10 x 1e-13 = 1e-10.
REFERENCE_ATOL = 100 * 10 * REFERENCE_TOL

#: One-dimensional reference solves (chapter 5's editing maps) take a few dozen steps and grow errors by less:
#: 100 tolerances, 1e-11.
REFERENCE_AGREEMENT = 100 * REFERENCE_TOL

#: A first-order method's error must shrink to at most this fraction when the steps are doubled (asymptotically
#: 1/2; a policy that leaves room for the O(h^2) term at the step counts the tests use).
FIRST_ORDER_HALVING = 0.6

#: A mutant "changes the output" when the output moves by more than this: a 6-step run on O(1) states rounds to
#: about steps_roundoff(6, 3, U64) ~ 1.6e-14, so 1e-12 is a hundred times round-off (a policy above that floor).
CHANGED_OUTPUT = 1e-12

#: Z score of every CLT bound (a policy: one false alarm in 3.5 million checks for a random seed).
Z = 5.0

#: ORDER_TOL (imported above) is a policy, defined once in ``refimpl.reference``: a measured order agrees with the
#: declared one within 0.15 (house rule 12).


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


# --- the shared registry tests (tests/test_registry.py) ----------------------------------------------------------

#: measure_settled_order stops doubling when the last two local orders differ by less than this. For error =
#: C h^p (1 + K h + ...) the local orders approach p as p + c 2^-k, so each change halves and the remaining drift
#: is about the last change: settling to a third of ORDER_TOL leaves two thirds of the band for the order itself.
MIXTURE_SETTLE = ORDER_TOL / 3

#: Two runs of a stochastic sampler from the same start with different noise must differ by more than this. A
#: 10-step run on O(1) states has round-off below steps_roundoff(10, 3, U64) ~ 3e-14 (OPS_PER_STEP = 8), while a
#: different noise draw moves the output by the last steps' noise level, O(1e-2) or more on the toys' grids: 1e-9
#: sits four decades above the one and seven below the other (a policy inside that gap).
DISTINCT_NOISE_GAP = 1e-9

#: An approximate (first-order) encoder must shrink its round-trip error by at least this factor when the steps are
#: quadrupled. First order gives 4 asymptotically; the policy asks for half of that, so a pre-asymptotic draw still
#: passes while an encoder that does not converge (factor 1) fails.
APPROXIMATE_ENCODER_GAIN = 2.0

#: An encode-then-decode round trip is two passes of the step model (``OPS_PER_STEP`` roundings a step on
#: state-sized numbers each way). Rounding is relative to the largest state computed (the data or the latent),
#: and the method's amplification factor multiplies the bound (see SamplerSpec.amplification).
ROUNDTRIP_PASSES = 2


def roundtrip_bound(n_steps: int, scale: float, unit: float = U64, amplification: float = 1.0) -> float:
    """Round-off bound of an n-step exact round trip: 2 OPS_PER_STEP n u scale amplification."""
    return steps_roundoff(n_steps, scale, unit, ROUNDTRIP_PASSES, amplification)


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


#: Roundings per step when two implementations of one map are compared (e.g. with diffusers, which keeps its
#: schedule and state in float32): each contributes ``OPS_PER_STEP`` a step, carried forward by non-expanding
#: steps, so n steps differ by at most roundoff(SOLVER_OPS_PER_STEP * n, scale, unit).
SOLVER_OPS_PER_STEP = 2 * OPS_PER_STEP


def gaussian_covariance_clt(cov: torch.Tensor, n: int, z: float = Z) -> torch.Tensor:
    """z * sd of each entry of a sample covariance of n Gaussian draws: sd(S_ij) = sqrt((C_ii C_jj + C_ij^2) / n)."""
    var = torch.diagonal(cov)
    return z * torch.sqrt((var[:, None] * var[None, :] + cov**2) / n)


# --- pure steps and the phi functions (issue 11, samplers: dpm_solver, pndm, edict, bdia, ddim, ddpm) ------------


def phi_rtol(k: int, unit: float = U64) -> float:
    """Relative error bound of ``refimpl.samplers._exponential.phi(k, h)`` against exact arithmetic.

    Series branch (|h| < 1/2): 24 positive terms summed, under 30 u. Recursion branch (|h| >= 1/2):
    phi_1 = expm1(h) / h has relative error rho_1 <= 2 u; phi_{j+1} = (phi_j - 1/j!) / h subtracts, which
    multiplies the relative error by the condition c_j = (|phi_j| + 1/j!) / |phi_j - 1/j!| and adds 2 u for the
    subtraction and the division. With |phi_j - 1/j!| = |h| phi_{j+1}(h): for h <= -1/2, 0 < phi_j < 1/j! and
    |h| phi_{j+1}(h) >= 0.5 (1 - 0.5 / (j + 2)) / (j+1)! >= 0.4 / (j+1)!, so c_j <= 5 (j + 1); for h >= 1/2,
    c_j <= 4 (j + 1) (both worst at |h| = 1/2). So rho_{j+1} <= 5 (j + 1) (rho_j + 2 u) + u: for k = 4,
    about 1.3e4 u ~ 1.4e-12.
    """
    rho = 2.0 * unit
    for j in range(1, k):
        rho = 5 * (j + 1) * (rho + 2 * unit) + unit
    return max(rho, 30 * unit)


# --- the multistep engine (tests/test_multistep.py) ---------------------------------------------------------------


def multistep_identity_bound(setting, x, ms, lambdas, v_s, v_t) -> float:
    """Round-off bound for a multistep step x_t = c x_s + k_t sum_j w_j m_j against another formula of the same map.

    Each side rounds every term relative to its own size, a few dozen operations with condition <= 100 (the
    IDENTITY_RTOL derivation), so the difference is below IDENTITY_RTOL times the sum of the terms' sizes,
    |c| |x| + |k_t| sum_j |w_j| |m_j|. A paper's Taylor form regroups the same terms into divided differences of
    the q outputs, each at most the sum of the |w_j| |m_j| again: a factor q.
    """
    import torch

    from refimpl.samplers.multistep import multistep_weights

    c, k_t, w = multistep_weights(setting, torch.stack([torch.as_tensor(u) for u in lambdas]), v_s, v_t)
    terms = float(c.abs()) * float(x.abs().max()) + float(k_t.abs()) * sum(
        float(w_j.abs()) * float(m.abs().max()) for w_j, m in zip(w, ms, strict=True)
    )
    return IDENTITY_RTOL * len(ms) * terms


# --- chapters 7b and 8: differentiating through samplers, distillation (tests/test_differentiable*.py,
# --- tests/test_distillation*.py) -------------------------------------------------------------------------------

#: Operations in one affine-map comparison on Gaussian data: a d x d eigen-decomposition (O(d^3) ~ 8 for d = 2,
#: backward stable, so a few u of the largest eigenvalue) composed over at most 64 DDIM steps of ~10 operations each
#: (the step maps are contractions or near-identities): 64 x 10 ops, times a condition number <= 10 of the map.
AFFINE_MAP_OPS = 640

#: The DOP853 reference flow map against the closed-form one: the reference's rtol = atol = 1e-13 per step
#: accumulates over at most ~1000 accepted steps, so 1e-10 of the state's scale (REFERENCE_TOL x 1000).
REFERENCE_FLOW_ATOL = 1e-10


def lstsq_bound(design_cond: float, scale: float, d: int = 2) -> float:
    """Least squares with an exact (zero-residual) affine target: error <= cond(design) x (d + 1) x 8 u x scale
    (Householder QR is backward stable with a constant of a few times the column count)."""
    return roundoff(8 * (d + 1), scale, condition=design_cond)


#: Central finite differences in float64 with step delta on a smooth function with third derivatives of size F3 and
#: values evaluated to precision e: error <= delta^2 F3 / 6 + e / delta. With delta = 1e-5 on O(1) quantities
#: (F3 <= 10 on the toys) and e = 1e-15 (a few u of the value, a deterministic solver), 2e-10 + 1e-10; we allow 1e-8
#: relative to the gradient's scale (an extra 30 for the condition of the loss).
FD_DELTA = 1e-5
FD_RTOL = 1e-8

# --- transport paths (chapter 10) --------------------------------------------------------------------------------

#: One float64 step of a flow sampler evaluated by two implementations that differ only in the order of a few dozen
#: operations (the time flip tau = 1 - t costs an ulp of t; the conversions velocity <-> (x0, eps) a few dozen ops of
#: condition |det|^-1 = 1 on the straight path): 64 ops x u per step, relative to the state, summed over the steps
#: and grown at most by exp(L T) <= e^3 (L T <= 3: |du/dx| = |1 - r'| / t stays below ~3 on the toys' [t_min, t_max]
#: in log time). Used as FLOW_STEP_OPS * n_steps * U64 * scale * FLOW_GROWTH.
FLOW_STEP_OPS = 64
FLOW_GROWTH = math.exp(3.0)

#: Finite-difference check of the continuity equation d/dt log p_t + div u_t + u_t . grad log p_t = 0: a central
#: difference with step dt has truncation error |d^3 log p / dt^3| dt^2 / 6; with dt = 1e-5 and third derivatives
#: below 1e3 on the toys inside [t_min, t_max] at interior times, and round-off 2 u |log p| / dt ~ 1e-10, the residual
#: stays below 1e-6 (relative to the size of the terms, which are O(1) to O(10)).
CONTINUITY_DT = 1e-5
CONTINUITY_ATOL = 1e-6

#: The noise -> token map of Distilled Decoding integrated by RK4 in log t with 32 steps from t = 1 to 1e-2: its
#: state differs from DOP853 at rtol 1e-11 by 1.6e-6 at 64 steps (RK4: x16 at 32 steps, ~3e-5). The token changes
#: only for noises within that distance of a cell boundary: a fraction ~ 3e-5 x (boundary length x density) < 1e-4 of
#: the draws, far below the chi-square's resolution (1 / sqrt(n) ~ 1e-2). The test asserts the state agreement
#: against DOP853 at DD_STATE_ATOL.
DD_STATE_ATOL = 1e-4


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


# --- chapter 2: changing the forward process (RDDM, DiffuseVAE, TrojDiff, CDRL) ---------------------------------

#: A Trojan-free path: the exact poisoned network's P(Trojan | x_t) along clean sampling paths (and P(clean | x*_t)
#: along triggered ones) on the well-separated toy (every path >= 9 standard deviations from the other process, so
#: the log-odds are below -9^2 / 2 ~ -40, e^-40 ~ 4e-18); we assert 1e-12, far above that and far below anything a
#: law test could see. The leak moves an eps prediction by at most that fraction of |E_trojan - E_clean| = O(10).
TROJAN_LEAK = 1e-12


# --- chapter 9: score distillation as particle flows (issue 16) ----------------------------------------------------


#: The point mass delta_theta predicts eps_hat(x_t) = (x_t - alpha theta) / sigma with x_t = alpha theta + sigma eps:
#: x_t carries about 2 roundings of alpha |theta| + sigma |eps|, which the division by sigma amplifies, and the
#: difference with eps adds a few more of |eps|; 8 units of each cover the subtraction, the division and the
#: weighting. A DDIM inversion step recovers theta and eps from such a point, so k steps cost about k times this.
def sd_point_mass_bound(theta: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """Elementwise round-off of eps recovered from x_t = alpha theta + sigma eps by the point mass's prediction."""
    return roundoff(8, scale=1.0) * ((alpha * theta.abs() + sigma * eps.abs()) / sigma + eps.abs() + 1.0)


#: Policy (not derived): SDS "collapses" a mode when the within-mode spread of its particles ends below this
#: fraction of the data's within-mode spread (std sqrt(d)); VSD, which targets the data law, must end above it.
SD_SPREAD_FRACTION = 0.5
# --- chapter 6: guidance, MCMC and SMC (issue 14) -------------------------------------------------------------

#: Grid quadrature of a smooth density (a Gaussian or a mixture) by point masses at cell centres over a box of
#: +-8 standard deviations: the midpoint rule for the moments of a smooth, rapidly decaying integrand is
#: exponentially accurate (error ~ exp(-2 pi^2 std^2 / h^2), below 1e-30 for std / h >= 5) and the truncated tails
#: hold < 1e-14 of the mass; what remains is the round-off of a sum of M terms, M u. 1e-9 is a policy above both
#: for M <= 1e5 cells.
GRID_MOMENT_ATOL = 1e-9


#: A piecewise-linear CDF inverted by interpolation: F(Q(u)) = u up to round-off of a cumulative sum of M masses.
def grid_cdf_atol(n_cells: int) -> float:
    """M u times a safety factor 4 (see above)."""
    return roundoff(4 * n_cells)


# --- chapter 4: solver search, DC-Solver, time shift, stitching, quantisation and caching (issue 13) -------------


#: Two float64 implementations of the same linear sampler (USF with DDIM's or UniPC's decisions against the samplers
#: themselves): each is OPS_PER_STEP roundings a step of states of size S, so twice ``steps_roundoff``.
def same_sampler_bound(n_steps: int, scale: float) -> float:
    """Round-off gap of two n-step implementations of one map on states of size ``scale`` (see above)."""
    return steps_roundoff(n_steps, scale, U64, passes=2)


#: Weights of one step from a q-point Vandermonde inverse (q <= 4, nodes theta in [-3, 1]) against the engine's
#: product formula: the inverse of a Vandermonde matrix of size q <= 4 on such nodes has condition number below
#: about 1e3 (cond of V computed for the worst grids of the tests), so q^2 operations of unit size lose at most
#: 16 x 1e3 units: 2e-12 with margin.
VANDERMONDE_RTOL = roundoff(16, condition=1e3)
# --- chapter 4: quantisation (PTQ4DM) and feature caching (issue 13, item 9) ------------------------------------

#: Two more bits at fixed ranges divide every rounding error by 4, and the first-order output error with them; a
#: policy band of a factor 2 either side allows for the second-order terms and for clipped activations.
QUANT_TWO_BITS_BAND = (2.0, 8.0)

#: Per-channel weight quantisation of a float32 network against Delta_c / 2 = max|w_c| / 15 (4 bits, Delta_c =
#: 2 max|w_c| / 15): Delta carries 2 roundings; x / Delta (|x / Delta| <= 8) can round across a half-integer when
#: within 8 U32 of it (the other neighbour: + 16 U32 Delta); (q + zero) Delta with |q + zero| <= 8 carries Delta's
#: error 8 times (16 U32 Delta) and one more rounding of |w| <= 15 Delta / 2; the test's bound max|w| / 15 one. In
#: units of Delta / 2: 32 + 32 + 15 + 2, under 96 U32 ~ 5.7e-6 relative (no absolute term: every error scales with w).
QUANT_WEIGHT_RTOL = roundoff(96, unit=U32)

#: Policies (not derived) for the calibration comparison of PTQ4DM on the trained MLP (tests/test_quantize.py):
#: NDTC's error must be below single-step calibration's by a factor (a clear win, not a draw within noise), and
#: within k times the full-precision network's error against the exact toy (notes.md's k = 10).
QUANT_NDTC_MARGIN = 1.5
QUANT_WITHIN_FULL = 10.0
# --- issue 18: derived tolerances -------------------------------------------------------------------------------


def lagrange_weights_bound(nodes: list[float], a: float, b: float, unit: float = U64) -> list[float]:
    """Forward error bound of each weight (b - a) int_0^1 l_j of ``lagrange_integrals`` (z = 0) against exact
    arithmetic on the unrounded inputs (the test's sympy rationals; the float inputs carry one rounding each).

    With L = b - a, M = max(|a|, |b|, |u_k|) and theta_k = (u_k - a) / L: the rounded inputs, the two subtractions
    and the division put theta_k off by at most 6 u (M / |L|) (1 + |theta_k|). The weight is L N_j / D_j with
    N_j = sum_m c_m / (m + 1), c_m the coefficients of prod_{k != j} (theta - theta_k), whose absolute sum is at most
    P_j = prod_{k != j} (1 + |theta_k|) (the terms that cancel): N_j is off by P_j (2 q u + sum_k dtheta_k /
    (1 + |theta_k|)). D_j = prod_{k != j} (theta_j - theta_k) is off relatively by sum_k (dtheta_j + dtheta_k) /
    |theta_j - theta_k| + 2 q u; L relatively by 2 u M / |L| + u; the last multiply and divide add 2 u.
    """
    q, length = len(nodes), b - a
    big = max(abs(a), abs(b), *(abs(u) for u in nodes)) / abs(length)
    theta = [(u - a) / length for u in nodes]
    d_theta = [6 * unit * big * (1 + abs(t)) for t in theta]
    bounds = []
    for j in range(q):
        others = [k for k in range(q) if k != j]
        cancel = math.prod(1 + abs(theta[k]) for k in others)  # P_j
        denominator = math.prod(abs(theta[j] - theta[k]) for k in others)  # |D_j|
        d_numerator = cancel * (2 * q * unit + sum(d_theta[k] / (1 + abs(theta[k])) for k in others))
        numerator = sum(
            abs(c) / (m + 1) for m, c in enumerate(_monic_coefficients([theta[k] for k in others]))
        )  # |N_j| up to rounding: the weight's own size
        rel = sum((d_theta[j] + d_theta[k]) / abs(theta[j] - theta[k]) for k in others) + 2 * q * unit
        rel += 2 * unit * big + 3 * unit
        bounds.append(abs(length) * (d_numerator + numerator * rel) / denominator)
    return bounds


def _monic_coefficients(roots: list[float]) -> list[float]:
    """Coefficients of prod_k (x - r_k), lowest power first."""
    coef = [1.0]
    for r in roots:
        coef = [-r * coef[0]] + [coef[m - 1] - r * coef[m] for m in range(1, len(coef))] + [coef[-1]]
    return coef


#: QUADPACK's error estimates (scipy's ``quad`` / ``quad_vec``) are conservative for smooth integrands but are
#: estimates, not bounds: a policy factor 2 on the returned estimate.
QUAD_ESTIMATE_SAFETY = 2.0

#: Policies (not derived) for quadratures of the exact toys' densities (tests/test_gmm.py, the reverse kernel's mass
#: and its push-forward of p_t). quad's own error estimate is ~1e-14, but the integrand exp(log q) carries the
#: round-off of each component's quadratic form (y - m)^2 / (2 s^2), whose absolute error is about
#: 2 u |y - m| (|y| + |m|) / s^2 <= 24 u (|y| + |m|) / s at 12 widths: a bound from the terms at the ends alone
#: (|log q| ~ 30, so ~ 2e-13) was exceeded (5.6e-13 on a ddpm_linear kernel in the CI profile), and a derivation per
#: component would need the kernel's components, which the test does not see. 1e-9 (mass) and 1e-8 relative
#: (push-forward, whose integrand also carries p_t's quadratic forms) are kept as policies, 1e3-1e4 above the
#: round-off seen and far below any error of the kernel's formula (a wrong variance or weight moves the mass by
#: O(1e-2) or more).
QUAD_MASS_ATOL = 1e-9
QUAD_PUSH_RTOL = 1e-8


def ems_form_rtol(lambda_hi: float, spread: float) -> float:
    """DPM-Solver-v3's EMS of one exact model answering eps or x0 (converted inside): the two agree to round-off.

    The conversion eps = (x - alpha x0) / sigma rounds relative to |x0| alpha / sigma = e^lambda <= max(1, e^lambda_hi)
    times the state's scale; a few dozen operations (32: the conversion, the JVPs through it, f = (N - l x) / alpha
    and its derivative, the means) carry that into l, f and f^(1). s = Cov(f^(1), f) / Var(f) and b divide by the
    spread of f, so their error is relative to the spread's size: roundoff(32, condition=max(1, e^lambda_hi) / spread)
    for a toy whose f keeps a relative spread (std over the size of its terms) of at least ``spread`` at every node.
    """
    return roundoff(32, condition=max(1.0, math.exp(lambda_hi)) / spread)


#: The relative spread of f in the test above (a policy floor for its toy, checked rather than derived): a
#: two-component mixture's f varies with the component an x came from, by a fraction of its terms that shrinks with
#: alpha as the noise takes over; it stays above 1e-2 at lambda >= -2 (1.6e-2 at the lowest node of that test).
EMS_SPREAD_FLOOR = 1e-2


def grid_spacing_rtol(grid_max: float, dx: float) -> float:
    """Relative error of a uniform grid's spacing taken as grid[1] - grid[0]: both points carry a rounding of
    u max|grid| and the subtraction one of u dx, so dx is off by at most (2 max|grid| / dx + 1) u relatively.
    ``kl_to_gaussian_fit_1d`` normalises log p by log dx, which shifts every log-ratio by that amount: on an exactly
    Gaussian log p (whose midpoint-rule moments are exact up to exp(-2 pi^2 std^2 / dx^2)) the KL is off by it, plus
    a sum of p dx |log p - log q| terms (log p, log q of size <= 8 near the mass: 16 u)."""
    return roundoff(2, scale=grid_max / dx) + roundoff(1) + roundoff(16)


def ula_fixed_point_atol(target_cov: torch.Tensor, delta: float, n_steps: int, start_gap: float) -> float:
    """``langevin_gaussian_moments`` iterated n_steps against the ULA fixed point (P - delta P^2 / 4)^-1.

    One covariance step C <- M C M^T + delta I, M = I - (delta / 2) P, rounds each entry by about (4 d + 2) u |C|
    (two d-term products and the addition), and the error left from the start shrinks by rho^2 a step, rho =
    max_i |1 - delta / (2 c_i)| over the eigenvalues c_i of the target covariance: after n steps, start_gap rho^(2 n)
    plus (4 d + 2) u |C| / (1 - rho^2). The closed form inverts P = target_cov^-1 and P - delta P^2 / 4, each off
    by a few u times the condition kappa = c_max / c_min: 16 u kappa |C| for both. Entries are bounded by the fixed
    point's largest eigenvalue, max c_i / (1 - delta / (4 c_i))."""
    c = torch.linalg.eigvalsh(target_cov)
    rho = float((1 - delta / (2 * c)).abs().max())
    kappa, d = float(c.max() / c.min()), target_cov.shape[0]
    scale = float((c / (1 - delta / (4 * c))).max())  # |C| <= the fixed point's largest eigenvalue
    return start_gap * rho ** (2 * n_steps) + roundoff((4 * d + 2) / (1 - rho**2) + 16, scale, condition=kappa)


def straight_line_bound(scale: float, dt_min: float, dim: int) -> float:
    """``straightness`` of a straight line t a + (1 - t) b sampled on a grid of spacing >= dt_min over [0, 1] in t.

    Each point rounds by at most 4 u S (S = max|a| + max|b|; two products, 1 - t and the sum); a difference quotient
    then errs by 8 u S / dt plus |slope| <= S times the relative error of dt (3 u / dt: two rounded grid points and
    the subtraction), so 11 u S / dt; the chord (b - a) / (t_end - t_start) by 2 u S. S sums dim squared deviations
    weighted by dt / |T| (summing to one): dim (11 u S / dt_min + 2 u S)^2.
    """
    return dim * (roundoff(11, scale / dt_min) + roundoff(2, scale)) ** 2


#: Roundings in one DEIS-AB weight C_ij = w_j k_t / alpha_{i+1} (tests/test_deis.py): a sum of 24 Gauss-Legendre
#: terms of the Lagrange basis in t (a product of 2 (q - 1) factors each, q <= 4) or the closed-form Lagrange
#: integral in rho (a few dozen operations), then k_t / alpha (4). A sum over j of C_ij p(node_j) for a polynomial
#: p that the weights integrate exactly (sum_j l_j p_j = p) is then off by at most roundoff(AB_WEIGHT_OPS) times
#: sum_j |C_ij p(node_j)| (the terms that may cancel), 64 a round count above 24 + 6 + 4 per term and the sum over j
#: (for nodes within a few steps of the step, as on the tests' grids; far extrapolation would add the cancellation
#: factor of ``lagrange_weights_bound``).
AB_WEIGHT_OPS = 64


def float_sum_bound(values: list[float]) -> float:
    """Rounding of a sum of len(values) rounded fractions (a Butcher row or weights): each entry carries one
    rounding of its size and each addition one of the running sum (<= the sum of |values|): 2 n u sum |values|."""
    return roundoff(2 * len(values), sum(abs(v) for v in values))
