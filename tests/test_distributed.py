"""Several processes per run: `launcher.num_processes > 1` runs the trainer under `accelerate launch`
(conf/accelerate/cpu.yaml: data parallel over gloo, so it runs here without a GPU), for `abcx train`
and for the local backend. One record per run, written by rank 0 alone; the process count is part of
the run's identity because it multiplies the global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from abcx.config.compose import compose

from abcx.config.identity import run_id
from abcx.record import RunRecord, read_jsonl
from abcx.sweep import command, manifest

pytestmark = pytest.mark.slow

TWO = ["launcher.num_processes=2", "launcher.accelerate_config=cpu"]
FAST = ["train.max_steps=4", "train.save_steps=2", "train.per_device_train_batch_size=16", "eval.at_end=false"]


def assert_one_record_of_two_processes(record: RunRecord, steps: int) -> None:
    assert record.status()["state"] == "finished", record.status()
    assert [r["step"] for r in read_jsonl(record.metrics_path) if "loss" in r] == list(range(1, steps + 1))
    meta = record.meta()
    assert meta["world_size"] == 2 and meta["trl_args"]["per_device_train_batch_size"] == 16
    assert meta["attempts"] == 1  # rank 1 never started the record a second time
    first_row = next(iter(read_jsonl(record.metrics_path)))
    assert all(f"clip/q{i}" in first_row for i in range(1, 5))  # quadrant counts reduced over both ranks


def test_abcx_train_with_two_processes_writes_one_record_and_one_wandb_run(tmp_path, tiny_model_path):
    args = [*TWO, *FAST, f"results_dir={tmp_path}"]
    result = subprocess.run([sys.executable, "-m", "abcx.cli", "train", *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name == run_id(compose(args)) != run_id(compose(FAST + [f"results_dir={tmp_path}"]))
    assert_one_record_of_two_processes(RunRecord(run), 4)
    assert len(list(run.glob("wandb/offline-run-*/run-*.wandb"))) == 1  # W&B on rank 0 only
    assert "finished at step 4" in result.stdout


def test_local_sweep_runs_two_distributed_jobs_side_by_side(tmp_path, tiny_model_path):
    """Both smoke points at once, two processes each: their rendezvous ports must not collide."""
    results = tmp_path / "results"
    code = command.sweep_run("smoke", [*TWO, "launcher.max_parallel=2", f"results_dir={results}"], wait=True,
                             out=lambda line: None)
    assert code == 0
    runs = manifest.load(results, "smoke")["runs"]
    assert len(runs) == 2
    for entry in runs:
        assert_one_record_of_two_processes(RunRecord(results / "runs" / entry["run_id"]), 4)
    first, second = sorted(runs, key=lambda e: e["started"])
    assert second["started"] < first["ended"]  # they overlapped


def test_an_unknown_accelerate_config_is_a_one_line_error_before_anything_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "abcx.cli", "train", "launcher.accelerate_config=zero2",
                             f"results_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "launcher.accelerate_config='zero2'" in result.stderr and "cpu, ddp, zero3" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_across_two_ranks_the_loss_matches_trl_and_quadrant_metrics_are_global(tmp_path):
    """Each rank scores its own micro-batch: the `grpo` preset equals TRL's loss and gradients on both
    ranks (dapo's normaliser divides by the process count), and the logged quadrant fractions are the
    same on both ranks because they count both ranks' tokens, not each rank's own."""

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(repo / "conf/accelerate/cpu.yaml"),
           "--num_processes", "2", "--main_process_port", "0", str(repo / "tests/scripts/two_rank_loss.py"),
           str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["world"] == 2
        assert abs(r["ref_loss"] - r["our_loss"]) <= 1e-6 * max(1.0, abs(r["ref_loss"])) and r["worst_grad_diff"] < 1e-6
    assert ranks[0]["ref_loss"] != ranks[1]["ref_loss"]  # the ranks really had different inputs
    assert ranks[0]["local"] != ranks[1]["local"]
    assert ranks[0]["logged"] == ranks[1]["logged"] and ranks[0]["logged"]["clip/q4"] > 0
    # abc_adaptive: both ranks step the controller on the summed counts, so they hold the same epsilons
    from abcx.methods.adaptive import adaptive_update
    from abcx.methods.runtime import MethodRun

    assert ranks[0]["adaptive_local"] != ranks[1]["adaptive_local"]
    total = [a + b for a, b in zip(ranks[0]["adaptive_local"], ranks[1]["adaptive_local"])]
    params = MethodRun("abc_adaptive", {"eta": 10.0}).params
    expected = adaptive_update([0.2] * 4, [q / total[4] for q in total[:4]], **params)
    assert ranks[0]["adaptive_eps"] == ranks[1]["adaptive_eps"] == pytest.approx(list(expected))


def test_methods_that_read_batch_statistics_decide_on_all_ranks_together_as_one_process_would(tmp_path):
    """bapo's bound search, clip_cov's covariance and random draw, kl_cov's top tokens, archer's entropy
    quantile, gmpo's aggregation and abc_adaptive's controller: two ranks, each with one micro-batch,
    give the loss and (rank-averaged) gradients of one process on both micro-batches, and every rank
    uses the same BAPO bounds. On its own share alone a rank would have decided otherwise."""
    import torch

    repo = Path(__file__).resolve().parents[1]
    script = str(repo / "tests/scripts/batch_statistics.py")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    single = subprocess.run([sys.executable, script, str(tmp_path)], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                          str(repo / "conf/accelerate/cpu.yaml"), "--num_processes", "2", "--main_process_port", "0",
                          script, str(tmp_path)], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one, both = torch.load(tmp_path / "single.pt"), torch.load(tmp_path / "two.pt")

    def same(a, b):
        return abs(float(a["loss"]) - float(b["loss"])) <= 1e-6 * max(1.0, abs(float(a["loss"]))) and \
            all(torch.allclose(x, y, atol=1e-6, rtol=1e-5) for x, y in zip(a["grads"], b["grads"]))

    names = ("bapo", "clip_cov", "kl_cov", "archer", "gmpo", "abc_adaptive")
    assert [name for name in names if not same(one[name], both[name])] == []
    assert all(any(float(g.abs().max()) > 1e-3 for g in one[name]["grads"]) for name in names)  # real gradients
    assert both["abc_adaptive"]["eps"] == pytest.approx(one["abc_adaptive"]["eps"])
    assert one["abc_adaptive"]["eps"] != pytest.approx([0.2] * 4)  # the controller moved
    assert same({"loss": one["abc_adaptive"]["loss2"], "grads": one["abc_adaptive"]["grads2"]},
                {"loss": both["abc_adaptive"]["loss2"], "grads": both["abc_adaptive"]["grads2"]})
    for name in ("bapo", "clip_cov", "kl_cov"):  # deciding on its own share, a rank trains something else
        assert not same(one[name], both["own_share"][name]), name
    bounds = [json.loads((tmp_path / f"bounds{r}.json").read_text()) for r in (0, 1)]
    global_bounds = json.loads((tmp_path / "bounds_single.json").read_text())["global"]
    assert bounds[0]["global"] == bounds[1]["global"] == pytest.approx(global_bounds)
    assert bounds[0]["own_share"] != bounds[1]["own_share"]  # the ranks' shares alone pick different bounds
    assert global_bounds not in (bounds[0]["own_share"], bounds[1]["own_share"])
