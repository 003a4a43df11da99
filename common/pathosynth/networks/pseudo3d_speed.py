"""How much the pseudo-3D convolutions save: time of our in-plane / through-plane convolutions against torch's Conv3d
on the same weights and input, as ratios measured in one process (``python -m pathosynth.cli pseudo3d_benchmark``).

A benchmark, not a test: wall-clock ratios move with the machine and its load, so the suite checks only that both
paths compute the same numbers (tests/test_pseudo3d_unet.py) and this command reports the speed. The two paths are
timed interleaved, on one thread, so load from other processes hits both alike; the minimum over the rounds is kept.
"""

from __future__ import annotations

import time

import torch

from .pseudo3d_layers import InPlaneConv3d, SliceConv3d, _to_network_layout


def conv_speed_ratios(
    channels: int = 16, shape: tuple[int, int, int] = (72, 72, 10), rounds: int = 15, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per convolution kind: our time, Conv3d's time (best of ``rounds``, seconds), their ratio and the largest
    difference between the two outputs."""
    generator = torch.Generator().manual_seed(seed)
    x = _to_network_layout(torch.randn(1, channels, *shape, generator=generator))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = {}
    try:
        for conv in (InPlaneConv3d(channels, channels), SliceConv3d(channels)):
            with torch.no_grad():
                conv.weight.normal_(generator=generator)
                paths = {"ours": conv, "conv3d": lambda v, conv=conv: torch.nn.Conv3d.forward(conv, v)}
                times = {name: [] for name in paths}
                for _ in range(rounds):
                    for name, path in paths.items():
                        start = time.perf_counter()
                        path(x)
                        times[name].append(time.perf_counter() - start)
                difference = float((conv(x) - torch.nn.Conv3d.forward(conv, x)).abs().max())
            best = {name: min(values) for name, values in times.items()}
            results[type(conv).__name__] = {
                "ours_s": best["ours"],
                "conv3d_s": best["conv3d"],
                "ratio": best["ours"] / best["conv3d"],
                "max_abs_difference": difference,
            }
    finally:
        torch.set_num_threads(threads)
    return results
