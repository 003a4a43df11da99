"""The text-conditioned denoiser (UNet + its prompt encoder as one module) and the ControlNet made from it.

Stage 1 of EMIT-Diff trains (here: from scratch) a cross-attention UNet on prompts. The learned prompt encoder is
trained jointly, so both live in one module: one state dict in the checkpoint, one DDP wrapper, one optimizer.
Its ``context`` may be token ids (long; embedded inside, so gradients reach the encoder) or an already encoded
context (float; stage 2 and sampling encode a prompt once and reuse it for every step).

Stage 2 adds a ControlNet (Zhang & Agrawala 2023): a trainable copy of the UNet's encoder (input conv, time
embedding, down blocks, middle block) whose outputs enter the frozen UNet through zero-initialised 1x1
convolutions, so training starts exactly at the stage-1 model. :func:`controlnet_from_unet` makes that copy and
checks that every encoder tensor was copied.
"""

from __future__ import annotations

import logging

import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet
from torch import nn

from ..distributed import unwrap

logger = logging.getLogger(__name__)


class TextConditionedUNet(nn.Module):
    """A MONAI ``DiffusionModelUNet`` (``with_conditioning=True``) with its prompt encoder.

    Args:
        unet: the cross-attention UNet; its ``cross_attention_dim`` must equal the encoder's ``dim``.
        text_encoder: a :mod:`pathosynth.text.encoders` encoder (``tokenize``, ``forward``, ``dim``).
    """

    def __init__(self, unet: DiffusionModelUNet, text_encoder: nn.Module) -> None:
        super().__init__()
        if not getattr(unet, "with_conditioning", False):
            raise ValueError("the UNet needs with_conditioning=True (cross-attention on the prompt)")
        attention_dim = _cross_attention_dim(unet)
        if attention_dim is not None and attention_dim != text_encoder.dim:
            raise ValueError(
                f"UNet cross_attention_dim {attention_dim} differs from the text encoder's dim {text_encoder.dim}"
            )
        self.unet = unet
        self.text_encoder = text_encoder
        self.in_channels = unet.in_channels

    def tokenize(self, prompts) -> torch.Tensor:
        return self.text_encoder.tokenize(prompts)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, dim) context."""
        return self.text_encoder(ids)

    def forward(
        self, x, timesteps, context=None, down_block_additional_residuals=None, mid_block_additional_residual=None
    ):
        if context is not None and not torch.is_floating_point(context):
            context = self.encode_text(context)
        return self.unet(
            x,
            timesteps=timesteps,
            context=context,
            down_block_additional_residuals=down_block_additional_residuals,
            mid_block_additional_residual=mid_block_additional_residual,
        )


def _cross_attention_dim(unet) -> int | None:
    """Input width of the first cross-attention key projection (MONAI names them ``...attn2.to_k``)."""
    for name, module in unet.named_modules():
        if name.endswith("attn2.to_k"):
            return int(module.in_features)
    return None


def encoder_tensor_names(controlnet: ControlNet) -> list[str]:
    """Names of the ControlNet tensors that mirror the UNet encoder (everything but the conditioning embedding and the
    zero convolutions, which the UNet does not have)."""
    own = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")
    return [k for k in unwrap(controlnet).state_dict() if not k.startswith(own)]


def controlnet_from_unet(controlnet: ControlNet, unet: nn.Module) -> ControlNet:
    """Copy the UNet's encoder weights into ``controlnet`` (ControlNet initialisation); returns ``controlnet``.

    ``unet`` may be the bare ``DiffusionModelUNet`` or a :class:`TextConditionedUNet`. Raises when an encoder tensor
    of the ControlNet has no same-named, same-shaped tensor in the UNet (the two were built with different sizes).
    """
    source = unwrap(unet)
    source = source.unet if isinstance(source, TextConditionedUNet) else source
    target = unwrap(controlnet)
    unet_state = source.state_dict()
    wanted = encoder_tensor_names(target)
    own_state = target.state_dict()
    missing = [k for k in wanted if k not in unet_state or unet_state[k].shape != own_state[k].shape]
    if missing:
        raise ValueError(
            f"the ControlNet does not match the UNet's encoder ({len(missing)} tensors differ, e.g. {missing[:4]}); "
            "build both with the same channels, attention levels, res blocks, heads and cross_attention_dim"
        )
    target.load_state_dict({k: unet_state[k] for k in wanted}, strict=False)
    logger.info(f"ControlNet initialised from the UNet encoder ({len(wanted)} tensors copied)")
    return controlnet


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients (the stage-1 model while the ControlNet trains)."""
    return module.eval().requires_grad_(False)
