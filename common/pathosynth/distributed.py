"""Process-group helpers shared by training overlays and sharded synthesis."""

from __future__ import annotations

import torch.distributed as dist


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
