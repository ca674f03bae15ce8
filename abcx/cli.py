"""The `abcx` command line: parses and delegates. Nothing heavy is imported at start-up."""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from abcx.errors import RunFailed, UserError

# Plain click help (rich_markup_mode=None): rich's help renderer imports rich.markdown and friends and
# took `abcx --help` from ~0.15 s to ~0.35 s on a 2-core machine (bench/bench_cli_start.py).
PLAIN = dict(no_args_is_help=True, rich_markup_mode=None, context_settings={"max_content_width": 100})
app = typer.Typer(
    **PLAIN, add_completion=False, pretty_exceptions_enable=False,
    help="Run GRPO vs ABC-GRPO clipping ablations: train, sweep, evaluate, report.",
)
sweep_app = typer.Typer(**PLAIN, help="Grids of runs: plan, submit, follow, cancel.")
app.add_typer(sweep_app, name="sweep")

OVERRIDES = typer.Argument(None, help="Hydra overrides, e.g. method=grpo train.max_steps=20 method.eps3=inf")


@app.command()
def train(overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Train one run in this process.

    The default is ABC-GRPO on the tiny testbed (local model, W&B offline).
    """
    from abcx.config import compose, run_id
    from abcx.launch.job import train_here
    from abcx.paths import check_results_dir

    cfg = compose(overrides or [])
    check_results_dir(cfg.results_dir, f"{cfg.results_dir}/runs/{run_id(cfg)}")  # one line, before any work
    record = train_here(cfg, overrides or [])
    from abcx.summary import print_summary

    print_summary(record)


@app.command("methods")
def methods_list() -> None:
    """Every registered method: parameters with defaults and domains, bounds, reference."""
    from abcx.methods.listing import text

    typer.echo(text())


DRY_RUN = typer.Option(False, "--dry-run", help="Print the plan (point, run id, state) and exit.")
WAIT = typer.Option(False, "--wait", help="Block until every job has ended.")
YES = typer.Option(False, "--yes", help="Allow grids of more than 500 points.")
RESULTS = typer.Option("results", "--results-dir", help="Where the runs and the sweep manifests live.")


@sweep_app.command("epsilons")
def sweep_epsilons(overrides: Optional[List[str]] = OVERRIDES, dry_run: bool = DRY_RUN, wait: bool = WAIT,
                   yes: bool = YES) -> None:
    """The epsilon grid of sweeps/epsilons.yaml.

    Command-line axes (method.eps3=0.2,inf seed=0,1) extend it.
    """
    from abcx.sweep.command import sweep_run

    raise typer.Exit(sweep_run("epsilons", overrides or [], dry_run=dry_run, wait=wait, yes=yes))


@sweep_app.command("run")
def sweep_run(name: str = typer.Argument(..., help="A sweeps/<name>.yaml or a path to a sweep file."),
              overrides: Optional[List[str]] = OVERRIDES, dry_run: bool = DRY_RUN, wait: bool = WAIT,
              yes: bool = YES) -> None:
    """Submit a sweep's unfinished points.

    Every point that is not finished or running goes to the local or SLURM backend. One submission
    of a sweep at a time: if it is already being run (another `abcx sweep run`, or the supervisor it
    started), this says by whom and exits 0 without changing anything; with --wait it waits for that.
    """
    from abcx.sweep.command import sweep_run as run

    raise typer.Exit(run(name, overrides or [], dry_run=dry_run, wait=wait, yes=yes))


@sweep_app.command("status")
def sweep_status(name: str, results_dir: str = RESULTS) -> None:
    """Per-run state and totals.

    Per run: state, step, elapsed, GPU-hours, job id, error; then totals.
    """
    from abcx.sweep.command import sweep_status as status

    raise typer.Exit(status(name, results_dir=results_dir))


@sweep_app.command("cancel")
def sweep_cancel(name: str, results_dir: str = RESULTS) -> None:
    """Cancel a sweep's queued and running jobs.

    Finished runs are kept.
    """
    from abcx.sweep.command import sweep_cancel as cancel

    raise typer.Exit(cancel(name, results_dir=results_dir))


@sweep_app.command("list")
def sweep_list() -> None:
    """The sweep files under sweeps/."""
    from abcx.sweep.command import sweep_list as listing

    raise typer.Exit(listing())


@app.command("status")
def status(name: str = typer.Argument(..., help="A sweep name."), results_dir: str = RESULTS) -> None:
    """Status of submitted work (same as `abcx sweep status`)."""
    sweep_status(name, results_dir)


@app.command("cancel")
def cancel(name: str = typer.Argument(..., help="A sweep name."), results_dir: str = RESULTS) -> None:
    """Cancel submitted work (same as `abcx sweep cancel`)."""
    sweep_cancel(name, results_dir)


@app.command("eval")
def eval_(
    target: str = typer.Argument(..., help="A run folder or run id, a checkpoint folder, or a model path / hub id."),
    overrides: Optional[List[str]] = OVERRIDES,
    all_checkpoints: bool = typer.Option(False, "--all-checkpoints", help="Evaluate every checkpoint of the run."),
    backend: str = typer.Option("auto", help="auto (vLLM when installed and a GPU is present), hf, vllm."),
) -> None:
    """Evaluate a run, checkpoint or model.

    Samples n completions per problem; reports Avg@k, unbiased Pass@k and bootstrap CIs.
    """
    from abcx.evaluation.command import run_eval

    run_eval(target, overrides or [], all_checkpoints=all_checkpoints, backend=backend)


@app.command()
def report(
    sources: Optional[List[str]] = typer.Argument(None, help="Results dirs, run folders, globs, wandb dirs, trainer_state.json (default: results)."),
    fmt: str = typer.Option("rich", "--format", help="rich, markdown, csv, latex, json."),
    plots: Optional[str] = typer.Option(None, "--plots", help="Write PNG panels into this folder."),
    out: Optional[str] = typer.Option(None, "--out", help="Write the report to this file instead of the terminal."),
    group_by: Optional[List[str]] = typer.Option(None, "--group-by", help="Config fields to group runs by (repeatable)."),
    baseline: str = typer.Option("grpo", help="Method that gains are measured against."),
    last_n: int = typer.Option(10, "--last-n", help="Average the training-dynamics metrics over the last N steps."),
    pivot: Optional[List[str]] = typer.Option(None, help="ROW,COL[,METRIC], e.g. method.eps3,method.eps4,entropy_last (repeatable)."),
    wandb_project: Optional[str] = typer.Option(None, "--wandb-project", help="entity/project of online W&B runs."),
    sweep: Optional[str] = typer.Option(None, help="Only runs of this sweep."),
    group: Optional[str] = typer.Option(None, help="Only runs of this W&B group."),
    tags: Optional[List[str]] = typer.Option(None, "--tag", help="Only runs with this tag (repeatable)."),
) -> None:
    """Comparison tables and plots from runs.

    Table 3 layout, training dynamics, epsilon pivots, PNG panels.
    """
    from abcx.report.command import run_report

    pivot_fields = [tuple(f.strip() for f in p.split(",")) for p in pivot] if pivot else None
    run_report(sources or ["results"], wandb_project=wandb_project, sweep=sweep, group=group, tags=tags or [],
               group_by=group_by or None, baseline=baseline, last_n=last_n, fmt=fmt, plots_dir=plots, out=out,
               pivot=pivot_fields)


def main() -> None:
    try:
        app()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as err:  # the run record holds the details (error.txt)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
