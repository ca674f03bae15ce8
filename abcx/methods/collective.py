"""Batch statistics over every process that shares one optimiser step (data parallel).

A few methods read statistics of the whole batch, not of one token: BAPO's balance of positive and
negative contributions, Clip-Cov's and KL-Cov's covariance means, Clip-Cov's random draw and KL-Cov's
top tokens. Under data parallel each process holds only its share of the micro-batch, so each would
decide on its own share. Through a `Collective` they decide on all shares together: every rank picks
the same bounds and tokens, and the averaged update equals one process's on the concatenated batch
(ranks in order, as `torch.cat` of their micro-batches). The trainer builds it from the accelerator;
`Collective()` is one process, and then every function here is the plain local computation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Collective:
    rank: int = 0
    size: int = 1
    all_sum: "Callable[[torch.Tensor], torch.Tensor] | None" = None  # elementwise sum over the processes
    all_gather: "Callable[[torch.Tensor], torch.Tensor] | None" = None  # [n, ...] -> [size * n, ...], rank order

    def sum(self, value: "torch.Tensor") -> "torch.Tensor":
        return value if self.size == 1 else self.all_sum(value)

    def gather(self, value: "torch.Tensor") -> "torch.Tensor":
        return value if self.size == 1 else self.all_gather(value)

    def counts(self, value: int | float) -> list[float]:
        """Every process's number, in rank order (one small gather)."""
        import torch

        return [float(v) for v in self.gather(torch.tensor([float(value)], dtype=torch.float64))]


def masked_mean(values: "torch.Tensor", mask: "torch.Tensor", collective: Collective) -> "torch.Tensor":
    """Mean over the masked tokens of all processes (one all-reduce of [sum, count])."""
    import torch

    totals = collective.sum(torch.stack([(values * mask).sum(), mask.sum()]).to(torch.float64))
    return (totals[0] / totals[1].clamp(min=1.0)).to(values.dtype)


def draw(candidates: "torch.Tensor", count: int, generator: "torch.Generator", collective: Collective) -> "torch.Tensor":
    """Boolean [B, T]: `count` of all processes' candidate tokens drawn uniformly without replacement.
    Every process draws the same permutation of the global candidate list (rank order, then row-major),
    so the draw equals a single process's torch.randperm over the concatenated batch."""
    import torch

    local = torch.nonzero(candidates)
    sizes = collective.counts(len(local))
    offset, total = int(sum(sizes[:collective.rank])), int(sum(sizes))
    chosen = torch.zeros_like(candidates, dtype=torch.bool)
    if total == 0:
        return chosen
    picked = torch.randperm(total, generator=generator)[:count] - offset
    mine = picked[(picked >= 0) & (picked < len(local))].to(local.device)
    chosen[local[mine, 0], local[mine, 1]] = True
    return chosen


def top_k(values: "torch.Tensor", valid: "torch.Tensor", k: int, collective: Collective) -> "torch.Tensor":
    """Boolean [B, T]: the k largest of all processes' valid values. Ties at the k-th value are taken
    in rank order, then row-major, so the selection is the same whether the batch is split or not."""
    import torch

    flat, ok = values.reshape(-1), valid.reshape(-1)
    mine = flat[ok]
    local = torch.full((k,), -torch.inf, dtype=flat.dtype, device=flat.device)
    if len(mine):
        best = torch.topk(mine, min(k, len(mine))).values
        local[:len(best)] = best
    threshold = torch.topk(collective.gather(local), k).values[-1]
    above, tied = ok & (flat > threshold), ok & (flat == threshold)
    greater = collective.counts(int(above.sum()))
    ties = collective.counts(int(tied.sum()))
    need = k - int(sum(greater)) - int(sum(ties[:collective.rank]))
    take = max(0, min(need, int(ties[collective.rank])))
    chosen = above.clone()
    chosen[torch.nonzero(tied).squeeze(-1)[:take]] = True
    return chosen.reshape(values.shape)
