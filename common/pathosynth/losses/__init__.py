"""Losses MONAI does not ship: the VQGAN adaptive adversarial weight and margin hinge GAN losses."""

from .adversarial import adaptive_adversarial_weight, hinge_discriminator_loss, hinge_generator_loss

__all__ = ["adaptive_adversarial_weight", "hinge_discriminator_loss", "hinge_generator_loss"]
