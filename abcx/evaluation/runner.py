"""Evaluate a model on benchmarks: sample n completions per problem, score them with the task's own
checker (the same one that gives the training reward), and turn per-problem counts (n, c) into Avg@k,
unbiased Pass@k and bootstrap confidence intervals."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from abcx.errors import UserError
from abcx.evaluation.sampling import Sampling, backend_available, render_prompts, sample_hf, sample_vllm

def problems_for(benchmark: str, max_problems: int | None) -> tuple[list[Any], list[str], Callable]:
    """Prompts, gold answers and a batch checker `(completions, golds) -> list[bool]` for a benchmark,
    all three from the task that defines it (`abcx.tasks.benchmarks.resolve`)."""
    from abcx.tasks.benchmarks import resolve

    task = resolve(benchmark)
    data = task.eval
    if data is None or len(data) == 0:
        raise UserError(f"eval.benchmarks: {benchmark!r} has no problems")
    if max_problems is not None:
        data = data.select(range(min(int(max_problems), len(data))))
    prompts = list(data["prompt"])
    if task.system_prompt:  # a plain-text prompt gets the task's system turn; chat prompts already hold it
        prompts = [[{"role": "system", "content": task.system_prompt}, {"role": "user", "content": p}]
                   if isinstance(p, str) else p for p in prompts]
    return prompts, [str(a) for a in data["answer"]], task.check


def ci_table(per_problem: Sequence[tuple[int, int]], ks: Sequence[int], seed: int) -> dict[str, list[float]]:
    from abcx.evaluation.metrics import bootstrap_ci

    n = min(p[0] for p in per_problem)
    out = {f"avg@{n}": list(bootstrap_ci(per_problem, None, seed=seed))}
    for k in ks:
        out[f"pass@{k}"] = list(bootstrap_ci(per_problem, k, seed=seed))
    return out


def evaluate(model, tokenizer, benchmarks: Sequence[str], sampling: Sampling, *, max_problems: int | None = None,
             batch_size: int = 64, model_path: str | None = None, backend: str = "auto",
             step: int | None = None, who: str = "") -> list[dict]:
    """One eval row per benchmark (the eval.jsonl format of docs/architecture.md). Progress per
    benchmark (samples done of problems x n, samples/s, ETA); `who` names what is evaluated there."""
    from abcx.evaluation.metrics import default_ks, summarise

    backend = backend_available() if backend == "auto" else backend
    if backend == "vllm" and model_path is None:
        backend = "hf"  # an in-memory model (periodic eval during training) is sampled where it lives
    rows = []
    for bench in benchmarks:
        prompts, golds, check = problems_for(bench, max_problems)
        t0 = time.time()
        samples, correct, t_sample = _sample_and_check(model, tokenizer, bench, prompts, golds, check, sampling,
                                                       batch_size=batch_size, model_path=model_path,
                                                       backend=backend, step=step, who=who)
        per_problem, i = [], 0
        for group in samples:
            per_problem.append((len(group), int(sum(correct[i:i + len(group)]))))
            i += len(group)
        ks = default_ks(sampling.n)
        elapsed = time.time() - t0
        rows.append({
            "step": step, "benchmark": bench, "n": sampling.n, "problems": len(per_problem),
            "sampling": sampling.as_dict(), "backend": backend,
            "metrics": summarise(per_problem, ks), "ci": ci_table(per_problem, ks, sampling.seed),
            "per_problem": [list(p) for p in per_problem],
            "elapsed_s": round(elapsed, 3), "samples_per_s": round(len(correct) / max(t_sample, 1e-9), 1),
        })
    return rows


def _sample_and_check(model, tokenizer, bench: str, prompts, golds, check, sampling: Sampling, *, batch_size: int,
                      model_path: str | None, backend: str, step: int | None, who: str):
    """(samples per problem, whether each is right, seconds spent sampling), shown as it goes."""
    from abcx import progress

    at = f" at step {step}" if step else ""
    total = len(prompts) * sampling.n
    with progress.task(f"{who + ': ' if who else ''}evaluating {bench}{at}: {len(prompts)} problems x "
                       f"{sampling.n} samples ({backend})", total=total, unit="samples", name=f"eval {bench}") as shown:
        t0 = time.time()
        texts = render_prompts(tokenizer, prompts)
        if backend == "vllm":
            shown.update(info="vLLM: one batch for all")
            samples = sample_vllm(model_path, texts, sampling)
        else:
            samples = sample_hf(model, tokenizer, texts, sampling, batch_size=batch_size,
                                on_batch=lambda done: shown.update(done * sampling.n))
        t_sample = time.time() - t0
        shown.update(total, info="checking the answers")
        flat = [c for group in samples for c in group]
        flat_gold = [g for g, group in zip(golds, samples) for _ in group]
        return samples, check(flat, flat_gold), t_sample


def load_for_eval(path: str, dtype: str = "float32", shown=None):
    """(model, tokenizer) from a folder or hub id (checked first: abcx.evaluation.models.check_model);
    what the loaders still refuse (no tokenizer, an unknown architecture) is one line naming the path.
    `shown`: a progress task told what it is doing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if shown is not None:
        shown.update(info="loading the weights")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except Exception as err:  # noqa: BLE001 - the loaders refuse a folder with many types (OSError, SafetensorError)
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"{path}: cannot be loaded as a model ({type(err).__name__}: {first}); valid: a folder "
                        f"holding a saved model (config.json, weights, tokenizer) or a cached hub id") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.cuda()
    return model, tokenizer


def checkpoints_of(run_dir: Path) -> list[tuple[int, Path]]:
    from abcx.record import RunRecord

    return RunRecord(Path(run_dir)).checkpoint_list()
