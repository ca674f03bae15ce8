"""Time the testbed build and a few GRPO steps on it; prints one JSON object.

    PYTHONPATH=. .venv/bin/python bench/bench_testbed_build.py [--grpo-steps 20] [--threads 1]

Builds the default recipe into a fresh temporary folder (not the cache), so it measures a cold build.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def grpo_step_seconds(folder: Path, steps: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from abcx.tasks import build_task

    torch.set_num_threads(threads)
    task = build_task("arith")
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            times.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, use_cpu=True, bf16=False, per_device_train_batch_size=16,
                          num_generations=8, max_completion_length=8, max_steps=steps, report_to=[],
                          logging_steps=1, save_strategy="no", disable_tqdm=True)
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(folder),
                              processing_class=AutoTokenizer.from_pretrained(folder),
                              reward_funcs=task.reward, args=args, train_dataset=task.train, callbacks=[Timer()])
        trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    later = times[1:] or times  # the first step pays one-off set-up costs
    return {"steps": steps, "threads": threads, "first_step_s": times[0], "mean_step_s": sum(later) / len(later),
            "mean_reward": sum(rewards) / len(rewards)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpo-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args()

    from abcx.testbed import DEFAULT_RECIPE, build_testbed

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        info = build_testbed(Path(tmp) / "model", DEFAULT_RECIPE)
        result = {"build_s": time.perf_counter() - start, "sft_s": info["sft"]["seconds"],
                  "parameters": info["parameters"]}
        if opts.grpo_steps:
            result["grpo"] = grpo_step_seconds(Path(tmp) / "model", opts.grpo_steps, opts.threads)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
