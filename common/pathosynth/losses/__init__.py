"""Losses MONAI does not ship: the VQGAN adaptive adversarial weight, margin hinge GAN losses and the
context encoder's masked reconstruction loss."""

from .adversarial import adaptive_adversarial_weight, hinge_discriminator_loss, hinge_generator_loss
from .context_encoder import MaskedMSELoss, prepare_masked_reconstruction_batch

__all__ = [
    "MaskedMSELoss",
    "adaptive_adversarial_weight",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "prepare_masked_reconstruction_batch",
]
