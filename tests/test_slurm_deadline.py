"""On the harness SLURM cluster (tests/slurm_harness.py): a job whose trainer freezes is requeued by its
stall watcher and resumes (abcx.training.watchdog), and the warning before a job's end becomes a
checkpoint at the next rollout boundary, so the requeued job trains no step twice and loses none
(abcx.training.deadline) -- or, when that boundary is too far for the warning, requeues as before.

The warning is sent as SLURM sends it before a time limit or a preemption, `USR2` to the job's
processes, with `scancel --signal=USR2 <job>`: a real time limit is counted in minutes and checked by
slurmctld only every ~30 s."""
from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from abcx.record import RunRecord, read_jsonl
from abcx.sweep import command, manifest
from tests.helpers import call, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
QUICK = ["train.per_device_train_batch_size=16", "train.max_completion_length=16", "logger=none", "eval.at_end=false"]
LOCAL_PROFILE = Path(__file__).resolve().parent.parent / "slurm" / "profiles" / "local.yaml"


def one_point(tmp_path: Path, results: Path, fixed: str, profile: str = "local") -> str:
    path = tmp_path / "deadline.yaml"
    path.write_text(f"name: deadline\nfixed: [model=tiny, task=chain, train=testbed, method=grpo, {', '.join(QUICK)}, "
                    f"launcher=slurm, launcher.profile={profile}, results_dir={results}, {fixed}]\n"
                    "grid:\n  seed: [0]\n")
    return str(path)


def the_run(results: Path) -> RunRecord:
    (entry,) = manifest.load(results, "deadline")["runs"]
    return RunRecord(results / "runs" / entry["run_id"])


def job_logs(results: Path, job_id: str, suffix: str) -> str:
    return "\n".join(p.read_text() for p in (results / "sweeps" / "deadline" / "jobs").glob(f"{job_id}/*{suffix}"))


def progress_steps(results: Path, job_id: str, steps: int) -> Counter:
    """How often each step's progress line appears in the job's output, over all its attempts (progress
    is not output: it goes to stderr, the job's .err)."""
    return Counter(int(m) for m in re.findall(rf"\] step (\d+)/{steps} ", job_logs(results, job_id, ".err")))


def test_a_slurm_job_frozen_at_step_3_is_requeued_by_its_watcher_and_resumes(slurm_cluster, tmp_path,
                                                                            tiny_model_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("ABCX_FAULT", "row@3:STOP")  # sbatch exports the environment to the job
    monkeypatch.setenv("ABCX_FAULT_ONCE", str(tmp_path / "froze-once"))
    path = one_point(tmp_path, results, "train.max_steps=8, train.save_steps=2, launcher.stall_timeout_s=20")
    code, out = call(command.sweep_run, path, [])
    assert code == 0, out
    record = the_run(results)
    wait_until(lambda: record.status().get("stall"), 240, "the watcher to record the stall")
    assert record.state() == "failed" and record.status()["error"].startswith("no progress for ")
    wait_until(lambda: record.state() == "finished", 300, "the requeued job to finish")
    status = record.status()
    (stall,) = status["stalls"]
    assert stall["step"] == 3 and stall["timeout_s"] == 20 and stall["job_id"] == status["job_id"]
    assert [r["step"] for r in read_jsonl(record.metrics_path)] == list(range(1, 9))
    assert record.meta()["attempts"] == 2
    err = job_logs(results, status["job_id"], ".err")
    assert "no progress for 2" in err and "requeued to resume from its newest checkpoint" in err
    assert "resuming from checkpoint-2" in err
    code, out = call(command.sweep_status, "deadline", results_dir=str(results))
    assert "1 finished" in out


def test_the_warning_before_the_end_saves_at_the_next_rollout_boundary_and_no_step_is_trained_twice(
        slurm_cluster, tmp_path, tiny_model_path):
    """Checkpoints every 25 steps, a rollout every 4 (train=testbed): warned after step 26, the run saves
    at the next multiple of 4 (not of 25) and the requeued job resumes there."""
    results = tmp_path / "results"
    steps = 120
    code, out = call(command.sweep_run, one_point(tmp_path, results, f"train.max_steps={steps}, train.save_steps=25"), [])
    assert code == 0, out
    record = the_run(results)
    wait_until(lambda: record.state() == "running" and record.status().get("step", 0) >= 26, 240,
               "the job past its first checkpoint")
    job_id = record.status()["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, capture_output=True, timeout=30)
    wait_until(lambda: record.state() == "finished", 300, "the requeued run to finish")
    err = job_logs(results, job_id, ".err")
    warned, target = map(int, re.search(r"warned of the job's end at step (\d+): saving a checkpoint at step (\d+)",
                                        err).groups())
    assert target % 4 == 0 and warned < target <= warned + 4 and target % 25, err[-3000:]
    assert f"checkpoint-{target} saved before the job's end; requeueing" in err and "this job is preempted" in err
    assert f"resuming from checkpoint-{target}" in err
    assert progress_steps(results, job_id, steps) == Counter(range(1, steps + 1))  # each step trained once
    assert [r["step"] for r in read_jsonl(record.metrics_path)] == list(range(1, steps + 1))
    assert record.meta()["attempts"] == 2 and record.status()["job_id"] == job_id


def test_a_boundary_further_away_than_the_warning_requeues_as_before_and_says_so(slurm_cluster, tmp_path,
                                                                                tiny_model_path):
    """A 1 s warning (the profile's signal_delay_s) and a rollout every 128 steps: the boundary cannot be
    reached in time, so the job requeues at once and the steps since checkpoint-10 are trained again."""
    results = tmp_path / "results"
    profile = tmp_path / "short_warning.yaml"
    text = LOCAL_PROFILE.read_text()
    profile.write_text(text.replace("\nsignal_delay_s: null", "\nsignal_delay_s: 1"))
    assert "signal_delay_s: 1" in profile.read_text()
    steps = 140
    path = one_point(tmp_path, results, f"train.max_steps={steps}, train.save_steps=10, train.num_iterations=32",
                     profile=str(profile))
    code, out = call(command.sweep_run, path, [])
    assert code == 0, out
    record = the_run(results)
    wait_until(lambda: record.state() == "running" and 12 <= record.status().get("step", 0), 240,
               "the job past its first checkpoint")
    job_id = record.status()["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, capture_output=True, timeout=30)
    wait_until(lambda: record.state() == "finished", 300, "the requeued run to finish")
    err = job_logs(results, job_id, ".err")
    assert "the next rollout boundary (step 128) is ~" in err and "of the 1 s warning: requeueing now as before" in err
    resumed = int(re.search(r"resuming from checkpoint-(\d+)", err).group(1))
    assert resumed % 10 == 0 and "saved before the job's end" not in err
    again = {s for s, n in progress_steps(results, job_id, steps).items() if n == 2}
    assert min(again) == resumed + 1  # the steps after the checkpoint, trained again: today's behaviour
    assert [r["step"] for r in read_jsonl(record.metrics_path)] == list(range(1, steps + 1))
