"""Train *stock* TRL (`trl.GRPOTrainer`, not abcx's subclass) with the settings of an abcx config.

    python bench/stock_trl.py OUT_DIR [HYDRA OVERRIDES ...]      e.g.  method=grpo train.max_steps=100

It composes the abcx config the same way `abcx train` does, builds the same GRPOConfig
(abcx/config/trl_args.py), the same task data and reward, the same model, and hands them to TRL's own
trainer with W&B in offline mode, so OUT_DIR ends up as a stock TRL run looks: checkpoints with
trainer_state.json and a W&B offline run whose config is TRL's GRPOConfig. This is how the project
makes the foreign runs its report is tested and demonstrated on (abcx report --label / inference);
TRL's epsilon/epsilon_high come from the method's bounds where TRL can express them (grpo, dapo).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def train_stock(out_dir: str, overrides: list[str]) -> Path:
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from abcx.config.compose import compose
    from abcx.config.validate import validate
    from abcx.tasks import build_task
    from abcx.training.train import _set_threads, model_path
    from abcx.config.trl_args import grpo_config, trainer_kwargs

    cfg = compose(overrides)
    validate(cfg)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update({"WANDB_MODE": "offline", "WANDB_DIR": str(out), "WANDB_PROJECT": "stock-trl",
                       "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"})
    _set_threads(cfg)
    path = model_path(cfg)
    task = build_task(cfg.task.name, **cfg.task.options)
    import torch

    kwargs = trainer_kwargs(cfg, str(out), report_to=["wandb"], on_gpu=torch.cuda.is_available(),
                            run_name=out.name)
    kwargs["disable_tqdm"] = True
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = GRPOTrainer(model=path, args=grpo_config(kwargs), processing_class=tokenizer,
                          train_dataset=task.train, reward_funcs=[task.reward])
    trainer.train()
    import wandb

    if wandb.run is not None:
        wandb.finish()
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(train_stock(sys.argv[1], sys.argv[2:]))
