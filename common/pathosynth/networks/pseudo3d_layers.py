"""Building blocks of the pseudo-3D diffusion UNet: in-plane / through-plane convolutions, per-slice
normalisation, in-plane and slice attention, in-plane resampling (see :mod:`.pseudo3d_unet` for why).

Tensors are MONAI channel-first ``(B, C, H, W, D)`` with the thick-slice axis D last. Every block keeps D.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _zero_(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` (used for the output layer of every residual branch)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


# Memory layout. Logically every feature map is MONAI's (B, C, H, W, D), and that is what every module receives
# and returns. Physically the network stores them as contiguous (B, D, H, W, C) buffers ("slice-major, channels
# last"), which is channels_last_3d for the (B, C, D, H, W) view. In that layout a volume is, without copying,
# a batch of B*D channels-last images (for per-slice GroupNorm and in-plane attention), the token matrix of the
# in-plane attention, and a tensor the oneDNN 3D convolution consumes directly (about twice as fast on CPU as
# channels-first). Only the slice attention and the network's input and output need a real transpose. Modules
# accept any layout (an op copies where it must); the layout is purely a speed choice, never a semantic one.


def _phys(x: Tensor) -> Tensor:
    """(B, C, H, W, D) -> (B, D, H, W, C) view; this permutation is its own inverse."""
    return x.permute(0, 4, 2, 3, 1)


def _to_network_layout(x: Tensor) -> Tensor:
    """Copy a (B, C, H, W, D) tensor into the network's physical layout (same values and shape)."""
    return _phys(_phys(x).contiguous())


def _cat_channels(a: Tensor, b: Tensor) -> Tensor:
    """Channel concatenation of two (B, C, H, W, D) maps that keeps the network's layout."""
    return _phys(torch.cat([_phys(a), _phys(b)], dim=-1))


class _DHWConv3d(nn.Conv3d):
    """``nn.Conv3d`` on (B, C, H, W, D) whose kernel is in-plane (kh, kw, 1) or through-plane (1, 1, kd).

    Weights keep the Conv3d shape (so checkpoints read as ordinary 3D convolutions), but the arithmetic runs
    as a 2D convolution on views of the network's (B, D, H, W, C) buffer: a batch of B*D channels-last images
    for in-plane kernels, a (B, C, D, H*W) channels-last image with a (kd, 1) kernel for through-plane ones.
    oneDNN's 2D kernels are 5-10x faster on CPU than its 3D fallback for these degenerate 3D kernels.
    """

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w, d = x.shape
        (kh, kw, kd), (sh, sw, sd), (ph, pw, pd) = self.kernel_size, self.stride, self.padding
        if kd == 1 and sd == 1 and pd == 0:
            images = _phys(x).reshape(b * d, h, w, -1).permute(0, 3, 1, 2)
            y = F.conv2d(images, self.weight[..., 0], self.bias, stride=(sh, sw), padding=(ph, pw))
            y = y.permute(0, 2, 3, 1).reshape(b, d, y.shape[2], y.shape[3], -1)
            return _phys(y)
        if kh == kw == 1 and sh == sw == 1 and ph == pw == 0:
            columns = _phys(x).reshape(b, d, h * w, -1).permute(0, 3, 1, 2)
            y = F.conv2d(columns, self.weight[:, :, 0, 0, :, None], self.bias, stride=(sd, 1), padding=(pd, 0))
            y = y.permute(0, 2, 3, 1).reshape(b, y.shape[2], h, w, -1)
            return _phys(y)
        return super().forward(x)


class InPlaneConv3d(_DHWConv3d):
    """Conv3d with kernel (k, k, 1), stride (s, s, 1), padding (k // 2, k // 2, 0): a 2D convolution of every
    slice, never across slices."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        pad = kernel_size // 2
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=(kernel_size, kernel_size, 1),
            stride=(stride, stride, 1),
            padding=(pad, pad, 0),
        )


class SliceConv3d(_DHWConv3d):
    """Conv3d with kernel (1, 1, 3) and padding (0, 0, 1): mixes each voxel with the same voxel of the two
    neighbouring slices (zero padding beyond the first and last slice)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, kernel_size=(1, 1, 3), padding=(0, 0, 1))


def _num_groups(channels: int, norm_num_groups: int) -> int:
    groups = min(norm_num_groups, channels)
    if channels % groups != 0:
        raise ValueError(
            f"GroupNorm needs the channel count to be divisible by the number of groups; got {channels} channels "
            f"and {groups} groups (min(norm_num_groups={norm_num_groups}, {channels})). Choose `channels` that "
            f"are multiples of `norm_num_groups` (skip concatenations in the decoder sum two levels' channels)."
        )
    return groups


class SliceGroupNorm(nn.Module):
    """GroupNorm with statistics per slice: over (channels of a group, H, W) separately for every D index.

    Equivalent to ``nn.GroupNorm`` applied to each ``x[..., d]`` as a 2D image, so normalisation never carries
    information between slices (see the module docstring).
    """

    def __init__(self, channels: int, norm_num_groups: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_groups = _num_groups(channels, norm_num_groups)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w, d = x.shape
        slices = x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)  # a batch of B*D images (a view in our layout)
        y = F.group_norm(slices, self.num_groups, self.weight, self.bias, self.eps)
        return y.reshape(b, d, c, h, w).permute(0, 2, 3, 4, 1)


def sinusoidal_timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal embedding of (integer) diffusion timesteps, shape ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / max(half, 1)
    )
    args = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """Residual block whose first convolution is pseudo-3D, with FiLM time conditioning.

        h = conv1(silu(norm1(x)))                 in-plane (3, 3, 1)
        h = h + slice_conv(h)                     through-plane (1, 1, 3), zero-initialised residual branch
        h = silu(norm2(h) * (1 + scale) + shift)  FiLM by the time embedding
        out = skip(x) + conv2(dropout(h))         in-plane (3, 3, 1), zero-initialised

    The (3, 3, 1) then (1, 1, 3) pair is the factorised "pseudo-3D" convolution of P3D / Make-A-Video: it sees
    a 3x3x3 neighbourhood with far fewer weights than a 3D kernel, and with the through-plane part starting at
    zero the block starts exactly as a 2D block applied to each slice. It needs no normalisation of its own (the
    branch reads the conv1 output that norm2 normalises next), which keeps the block cheap on CPU.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, norm_num_groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = SliceGroupNorm(in_ch, norm_num_groups)
        self.conv1 = InPlaneConv3d(in_ch, out_ch)
        self.slice_conv = _zero_(SliceConv3d(out_ch))
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = SliceGroupNorm(out_ch, norm_num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero_(InPlaneConv3d(out_ch, out_ch))
        self.skip = nn.Identity() if in_ch == out_ch else InPlaneConv3d(in_ch, out_ch, kernel_size=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.slice_conv(h)
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, self.norm2(h), 1 + scale)  # FiLM; keeps h's memory layout
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


def _num_heads(channels: int, num_head_channels: int) -> int:
    if channels % num_head_channels != 0 and channels > num_head_channels:
        raise ValueError(
            f"attention at {channels} channels needs them divisible by num_head_channels={num_head_channels}."
        )
    return max(1, channels // num_head_channels)


class SpatialAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of each slice separately (global in-plane context).

    Its cost grows with (H*W)**2, so it belongs at low-resolution levels; slices are independent images here.
    """

    def __init__(self, channels: int, num_head_channels: int, norm_num_groups: int) -> None:
        super().__init__()
        self.num_heads = _num_heads(channels, num_head_channels)
        self.norm = SliceGroupNorm(channels, norm_num_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = _zero_(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w, d = x.shape
        n, hd = b * d, c // self.num_heads
        t = _phys(self.norm(x)).reshape(n, h * w, c)  # (B*D, H*W, C): one token sequence per slice
        q, k, v = self.qkv(t).reshape(n, h * w, 3, self.num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v)  # (B*D, heads, H*W, hd)
        a = self.out(a.transpose(1, 2).reshape(n, h * w, c))
        return x + _phys(a.view(b, d, h, w, c))


class SliceAttention(nn.Module):
    """Multi-head self-attention along the slice axis D, independently at every (b, h, w) location.

    Lets distant slices exchange information (e.g. a transmural infarct spans several slices) without
    resampling D. A learned bias per head and relative slice distance (clipped to +-max_slices) tells the
    attention how far apart two slices are, which plain dot-product attention is blind to. Works for any
    D in [1, max_slices]; with D=1 it reduces to a per-voxel linear map (zero at initialisation).
    """

    def __init__(self, channels: int, num_head_channels: int, norm_num_groups: int, max_slices: int) -> None:
        super().__init__()
        self.num_heads = _num_heads(channels, num_head_channels)
        self.norm = SliceGroupNorm(channels, norm_num_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = _zero_(nn.Linear(channels, channels))
        # learned bias per head for every relative distance i - j, stored at index (i - j) + max_slices
        self.rel_bias = nn.Parameter(torch.zeros(2 * max_slices + 1, self.num_heads))
        pos = torch.arange(max_slices)
        rel = (pos[:, None] - pos[None, :]).clamp(-max_slices, max_slices) + max_slices
        self.register_buffer("rel_index", rel, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w, d = x.shape
        n, hd = b * h * w, c // self.num_heads
        t = self.norm(x).permute(0, 2, 3, 4, 1).reshape(n, d, c)  # (B*H*W, D, C): one sequence per location
        q, k, v = self.qkv(t).reshape(n, d, 3, self.num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.rel_bias[self.rel_index[:d, :d]].permute(2, 0, 1).unsqueeze(0).to(q.dtype)  # (1, heads, D, D)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B*H*W, heads, D, hd)
        a = self.out(a.transpose(1, 2).reshape(n, d, c))
        # (B, H, W, D, C) -> the network's (B, D, H, W, C) buffer, viewed as (B, C, H, W, D)
        a = a.view(b, h, w, d, c).permute(0, 3, 1, 2, 4).contiguous()
        return x + _phys(a)


class Downsample(nn.Module):
    """Halve H and W with a strided (3, 3, 1) convolution; D untouched."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = InPlaneConv3d(channels, channels, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W (nearest x(2, 2, 1)) then a (3, 3, 1) convolution; D untouched."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = InPlaneConv3d(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        # nearest x(2, 2, 1): repeat every in-plane pixel 2x2 (one copy; faster than F.interpolate on CPU)
        b, c, h, w, d = x.shape
        p = _phys(x)[:, :, :, None, :, None, :].expand(b, d, h, 2, w, 2, c).reshape(b, d, 2 * h, 2 * w, c)
        return self.conv(_phys(p))
