"""`abcx eval TARGET`: evaluate a run (its final model, or every checkpoint), a checkpoint folder, or
any model path / hub id, and record the results."""
from __future__ import annotations

import sys

from pathlib import Path
from typing import Any

from abcx.errors import UserError
from abcx.record import RunRecord, checkpoint_step, runs_dir


def resolve_target(target: str, results_dir: str) -> tuple[RunRecord | None, list[tuple[int | None, str]], bool]:
    """(run record or None, [(step, model path)], whether TARGET named a whole run).

    `tiny` names the testbed model as built (the warm start every testbed run starts from), so its
    accuracy is the baseline the runs' evaluations compare with; it is evaluated as step 0."""
    path = Path(target)
    if target == "tiny" and not path.exists():
        from abcx.testbed import ensure_tiny_model

        return None, [(0, str(ensure_tiny_model()))], False
    if not path.exists() and (runs_dir(results_dir) / target).is_dir():
        path = runs_dir(results_dir) / target
    if path.is_dir() and RunRecord.is_record(path):
        record = RunRecord(path)
        if record.has_final():
            return record, [(int(record.status().get("step", 0)), str(record.final_path))], True
        ckpt = record.latest_checkpoint()
        if ckpt is None:
            raise UserError(f"run {record.run_id} has no final model and no checkpoint to evaluate ({path})")
        return record, [(checkpoint_step(ckpt), str(ckpt))], True
    owner = RunRecord.of_checkpoint(path) if path.is_dir() and checkpoint_step(path) is not None else None
    if owner is not None:
        return owner, [(checkpoint_step(path), str(path))], False
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"{target}: not a run folder, a checkpoint or a model folder (no config.json)")
        return None, [(None, str(path))], False
    if target.count("/") == 1 and not target.startswith((".", "/")):
        return None, [(None, target)], False  # a hub id, loaded on a connected machine
    raise UserError(f"{target}: no such run, checkpoint or model folder (runs live under {runs_dir(results_dir)})")


def run_eval(target: str, overrides: list[str], *, all_checkpoints: bool = False, backend: str = "auto",
             console: Any = None) -> list[dict]:
    from abcx.config.compose import compose
    from abcx.evaluation.models import check_model
    from abcx.evaluation.record import append_eval
    from abcx.evaluation.runner import checkpoints_of, evaluate, load_for_eval
    from abcx.evaluation.sampling import Sampling

    from abcx.secrets import check_free_text

    if backend not in ("auto", "hf", "vllm"):
        raise UserError(f"--backend {backend!r}; valid: auto, hf, vllm")
    check_free_text("TARGET", target, into="the evaluation's rows and folder name")  # before any line echoes it
    cfg = compose(overrides)
    record, targets, whole_run = resolve_target(target, cfg.results_dir)
    if all_checkpoints:
        if record is None or not whole_run:
            raise UserError("--all-checkpoints needs a run folder or run id as TARGET")
        targets = [(step, str(p)) for step, p in checkpoints_of(record.path)] + targets
    sampling = Sampling.from_config(cfg.eval)
    if sampling.n < 1:
        raise UserError(f"eval.n={sampling.n} must be >= 1")
    dtype = cfg.model.dtype
    if record is not None:
        dtype = record.meta().get("trl_args", {}).get("model_init_kwargs", {}).get("dtype", dtype)
    out_record = record or RunRecord(Path(cfg.results_dir) / "evals" / Path(target).name.replace("/", "--"))
    from abcx.paths import check_results_dir, check_writable
    if record is None:  # a model path or hub id: results go to results_dir/evals/<name>
        check_results_dir(cfg.results_dir, out_record.path)
    else:  # a run (wherever its folder is) keeps its evaluations in its own record
        check_writable(out_record.path, "run folder")
    targets = list(dict.fromkeys(targets))
    for _step, model_path in targets:  # every model loadable before anything is written (a torn final/)
        check_model(model_path, f"TARGET {target}" if model_path == target else f"TARGET {target}: {model_path}",
                    local="evaluate a local folder")
    rows: list[dict] = []
    seen = set()
    for step, model_path in targets:
        if model_path in seen:
            continue
        seen.add(model_path)
        model, tokenizer = load_for_eval(model_path, dtype=str(dtype))
        out_record.path.mkdir(parents=True, exist_ok=True)
        for row in evaluate(model, tokenizer, list(cfg.eval.benchmarks), sampling, max_problems=cfg.eval.max_problems,
                            batch_size=cfg.eval.batch_size, model_path=model_path, backend=backend, step=step):
            row["model_path"] = model_path
            append_eval(out_record, row)
            rows.append(row)
    print_rows(rows, out_record.eval_path, console)
    return rows


def print_rows(rows: list[dict], where: Path, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (logs, CI) gets a wide console: rich would otherwise cut every column to fit 80.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"evaluation ({where})")
    for col in ("benchmark", "step", "problems", "metric", "value", "95% CI"):
        table.add_column(col)
    for row in rows:
        for key, value in row["metrics"].items():
            if key == "pass@1" and f"avg@{row['n']}" in row["metrics"]:
                continue  # the unbiased Pass@1 is Avg@n exactly: shown once
            lo, hi = row["ci"].get(key, (None, None))
            ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None else ""
            table.add_row(row["benchmark"], str(row["step"]), str(row["problems"]), key, f"{value:.3f}", ci)
    if rows:
        r = rows[-1]
        table.caption = (f"n={r['n']} samples/problem, T={r['sampling']['temperature']}, top_p={r['sampling']['top_p']}, "
                         f"top_k={r['sampling']['top_k']}, backend {r['backend']}, {r['samples_per_s']} samples/s")
    console.print(table)
