"""Which process this is under Lightning's DDP (the launcher starts the ranks and its strategy owns the process
group; nothing here creates one), and a barrier for the moments between Trainers."""
from __future__ import annotations

import torch.distributed as dist


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank; before Lightning's first Trainer sets up the process group, what its launcher
    (or SLURM) told the process through the environment, so that only rank 0 writes from the start."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def gather_objects(obj):
    """Every rank's ``obj``, in rank order (one rank: ``[obj]``)."""
    if world() == 1:
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out
