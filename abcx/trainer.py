"""`AbcxGRPOTrainer`: TRL's GRPOTrainer with the clip rule swapped for the four-bound rule of
abcx.loss and quadrant statistics added. Everything else (generation, rewards, advantages, KL with a
reference model, vLLM importance-sampling correction, gradient accumulation, num_iterations,
steps_per_generation, checkpoints) stays TRL's.

The loss is rebuilt from TRL 1.16's own helpers in TRL's order: log-probs -> ratio -> clip ->
off-policy mask -> top-entropy mask -> vLLM IS ratio -> + beta*KL -> aggregation. The private API this
touches is listed in abcx.trl_compat; tests/test_trl_equivalence.py proves that with the `grpo` preset
the loss and the parameter gradients equal TRL's own `_compute_loss`.
"""
from __future__ import annotations

import torch
from accelerate.utils import is_peft_model
from trl import GRPOTrainer

from abcx import logprobs
from abcx import loss as L
from abcx.errors import UserError
from abcx.trl_compat import PASSTHROUGH_KEYS


class AbcxGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, bounds: L.Bounds, logprob_path: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        if self.loss_type not in L.LOSS_TYPES:
            raise UserError(f"train.loss_type={self.loss_type!r} is not supported; valid: {', '.join(L.LOSS_TYPES)}")
        if self._entropy_bonus_enabled:
            raise UserError("train.entropy_coef is not supported by abcx's loss; leave it at 0")
        self.bounds = bounds
        # TRL patched the policy (and reference) with its fused head; abcx.logprobs re-routes that call.
        policy = self.model.get_base_model() if is_peft_model(self.model) else self.model
        self.logprob_path = logprobs.install(policy, logprob_path, self.temperature)
        if self.ref_model is not None:
            logprobs.install(self.ref_model, logprob_path, self.temperature)
        # Quadrant counts stay on the device between log steps: no host sync per micro-batch.
        self._quadrant_counts: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}

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

        ratio = L.importance_ratio(per_token_logps - old_per_token_logps, mask, self.importance_sampling_level)
        per_token_loss = L.per_token_loss(ratio, advantages, self.bounds)

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
        if self.use_vllm and self.vllm_importance_sampling_correction:
            per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]
        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]
            per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
            if self.args.use_bias_correction_kl:
                per_token_kl = per_token_kl * ratio
            per_token_loss = per_token_loss + self.beta * per_token_kl

        loss = L.aggregate(
            per_token_loss,
            mask,
            self.loss_type,
            max_completion_length=self.max_completion_length,
            num_items=self._dapo_num_items(inputs, mode) if self.loss_type == "dapo" else None,
        )
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if self.loss_type != "dapo":  # dapo's normaliser already spans the accumulation window
            loss = loss / accumulation
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        self._record_metrics(mode, ratio, advantages, mask, entropies, per_token_kl if self.beta != 0.0 else None)
        return loss

    def _dapo_num_items(self, inputs, mode: str) -> torch.Tensor:
        # num_items_in_batch counts the whole generation batch; one accumulation window is a slice of it.
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return normalizer

    def _record_metrics(self, mode, ratio, advantages, mask, entropies, per_token_kl) -> None:
        def global_masked_mean(x: torch.Tensor) -> float:
            totals = self.accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum().float()]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        self._metrics[mode]["entropy"].append(global_masked_mean(entropies))
        if per_token_kl is not None:
            self._metrics[mode]["kl"].append(global_masked_mean(per_token_kl))
        counts = L.quadrant_counts(ratio, advantages, mask, self.bounds)
        acc = self._quadrant_counts[mode]
        for key, value in counts.items():
            if key not in acc:
                acc[key] = value
            elif key == "ratio/min":
                acc[key] = torch.minimum(acc[key], value)
            elif key == "ratio/max":
                acc[key] = torch.maximum(acc[key], value)
            else:
                acc[key] = acc[key] + value

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
            logs.update({prefix + k: v for k, v in L.quadrant_fractions(reduced).items()})
            self._quadrant_counts[mode] = {}
        super().log(logs, start_time)


def _gather_extreme(trainer: GRPOTrainer, value: torch.Tensor, fn) -> float:
    return fn(trainer.accelerator.gather(value.reshape(1))).item()

