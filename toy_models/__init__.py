"""Toy data laws with exact answers (and, later, small trained networks) for refimpl."""

from toy_models.gmm import ConditionalMixture, ExactModel, GaussianMixture
from toy_models.zoo import anisotropic_gaussian, labelled_pair, random_mixture, ring

__all__ = [
    "ConditionalMixture",
    "ExactModel",
    "GaussianMixture",
    "anisotropic_gaussian",
    "labelled_pair",
    "random_mixture",
    "ring",
]
