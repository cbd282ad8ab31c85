"""Discrete tokens: masked diffusion, categorical sampling precision, multi-draft speculative decoding.

These are not samplers of the continuous kind (no (model, x, timesteps) signature), so they are not in
``refimpl.registry``; each module is checked against exact laws computed by enumeration.

* ``refimpl.discrete.masked``      -- masked diffusion with an exact denoiser; step-by-step and first-hitting samplers.
* ``refimpl.discrete.categorical`` -- Gumbel-max and inverse-CDF sampling in float32/float64; the tail deficit.
* ``refimpl.discrete.speculative`` -- optimal multi-draft acceptance (LP and subset formula); verification algorithms.
* ``refimpl.discrete.vq``          -- discrete diffusion on k-means codebook indices: uniform, absorbing and
  mask-and-replace kernels, closed-form products, exact posteriors.
"""

from refimpl.discrete import categorical, masked, speculative, vq

__all__ = ["categorical", "masked", "speculative", "vq"]
