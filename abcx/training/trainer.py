"""`AbcxGRPOTrainer`: TRL's GRPOTrainer with its policy loss replaced by any registered method
(abcx.methods) and one set of metrics for all of them. Everything else (generation, rewards,
advantages, KL with a reference model, vLLM importance-sampling correction, gradient accumulation,
num_iterations, steps_per_generation, checkpoints) stays TRL's.

Every method answers with PolicyTerms (value, detached weight on A*grad log pi, penalty), applied one
way through `terms.surrogate`, then TRL 1.16's own order: off-policy mask -> top-entropy mask -> vLLM
IS ratio (or, when the run sets one, abcx's rollout/trainer correction, abcx.methods.correction) ->
+ beta*KL -> aggregation. Methods that read batch statistics get them over every process
(abcx.methods.collective). The TRL internals this touches are listed in abcx.training.trl_compat;
tests/test_trl_equivalence.py proves the loss and every parameter gradient equal TRL's own
`_compute_loss` for grpo, dapo, two_sided, gspo, cispo, sapo, vespo and luspo.
"""
from __future__ import annotations

import sys

import torch
from accelerate.utils import is_peft_model
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from trl import GRPOTrainer

from abcx.training import logprobs
from abcx.errors import UserError
from abcx.methods import stats as S
from abcx.methods.clip import Bounds, importance_ratio, sequence_log_ratio
from abcx.methods.collective import Collective
from abcx.methods.correction import NO_BEHAVIOUR_LOGPROBS, Correction, fractions as correction_fractions
from abcx.methods.runtime import MethodRun
from abcx.methods.terms import LossInputs, surrogate
from abcx.training.trl_compat import PASSTHROUGH_KEYS, trl_attr


class MethodState(TrainerCallback, ExportableState):
    """Runs a stateful method's controller after each optimiser step and carries its state in every
    checkpoint's trainer_state.json (stateful_callbacks), restored when a run resumes."""

    def __init__(self) -> None:
        self.trainer: "AbcxGRPOTrainer | None" = None

    def state(self) -> dict:
        run = self.trainer.method if self.trainer is not None else None
        return {"args": {}, "attributes": {"method_state": run.state_dict() if run is not None else {}}}

    def on_train_begin(self, args, state, control, **kwargs):
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, dict) and saved.get("attributes", {}).get("method_state", {}).get("method"):
            self.trainer.method.load_state_dict(saved["attributes"]["method_state"])
        if state.max_steps and state.max_steps > 0:
            self.trainer.method.max_steps = state.max_steps

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._controller_step()


class AbcxGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, method: MethodRun | None = None, bounds: Bounds | None = None,
                 logprob_path: str = "auto", correction: Correction | None = None, **kwargs):
        self._method_state = MethodState()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), self._method_state]
        super().__init__(*args, **kwargs)
        if method is None:  # four bounds given directly: the four-bound rule at TRL's ratio level
            b = bounds if bounds is not None else Bounds(0.2, 0.2, 0.2, 0.2)
            method = MethodRun("abc_grpo", {"eps1": b.eps1, "eps2": b.eps2, "eps3": b.eps3, "eps4": b.eps4,
                                            "importance_sampling_level": self.importance_sampling_level})
        self._method_state.trainer = self
        self.method = method
        self.correction = correction or Correction()
        acc = self.accelerator  # batch statistics of a method (BAPO, Clip-Cov, KL-Cov) span every process
        self.collective = Collective(acc.process_index, acc.num_processes,
                                     lambda t: acc.reduce(t.to(acc.device), reduction="sum").to(t.device),
                                     lambda t: acc.gather(t.to(acc.device)).to(t.device))
        if self.correction.active and not self.use_vllm and acc.is_main_process:
            print(f"warning: {NO_BEHAVIOUR_LOGPROBS}", file=sys.stderr)
        if self.args.max_steps and self.args.max_steps > 0:
            method.max_steps = self.args.max_steps
        self.aggregation = method.method.aggregation or S.aggregation_of(self.loss_type)
        if self.aggregation not in S.AGGREGATIONS:
            raise UserError(f"train.loss_type={self.loss_type!r} is not supported; valid: {', '.join(S.LOSS_TYPES)}")
        if self._entropy_bonus_enabled:
            raise UserError("train.entropy_coef is not supported by abcx's loss; leave it at 0")
        # TRL patched the policy (and reference) with its fused head; abcx.training.logprobs re-routes that call.
        temperature, ref_model = trl_attr(self, "temperature"), trl_attr(self, "ref_model")
        policy = self.model.get_base_model() if is_peft_model(self.model) else self.model
        self.logprob_path = logprobs.install(policy, logprob_path, temperature)
        if ref_model is not None:
            logprobs.install(ref_model, logprob_path, temperature)
        # Counts stay on the device between log steps: no host sync per micro-batch.
        self._quadrant_counts: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._step_counts: dict[str, torch.Tensor] = {}  # this optimiser step's, for the controller
        self._eps_in_use: tuple[float, ...] | None = None
        self.gradient_shares = True  # bench/bench_trainer_step.py measures the accounting's cost by turning it off

    @property
    def bounds(self) -> Bounds | None:
        return self.method.bounds(self.state.global_step)

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([prompt_mask, completion_mask], dim=1),
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{key: inputs.get(key) for key in PASSTHROUGH_KEYS},
        )
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        # TRL leaves old log-probs out when every batch is used once: then r == 1 exactly.
        old_per_token_logps = inputs.get("old_per_token_logps")
        if old_per_token_logps is None:
            old_per_token_logps = per_token_logps.detach()
        vllm_is = self.use_vllm and self.vllm_importance_sampling_correction
        step = self.state.global_step
        terms = self.method.terms(LossInputs(
            logp=per_token_logps, old_logp=old_per_token_logps, advantages=advantages, mask=mask,
            entropies=entropies.detach() if entropies is not None else None, step=step,
            max_steps=self.method.max_steps, collective=self.collective,
            is_ratio=None if self.correction.active else inputs.get("importance_sampling_ratio"),  # present: vLLM IS on
        ))
        log_ratio = per_token_logps - old_per_token_logps
        # The level's log-ratio has the gradient of the method's ratio (token: log pi; sequence: its mean).
        level_log = sequence_log_ratio(log_ratio, mask) if terms.sequence else per_token_logps
        per_token_loss = surrogate(terms, level_log, advantages)

        if self.off_policy_mask_threshold is not None:
            per_token_loss = per_token_loss * self.get_off_policy_mask(
                advantages=advantages,
                per_token_logps=per_token_logps,
                sampling_per_token_logps=inputs.get("sampling_per_token_logps", old_per_token_logps),
                mask=mask,
                off_policy_threshold=self.off_policy_mask_threshold,
            )
        if self.top_entropy_quantile < 1.0:
            per_token_loss = per_token_loss * self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)
        if self.correction.active:  # abcx's correction axis replaces TRL's vLLM ratio
            per_token_loss = per_token_loss * self._correction_weight(inputs, old_per_token_logps, mask, mode)
        elif vllm_is and not self.method.method.uses_is_ratio:
            per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]
        per_token_kl = None
        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]
            per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
            if self.args.use_bias_correction_kl:
                per_token_kl = per_token_kl * importance_ratio(log_ratio, mask, self.method.level)
            per_token_loss = per_token_loss + self.beta * per_token_kl

        loss = S.aggregate(
            per_token_loss,
            mask,
            self.aggregation,
            max_completion_length=self.max_completion_length,
            num_items=self._dapo_num_items(inputs, mode) if self.aggregation == "dapo" else None,
        )
        accumulation = trl_attr(self, "current_gradient_accumulation_steps") if mode == "train" else 1.0
        if self.aggregation != "dapo":  # dapo's normaliser already spans the accumulation window
            loss = loss / accumulation
        if self.aux_loss_enabled:
            loss = loss + trl_attr(self, "router_aux_loss_coef") * aux_loss / accumulation
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        ratio = importance_ratio(log_ratio.detach(), mask, self.method.level)
        self._record_metrics(mode, step, terms, ratio, advantages, mask, entropies, per_token_kl)
        return loss

    def _correction_weight(self, inputs, old_logps: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
        """abcx.methods.correction against the sampler's log-probs, which TRL has only from vLLM; without
        them the behaviour policy is pi_old itself (rho = 1)."""
        weight, sums = self.correction.apply(old_logps, inputs.get("sampling_per_token_logps", old_logps), mask)
        _accumulate(self._quadrant_counts[mode], sums)
        return weight

    def _dapo_num_items(self, inputs, mode: str) -> torch.Tensor:
        # num_items_in_batch counts the whole generation batch; one accumulation window is a slice of it.
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return normalizer

    def _record_metrics(self, mode, step, terms, ratio, advantages, mask, entropies, per_token_kl) -> None:
        def global_masked_mean(x: torch.Tensor) -> float:
            totals = self.accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum().float()]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        self._metrics[mode]["entropy"].append(global_masked_mean(entropies))
        if per_token_kl is not None:
            self._metrics[mode]["kl"].append(global_masked_mean(per_token_kl))
        bounds = self.method.bounds(step)
        counts = S.quadrant_counts(ratio, advantages, mask, bounds if bounds is not None else self.method.band(step),
                                   terms if self.gradient_shares else None)
        _accumulate(self._quadrant_counts[mode], counts)
        if mode == "train":
            self._eps_in_use = (bounds.eps1, bounds.eps2, bounds.eps3, bounds.eps4) if bounds is not None else None
            if self.method.method.controller is not None:
                _accumulate(self._step_counts, {k: counts[k] for k in ("clip/q1", "clip/q2", "clip/q3", "clip/q4",
                                                                      "tokens")})

    def _controller_step(self) -> None:
        """After an optimiser step (every rank): Q1..Q4 fractions reduced across processes -> controller."""
        if not self._step_counts:
            return
        keys = ("clip/q1", "clip/q2", "clip/q3", "clip/q4", "tokens")
        summed = self.accelerator.reduce(torch.stack([self._step_counts[k] for k in keys]), reduction="sum").tolist()
        tokens = max(summed[4], 1.0)
        self.method.step_end([value / tokens for value in summed[:4]])
        self._step_counts = {}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        acc = self._quadrant_counts[mode]
        if acc:
            sums = {k: v for k, v in acc.items() if k not in ("ratio/min", "ratio/max")}
            keys = list(sums)
            summed = self.accelerator.reduce(torch.stack([sums[k] for k in keys]), reduction="sum").tolist()
            reduced = dict(zip(keys, summed))
            reduced["ratio/min"] = _gather_extreme(self, acc["ratio/min"], torch.min)
            reduced["ratio/max"] = _gather_extreme(self, acc["ratio/max"], torch.max)
            prefix = "eval_" if mode == "eval" else ""
            logs.update({prefix + k: v for k, v in S.quadrant_fractions(reduced).items()})
            logs.update({prefix + k: v for k, v in correction_fractions(reduced).items()})
            self._quadrant_counts[mode] = {}
        if mode == "train" and self._eps_in_use is not None:  # the bounds the last step trained with
            logs.update({f"eps/eps{i + 1}": value for i, value in enumerate(self._eps_in_use)})
        super().log(logs, start_time)


def _gather_extreme(trainer: GRPOTrainer, value: torch.Tensor, fn) -> float:
    return fn(trainer.accelerator.gather(value.reshape(1))).item()



def _accumulate(acc: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]) -> None:
    for key, value in counts.items():
        if key not in acc:
            acc[key] = value
        elif key == "ratio/min":
            acc[key] = torch.minimum(acc[key], value)
        elif key == "ratio/max":
            acc[key] = torch.maximum(acc[key], value)
        else:
            acc[key] = acc[key] + value
