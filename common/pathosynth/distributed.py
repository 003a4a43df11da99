"""Process-group helpers shared by the ``multi_gpu_*.json`` overlays (set-up, DDP wrapping, rank-0-only handlers) and
sharded synthesis."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from monai.utils import set_determinism
from torch.nn.parallel import DistributedDataParallel


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1) for a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_from_rank0(obj):
    """``obj`` as rank 0 holds it, returned on every rank (a picklable object; itself in a single process).
    Every rank of the group must call it."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def unwrap(network):
    """The plain module inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(network, "module", network)


def local_device() -> torch.device:
    """This process's device under ``torchrun``: ``cuda:<LOCAL_RANK>`` on a GPU machine, else the CPU."""
    return torch.device(f"cuda:{os.environ['LOCAL_RANK']}") if torch.cuda.is_available() else torch.device("cpu")


def start_process_group(device: torch.device, seed: int, seed_per_rank: bool = False) -> None:
    """What a ``multi_gpu_*.json`` overlay's ``initialize`` does once its overrides are checked: join the ``torchrun``
    process group (NCCL on GPUs, gloo on CPUs) unless it is joined, pin this rank's GPU, and seed MONAI's determinism.
    Training seeds ``seed + rank`` (``seed_per_rank``: each rank draws its own crops and noise); synthesis seeds
    ``seed`` on every rank (its samples are seeded per case, so a case is the same whichever rank draws it)."""
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(device)
    set_determinism(seed=seed + (dist.get_rank() if seed_per_rank else 0))


def end_process_group() -> None:
    """A ``multi_gpu_*.json`` overlay's ``finalize``: leave the process group (no-op when none is joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_not_rank0() -> bool:
    """True on every rank but 0: the ``_disabled_`` flag of handlers only rank 0 runs (progress, logs, validation)."""
    return rank_and_world()[0] > 0


def ddp(module: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``module`` on ``device``, wrapped for data-parallel training (``device_ids`` only on GPUs)."""
    return DistributedDataParallel(module.to(device), device_ids=[device] if torch.cuda.is_available() else None)
