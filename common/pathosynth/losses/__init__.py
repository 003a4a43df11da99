"""Losses MONAI does not ship: the VQGAN adaptive adversarial weight, margin hinge GAN losses and the
context encoder's masked reconstruction loss.

No re-exports: import from the defining module (``pathosynth.losses.context_encoder.MaskedMSELoss``).
"""
