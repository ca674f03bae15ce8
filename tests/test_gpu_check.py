"""What can be checked of `make gpu-check` (bench/gpu_check.py) without a GPU: its plan, its arguments,
that every command it would run is a valid abcx invocation, and that without CUDA it refuses in one line
and writes nothing (so results/gpu/ never holds figures that were not measured). The checks themselves
need a CUDA GPU."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def test_the_dry_run_lists_every_check_with_its_commands_and_budget_and_runs_nothing(tmp_path):
    proc = run_script("--dry-run", "--work", str(tmp_path / "scratch"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    for name, check in gpu_check.CHECKS.items():
        assert f"- {name} (budget {check.budget_s} s)" in proc.stdout
    assert "--backend vllm" in proc.stdout and "train.use_vllm=true" in proc.stdout and "--vocab 151936" in proc.stdout
    assert sum(c.budget_s for c in gpu_check.CHECKS.values()) >= gpu_check.TOTAL_BUDGET_S == 480
    assert not (tmp_path / "scratch").exists() and not (tmp_path / "out").exists()


def test_an_unknown_check_is_one_line_naming_the_valid_ones():
    proc = run_script("--only", "train_bf16,roofline")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "unknown check 'roofline'; valid: train_bf16, heads_agree, vllm_colocate, head_roofline, eval_vllm" \
        in proc.stderr


@pytest.mark.parametrize("name", list(gpu_check.CHECKS))
def test_every_abcx_command_of_the_check_composes_to_a_valid_config(name, tmp_path):
    from abcx.config.compose import compose

    for cmd in gpu_check.CHECKS[name].commands(tmp_path):
        if cmd[1:3] != ["-m", "abcx.cli"]:
            continue
        args = cmd[3:]
        overrides = args[1:] if args[0] == "train" else [a for a in args[2:] if "=" in a]
        cfg = compose(overrides)  # raises a one-line UserError for a field or value abcx does not know
        if args[0] == "train":
            assert cfg.train.bf16 is True and cfg.model.name == "tiny"


def test_without_cuda_it_refuses_in_one_line_and_writes_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real check would run (use make gpu-check)")
    proc = run_script("--out", str(tmp_path / "out"), "--work", str(tmp_path / "scratch"))
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists() and not (tmp_path / "scratch").exists()


def test_the_committed_results_readme_does_not_claim_figures_no_check_produced():
    readme = (REPO / "results" / "gpu" / "README.md").read_text()
    results = REPO / "results" / "gpu" / "results.json"
    if not results.exists():  # no run has been committed: the README must say so, with no pass/fail table
        assert "has not run yet" in readme and "| pass |" not in readme and "make gpu-check" in readme
    else:
        import json

        report = json.loads(results.read_text())
        assert readme == gpu_check.render_readme(report)  # the README is exactly what the run wrote
