"""Run under `accelerate launch --num_processes 2` by tests/test_distributed.py: on each rank, with its
own inputs, the `grpo` preset's loss and gradients against TRL's `_compute_loss`, then one `log()`.
Writes rank<N>.json into the folder given as argv[1]."""
import json
import sys
from pathlib import Path

import torch
from trl import GRPOTrainer

from abcx.methods import stats as S
from abcx.methods.runtime import MethodRun
from abcx.methods.runtime import bounds_for
from abcx.training.trainer import AbcxGRPOTrainer
from tests.test_trl_equivalence import loss_and_grads, make_inputs, make_trainer

out = Path(sys.argv[1])
bounds = bounds_for("grpo", {"eps_low": 0.2, "eps_high": 0.28})
trainer = make_trainer(out / "trainer", "dapo", "token", bounds, steps_per_generation=2)
rank = trainer.accelerator.process_index
inputs = make_inputs(trainer, seed=rank)  # each rank its own micro-batch, as data parallel gives it
ref_loss, ref_grads = loss_and_grads(GRPOTrainer._compute_loss, trainer, inputs)
trainer._quadrant_counts["train"] = {}  # only abcx's pass below is counted
trainer._metrics["train"].clear()
our_loss, our_grads = loss_and_grads(AbcxGRPOTrainer._compute_loss, trainer, inputs)
worst = max((a - b).abs().max().item() for a, b in zip(ref_grads, our_grads))
local = S.quadrant_fractions({k: v.item() for k, v in trainer._quadrant_counts["train"].items()})
trainer.log({})
logged = {k: v for k, v in trainer.state.log_history[-1].items() if k.startswith(("clip/", "ratio/"))}
# abc_adaptive: each rank counts its own tokens; the controller steps on both ranks' counts together.
trainer.method = MethodRun("abc_adaptive", {"eta": 10.0})
trainer.model.train()
AbcxGRPOTrainer._compute_loss(trainer, trainer.model, inputs)
adaptive_local = [trainer._step_counts[k].item() for k in ("clip/q1", "clip/q2", "clip/q3", "clip/q4", "tokens")]
trainer._controller_step()
(out / f"rank{rank}.json").write_text(json.dumps({
    "world": trainer.accelerator.num_processes, "ref_loss": ref_loss.item(), "our_loss": our_loss.item(),
    "worst_grad_diff": worst, "local": local, "logged": logged, "adaptive_local": adaptive_local,
    "adaptive_eps": trainer.method.state["eps"],
}))
