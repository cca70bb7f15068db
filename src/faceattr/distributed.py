"""Several processes, one training: torchrun + DistributedDataParallel over the packed store.

``torchrun --nproc_per_node N stages/finetune_multitask.py ...`` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set. Each takes a disjoint shard of every epoch's shuffled order,
DDP averages the gradients of every trained parameter (the training objective, trunk with its
heads, margin head or learned loss weights, is the wrapped module), and only rank 0 writes
outputs, resume states and MLflow runs. Without those variables everything runs in one process.

How the recipe scales with N: ``optim.batch_size`` is per process, so the global batch is
N × batch_size and an epoch takes 1/N of the optimizer steps (the schedule counts the steps of
this rank's shard: warm-up and cosine decay end where they do on one process). The learning rate
is not scaled: with N processes the same ``optim.lr`` meets N times larger batches; the linear
scaling rule (lr × N) is the usual starting point, set by the user in params.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: stages without training never load it
    import torch
    from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes outputs, logs and tracks."""
        return self.rank == 0


def current() -> DistInfo:
    """This process's place, from torchrun's environment variables (one process without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed() -> DistInfo:
    """Join the process group when started by torchrun (NCCL on GPUs, gloo on CPUs)."""
    import torch

    info = current()
    if info.world > 1 and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(info.local_rank)
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return info


def shard(order: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's share of a global order: equal sizes on all ranks (the remainder is dropped)."""
    if info.world == 1:
        return order
    usable = len(order) // info.world * info.world
    return order[:usable][info.rank :: info.world]


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when there are several processes."""
    if info.world == 1:
        return model
    from torch import nn

    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
