"""After any interruption the run record holds exactly steps 1..N (docs/architecture.md, "Recovery").

Real `abcx train` processes of the tiny testbed, stopped by real signals at named points
(ABCX_FAULT, abcx.record.fault_point: the process signals itself when it gets there), then started
again with the same command. Whatever the point, the resumed run ends with metric steps 1..N, each
eval row once, a final model trained exactly N steps, and no leftover temporary file.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from abcx.record import RunRecord
from tests.helpers import said

N, SAVE = 12, 5  # checkpoints at 5, 10 and 12
RUN = [f"train.max_steps={N}", f"train.save_steps={SAVE}", "train.save_total_limit=3",
       "train.per_device_train_batch_size=16", "logger=none"]
# Periodic and final evaluation, as small as it gets: eval rows at steps 5, 10 and 12.
EVAL = ["eval.every_steps=5", "eval.at_end=true", "eval.max_problems=2", "eval.n=2", "eval.batch_size=8",
        "eval.max_new_tokens=16"]


def abcx_train(results: Path, *extra: str, fault: str | None = None, timeout: float = 300):
    env = {k: v for k, v in os.environ.items() if k != "ABCX_FAULT"}
    if fault:
        env["ABCX_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "abcx.cli", "train", *RUN, *extra, f"results_dir={results}"],
                          cwd=results.parent, env=env, capture_output=True, text=True, timeout=timeout)


def the_run(results: Path) -> RunRecord:
    (path,) = (results / "runs").iterdir()
    return RunRecord(path)


def metric_steps(record: RunRecord) -> list[int]:
    return [row["step"] for row in record.metrics()]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_trained_exactly(record: RunRecord, stdout: str, steps: int = N, evals: bool = True) -> None:
    from safetensors.torch import load_file

    assert metric_steps(record) == list(range(1, steps + 1))
    status = record.status()
    assert status["state"] == "finished" and status["step"] == steps and status["error"] is None, status
    assert f"step {steps + 1}/" not in stdout
    assert not (record.checkpoints / f"checkpoint-{steps + 1}").exists()
    final = load_file(record.path / "final" / "model.safetensors")
    last = load_file(record.checkpoints / f"checkpoint-{steps}" / "model.safetensors")
    assert final.keys() == last.keys() and all((final[k] == last[k]).all() for k in final)
    if evals:
        rows = Counter((r["step"], r["benchmark"]) for r in map(json.loads, (record.path / "eval.jsonl").open()))
        assert sorted({step for step, _ in rows}) == [5, 10, steps] and set(rows.values()) == {1}, rows
    assert not list(record.path.glob(".*.tmp")), "temporary files left behind"


# One run, stopped at every point in turn; each start resumes what the last one left.
INTERRUPTIONS = [
    ("row@3", 3),             # SIGKILL before the first checkpoint: the next start begins again at step 1
    ("row@7:TERM", 7),        # SIGTERM between checkpoints (checkpoint-5 and step 7 written)
    ("checkpoint@10", 10),    # SIGKILL while checkpoint-10 is written (trainer_state.json half written)
    ("final", N),             # SIGKILL while the final model is written
    ("summary", N),           # SIGKILL after summary.json, before the run is marked finished
]


def test_a_run_interrupted_at_every_point_in_turn_ends_with_exactly_steps_1_to_n(tmp_path, tiny_model_path):
    results = tmp_path / "results"
    for fault, last_row in INTERRUPTIONS:
        stopped = abcx_train(results, *EVAL, fault=fault)
        record = the_run(results)
        if fault.endswith(":TERM"):
            assert stopped.returncode == 128 + signal.SIGTERM and "Traceback" not in stopped.stderr, stopped.stderr
            (line,) = error_lines(stopped.stderr)
            assert "interrupted by SIGTERM" in line and "resume from checkpoint-5" in line
            status = record.status()
            assert status["state"] == "cancelled" and "resumable from checkpoint-5" in status["error"], status
        else:
            assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-3000:]
            assert record.state() == "running"  # a SIGKILL leaves no chance to say more
        # What the stopped attempt left: each step once, in order, however often it was restarted.
        assert metric_steps(record) == list(range(1, last_row + 1)), fault
        if fault == "checkpoint@10":
            assert "resuming from checkpoint-5" in stopped.stderr
        if fault == "final":
            assert "checkpoint-10: trainer_state.json is not valid JSON" in stopped.stderr
        if fault == "summary":
            assert "finishing without training" in stopped.stderr and (record.path / "summary.json").exists()
    resumed = abcx_train(results, *EVAL)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "finishing without training" in resumed.stderr
    assert_trained_exactly(record, resumed.stdout)
    assert record.meta()["attempts"] == len(INTERRUPTIONS) + 1


def test_corrupt_checkpoints_and_unreadable_lines_cost_no_row(tmp_path, tiny_model_path):
    """A resume that cannot load its checkpoint fails with one line and leaves every row; a
    checkpoint with garbage weights is skipped for the previous one; torn, binary and non-object
    lines anywhere in metrics.jsonl are skipped with a warning; leftover temporary files go."""
    import torch

    results = tmp_path / "results"
    assert abcx_train(results, "eval.at_end=false", fault="row@11").returncode == -signal.SIGKILL
    record = the_run(results)
    rows = record.metrics_path.read_bytes().splitlines(keepends=True)
    assert len(rows) == 11
    # What a crash mid-append, a disk fault and a stray writer leave in the middle of the file.
    record.metrics_path.write_bytes(b"".join(rows[:4]) + b'{"step": 5, "lo\n' + b"\x00\xff\xfe garbage\n"
                                    + b"[1, 2]\n" + b"".join(rows[4:]))
    leftover = record.path / ".status.json.k1ll3d.tmp"
    leftover.write_text("{")
    os.utime(leftover, (time.time() - 60, time.time() - 60))
    before = record.metrics_path.read_bytes()

    # 1. optimizer.pt is a whole zip archive but not an optimizer's state: only loading it tells.
    ckpt = record.checkpoints / "checkpoint-10"
    torch.save({"not": "an optimizer state"}, ckpt / "optimizer.pt")
    failed = abcx_train(results, "eval.at_end=false")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    (line,) = error_lines(failed.stderr)
    assert "checkpoint-10" in line and "error.txt" in line
    assert record.metrics_path.read_bytes() == before  # the failed resume touched no row
    assert record.state() == "failed" and (record.path / "error.txt").exists()

    # 2. Garbage weights: skipped (with a warning) for checkpoint-5, kept aside for inspection.
    (ckpt / "model.safetensors").write_bytes(os.urandom(4096))
    resumed = abcx_train(results, "eval.at_end=false")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-10: model.safetensors" in resumed.stderr and "resuming from checkpoint-5" in resumed.stderr
    assert "skipped 3 unreadable line(s)" in resumed.stderr and "line 5: not valid JSON" in resumed.stderr
    assert (record.checkpoints / "corrupt-checkpoint-10").is_dir()
    assert_trained_exactly(record, resumed.stdout, evals=False)
    assert not leftover.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 32 MiB tmpfs (the tests run as root). Refused mount: a failure under CI, else a skip."""
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if proc.returncode:
        reason = f"cannot mount a tmpfs for the full-disk test: {proc.stderr.strip() or proc.returncode}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Write until the disk is full, then give `leave` bytes back; the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    for chunk in (1 << 20, 1 << 12):  # then page by page, to the last free page
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError:
            pass
    os.close(fd)
    if leave:
        os.truncate(filler, os.path.getsize(filler) - leave)
    return filler


def only_error_line(stderr: str) -> str:
    """A failed command's whole stderr: one `error:` line (warnings aside), no traceback."""
    assert "Traceback" not in stderr and "Logging error" not in stderr, stderr[-3000:]
    # Progress lines (`[run_id] ...`) say what the run was doing before it failed; they are not errors.
    lines = [line for line in said(stderr) if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


def test_a_disk_full_at_the_start_fails_the_run_in_one_line_with_its_record_saying_so(small_disk, tiny_model_path):
    """40 KB free: not room for one checkpoint. W&B offline (the default logger) used to fill the rest and
    log 28 tracebacks, leaving status.json `running` at step 0."""
    results = small_disk / "results"
    fill(small_disk, leave=40 * 1024)
    proc = abcx_train(results, "eval.at_end=false", "logger=wandb_offline")
    assert proc.returncode == 1
    line = only_error_line(proc.stderr)
    assert f"no space left on device under {results}" in line and "free space, then run the same command" in line
    status = the_run(results).status()
    assert status["state"] == "failed" and status["error"] == f"no space left on device under {results}", status


def test_a_full_disk_is_recorded_as_the_failure_in_one_line(small_disk, tiny_model_path):
    """Filled while training (whichever write hits it: a metric line, W&B, torch's checkpoint writer,
    which only says "unexpected pos"): `failed` at the step reached, in one line; a checkpoint torn
    by it is moved aside once, however often the run is retried on the full disk; once space is freed
    the run resumes exactly."""
    results = small_disk / "results"
    steps = 30
    cmd = [sys.executable, "-m", "abcx.cli", "train", *RUN, f"train.max_steps={steps}", "train.save_steps=4",
           "train.save_total_limit=1", "eval.at_end=false", "logger=wandb_offline", f"results_dir={results}"]
    proc = subprocess.Popen(cmd, cwd=small_disk, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(results.glob("runs/*/checkpoints/checkpoint-4/trainer_state.json")):
        time.sleep(0.05)
    filler = fill(small_disk)
    stdout, stderr = proc.communicate(timeout=300)
    record = the_run(results)
    assert proc.returncode == 1, stderr[-3000:]
    line = only_error_line(stderr)
    assert f"no space left on device under {results}" in line, line
    status = record.status()
    assert status["state"] == "failed" and status["error"] == f"no space left on device under {results}", status
    assert 4 <= status["step"] < steps
    # Started again on the still full disk, twice (the space a failure frees is soon used up): it fails
    # the same way, the record still holds each step once, and no step's checkpoint is kept twice.
    for _ in range(2):
        again = abcx_train(results, "eval.at_end=false", f"train.max_steps={steps}", "train.save_steps=4",
                           "train.save_total_limit=1", "logger=wandb_offline")
        assert again.returncode == 1
        assert "no space left on device under" in only_error_line(again.stderr) and record.state() == "failed"
        assert metric_steps(record) == list(range(1, len(record.metrics()) + 1))
    filler.unlink()
    resumed = abcx_train(results, "eval.at_end=false", f"train.max_steps={steps}", "train.save_steps=4",
                         "train.save_total_limit=1", "logger=wandb_offline")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_trained_exactly(record, resumed.stdout, steps=steps, evals=False)
    aside = sorted(p.name for p in record.checkpoints.iterdir() if p.name.startswith("corrupt-"))
    assert not any(name.endswith("-") for name in aside), aside
    for name in aside:
        assert "could not be resumed" in (record.checkpoints / name / "abcx-note.txt").read_text()


def test_the_writers_that_drop_the_errno_are_read_as_a_full_disk_and_only_on_one(small_disk, tmp_path):
    """torch's zip writer says "[enforce fail at inline_container.cc] . unexpected pos", without ENOSPC:
    a failure while the disk has less room than the reserve is a full disk; the same error elsewhere is not."""
    import torch

    record = RunRecord(small_disk / "results" / "runs" / "grpo-s0-0123456789")
    record.path.mkdir(parents=True)
    fill(small_disk)
    with pytest.raises(Exception) as torn:
        torch.save({"weights": torch.zeros(1 << 18)}, record.path / "optimizer.pt")
    assert "unexpected pos" in str(torn.value)  # the error: no errno, no "space"
    assert record.no_space(torn.value) == f"no space left on device under {small_disk / 'results'}"
    elsewhere = RunRecord(tmp_path / "results" / "runs" / "grpo-s0-0123456789")
    elsewhere.path.mkdir(parents=True)
    assert elsewhere.no_space(torn.value) is None and elsewhere.no_space(RuntimeError("a bug")) is None
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(28, "No space left on device")
    assert elsewhere.no_space(wrapped) == f"no space left on device under {tmp_path / 'results'}"


def test_a_checkpoint_torn_again_at_the_same_step_is_removed_not_kept_twice(tmp_path, capsys):
    record = RunRecord(tmp_path / "run")
    kept = record.checkpoints / "corrupt-checkpoint-8"
    kept.mkdir(parents=True)
    (kept / "model.safetensors").write_bytes(b"first torn copy")
    whole = record.checkpoints / "checkpoint-4"
    whole.mkdir()
    (whole / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (whole / "model.safetensors").write_bytes(b"\x02\0\0\0\0\0\0\0{}")  # an empty, well-formed safetensors
    torn = record.checkpoints / "checkpoint-8"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"second torn copy")
    assert record.latest_checkpoint(quarantine=True) == whole
    assert sorted(p.name for p in record.checkpoints.iterdir()) == ["checkpoint-4", "corrupt-checkpoint-8"]
    assert (kept / "model.safetensors").read_bytes() == b"first torn copy"
    assert "already kept as corrupt-checkpoint-8" in capsys.readouterr().err


def test_a_disk_too_full_to_write_the_status_is_said_in_the_failure_line(small_disk):
    """Not one page free, even after the reserve is given back: the record cannot say `failed`, so the
    command's one line says that it could not."""
    from abcx.errors import RunFailed
    from abcx.training.train import _failed

    record = RunRecord(small_disk / "results" / "runs" / "grpo-s0-0123456789")
    record.path.mkdir(parents=True)
    record.set_status("running", step=3)
    fill(small_disk)
    with pytest.raises(RunFailed) as failed:
        _failed(record, OSError(28, "No space left on device"), None)
    line = str(failed.value)
    assert "\n" not in line and f"no space left on device under {small_disk / 'results'}" in line
    assert "the record could not be updated either (its status.json may still say running)" in line
    assert record.state() == "running"


def test_a_destroyed_policy_fails_the_run_under_nan_policy_fail(tmp_path, tiny_model_path):
    """A policy that samples uniformly (entropy ln V) while every loss stays finite is what lr=1e30
    leaves after one step. Made exactly, by zeroing the output head of a copy of `tiny`, so that no float
    rounding decides which failure comes first (with lr=1e30 a gradient overflows at step 2 or 3 on some
    machines and versions, a NonFiniteError instead): the health check stops the run instead of
    reporting it finished."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    flat = tmp_path / "flat-policy"
    shutil.copytree(tiny_model_path, flat)
    model = AutoModelForCausalLM.from_pretrained(flat)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # every logit 0: the uniform distribution
    model.save_pretrained(flat)
    results = tmp_path / "results"
    result = abcx_train(results, "eval.at_end=false", f"model.path={flat}", "train.nan_policy=fail",
                        "train.save_steps=100")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert "policy looks destroyed" in line and "entropy" in line
    status = the_run(results).status()
    assert status["state"] == "failed" and "policy looks destroyed" in status["error"] and status["step"] < N, status


def test_the_health_check_warns_under_skip_and_tells_a_dead_policy_from_an_idle_step(tmp_path, capsys):
    from abcx.training.callbacks import HealthCheck, RecordCallback

    record = RunRecord(tmp_path / "run")
    record.path.mkdir()
    callback = RecordCallback(record, "skip")
    callback.health = HealthCheck(vocab_size=50)

    class State:
        max_steps, is_world_process_zero = 20, True

    def log(step, **row):
        State.global_step = step
        callback.on_log(None, State(), None, logs={"loss": 0.0, **row})

    # Every group scored alike (some all right, some all wrong): no advantage, no gradient -- healthy.
    for step in range(1, 8):
        log(step, entropy=0.5, grad_norm=0.0, reward_std=0.4, frac_reward_zero_std=1.0)
    # Every token clipped: no gradient by the clip rule's design.
    for step in range(8, 14):
        log(step, entropy=0.5, grad_norm=0.0, reward_std=0.4, frac_reward_zero_std=0.5, **{"clip/clipped": 1.0})
    assert "warning" not in record.status() and capsys.readouterr().err == ""
    for step in range(14, 14 + HealthCheck.STEPS):
        log(step, entropy=math.log(50) * 0.995, grad_norm=0.0)
    assert "policy looks destroyed: entropy" in record.status()["warning"]
    assert "policy looks destroyed" in capsys.readouterr().err
    fail = RecordCallback(record, "fail")
    fail.health = HealthCheck(vocab_size=50)
    callback = fail
    for step in range(1, HealthCheck.STEPS):
        log(step, entropy=1.0, grad_norm=0.0, reward_std=0.3, frac_reward_zero_std=0.75)
    with pytest.raises(Exception, match="grad norm exactly 0 although rewards differ"):
        log(HealthCheck.STEPS, entropy=1.0, grad_norm=0.0)


def test_the_progress_line_shows_values_that_are_not_numbers():
    """train.nan_policy=skip lets NaN and missing values through to the progress line."""
    import io

    from abcx.training.callbacks import ProgressCallback

    class State:
        global_step, max_steps, is_world_process_zero = 3, 10, True

    out = io.StringIO()
    ProgressCallback("run", stream=out).on_log(None, State(), None,
                                               logs={"reward": None, "entropy": float("nan"), "clip/q4": 0.5})
    assert "reward None  entropy nan" in out.getvalue() and "q4 50.0%" in out.getvalue()


def test_readers_skip_unreadable_lines_anywhere_and_garbage_files_with_a_warning(tmp_path, capsys):
    from abcx.record import read_json, read_jsonl

    lines = tmp_path / "metrics.jsonl"
    lines.write_bytes(b'{"step": 1}\n{"step": 2, "lo\n\xff\xfe\x00\n[1, 2]\n{"step": 3}\n{"step": 4, "x"')
    assert [r["step"] for r in read_jsonl(lines)] == [1, 3]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipped 3 unreadable line(s)" in err
    assert "line 2: not valid JSON" in err and "line 4: a JSON list, not an object" in err
    garbage = tmp_path / "status.json"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    assert read_json(garbage, {}) == {} and "not readable as JSON" in capsys.readouterr().err
    garbage.write_text("[1, 2]")
    assert read_json(garbage, {}) == {} and "a JSON list, not an object" in capsys.readouterr().err


def test_the_report_reads_records_with_binary_and_list_lines_in_metrics_and_eval(tmp_path, capsys):
    import numpy as np

    from abcx.report.command import run_report
    from abcx.report.synth import write_record

    steps = np.arange(1, 6)
    evals = [{"step": 5, "benchmark": "b", "n": 2, "sampling": {"n": 2}, "metrics": {"avg@2": 0.5}, "ci": {}}]
    for seed in (0, 1):
        path = Path(write_record(str(tmp_path / "runs"), f"abc-aaaa-s{seed}", method="abc", seed=seed, steps=steps,
                                 metrics={"reward": steps / 10}, evals=evals, compact=False))
    for name in ("metrics.jsonl", "eval.jsonl"):
        with open(path / name, "ab") as f:
            f.write(b"\x89PNG\x1a\x00\xff\n[1, 2]\n")
    report = run_report([str(tmp_path / "runs")], fmt="json", out=str(tmp_path / "report.json"))
    assert len(report.per_run) == 2 and report.runset.metric("reward")["step"].tolist() == [1, 2, 3, 4, 5] * 2
    err = capsys.readouterr().err
    assert "metrics.jsonl: skipped 2 unreadable line(s)" in err and "eval.jsonl: skipped 2 unreadable line(s)" in err
