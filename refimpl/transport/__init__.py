"""Transport paths (chapter 10): flow matching, OT couplings, semi-discrete OT (DPM-OT) and distilled decoding.

* ``paths``              -- conditional paths and the exact marginal velocity of a Gaussian mixture under any path;
  the time convention of the flow-matching libraries.
* ``flow_matching``      -- the conditional and marginal flow-matching losses, minibatch couplings, straightness.
* ``coupling``           -- exact discrete OT plans with POT (``ot.emd``) and minibatch OT pairings.
* ``semidiscrete``       -- DPM-OT's semi-discrete OT map by a Brenier potential (dual ascent on the heights).
* ``distilled_decoding`` -- the closed-form flow from Gaussian noise to a categorical over codebook embeddings.
"""

from refimpl.transport.coupling import check_cost_matrix, minibatch_ot_pairs, ot_plan
from refimpl.transport.distilled_decoding import (
    CodebookFlow,
    autoregressive_decode,
    codebook_posterior,
    codebook_velocity,
)
from refimpl.transport.flow_matching import (
    cfm_loss,
    conditional_batch,
    marginal_fm_loss,
    straightness,
)
from refimpl.transport.paths import (
    conditional_path,
    from_library_time,
    marginal_velocity,
    to_library_time,
)
from refimpl.transport.semidiscrete import SemiDiscreteOT, fit_semidiscrete_ot, is_cyclically_monotone

__all__ = [
    "CodebookFlow",
    "SemiDiscreteOT",
    "autoregressive_decode",
    "cfm_loss",
    "check_cost_matrix",
    "codebook_posterior",
    "codebook_velocity",
    "conditional_batch",
    "conditional_path",
    "fit_semidiscrete_ot",
    "from_library_time",
    "is_cyclically_monotone",
    "marginal_fm_loss",
    "marginal_velocity",
    "minibatch_ot_pairs",
    "ot_plan",
    "straightness",
    "to_library_time",
]
