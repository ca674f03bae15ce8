"""A new user's first hour, replayed with real training on the testbed at fast settings (issue 15):
the demo sweep, a second sweep with a job cancelled while queued, `abcx eval` with another n, and
`abcx report results` in every format and with --plots, on an 80-column terminal and piped. Every
command exits 0, no traceback appears, and the plots hold their panels (read from plots.json)."""
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
FAST = ["train.max_steps=2", "eval.max_problems=4", "eval.n=4", "seed=0"]


def abcx(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="80")
    proc = subprocess.run([sys.executable, "-m", "abcx.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert "Traceback" not in proc.stdout + proc.stderr, (args, proc.stderr[-3000:])
    return proc


def ok(*args: str, cwd: Path, timeout: float = 300) -> str:
    proc = abcx(*args, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc.stdout


def on_terminal(*args: str, cwd: Path) -> str:
    """The command's output as an 80-column terminal shows it (a real pty, so isatty() is true)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="80", LINES="40")
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the command on the pty (and never returns into pytest)
        try:
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "abcx.cli", *args], env)
        finally:
            os._exit(127)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0 and "Traceback" not in text, text[-3000:]
    return text


@pytest.mark.slow
def test_the_first_hour_of_a_new_user(tmp_path, tiny_model_path):
    ok("eval", "tiny", "eval.benchmarks=[chain]", "eval.max_problems=4", "eval.n=4", cwd=tmp_path)  # the warm start
    ok("sweep", "run", "demo", *FAST, "--wait", cwd=tmp_path)
    # A second sweep, one job at a time, cancelled at once: its second run never starts.
    ok("sweep", "run", "smoke", "train.max_steps=2", "launcher.max_parallel=1", cwd=tmp_path)
    ok("sweep", "cancel", "smoke", cwd=tmp_path)
    runs = tmp_path / "results" / "runs"
    never_started = [p for p in runs.iterdir() if not (p / "config.yaml").exists()]
    assert never_started, "expected a run cancelled while queued"
    demo_run = next(p for p in runs.iterdir() if p.name.startswith("grpo-") and (p / "final").is_dir())
    ok("eval", str(demo_run), "eval.n=2", "eval.benchmarks=[chain]", "eval.max_problems=4", cwd=tmp_path)

    # Job logs: one line per logged step; library warnings and HF progress bars in the run's library.log.
    logs = [p.read_text() for p in (tmp_path / "results" / "sweeps" / "demo" / "jobs").glob("*/*_log.*")]
    assert sum("step 2/2" in text for text in logs) == 2
    assert not any("Loading weights" in text or "FutureWarning" in text for text in logs)
    assert all((p / "library.log").exists() for p in runs.iterdir() if (p / "config.yaml").exists())
    import yaml

    assert yaml.safe_load((demo_run / "config.yaml").read_text())["results_dir"] == "results"  # as typed, relative
    card = (demo_run / "checkpoints" / "README.md").read_text()
    assert "[None]" not in card and demo_run.name in card  # the model card names the run and its base model
    # W&B's run config holds abcx's resolved config; a W&B-sourced report counts the trainer's steps.
    from abcx.report.sources.wandb_offline import read_runs

    abc = next(p for p in runs.iterdir() if p.name.startswith("abc_grpo-") and (p / "final").is_dir())
    wandb_run = read_runs([str(next((abc / "wandb").glob("offline-run-*")))])
    row = wandb_run.runs.iloc[0]
    assert row["method"] == "abc_grpo" and row["cfg.abcx.bounds.eps1"] == 0.2 and row["step"] == 2
    assert row["cfg.epsilon"] == "unused by abcx: see abcx.bounds"
    finished = ok("train", "model=tiny", "task=chain", "train=testbed", "eval=demo",  # the demo's own point
                  "logger=wandb_offline", "method=abc_grpo", *FAST, cwd=tmp_path)
    assert "already finished" in finished and "seed=1" in finished and "--rerun" in finished

    text = ok("report", "results", cwd=tmp_path)  # piped: nothing cut
    assert never_started[0].name in text and "Gain abc_grpo vs grpo" in text
    assert "chain (n=2)" in text and "chain (n=4)" in text  # the two settings never share a row
    for fmt in ("markdown", "latex", "json"):
        ok("report", "results", "--format", fmt, "--out", f"report.{fmt}", cwd=tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert {"runs", "groups", "table3"} <= set(doc["tables"])
    ok("report", "results", "--format", "csv", "--out", "report.csv", cwd=tmp_path)
    long = pd.read_csv(tmp_path / "report.csv")
    assert {"run_id", "metric", "step", "value"} <= set(long.columns) and len(long) > 10

    shown = on_terminal("report", "results", "--sweep", "demo", "--plots", "plots", cwd=tmp_path)
    assert "Evaluation (Table 3 layout)" in shown
    manifest = json.loads((tmp_path / "plots" / "plots.json").read_text())
    figures = {f["file"]: f for f in manifest["figures"]}
    assert {"reward.png", "entropy.png", "quadrant_shares.png", "eval_chain_n_4_.png"} <= set(figures)
    avg = figures["eval_chain_n_4_.png"]["panels"][0]
    # Step 0 is the warm start evaluated with the same settings, then the runs' own evaluation.
    assert {s["label"]: s["points"] for s in avg["series"]} == {"abc_grpo": 2, "grpo": 2}
    assert all(p["xlabel"] and p["ylabel"] for f in figures.values() for p in f["panels"])
    assert all((tmp_path / "plots" / name).stat().st_size > 5000 for name in figures)
