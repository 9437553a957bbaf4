"""The processes training one adapter together (torch.distributed), or this process alone.

Every rank draws the same step (the same seeded facts, negatives and replay answers) and
computes its share of it: examples ``rank``, ``rank + world``, ... The shares' losses are
scaled so that they add up to the one-process loss, and FSDP averages their gradients, so the
step is the one a single process takes with the same batch. What decides (the greedy stop,
a pass of base logits for the KL term) is decided on every rank together: with the base
sharded, a forward pass is a collective one, and every rank must run as many as the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where the collectives' tensors live (CUDA for NCCL)

    @property
    def alone(self) -> bool:
        return self.world == 1

    @classmethod
    def joined(cls, device: str = "cpu") -> Ranks:
        """The ranks of the initialized process group (this process alone without one)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def mine(self, count: int) -> list[int]:
        """This rank's indices among ``count`` items."""
        return list(range(self.rank, count, self.world))

    def share(self, items: Sequence[T]) -> list[T]:
        return [items[i] for i in self.mine(len(items))]

    def passes(self, count: int, chunk: int) -> int:
        """Passes of ``chunk`` items each rank runs over ``count`` items shared out: the most
        any rank needs (a rank with fewer runs a pass it ignores)."""
        return math.ceil(math.ceil(count / self.world) / chunk)

    def total(self, tensor: Any) -> Any:
        """``tensor`` summed over every rank (in place; itself when alone)."""
        if not self.alone:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all(self, flag: bool) -> bool:
        """Is ``flag`` true on every rank?"""
        if self.alone:
            return flag
        import torch

        return bool(self.total(torch.tensor([0.0 if flag else 1.0], device=self.device)).item() == 0.0)

    def any(self, flag: bool) -> bool:
        """Is ``flag`` true on some rank?"""
        return not self.all(not flag)

    def wait_for_all(self) -> None:
        """Go on once every rank is here. Called before the group is torn down: a rank that
        leaves closes its connections, and gloo aborts a peer still using them
        ("terminate called without an active exception")."""
        if not self.alone:
            import torch.distributed as dist

            dist.barrier()


ALONE = Ranks()
