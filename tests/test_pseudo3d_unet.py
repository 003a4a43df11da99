"""Claims about the pseudo-3D LeFusion denoiser (pathosynth.networks.pseudo3d_unet).

Thick-slice EMIDEC volumes (5-10 slices, 10 mm apart) must never be resampled along the slice axis D, slices
may exchange information only through the explicit through-plane branches, and a fresh network must predict
zero noise. Every test perturbs or compares so that it would fail if the claim were false.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pathosynth.networks.pseudo3d_layers import (
    InPlaneConv3d,
    SliceAttention,
    SliceConv3d,
    SliceGroupNorm,
    _to_network_layout,
)
from pathosynth.networks.pseudo3d_unet import Pseudo3DDiffusionUNet

TINY = dict(
    in_channels=2,
    out_channels=2,
    channels=(8, 16),
    num_res_blocks=1,
    attention_levels=(False, True),
    norm_num_groups=4,
    num_head_channels=8,
)


def tiny(**overrides) -> Pseudo3DDiffusionUNet:
    torch.manual_seed(0)
    return Pseudo3DDiffusionUNet(**{**TINY, **overrides}).eval()


def perturb_(net: nn.Module, std: float = 0.05) -> nn.Module:
    """Move every parameter (zero-initialised ones included) away from its initial value."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return net


def zero_(modules) -> None:
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.zero_()


def slice_convs(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, SliceConv3d)]


def run(net: nn.Module, x: torch.Tensor, t=10) -> torch.Tensor:
    with torch.no_grad():
        return net(x, torch.full((x.shape[0],), t, dtype=torch.long))


def changed_slices(net: nn.Module, d: int, k: int, hw: int = 16) -> torch.Tensor:
    """Per output slice, the largest change caused by changing only input slice k."""
    torch.manual_seed(2)
    x = torch.randn(2, 2, hw, hw, d)
    x2 = x.clone()
    x2[..., k] = torch.randn(2, 2, hw, hw)
    return (run(net, x2) - run(net, x)).abs().amax(dim=(0, 1, 2, 3))


@pytest.mark.parametrize("d", [1, 5, 7, 10])
def test_output_shape_equals_input_shape_for_any_slice_count(d):
    x = torch.randn(2, 2, 24, 24, d)
    assert run(perturb_(tiny()), x).shape == x.shape


def test_slice_axis_is_never_downsampled_while_height_halves_per_level():
    net = tiny(channels=(8, 16, 16), attention_levels=(False, False, True))
    seen = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: seen.append((tuple(args[0].shape), mod.stride)))
        for m in net.modules()
        if isinstance(m, nn.Conv3d)
    ]
    run(net, torch.randn(1, 2, 32, 32, 7))
    for h in hooks:
        h.remove()
    assert len(seen) == sum(isinstance(m, nn.Conv3d) for m in net.modules())
    assert {shape[-1] for shape, _ in seen} == {7}
    assert {stride[-1] for _, stride in seen} == {1}
    assert sorted({shape[2] for shape, _ in seen}) == [8, 16, 32]
    # only the dedicated slice convolutions have a kernel wider than 1 along D
    wide = [m for m in net.modules() if isinstance(m, nn.Conv3d) and m.kernel_size[-1] > 1]
    assert wide and all(isinstance(m, SliceConv3d) and m.kernel_size == (1, 1, 3) for m in wide)


def test_slice_convolutions_alone_carry_information_between_slices():
    net = perturb_(tiny(slice_attention=False))
    change = changed_slices(net, d=7, k=3)
    assert (change[[0, 1, 2, 4, 5, 6]] > 1e-4).all(), change


def test_slice_attention_alone_reaches_the_farthest_slice():
    net = perturb_(tiny())
    zero_(slice_convs(net))  # only the attention along D can mix slices now
    change = changed_slices(net, d=7, k=0)
    assert (change[1:] > 1e-4).all(), change


def test_without_through_plane_branches_slices_are_processed_independently():
    """Per-slice independence proves every remaining op (convs, norms, resampling, 2D attention) is in-plane."""
    net = perturb_(tiny(slice_attention=False))
    zero_(slice_convs(net))
    change = changed_slices(net, d=7, k=3)
    assert change[3] > 1e-2  # the changed slice itself does respond
    assert torch.all(change[[0, 1, 2, 4, 5, 6]] <= 1e-6), change


def test_fresh_through_plane_branches_are_identity():
    """With zero-initialised slice convs and slice-attention outputs a network is a per-slice 2D UNet."""
    net = perturb_(tiny())
    zero_(slice_convs(net))
    zero_(m.out for m in net.modules() if isinstance(m, SliceAttention))
    change = changed_slices(net, d=5, k=2)
    assert change[2] > 1e-2
    assert torch.all(change[[0, 1, 3, 4]] <= 1e-6), change


def test_fresh_network_predicts_exactly_zero_noise():
    out = run(tiny(), torch.randn(2, 2, 16, 16, 5))
    assert torch.count_nonzero(out) == 0


def test_timestep_changes_the_prediction_and_accepts_scalar_forms():
    net = perturb_(tiny())
    x = torch.randn(2, 2, 16, 16, 5)
    with torch.no_grad():
        early, late = net(x, torch.tensor([1, 1])), net(x, torch.tensor([250, 250]))
        assert (early - late).abs().max() > 1e-3
        torch.testing.assert_close(net(x, 250), late)
        torch.testing.assert_close(net(x, torch.tensor(250)), late)
        mixed = net(x, torch.tensor([1, 250]))
    torch.testing.assert_close(mixed[0], early[0])
    torch.testing.assert_close(mixed[1], late[1])


def test_clear_errors_for_bad_inputs():
    net = tiny(channels=(8, 16, 16), attention_levels=(False, False, True), max_slices=8)
    t = torch.tensor([3])
    with pytest.raises(ValueError, match=r"divisible by 4.*H=30, W=32"):
        net(torch.randn(1, 2, 30, 32, 5), t)
    with pytest.raises(ValueError, match=r"max_slices=8.*D=9"):
        net(torch.randn(1, 2, 32, 32, 9), t)
    with pytest.raises(ValueError, match="expected 2 input channels; got 3"):
        net(torch.randn(1, 3, 32, 32, 5), t)
    with pytest.raises(ValueError, match="context"):
        net(torch.randn(1, 2, 32, 32, 5), t, context=torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="timesteps"):
        net(torch.randn(1, 2, 32, 32, 5), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="spatial_dims"):
        Pseudo3DDiffusionUNet(spatial_dims=1)
    with pytest.raises(ValueError, match="divisible by the number of groups"):
        Pseudo3DDiffusionUNet(channels=(8, 12), attention_levels=(False, False), norm_num_groups=8)


def test_layout_tricks_compute_exactly_conv3d_and_per_slice_groupnorm():
    torch.manual_seed(3)
    x = torch.randn(2, 8, 12, 10, 5)
    x_internal = _to_network_layout(x)  # same values, the (B, D, H, W, C) memory layout used inside the network
    convs = (InPlaneConv3d(8, 4), InPlaneConv3d(8, 4, stride=2), InPlaneConv3d(8, 4, kernel_size=1), SliceConv3d(8))
    for conv in convs:
        ref = nn.functional.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding)
        torch.testing.assert_close(conv(x), ref)
        torch.testing.assert_close(conv(x_internal), ref)
    norm = SliceGroupNorm(8, 4)
    perturb_(norm, std=0.5)
    gn = nn.GroupNorm(4, 8, eps=norm.eps)
    gn.load_state_dict(norm.state_dict())
    ref = torch.stack([gn(x[..., d]) for d in range(x.shape[-1])], dim=-1)
    torch.testing.assert_close(norm(x), ref)
    torch.testing.assert_close(norm(x_internal), ref)


def test_torch_jit_trace_matches_eager():
    net = perturb_(tiny())
    x, t = torch.randn(2, 2, 16, 16, 6), torch.tensor([5, 100])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants: expected
        traced = torch.jit.trace(net, (x, t))
        x2, t2 = torch.randn_like(x), torch.tensor([7, 42])
        eager = net(x2, t2)
        assert eager.abs().max() > 1e-3
        torch.testing.assert_close(traced(x2, t2), eager)


def test_two_dimensional_input_is_the_single_slice_case():
    net3 = perturb_(tiny())
    net2 = tiny(spatial_dims=2)
    net2.load_state_dict(net3.state_dict())
    x = torch.randn(2, 2, 16, 16)
    out = run(net2, x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, run(net3, x[..., None])[..., 0])


def test_gradients_reach_the_first_convolution_after_one_step():
    net = tiny().train()
    x, target, t = torch.randn(2, 2, 16, 16, 5), torch.randn(2, 2, 16, 16, 5), torch.tensor([3, 200])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    nn.functional.mse_loss(net(x, t), target).backward()
    # the zero-initialised output conv blocks gradients on the very first step only
    assert torch.count_nonzero(net.conv_in.weight.grad) == 0
    assert torch.count_nonzero(net.conv_out.weight.grad) > 0
    opt.step()
    opt.zero_grad()
    nn.functional.mse_loss(net(x, t), target).backward()
    grad = net.conv_in.weight.grad
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_monai_diffusion_inferer_drives_the_network():
    from monai.inferers import DiffusionInferer
    from monai.networks.schedulers import DDPMScheduler

    net = perturb_(tiny(in_channels=1, out_channels=1))
    inferer = DiffusionInferer(DDPMScheduler(num_train_timesteps=300))
    x = torch.randn(2, 1, 16, 16, 5)
    with torch.no_grad():
        pred = inferer(inputs=x, diffusion_model=net, noise=torch.randn_like(x), timesteps=torch.tensor([3, 200]))
    assert pred.shape == x.shape and pred.abs().max() > 0


def test_default_gpu_scale_config_builds_and_runs():
    net = Pseudo3DDiffusionUNet().eval()
    x = torch.randn(1, 1, 64, 64, 10)
    out = run(net, x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert sum(p.numel() for p in net.parameters()) > 10_000_000


def test_in_plane_convolutions_compute_what_conv3d_computes_and_the_benchmark_reports_their_speed():
    """The (3,3,1)/(1,1,3) convolutions are evaluated as 2D convolutions on views of the slice-major buffer: the same
    numbers as torch's Conv3d on the same weights. Their speed (about half of Conv3d's time on 2 CPU cores) is a
    benchmark, not a test: ``python -m pathosynth.cli pseudo3d_benchmark`` reports the ratios."""
    from pathosynth.networks.pseudo3d_layers import InPlaneConv3d, SliceConv3d, _to_network_layout
    from pathosynth.networks.pseudo3d_speed import conv_speed_ratios

    x = _to_network_layout(torch.randn(1, 8, 24, 24, 6))
    for conv in (InPlaneConv3d(8, 8), SliceConv3d(8)):
        torch.nn.init.normal_(conv.weight)
        with torch.no_grad():
            assert torch.allclose(conv(x), torch.nn.Conv3d.forward(conv, x), atol=1e-4)
    report = conv_speed_ratios(channels=4, shape=(16, 16, 4), rounds=2)
    assert set(report) == {"InPlaneConv3d", "SliceConv3d"}
    for kind in report.values():
        assert kind["ratio"] == pytest.approx(kind["ours_s"] / kind["conv3d_s"]) and kind["max_abs_difference"] < 1e-4
