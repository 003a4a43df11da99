"""FQCDM stage 2 under torchrun (multi_gpu_train_diffusion.json): the DDP-wrapped SPADE denoiser still sees the label
map, every rank trains the same latent normalisation, and rank 0's checkpoint serves single-process inference.

The inferer is checked in process (a 1-process gloo group); the latent statistics with 2 spawned gloo processes and the
bundle run (stage 1 single process, stage 2 on 2 CPU processes, then inference) are multi-process, so marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from monai.networks.nets import SPADEDiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler
from torch.nn.parallel import DistributedDataParallel

from conftest import BUNDLES, run_bundle
from pathosynth.io.nifti import read_nifti

BUNDLE = "label_guided_latent_diffusion"
CONFIGS = BUNDLES / BUNDLE / "configs"


def _denoiser() -> SPADEDiffusionModelUNet:
    """A tiny SPADE denoiser with every layer re-initialised: MONAI zero-initialises the last convolution of each
    block, so a fresh network ignores its label map (and outputs 0) until trained."""
    torch.manual_seed(0)
    network = SPADEDiffusionModelUNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=3,
        label_nc=4,
        channels=[8, 16],
        attention_levels=[False, False],
        num_res_blocks=1,
        num_head_channels=8,
        norm_num_groups=8,
        spade_intermediate_channels=8,
    )
    for module in network.modules():
        if module is not network and callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    return network.eval()


def test_ddp_wrapped_spade_denoiser_receives_the_label_map():
    """MONAI's DiffusionInferer hands ``seg`` only to a bare SPADEDiffusionModelUNet; ours also to a DDP wrapper, which
    must then predict exactly what the bare network predicts for the same label map, and something else for another."""
    from pathosynth.diffusion.label_guided import SpadeDiffusionInferer

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        network = _denoiser()
        wrapped = DistributedDataParallel(network)
        inferer = SpadeDiffusionInferer(DDPMScheduler(num_train_timesteps=10))
        torch.manual_seed(1)
        x0, noise = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
        timesteps = torch.tensor([2, 7])
        seg = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 8, 8)), 4).permute(0, 3, 1, 2).float()
        other_seg = seg.roll(1, dims=1)
        with torch.no_grad():
            bare = inferer(x0, network, noise, timesteps, seg=seg)
            through_ddp = inferer(x0, wrapped, noise, timesteps, seg=seg)
            other = inferer(x0, wrapped, noise, timesteps, seg=other_seg)
        assert torch.equal(through_ddp, bare)
        assert (other - through_ddp).abs().mean() > 1e-3 * through_ddp.abs().mean() > 0
        samples = []
        for denoiser in (wrapped, network):  # the DDPM steps draw noise from the global generator
            torch.manual_seed(2)
            samples.append(inferer.sample(torch.randn(1, 3, 8, 8), denoiser, seg=seg[:1], verbose=False))
        assert torch.equal(*samples)
    finally:
        dist.destroy_process_group()


class _IdentityEncoder(torch.nn.Module):
    """Stands in for the VQ encoder: F0 = I."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images


def _rank_data(rank: int) -> list[torch.Tensor]:
    """Different images on each rank, as a per-rank data order (or a GPU's own arithmetic) would give."""
    return [torch.rand(1, 8, 8, 2, generator=torch.Generator().manual_seed(rank)) * (rank + 1)]


def _latent_stats_on_rank(rank: int, group_file: str, out_dir: str) -> None:
    from pathosynth.diffusion.latent import estimate_latent_stats

    dist.init_process_group("gloo", init_method=f"file://{group_file}", rank=rank, world_size=2)
    try:
        stats = estimate_latent_stats(_IdentityEncoder(), _rank_data(rank), device="cpu")
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(stats))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_trains_with_rank_0_latent_statistics(tmp_path):
    """2 spawned gloo processes with different data: both get rank 0's estimate (the stage-2 config calls it on every
    rank)."""
    from pathosynth.diffusion.latent import estimate_latent_stats

    torch.multiprocessing.spawn(_latent_stats_on_rank, args=(str(tmp_path / "group"), str(tmp_path)), nprocs=2)
    on_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    alone = [estimate_latent_stats(_IdentityEncoder(), _rank_data(r), device="cpu") for r in (0, 1)]
    assert alone[0] != alone[1], "the ranks' own data give different statistics"
    assert on_rank[0] == on_rank[1] == alone[0]


@pytest.mark.slow
def test_two_processes_train_stage_2_for_single_process_inference(acdc_phantom_dir, tmp_path):
    """Stage 1 in one process, stage 2 with torchrun on 2 CPU processes (gloo), then the ordinary inference.json;
    sharded inference on 2 processes (multi_gpu_inference.json) writes the same cases bitwise."""
    ckpt, logs, out = tmp_path / "ckpt", tmp_path / "logs", tmp_path / "out"
    common = {"dataset_dir": acdc_phantom_dir, "ckpt_dir": ckpt, "output_dir": logs}
    run_bundle("training", BUNDLE, ["train_autoencoder.json", "smoke.json"], common)

    configs = ["train_diffusion.json", "multi_gpu_train_diffusion.json", "smoke.json"]
    run_bundle("training", BUNDLE, configs, common, nproc=2)

    weights = torch.load(ckpt / "label_diffusion.pt", weights_only=True)
    assert weights["metadata"]["iteration"] == 4 and weights["metadata"]["latent_scale"] > 0
    assert not any(k.startswith("module.") for k in weights["network"])  # saved unwrapped: loads without DDP
    assert _logged_scalars(logs / "tensorboard" / "label_diffusion", "train_loss") == 4, "rank 0 alone logs its 4 steps"

    run_bundle("inference", BUNDLE, ["inference.json", "smoke.json"], {**common, "output_dir": out, "max_cases": 2})
    entries = json.loads((out / "datalist.json").read_text())["training"]
    assert len(entries) == 2 and all((out / entry["image"]).is_file() for entry in entries)

    # sharded synthesis: 2 ranks, one case each, give bitwise the single-process cases in one datalist
    sharded = tmp_path / "sharded"
    proc = run_bundle(
        "inference",
        BUNDLE,
        ["inference.json", "multi_gpu_inference.json", "smoke.json"],
        {**common, "output_dir": sharded, "max_cases": 2},
        nproc=2,
    )
    assert "rank 1/2: 1 synthetic cases assigned" in proc.stdout + proc.stderr
    sharded_entries = json.loads((sharded / "datalist.json").read_text())["training"]
    assert sorted(e["image"] for e in sharded_entries) == sorted(e["image"] for e in entries)
    for entry in entries:
        assert np.array_equal(read_nifti(sharded / entry["image"])[0], read_nifti(out / entry["image"])[0]), entry[
            "image"
        ]


def _logged_scalars(log_dir: Path, tag: str) -> int:
    """How many ``tag`` values all TensorBoard event files in ``log_dir`` hold together."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return sum(
        value.tag == tag
        for path in log_dir.glob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
    )
