"""The `grpo` preset's loss, gradients and logged metrics on one fixed batch of 16 sequences, in a world
of 1 process (the whole batch) or of 2 (each rank its half, as data parallel splits a batch): run
plainly by tests/test_multinode.py for the single-process reference, and under `accelerate launch`
on the two nodes of a SLURM job. Gradients are averaged over the ranks as DDP does, and the loss
too, so each rank's file holds what the optimizer step would see. Writes rank<N>.pt into argv[1]."""
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from abcx.methods import stats as S
from abcx.methods.runtime import bounds_for
from abcx.training.trainer import AbcxGRPOTrainer
from tests.test_trl_equivalence import loss_and_grads, make_inputs, make_trainer

out = Path(sys.argv[1])
bounds = bounds_for("grpo", {"eps_low": 0.2, "eps_high": 0.28})
trainer = make_trainer(out / "trainer", "dapo", "token", bounds, steps_per_generation=2)
world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
batch = make_inputs(trainer, seed=0, b=16)  # the same 16 sequences (same model init) on every rank
rows = slice(rank * 16 // world, (rank + 1) * 16 // world)
# num_items_in_batch stays the whole batch's token count: TRL gathers it over all processes.
inputs = {k: (v if k == "num_items_in_batch" else v[rows]) for k, v in batch.items()}
trainer._metrics["train"].clear()
local_loss, grads = loss_and_grads(AbcxGRPOTrainer._compute_loss, trainer, inputs)
local_fractions = S.quadrant_fractions({k: v.item() for k, v in trainer._quadrant_counts["train"].items()})
loss = local_loss.clone()
if world > 1:
    for tensor in [loss, *grads]:
        dist.all_reduce(tensor)
        tensor /= world
trainer.log({})
logged = {k: v for k, v in trainer.state.log_history[-1].items() if k.startswith(("clip/", "ratio/", "entropy"))}
torch.save({"world": world, "rank": rank, "loss": loss.item(), "local_loss": local_loss.item(), "grads": grads,
            "logged": logged, "local_fractions": local_fractions}, out / f"rank{rank}.pt")
