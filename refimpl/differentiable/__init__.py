"""Chapter 7b: differentiating through samplers (adjoint, MMD fine-tuning, invertible sampling, few-step DDIM)."""
