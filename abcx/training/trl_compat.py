"""Every piece of TRL that abcx relies on beyond its public API, in one place.

abcx extends `trl.GRPOTrainer` rather than forking it, but TRL has no hook for a new clip rule: the
ratio and the clip live inside the private `_compute_loss`. `AbcxGRPOTrainer` therefore overrides
`_compute_loss` and rebuilds it from TRL's own private helpers and attributes listed here. A TRL upgrade
that renames or reshapes any of them must fail loudly (tests/test_trl_equivalence.py runs `check()`),
not train silently with a different loss; the gradient-equivalence tests then prove the rebuilt path
still equals TRL's own. abcx reads these internals only through this module (`trl_attr`,
`use_triton`, `fused_output_class`), so this list is complete by construction.
"""
from __future__ import annotations

import inspect

TESTED_TRL = (">=1.16", "<1.17")

# Methods of GRPOTrainer called or overridden, with the parameters abcx passes.
METHODS: dict[str, tuple[str, ...]] = {
    "_compute_loss": ("model", "inputs"),
    "_get_per_token_logps_and_entropies": (
        "model", "input_ids", "attention_mask", "logits_to_keep", "compute_entropy", "compute_aux_loss",
    ),
    "get_high_entropy_mask": ("entropies", "mask", "threshold"),
    "get_off_policy_mask": (
        "advantages", "per_token_logps", "sampling_per_token_logps", "mask", "off_policy_threshold",
    ),
    "log": ("logs", "start_time"),
}

# Attributes set by GRPOTrainer.__init__ that the loss reads.
ATTRIBUTES = (
    "loss_type", "beta", "importance_sampling_level", "top_entropy_quantile", "off_policy_mask_threshold",
    "use_vllm", "vllm_importance_sampling_correction", "aux_loss_enabled", "max_completion_length",
    "num_iterations", "_metrics", "_entropy_bonus_enabled", "temperature", "ref_model", "router_aux_loss_coef",
)
# Attributes transformers' Trainer sets while training (not in GRPOTrainer.__init__) that the loss reads.
TRAINER_ATTRIBUTES = ("current_gradient_accumulation_steps",)
# transformers' mechanism that carries a callback's state in each checkpoint (abcx.training.trainer.MethodState).
STATEFUL_CALLBACKS = ("transformers.trainer_callback.ExportableState", "TrainerState.stateful_callbacks")

# Keys of the batch dict built by `_generate_and_score_completions` that the loss reads.
INPUT_KEYS = (
    "prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "num_items_in_batch",
    "old_per_token_logps", "ref_per_token_logps", "importance_sampling_ratio", "sampling_per_token_logps",
    "tool_mask",
)

# Multimodal batch keys passed through to the log-prob helper unchanged, as TRL does.
PASSTHROUGH_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)


# The fused-head call abcx.training.logprobs re-routes: __init__ patches the policy with add_fused_lm_head, the
# log-prob helper calls `model(..., labels=..., fused_lm_head=True)` and reads these output fields.
FUSED_HEAD = {
    "init_marker": "add_fused_lm_head(",
    "call_marker": "fused_lm_head=True",
    "output_fields": ("log_probs", "entropy"),
    "triton_probe": "trl.kernels.chunked_logprob._use_triton",
}


def trl_attr(trainer: object, name: str):
    """Read a TRL/transformers trainer attribute that this module lists (so a rename fails in `check`)."""
    if name not in ATTRIBUTES and name not in TRAINER_ATTRIBUTES:
        raise KeyError(f"{name} is not in abcx.training.trl_compat's list of TRL attributes; add it there first")
    return getattr(trainer, name)


def use_triton(device) -> bool:
    """TRL's own test for whether its Triton log-prob kernel runs on `device` (FUSED_HEAD's probe)."""
    import importlib

    module, _, name = FUSED_HEAD["triton_probe"].rpartition(".")
    return getattr(importlib.import_module(module), name)(device)


def fused_output_class():
    """TRL's FusedCausalLMOutput (the fused head's return type, with FUSED_HEAD's output fields)."""
    from trl.trainer.utils import FusedCausalLMOutput

    return FusedCausalLMOutput


class TRLIncompatible(RuntimeError):
    """The installed TRL no longer has what abcx's trainer is built on."""


def check() -> None:
    """Raise TRLIncompatible naming every missing method, parameter or source marker."""
    import trl
    from trl import GRPOTrainer

    problems: list[str] = []
    for name, params in METHODS.items():
        fn = getattr(GRPOTrainer, name, None)
        if fn is None:
            problems.append(f"GRPOTrainer.{name} is gone")
            continue
        have = set(inspect.signature(fn).parameters)
        problems += [f"GRPOTrainer.{name} lost parameter {p!r}" for p in params if p not in have]
    init_src = inspect.getsource(GRPOTrainer.__init__)
    problems += [f"GRPOTrainer.__init__ no longer sets self.{a}" for a in ATTRIBUTES if f"self.{a}" not in init_src]
    loss_src = inspect.getsource(GRPOTrainer._compute_loss)
    problems += [f"_compute_loss no longer reads inputs[{k!r}]" for k in ("advantages", "num_items_in_batch")
                 if f'"{k}"' not in loss_src]
    gen_src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    problems += [f"batch no longer carries {k!r}" for k in INPUT_KEYS if k not in gen_src and k not in loss_src]
    problems += _fused_head_problems(init_src)
    problems += _trainer_problems()
    if problems:
        raise TRLIncompatible(
            f"trl {trl.__version__} is outside what abcx was built on ({', '.join(TESTED_TRL)}): " + "; ".join(problems)
        )


def _fused_head_problems(init_src: str) -> list[str]:
    import importlib

    from trl import GRPOTrainer
    from trl.trainer.utils import FusedCausalLMOutput

    problems = []
    if FUSED_HEAD["init_marker"] not in init_src:
        problems.append("GRPOTrainer.__init__ no longer adds the fused LM head")
    if FUSED_HEAD["call_marker"] not in inspect.getsource(GRPOTrainer._get_per_token_logps_and_entropies):
        problems.append("_get_per_token_logps_and_entropies no longer calls the model with fused_lm_head=True")
    fields = FusedCausalLMOutput.__dataclass_fields__
    problems += [f"FusedCausalLMOutput lost {f!r}" for f in FUSED_HEAD["output_fields"] if f not in fields]
    module, _, name = FUSED_HEAD["triton_probe"].rpartition(".")
    if not hasattr(importlib.import_module(module), name):
        problems.append(f"{FUSED_HEAD['triton_probe']} is gone")
    return problems


def _trainer_problems() -> list[str]:
    import transformers.trainer_callback as callbacks
    from transformers import Trainer
    from transformers.trainer_callback import TrainerState

    source = inspect.getsource(Trainer)
    problems = [f"transformers' Trainer no longer sets self.{a}" for a in TRAINER_ATTRIBUTES if f"self.{a} =" not in source]
    if not hasattr(callbacks, "ExportableState"):
        problems.append("transformers.trainer_callback.ExportableState is gone")
    if "stateful_callbacks" not in TrainerState.__dataclass_fields__:
        problems.append("TrainerState.stateful_callbacks is gone")
    return problems
