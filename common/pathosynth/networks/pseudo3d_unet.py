"""Pseudo-3D diffusion UNet for thick-slice volumes (the LeFusion denoiser).

Why pseudo-3D
-------------
EMIDEC late-gadolinium-enhancement MRI has 5-10 short-axis slices, 10 mm apart, each 256x256 at ~1.5 mm.
A voxel is therefore about 7x longer through-plane than in-plane, and neighbouring slices show visibly
different anatomy. An isotropic 3D UNet would halve the 10 slices of a 72x72x10 training crop into 5, 3, 2, 1
and its 3x3x3 kernels would blend tissue 10 mm apart as if it were 1.5 mm apart. LeFusion's network is
pseudo-3D instead, and so is this one:

* every spatial operation (3x3 convolutions, down/upsampling, normalisation, 2D self-attention) acts on each
  slice's (H, W) plane only; the slice axis D is never resampled, so the output has exactly the input's D;
* information travels between slices only through two explicit through-plane branches: a (1, 1, 3)
  convolution after the first in-plane convolution of each residual block (neighbouring slices) and, closing
  every level and in the middle block, multi-head self-attention along D at every (b, h, w) location with a
  learned relative-position bias (all slices, distance-aware);
* both through-plane branches are residual with zero-initialised outputs, so a fresh network is exactly a
  2D UNet applied slice by slice, and training learns how much cross-slice context helps.

Tensor layout is MONAI channel-first ``(B, C, H, W, D)`` with the thick-slice axis LAST, so the in-plane
convolutions are ``Conv3d`` with kernel ``(3, 3, 1)`` and the slice convolution has kernel ``(1, 1, 3)``.

Zero initialisation
-------------------
The final convolution, the second convolution of every residual block, the slice convolutions and the output
projections of all attention layers start at zero. Hence a fresh network predicts exactly zero noise (the
mean of the epsilon target, the best constant guess), every residual block starts as its skip path and every
through-plane branch starts as the identity. This is the usual trick for stable diffusion training from the
first step; gradients still reach every layer after the first optimiser step (the final conv stops being 0).

Normalisation
-------------
GroupNorm statistics are computed per slice (over channel groups x H x W of one slice, like a 2D UNet
applied per slice), not over the whole volume. With volume-wide statistics every normalisation would silently
mix slices (a bright apical slice would shift the basal ones), which defeats the point of routing all
through-plane information through explicit branches, and a slice's features would depend on how many slices
the crop happens to have. The number of groups is ``min(norm_num_groups, channels)`` so tiny test networks
work with the GPU-scale default of 32, and every normalised channel count must be divisible by it: a clear
``ValueError`` is raised at construction otherwise (silently changing the group size would change the model).

Cost
----
In-plane attention is quadratic in H*W: on a 2-core CPU one layer over 36x36 in-plane positions of 20 slices
(2 heads) takes ~30 ms, more than all convolutions of a small network together. Flag only low-resolution
levels in ``attention_levels`` (the GPU default flags the 1/4 and 1/8 levels).

Condition vector
----------------
``condition_dim > 0`` adds an embedding of a condition vector (e.g. the lesion intensity histograms of the official
LeFusion code, :mod:`pathosynth.data.histograms`) to the time embedding, which sets the scale and shift of every
residual block: a global request ("a bright lesion") reaches every level without a new input channel. It arrives as
``context`` (MONAI's ``DiffusionInferer`` passes its condition there in ``"crossattn"`` mode). ``condition_dropout``
replaces it, per sample and in training mode only (like ``nn.Dropout``), by a learned null embedding, which is also
what ``context=None`` gives; so one network learns both eps(x, c) and eps(x, null) for classifier-free guidance. A
network trained without dropout has no meaningful null embedding and refuses ``context=None``.

The network is called exactly like MONAI's ``DiffusionModelUNet`` (``model(x=..., timesteps=..., context=...)``)
so MONAI's ``DiffusionInferer`` and our samplers can drive it, and it is ``torch.jit.trace``-able.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pseudo3d_layers import (
    Downsample,
    InPlaneConv3d,
    ResBlock,
    SliceAttention,
    SliceGroupNorm,
    SpatialAttention,
    Upsample,
    _cat_channels,
    _to_network_layout,
    _zero_,
    sinusoidal_timestep_embedding,
)

__all__ = ["Pseudo3DDiffusionUNet"]


class _Stage(nn.Module):
    """One residual block, optionally followed by in-plane attention and slice attention."""

    def __init__(self, res: ResBlock, spatial: nn.Module | None, slice_: nn.Module | None) -> None:
        super().__init__()
        self.res = res
        self.spatial_attn = spatial if spatial is not None else nn.Identity()
        self.slice_attn = slice_ if slice_ is not None else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.slice_attn(self.spatial_attn(self.res(x, emb)))


class Pseudo3DDiffusionUNet(nn.Module):
    """Pseudo-3D epsilon-prediction UNet for thick-slice volumes ``(B, C, H, W, D)``, D = slice axis (last).

    Args:
        spatial_dims: 3 for ``(B, C, H, W, D)`` input; 2 for ``(B, C, H, W)`` input (treated as D=1). Exists so
            MONAI-style configs can pass it.
        in_channels: input channels (noisy image channels).
        out_channels: output channels (predicted noise channels).
        channels: feature channels per resolution level; H and W are halved between levels, D never.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more per level).
        attention_levels: per level, whether to add in-plane 2D self-attention over H x W of each slice, once
            per level after its residual blocks, in the encoder and the decoder. Its cost grows with (H*W)**2:
            flag only low-resolution levels. The middle block always has in-plane attention.
        slice_attention: add self-attention along D at the end of every level (after its residual blocks, in
            the encoder and the decoder) and in the middle block.
        num_head_channels: channels per attention head.
        norm_num_groups: GroupNorm groups, capped at the channel count (see module docstring).
        dropout: dropout inside residual blocks.
        max_slices: largest supported D; sets the range of the relative slice-position bias.
        condition_dim: length of the condition vector embedded into the time embedding (0 = none).
        condition_dropout: probability, per training sample, that the condition is replaced by the null embedding.

    Call like MONAI's ``DiffusionModelUNet``: ``model(x=x_t, timesteps=t)``. ``context`` is the (B, condition_dim)
    condition vector when ``condition_dim > 0`` and must be None otherwise: this network has no cross-attention, and
    silently ignoring a conditioning tensor would train an unconditional model by mistake. ``class_labels`` exists
    for that signature only and must be None.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 256),
        num_res_blocks: int = 2,
        attention_levels: Sequence[bool] = (False, False, True, True),
        slice_attention: bool = True,
        num_head_channels: int = 32,
        norm_num_groups: int = 32,
        dropout: float = 0.0,
        max_slices: int = 32,
        condition_dim: int = 0,
        condition_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 3 (B, C, H, W, D) or 2 (B, C, H, W); got {spatial_dims}.")
        channels = tuple(int(c) for c in channels)
        attention_levels = tuple(bool(a) for a in attention_levels)
        if len(channels) < 1:
            raise ValueError("channels must list at least one level.")
        if len(attention_levels) != len(channels):
            raise ValueError(
                f"attention_levels needs one flag per level: got {len(attention_levels)} flags for "
                f"{len(channels)} levels (channels={channels})."
            )
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1; got {num_res_blocks}.")
        if max_slices < 1:
            raise ValueError(f"max_slices must be >= 1; got {max_slices}.")
        if condition_dim < 0 or not 0.0 <= condition_dropout < 1.0:
            raise ValueError(
                f"condition_dim must be >= 0 and condition_dropout in [0, 1); got {condition_dim}, {condition_dropout}."
            )

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        self.num_res_blocks = num_res_blocks
        self.attention_levels = attention_levels
        self.slice_attention = slice_attention
        self.max_slices = max_slices
        self.size_multiple = 2 ** (len(channels) - 1)

        emb_dim = 4 * channels[0]
        self.time_embed = nn.Sequential(nn.Linear(channels[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.condition_dim = int(condition_dim)
        self.condition_dropout = float(condition_dropout)
        if self.condition_dim:
            self.condition_embed = nn.Sequential(
                nn.Linear(self.condition_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
            )
        if self.condition_dim and self.condition_dropout:  # only then trained (DDP refuses unused parameters)
            self.null_condition = nn.Parameter(torch.zeros(emb_dim))

        def stage(cin: int, cout: int, spatial: bool, last_of_level: bool) -> _Stage:
            # attention layers close a level (after its residual blocks), once per level
            return _Stage(
                ResBlock(cin, cout, emb_dim, norm_num_groups, dropout),
                SpatialAttention(cout, num_head_channels, norm_num_groups) if spatial and last_of_level else None,
                SliceAttention(cout, num_head_channels, norm_num_groups, max_slices)
                if slice_attention and last_of_level
                else None,
            )

        self.conv_in = InPlaneConv3d(in_channels, channels[0])

        # encoder; skip_chs records the channels of every tensor pushed on the skip stack
        self.down_stages = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        skip_chs = [channels[0]]
        ch = channels[0]
        for level, level_ch in enumerate(channels):
            blocks = nn.ModuleList()
            for i in range(num_res_blocks):
                blocks.append(stage(ch, level_ch, attention_levels[level], i == num_res_blocks - 1))
                ch = level_ch
                skip_chs.append(ch)
            self.down_stages.append(blocks)
            if level < len(channels) - 1:
                self.downsamplers.append(Downsample(ch))
                skip_chs.append(ch)

        # middle: res, in-plane attention (+ slice attention), res
        self.mid_stage = stage(ch, ch, True, True)
        self.mid_res = ResBlock(ch, ch, emb_dim, norm_num_groups, dropout)

        # decoder (mirrors the encoder; each block concatenates one skip tensor)
        self.up_stages = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(len(channels))):
            blocks = nn.ModuleList()
            for i in range(num_res_blocks + 1):
                blocks.append(stage(ch + skip_chs.pop(), channels[level], attention_levels[level], i == num_res_blocks))
                ch = channels[level]
            self.up_stages.append(blocks)
            if level > 0:
                self.upsamplers.append(Upsample(ch))

        self.out_norm = SliceGroupNorm(ch, norm_num_groups)
        self.conv_out = _zero_(InPlaneConv3d(ch, out_channels))

    def _check_input(self, x: Tensor) -> None:
        expected_dim = 4 if self.spatial_dims == 2 else 5
        if x.dim() != expected_dim:
            layout = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, H, W, D)"
            raise ValueError(f"expected a {expected_dim}-D input {layout}; got shape {tuple(x.shape)}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels; got {x.shape[1]} (shape {tuple(x.shape)}).")
        h, w = x.shape[2], x.shape[3]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"H and W must be divisible by {m} (2**(len(channels)-1), {len(self.channels)} levels); "
                f"got H={h}, W={w}. Crop or pad in-plane to a multiple of {m}."
            )
        if self.spatial_dims == 3 and not 1 <= x.shape[4] <= self.max_slices:
            raise ValueError(
                f"the slice axis D (last) must have 1..max_slices={self.max_slices} slices; got D={x.shape[4]}."
            )

    def _timesteps(self, timesteps: Tensor | int, batch: int, device: torch.device) -> Tensor:
        if not isinstance(timesteps, Tensor):
            timesteps = torch.tensor(timesteps, device=device)
        timesteps = timesteps.to(device)
        if timesteps.dim() == 0 or (timesteps.dim() == 1 and timesteps.shape[0] == 1 and batch != 1):
            timesteps = timesteps.reshape(1).expand(batch)
        if timesteps.dim() != 1 or timesteps.shape[0] != batch:
            raise ValueError(
                f"timesteps must be a scalar or a 1-D tensor of length B={batch}; got shape {tuple(timesteps.shape)}."
            )
        return timesteps

    def _condition_embedding(self, context: Tensor | None, batch: int, dtype: torch.dtype) -> Tensor:
        """(B, emb_dim): the embedded condition, or the null embedding where it is absent or dropped."""
        if context is None:
            if not self.condition_dropout:
                raise ValueError(
                    f"this network is conditioned on a {self.condition_dim}-vector (`context`) and was built without "
                    "condition_dropout, so it has no trained null embedding; pass the condition"
                )
            return self.null_condition.to(dtype).expand(batch, -1)
        context = context.reshape(context.shape[0], -1).to(dtype)
        if context.shape != (batch, self.condition_dim):
            raise ValueError(f"context must have shape (B={batch}, {self.condition_dim}); got {tuple(context.shape)}.")
        embedded = self.condition_embed(context)
        if self.training and self.condition_dropout:
            drop = torch.rand(batch, device=embedded.device) < self.condition_dropout
            embedded = torch.where(drop[:, None], self.null_condition.to(dtype).expand(batch, -1), embedded)
        return embedded

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor | int,
        context: Tensor | None = None,
        class_labels: Tensor | None = None,
    ) -> Tensor:
        """Predict the noise in ``x`` at diffusion step ``timesteps``; output has the shape of ``x``."""
        if context is not None and not self.condition_dim:
            raise ValueError(
                f"Pseudo3DDiffusionUNet has no cross-attention: `context` must be None (got {type(context).__name__} "
                f"of shape {tuple(getattr(context, 'shape', ()))}). Condition by input channels instead."
            )
        if class_labels is not None:
            raise ValueError("Pseudo3DDiffusionUNet has no class embedding: `class_labels` must be None.")
        self._check_input(x)
        if self.spatial_dims == 2:
            x = x.unsqueeze(-1)
        t = self._timesteps(timesteps, x.shape[0], x.device)
        emb = self.time_embed(sinusoidal_timestep_embedding(t, self.channels[0]).to(x.dtype))
        if self.condition_dim:
            emb = emb + self._condition_embedding(context, x.shape[0], emb.dtype)

        h = self.conv_in(_to_network_layout(x))
        skips = [h]
        for level, blocks in enumerate(self.down_stages):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if level < len(self.downsamplers):
                h = self.downsamplers[level](h)
                skips.append(h)

        h = self.mid_res(self.mid_stage(h, emb), emb)

        for i, blocks in enumerate(self.up_stages):
            for block in blocks:
                h = block(_cat_channels(h, skips.pop()), emb)
            if i < len(self.upsamplers):
                h = self.upsamplers[i](h)

        out = self.conv_out(F.silu(self.out_norm(h))).contiguous()  # back to the standard (B, C, H, W, D) layout
        if self.spatial_dims == 2:
            out = out.squeeze(-1)
        return out
