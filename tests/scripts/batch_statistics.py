"""Run by tests/test_distributed.py twice: as one process on two micro-batches concatenated, and under
`accelerate launch --num_processes 2` with one of them per rank. For every method whose terms read
statistics of the batch, the loss and the gradients, averaged over the ranks as data parallel averages
them, go to <out>/single.pt or <out>/two.pt; under two ranks also what each rank would get from its own
share alone (the behaviour before abcx.methods.collective), and each rank's BAPO bounds to
<out>/bounds<rank>.json."""
import json
import sys
from pathlib import Path

import torch

from abcx.methods import stats as S
from abcx.methods.collective import Collective
from abcx.methods.papers_adaptive import bapo_bounds
from abcx.methods.runtime import MethodRun
from abcx.methods.terms import LossInputs
from abcx.training.trainer import AbcxGRPOTrainer
from tests.test_trl_equivalence import loss_and_grads, make_inputs, make_trainer

# Parameters with which each statistic decides something on these batches (the draw and the top tokens
# are several tokens, BAPO's search moves past its start).
METHODS = {
    "bapo": {"target_ratio": 0.8, "c_low_step": 0.04, "c_high_step": 0.1},
    "clip_cov": {"clip_cov_ratio": 0.05, "clip_cov_lb": 0.02, "clip_cov_ub": 5.0, "eps_low": 0.3, "eps_high": 0.4},
    "kl_cov": {"kl_cov_ratio": 0.05, "ppo_kl_coef": 0.7},
    "archer": {"entropy_quantile": 0.6, "eps_low": 0.1, "eps_high": 0.15, "high_entropy_eps_low": 0.3,
               "high_entropy_eps_high": 0.35},
    "gmpo": {"eps_low": 0.3, "eps_high": 0.25},
    "abc_adaptive": {"eta": 10.0},
}

out = Path(sys.argv[1])
trainer = make_trainer(out / f"trainer{sys.argv[2] if len(sys.argv) > 2 else ''}", "dapo", "token",
                       steps_per_generation=2)
world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
parts = [make_inputs(trainer, seed=s) for s in (0, 1)]
for part in parts:  # TRL counts the tokens of the whole generation batch, on every rank
    part["num_items_in_batch"] = sum(p["completion_mask"].sum() for p in parts)
inputs = parts[rank] if world > 1 else {k: (v if k == "num_items_in_batch" else torch.cat([p[k] for p in parts]))
                                        for k, v in parts[0].items()}


def averaged(loss, grads):
    """The rank-average of a loss and of each gradient (DDP's all-reduce); one process: itself."""
    if world == 1:
        return loss, grads
    mean = [trainer.accelerator.reduce(t, reduction="mean") for t in [loss, *grads]]
    return mean[0], mean[1:]


def run(name):
    trainer.method = MethodRun(name, METHODS[name])
    trainer.aggregation = trainer.method.method.aggregation or S.aggregation_of(trainer.loss_type)
    trainer._step_counts = {}
    loss, grads = averaged(*loss_and_grads(AbcxGRPOTrainer._compute_loss, trainer, inputs))
    result = {"loss": loss, "grads": grads}
    if trainer.method.method.controller is not None:  # a second pass with the bounds the controller moved to
        trainer._controller_step()
        result["eps"] = list(trainer.method.state["eps"])
        result["loss2"], result["grads2"] = averaged(*loss_and_grads(AbcxGRPOTrainer._compute_loss, trainer, inputs))
    return result


def bapo_inputs(collective):
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1), inputs["completion_ids"].size(1))
    return LossInputs(logp=logps, old_logp=inputs["old_per_token_logps"], advantages=inputs["advantages"].unsqueeze(1),
                      mask=inputs["completion_mask"].float(), collective=collective)


results = {name: run(name) for name in METHODS}
search = {k: v for k, v in MethodRun("bapo", METHODS["bapo"]).params.items() if k != "clip_ratio_c"}
bounds = {"global": bapo_bounds(bapo_inputs(trainer.collective), **search)[:2]}
if world > 1:  # each rank on its own share: what BAPO, Clip-Cov and KL-Cov did before
    bounds["own_share"] = bapo_bounds(bapo_inputs(Collective()), **search)[:2]
    shared, trainer.collective = trainer.collective, Collective()
    results["own_share"] = {name: run(name) for name in ("bapo", "clip_cov", "kl_cov")}
    trainer.collective = shared
    (out / f"bounds{rank}.json").write_text(json.dumps(bounds))
else:
    (out / "bounds_single.json").write_text(json.dumps(bounds))
if rank == 0:
    torch.save(results, out / ("two.pt" if world > 1 else "single.pt"))
