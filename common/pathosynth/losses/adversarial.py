"""Adversarial-loss pieces for VQ autoencoder training (FQCDM Eq. 7) that MONAI lacks.

FQCDM trains its feature-quantisation block with ``L_rec + L_codebook + lambda * L_GAN`` where lambda
"adaptively controls the error" -- the VQGAN rule (Esser et al. 2021, Eq. 7 there): scale the GAN term so
that its gradient at the decoder's last layer is as large as the reconstruction gradient. Without it the
adversarial term either swamps reconstruction early or vanishes later, depending on the data and the
discriminator's confidence. :func:`adaptive_adversarial_weight` computes that lambda.

For the GAN terms themselves prefer ``monai.losses.PatchAdversarialLoss`` with ``criterion="bce"`` or
``"least_squares"``. Its ``"hinge"`` criterion is not VQGAN's hinge: it passes the logits through
``tanh`` first, so ``relu(1 - tanh(x))`` never reaches its margin (the discriminator loss is never zero)
and the generator's gradient ``-sech(x)^2`` vanishes exactly when the discriminator is confident. The two
functions here are the margin hinge of VQGAN/SAGAN on raw logits: the discriminator stops pushing patches
that are already beyond the margin, and the generator loss ``-mean(logits)`` keeps a constant gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["adaptive_adversarial_weight", "hinge_discriminator_loss", "hinge_generator_loss"]


def adaptive_adversarial_weight(
    reconstruction_loss: Tensor,
    adversarial_loss: Tensor,
    last_layer_weight: Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> Tensor:
    """VQGAN's adaptive lambda: ``||grad_w L_rec|| / (||grad_w L_adv|| + eps)``, clamped to [0, max_weight].

    Args:
        reconstruction_loss: scalar reconstruction loss (the paper: perceptual; anything with a graph).
        adversarial_loss: scalar generator adversarial loss on the same forward pass.
        last_layer_weight: the weight of the decoder's last layer (e.g. ``decoder.final_conv.weight``);
            both losses must depend on it.
        max_weight: upper clamp; keeps lambda finite when the adversarial gradient is ~0.
        eps: added to the adversarial gradient norm.

    Returns:
        a detached scalar tensor: multiply ``adversarial_loss`` by it (and by any fixed GAN weight). The
        graph of both losses is retained, so ``backward()`` on the total loss still works.
    """
    for name, loss in (("reconstruction_loss", reconstruction_loss), ("adversarial_loss", adversarial_loss)):
        if not loss.requires_grad:
            raise ValueError(
                f"{name} has no autograd graph (computed under no_grad/eval?): the adaptive weight needs "
                "gradients with respect to the decoder's last layer"
            )
    (rec_grad,) = torch.autograd.grad(reconstruction_loss, last_layer_weight, retain_graph=True)
    (adv_grad,) = torch.autograd.grad(adversarial_loss, last_layer_weight, retain_graph=True)
    weight = torch.linalg.vector_norm(rec_grad) / (torch.linalg.vector_norm(adv_grad) + eps)
    return torch.clamp(weight, 0.0, max_weight).detach()


def hinge_discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """``0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake))))`` on raw patch logits (VQGAN's hinge)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_generator_loss(logits_fake: Tensor) -> Tensor:
    """``-mean(D(fake))`` on raw patch logits: the generator side of the hinge GAN (VQGAN, SAGAN)."""
    return -logits_fake.mean()
