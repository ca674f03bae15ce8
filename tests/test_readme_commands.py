"""Every command of the README's "Commands" block, run in order as written on a fresh results folder
(issue 25), so a README command that stops working fails here. The commands that train get overrides
appended that cut them down (2 steps, 2 problems, n = 2, one job at a time); nothing else is changed.
A command the README says needs GPUs or a hub model is run too, and must refuse in one line.

Runtime is bounded by what the block trains: 7 runs of 2 steps synchronously, and the sweeps' first
runs in the background until the block stops and cancels them (the study sweep is cancelled at the end)."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import said

REPO = Path(__file__).resolve().parent.parent
# Appended to every command that trains: training cut to 2 steps, the end evaluation to 2 problems of one
# benchmark (so `abcx eval RUN eval.n=64` samples 128 completions, with the run's own settings).
CUT = ["train.max_steps=2", "eval.n=2", "eval.max_problems=2", "eval.benchmarks=[chain]"]
SWEEP_CUT = [*CUT, "launcher.max_parallel=1"]


def readme_commands() -> list[tuple[str, str]]:
    """(command, its README comment) for each command of the Commands block; `a; b` is two commands and
    an optional argument in brackets (`[--run ID]`) is left out."""
    text = (REPO / "README.md").read_text()
    block = text.split("\n## Commands\n", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    commands = []
    for line in block.splitlines():
        code, comment = (re.split(r"\s#\s", line, maxsplit=1) + [""])[:2]
        for part in code.split(";"):
            part = re.sub(r"\s\[[^\]]*\]", "", part).strip()
            if part:
                commands.append((part, comment.strip()))
    return commands


def needs_hardware(comment: str) -> bool:
    """The README says this command needs GPUs or a hub model (it is to refuse here in one line)."""
    return bool(re.search(r"needs \d+ GPUs|needs a GPU|hub model", comment))


def extra_args(argv: list[str]) -> list[str]:
    """The overrides that cut a command down: training ones only."""
    if argv[:1] == ["train"]:
        return CUT
    if argv[:2] in (["sweep", "epsilons"], ["sweep", "run"]):
        return SWEEP_CUT
    return []


def run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="80")
    return subprocess.run([sys.executable, "-m", "abcx.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_readme_lists_the_commands_this_test_runs():
    commands = readme_commands()
    assert len(commands) >= 20 and all(c.startswith("abcx") for c, _ in commands)
    assert ("abcx sweep stop epsilons", "stop running runs at their next checkpoint; `sweep run` resumes them") \
        in commands
    assert [c for c, comment in commands if needs_hardware(comment)] == ["abcx train experiment=paper_qwen3_1.7b"]


@pytest.mark.slow
def test_every_readme_command_runs_as_written_on_a_fresh_results_folder(tmp_path, tiny_model_path):
    from abcx.config.compose import compose
    from abcx.config.identity import run_id

    first_run = run_id(compose(CUT))  # what the block's first `abcx train` trains
    try:
        for command, comment in readme_commands():
            argv = [a.replace("<run_id>", first_run) for a in shlex.split(command)[1:]]
            proc = run(argv + extra_args(argv), tmp_path)
            assert "Traceback" not in proc.stdout + proc.stderr, (command, proc.stderr[-3000:])
            if needs_hardware(comment):
                lines = said(proc.stderr)
                assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (command, lines)
                continue
            assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
            if argv[:1] == ["eval"]:  # the run's own benchmarks and problem count; only n from the command line
                rows = [json.loads(line) for line in (tmp_path / "results" / "runs" / first_run / "eval.jsonl")
                        .read_text().splitlines()]
                assert [(r["benchmark"], r["problems"], r["overridden"]) for r in rows if r["n"] == 64] == \
                    [("chain", 2, {"n": 64})]
            if "--pivot" in argv:
                assert "mean over seeds, method.eps3 × method.eps4" in proc.stdout
    finally:
        for sweep in ("study", "epsilons"):
            run(["sweep", "cancel", sweep], tmp_path, timeout=120)
    assert (tmp_path / "runs.csv").stat().st_size > 0 and (tmp_path / "results" / "plots" / "plots.json").exists()
