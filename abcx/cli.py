"""The `abcx` command line: parses and delegates. Nothing heavy is imported at start-up."""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from abcx.errors import RunFailed, UserError

# Plain click help (rich_markup_mode=None): rich's help renderer imports rich.markdown and friends and
# took `abcx --help` from ~0.15 s to ~0.35 s on a 2-core machine (bench/bench_cli_start.py).
PLAIN = dict(no_args_is_help=True, rich_markup_mode=None,
             context_settings={"max_content_width": 100, "help_option_names": ["-h", "--help"]})
# Typer's shell completion: `abcx --install-completion` (bash, zsh, fish, PowerShell).
app = typer.Typer(
    **PLAIN, add_completion=True, pretty_exceptions_enable=False,
    help="Run GRPO vs ABC-GRPO clipping ablations: train, sweep, evaluate, report.",
)
sweep_app = typer.Typer(**PLAIN, help="Grids of runs: plan, submit, follow, cancel.")
app.add_typer(sweep_app, name="sweep")
config_app = typer.Typer(**PLAIN, help="The composed config: see what a command would run with.")
app.add_typer(config_app, name="config")


def _version(value: bool) -> None:
    if value:
        from abcx import __version__

        print(f"abcx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print abcx's version and exit.")) -> None:
    """Run GRPO vs ABC-GRPO clipping ablations: train, sweep, evaluate, report."""

OVERRIDES = typer.Argument(None, help="Hydra overrides, e.g. method=grpo train.max_steps=20 method.eps3=inf")


def _show_config(overrides: list[str], what: str = "job") -> None:
    """Print the composed, validated config as YAML (what `abcx train` would run with) and its run id."""
    from omegaconf import OmegaConf

    from abcx.config.compose import compose

    from abcx.config.identity import run_id

    if what != "job":
        raise UserError(f"--cfg {what!r}: valid: job (the composed config)")
    cfg = compose(overrides)
    print(f"# run id: {run_id(cfg)}")
    print(OmegaConf.to_yaml(cfg, resolve=True), end="")


@config_app.command("show")
def config_show(overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Print the composed config for these overrides (as `abcx train --cfg job`)."""
    _show_config(overrides or [])


@app.command()
def train(overrides: Optional[List[str]] = OVERRIDES,
          cfg_: Optional[str] = typer.Option(None, "--cfg", help="job: print the composed config and exit (Hydra's convention)."),
          rerun: bool = typer.Option(False, "--rerun", help="Train an ended config again: its old record moves to runs/.superseded/ (kept).")) -> None:
    """Train one run in this process.

    The default is ABC-GRPO on the tiny testbed (local model, W&B offline).
    """
    from abcx.config.compose import compose
    from abcx.config.identity import run_id
    from abcx.launch.job import train_here
    from abcx.paths import check_results_dir

    if cfg_ is not None:
        _show_config(overrides or [], cfg_)
        return
    cfg = compose(overrides or [])
    check_results_dir(cfg.results_dir, f"{cfg.results_dir}/runs/{run_id(cfg)}")  # one line, before any work
    from abcx.training.preflight import check_machine

    check_machine(cfg)  # GPUs, DeepSpeed, a loadable hub model: one line each, before anything starts
    if rerun:
        from abcx.training.train import record_for

        moved = record_for(cfg).move_aside()
        if moved:
            print(f"--rerun: the previous record is now {moved}")
    record = train_here(cfg, overrides or [])
    from abcx.training.summary import print_summary

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

    Command-line axes (method.eps3=0.2,inf seed=0,1) replace the file's axis of that name.
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

    Per run: state, step, elapsed, device-hours, job id, error or stop reason; a halving sweep's
    rung table; then totals and the budget.
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


@sweep_app.command("stop")
def sweep_stop(name: str,
               run: Optional[List[str]] = typer.Option(None, "--run", help="A run id of the sweep (repeatable); "
                                                       "default: every running run, and the sweep's queue."),
               grace: float = typer.Option(300.0, "--grace", help="Seconds to wait for the checkpoint before "
                                           "cancelling the job (scancel on SLURM)."),
               reason: str = typer.Option("", "--reason", help="Why: kept in the run's record."),
               results_dir: str = RESULTS) -> None:
    """Stop running runs at their next checkpoint.

    The trainer stops at its next generation boundary, saves a checkpoint and records `stopped`;
    a job still alive after --grace seconds is cancelled. Without --run the supervisor starts
    nothing more. `abcx sweep run` again resumes the stopped runs.
    """
    from abcx.sweep.command import sweep_stop as stop

    raise typer.Exit(stop(name, run_ids=run or [], grace_s=grace, reason=reason, results_dir=results_dir))


@sweep_app.command("list")
def sweep_list() -> None:
    """The sweep files under sweeps/."""
    from abcx.sweep.command import sweep_list as listing

    raise typer.Exit(listing())


@app.command("status")
def status(name: Optional[str] = typer.Argument(None, help="A sweep name (none: every sweep)."),
           results_dir: str = RESULTS) -> None:
    """Status of submitted work: one sweep (same as `abcx sweep status`), or every sweep in one line each."""
    if name:
        sweep_status(name, results_dir)
    from abcx.sweep.command import status_all

    raise typer.Exit(status_all(results_dir=results_dir))


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
    plots: Optional[str] = typer.Option(None, "--plots", help="Write the figures (and plots.json, what each holds) into this folder."),
    plot_format: str = typer.Option("png", "--plot-format", help="png, pdf or svg."),
    smooth: int = typer.Option(5, "--smooth", help="Rolling window (logged steps) for the per-step curves; 1 = raw."),
    out: Optional[str] = typer.Option(None, "--out", help="Write the report to this file instead of the terminal."),
    group_by: Optional[List[str]] = typer.Option(None, "--group-by", help="Config fields to group runs by (repeatable)."),
    baseline: str = typer.Option("grpo", help="Method that gains are measured against."),
    last_n: int = typer.Option(10, "--last-n", help="Average the training-dynamics metrics over the last N steps."),
    pivot: Optional[List[str]] = typer.Option(None, help="ROW,COL[,METRIC], e.g. method.eps3,method.eps4,entropy_last (repeatable)."),
    wandb_project: Optional[str] = typer.Option(None, "--wandb-project", help="entity/project of online W&B runs."),
    sweep: Optional[str] = typer.Option(None, help="Only runs of this sweep."),
    group: Optional[str] = typer.Option(None, help="Only runs of this W&B group."),
    tags: Optional[List[str]] = typer.Option(None, "--tag", help="Only runs with this tag (repeatable)."),
    label: Optional[List[str]] = typer.Option(None, "--label", help="GLOB=method:NAME,model:NAME,seed:N for runs matching GLOB (path or id; repeatable; wins over inference)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="YAML file of label rules: {GLOB: {method: ..., model: ..., seed: ...}}."),
    metric_map: Optional[str] = typer.Option(None, "--metric-map", help="YAML file adding to or overriding abcx/report/metric_map.yaml (other loggers' metric names and quadrant layouts; `use_layout: {GLOB: LAYOUT}` names a run's layout)."),
    trust_pickles: bool = typer.Option(False, "--trust-pickles", help="Read HF training_args.bin pickles beside trainer_state.json (unpickling can run code)."),
) -> None:
    """Comparison tables and plots from runs.

    Table 3 layout, training dynamics, epsilon pivots, PNG panels.
    """
    from abcx.report.command import run_report

    pivot_fields = [tuple(f.strip() for f in p.split(",")) for p in pivot] if pivot else None
    run_report(sources or ["results"], wandb_project=wandb_project, sweep=sweep, group=group, tags=tags or [],
               group_by=group_by or None, baseline=baseline, last_n=last_n, fmt=fmt, plots_dir=plots, out=out,
               pivot=pivot_fields, plot_format=plot_format, smooth=smooth, label_rules=label or [],
               labels_file=labels, metric_map=metric_map, trust_pickles=trust_pickles)


def _one_line(message: str) -> str:
    """The message as one terminal line: a control character or line separator it echoes from the input
    (a `\r` in a --sweep value, a `\x1e` in an override) is shown escaped, never acted on."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def main() -> None:
    try:
        app()
    except UserError as err:
        print(f"error: {_one_line(str(err))}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as err:  # the run record holds the details (error.txt)
        print(f"error: {_one_line(str(err))}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
