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


# The eval fields that decide what an evaluation measures: a run is evaluated with its own values of
# these (its config.yaml) unless the command line sets them.
EVAL_SETTINGS = ("benchmarks", "n", "temperature", "top_p", "top_k", "max_new_tokens", "max_problems",
                 "batch_size", "seed")


def _given_eval_fields(overrides: list[str]) -> set[str] | None:
    """The eval fields the command line sets; None when it picks a whole eval group (`eval=paper`)."""
    fields: set[str] = set()
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
        if key == "eval":
            return None
        if key.startswith("eval."):
            fields.add(key.split(".")[1])
    return fields


def keep_run_settings(cfg: Any, record: RunRecord | None, overrides: list[str]) -> dict:
    """Put the run's own evaluation settings into `cfg.eval` (its benchmarks, sampling, problem count)
    except those the command line gives; returns what differs from the run's config ({} for a model
    that is not a run's)."""
    from omegaconf import OmegaConf

    from abcx.config.validate import validate

    run_eval = (record.config().get("eval") or {}) if record is not None else {}
    if not isinstance(run_eval, dict) or not run_eval:
        return {}
    given = _given_eval_fields(overrides)
    if given is not None:
        for key in EVAL_SETTINGS:
            if key in run_eval and key not in given:
                cfg.eval[key] = run_eval[key]
        validate(cfg)  # the run's values with the command line's, checked together
    used = OmegaConf.to_container(cfg.eval, resolve=True)
    return {k: used[k] for k in EVAL_SETTINGS if k in run_eval and used.get(k) != run_eval[k]}


def run_eval(target: str, overrides: list[str], *, all_checkpoints: bool = False, backend: str = "auto",
             console: Any = None) -> list[dict]:
    from abcx.config.compose import compose
    from abcx.evaluation.models import check_model
    from abcx.evaluation.runner import checkpoints_of
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
    overridden = keep_run_settings(cfg, record, overrides)
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
    if record is not None:  # said once every check has passed, so a refusal stays one line
        changed = ", ".join(f"eval.{k}={v}" for k, v in overridden.items()) or "none"
        print(f"evaluating {record.run_id} with its own settings: {', '.join(cfg.eval.benchmarks)}, "
              f"n={sampling.n}, max_problems={cfg.eval.max_problems}; overridden: {changed}", file=sys.stderr)
    out_record.path.mkdir(parents=True, exist_ok=True)
    rows = _evaluate_targets(cfg, targets, out_record, sampling, str(dtype), backend, Path(target).name, record,
                             {"overridden": overridden} if record is not None else {})
    print_rows(rows, out_record.eval_path, console)
    return rows


def _evaluate_targets(cfg: Any, targets, out_record: RunRecord, sampling, dtype: str, backend: str, who: str,
                      record: RunRecord | None, extra: dict) -> list[dict]:
    """Each distinct model of `targets` sampled on cfg.eval's benchmarks; every row appended to the record."""
    from abcx.evaluation.record import append_eval
    from abcx.libraries import library_noise_to

    rows: list[dict] = []
    # Library warnings and bars (transformers' "Loading weights") go to the record's library.log.
    with library_noise_to(out_record.library_log):
        for step, model_path in _unique(targets):
            for row in _evaluate_one(cfg, model_path, step, sampling, dtype, backend, who, record):
                row.update(model_path=model_path, **extra)
                append_eval(out_record, row)
                rows.append(row)
    return rows


def _set_threads(model_path: str, record: RunRecord | None) -> None:
    """The testbed model is overhead-bound: one torch thread, as its training uses, is faster than two
    spin-waiting on each other (measured on 2 busy cores: 5 CPU-s against 70 for 1,024 samples).
    ABCX_TORCH_THREADS overrides."""
    import os

    from abcx.testbed import MARKER

    wanted = os.environ.get("ABCX_TORCH_THREADS")
    testbed = (Path(model_path) / MARKER).is_file() or bool(record is not None and record.meta().get("model_build"))
    if wanted or testbed:
        import torch

        torch.set_num_threads(int(wanted or 1))


def _unique(targets: list[tuple[int | None, str]]) -> list[tuple[int | None, str]]:
    """Each model path once (a run's final model can also be its last checkpoint's copy)."""
    seen: set[str] = set()
    return [(s, p) for s, p in targets if not (p in seen or seen.add(p))]


def _evaluate_one(cfg: Any, model_path: str, step: int | None, sampling, dtype: str, backend: str,
                  who: str, record: RunRecord | None) -> list[dict]:
    from abcx import progress
    from abcx.evaluation.runner import evaluate, load_for_eval

    with progress.task(f"loading {model_path} to evaluate it", name="eval", info="importing torch and transformers") \
            as loading:
        _set_threads(model_path, record)
        model, tokenizer = load_for_eval(model_path, dtype=dtype, shown=loading)
    return evaluate(model, tokenizer, list(cfg.eval.benchmarks), sampling, max_problems=cfg.eval.max_problems,
                    batch_size=cfg.eval.batch_size, model_path=model_path, backend=backend, step=step, who=who)


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
