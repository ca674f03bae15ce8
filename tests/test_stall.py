"""A run that stops moving is noticed (abcx.training.watchdog): real trainers frozen with a real SIGSTOP
at step 3 (ABCX_FAULT=row@3:STOP) are killed by the watcher process after launcher.stall_timeout_s,
recorded `failed` with why, and resumed from their newest checkpoint -- by `abcx train` again, or by
the sweep supervisor itself, a bounded number of times. The SLURM side is in tests/test_slurm_deadline.py."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from abcx.record import RunRecord, read_jsonl
from abcx.sweep import command, manifest
from abcx.training.watchdog import FLOOR_STEPS, LATE_MIN_S, LATE_STEPS, Clock, late_line, retry_after_stall
from tests.helpers import abcx, call, one_error_line, wait_until

QUICK = ["train.per_device_train_batch_size=16", "train.max_completion_length=16", "logger=none", "eval.at_end=false"]


def test_the_timeout_is_at_least_five_median_steps_and_a_run_is_late_before_it():
    clock = Clock(20.0, now=1000.0)
    for step, at in ((1, 1001.0), (2, 1003.0), (3, 1005.0), (4, 1007.0)):  # 2 s per step
        clock.beat(f"step {step}", at)
    assert clock.median_step_s == 2.0 and clock.timeout_s == 20.0  # 5 x 2 s < the 20 s setting
    assert clock.late_after_s == LATE_MIN_S  # 3 x 2 s is under the least lateness (10 s)
    assert not clock.stalled(1007.0 + 19.9) and clock.stalled(1007.0 + 20.0)
    slow = Clock(20.0, now=0.0)
    for step in range(1, 6):
        slow.beat(f"step {step}", 7.0 * step)  # 7 s per step: 5 x 7 = 35 s > 20 s
    assert slow.timeout_s == FLOOR_STEPS * 7.0 and slow.late_after_s == min(35.0 / 2, LATE_STEPS * 7.0)
    slow.beat("alive", 50.0)  # any sign of progress restarts the silence, but is no step
    assert slow.step == 5 and slow.silent_s(60.0) == 10.0
    assert slow.beat("end", 61.0) is False


def test_sweep_status_words_for_a_late_run():
    beat = {"step": 7, "beat_at": 100.0, "late_after_s": 10.0, "timeout_s": 1800.0, "median_step_s": 0.25}
    assert late_line(beat, now=109.0) is None
    assert late_line(beat, now=125.0) == ("late: no progress for 0:00:25 after step 7; its median step 0.25 s; "
                                          "killed at 0:30:00")
    assert late_line({**beat, "ended": True}, now=125.0) is None and late_line({}, now=125.0) is None


@pytest.mark.parametrize("value, valid", [("abc", "is not a number"), ("0", "is out of range"),
                                          ("-5", "is out of range"), ("null", "is not a number"),
                                          ("1e9", "is out of range")])
def test_a_stall_timeout_that_is_not_seconds_or_off_is_one_line_before_any_work(tmp_path, value, valid):
    proc = abcx("train", f"launcher.stall_timeout_s={value}", f"results_dir={tmp_path / 'results'}", cwd=tmp_path)
    line = one_error_line(proc)
    assert line.startswith("error: launcher.stall_timeout_s=") and valid in line
    assert "a positive number of seconds (at most 604800) or off" in line
    assert not (tmp_path / "results").exists()


def test_stall_retries_is_a_count_from_zero(tmp_path):
    line = one_error_line(abcx("train", "launcher.stall_retries=-1", f"results_dir={tmp_path / 'results'}", cwd=tmp_path))
    assert line.startswith("error: launcher.stall_retries=-1 is out of range")
    assert not (tmp_path / "results").exists()


def freeze_env(tmp_path: Path, once: bool = True) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ABCX_FAULT", "ABCX_FAULT_ONCE")}
    env["ABCX_FAULT"] = "row@3:STOP"
    if once:
        env["ABCX_FAULT_ONCE"] = str(tmp_path / "froze-once")
    return env


def test_abcx_train_frozen_at_step_3_is_killed_recorded_and_resumed_by_the_same_command(tmp_path, tiny_model_path):
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "abcx.cli", "train", "train.max_steps=6", "train.save_steps=2", *QUICK,
           "launcher.stall_timeout_s=8", f"results_dir={results}"]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=tmp_path, env=freeze_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL: a stopped process handles nothing
    (path,) = (results / "runs").iterdir()
    record = RunRecord(path)
    status = record.status()
    assert status["state"] == "failed" and status["error"].startswith("no progress for ")
    assert status["error"].endswith("s after step 3 (stall timeout 8 s)") and status["stall"]["step"] == 3
    assert 8 <= status["stall"]["silent_s"] < 12 and time.time() - t0 < 120
    assert "no progress for" in proc.stderr and "killing the trainer" in proc.stderr
    proc = subprocess.run(cmd, cwd=tmp_path, env=freeze_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming from checkpoint-2" in proc.stderr
    status = record.status()
    assert status["state"] == "finished" and status["stall"] is None and len(status["stalls"]) == 1
    assert [r["step"] for r in record.metrics()] == list(range(1, 7))
    assert record.heartbeat()["ended"] is True


def sweep_file(tmp_path: Path, results: Path, extra: str = "") -> str:
    path = tmp_path / "stall.yaml"
    path.write_text(f"name: stall\nfixed: [model=tiny, task=chain, train=testbed, method=grpo, train.max_steps=8, "
                    f"train.save_steps=2, {', '.join(QUICK)}, results_dir={results}{extra}]\ngrid:\n  seed: [0]\n")
    return str(path)


def only_run(results: Path, sweep: str = "stall") -> RunRecord:
    (entry,) = manifest.load(results, sweep)["runs"]
    return RunRecord(results / "runs" / entry["run_id"])


def test_a_local_sweep_run_frozen_at_step_3_shows_late_then_is_killed_and_retried_to_the_end(
        tmp_path, tiny_model_path, monkeypatch):
    results = tmp_path / "results"
    for key, value in freeze_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    code, out = call(command.sweep_run, sweep_file(tmp_path, results, ", launcher.stall_timeout_s=20"), [])
    assert code == 0 and "supervisor pid" in out, out
    record = wait_until(lambda: only_run(results) if (results / "sweeps" / "stall" / "manifest.json").exists()
                        else None, 60, "the sweep's manifest")
    try:
        # Frozen at step 3: `sweep status` says late (after 10 s) while the run still counts as running.
        _code, late = wait_until(lambda: (lambda r: r if "(late)" in r[1] else None)(
            call(command.sweep_status, "stall", results_dir=str(results))), 120, "the run shown late")
        assert record.state() == "running" and "running (late)" in late
        assert "late: no progress for 0:00:1" in late and "after step 3" in late and "killed at 0:00:20" in late
        wait_until(lambda: not command.SUP.alive(manifest.load(results, "stall")), 240, "the sweep to end")
    finally:
        call(command.sweep_cancel, "stall", results_dir=str(results))
    status = record.status()
    assert status["state"] == "finished", status
    (stall,) = status["stalls"]
    assert stall["step"] == 3 and stall["timeout_s"] == 20 and stall["count"] == 1
    assert [r["step"] for r in record.metrics()] == list(range(1, 9))
    assert record.meta()["attempts"] == 2 and len(manifest.load(results, "stall")["runs"][0]["jobs"]) == 2
    log = (results / "sweeps" / "stall" / "supervisor.log").read_text()
    assert "stalled after step 3: retry 1 of 2" in log and "ended: finished" in log


def test_a_run_that_stalls_on_every_attempt_is_retried_only_stall_retries_times(tmp_path, tiny_model_path, monkeypatch):
    results = tmp_path / "results"
    for key, value in freeze_env(tmp_path, once=False).items():
        monkeypatch.setenv(key, value)
    path = sweep_file(tmp_path, results, ", launcher.stall_timeout_s=4, launcher.stall_retries=1")
    code, out = call(command.sweep_run, path, [], wait=True)
    assert code == 1, out
    record = only_run(results)
    status = record.status()
    assert status["state"] == "failed" and [s["count"] for s in status["stalls"]] == [1, 2]
    assert status["error"].startswith("no progress for") and "after step 3" in status["error"]
    assert retry_after_stall(record, 1) is None and retry_after_stall(record, 2) is not None
    assert len(manifest.load(results, "stall")["runs"][0]["jobs"]) == 2  # the first job and one retry
    assert "1 failed" in out
