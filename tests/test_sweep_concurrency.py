"""Two `abcx sweep run` of one sweep at once, through the real command line and real training: one
runs the sweep, the other says who does and changes nothing (exit 0), and the record stays exact."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from abcx.record import read_json, read_jsonl

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
SWEEP = """name: race
fixed: [model=tiny, train=testbed, train.max_steps=2, train.save_steps=1, train.per_device_train_batch_size=16,
        logger=none, eval.at_end=false, launcher.max_parallel=1]
grid:
  method: [grpo]
"""


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "abcx.cli", *args], cwd=cwd, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and "Traceback" not in err, (proc.returncode, out[-2000:], err[-2000:])
    return out


def test_two_sweep_runs_at_once_start_one_supervisor_and_the_other_says_who_runs_the_sweep(tmp_path, tiny_model_path):
    sweep, results = tmp_path / "race.yaml", tmp_path / "results"
    sweep.write_text(SWEEP)
    args = ("sweep", "run", str(sweep), f"results_dir={results}")
    procs = [start(*args, cwd=tmp_path) for _ in range(2)]  # both plan the same new run at the same time
    outs = [finish(p) for p in procs]

    refused = [i for i, out in enumerate(outs) if "is already being run by" in out]
    assert len(refused) == 1, outs
    loser, winner = refused[0], 1 - refused[0]
    supervisor = int(re.search(r"supervisor pid (\d+)", outs[winner]).group(1))
    # The loser names the holder: the winning command while it plans, or the supervisor it started.
    named = int(re.search(r"\(pid (\d+) on ", outs[loser]).group(1))
    assert named in (procs[winner].pid, supervisor) and "nothing submitted" in outs[loser]

    # A third, with --wait, waits for that supervisor (or finds the run finished) and submits nothing.
    out = finish(start(*args, "--wait", cwd=tmp_path))
    assert "submitting" not in out and "sweep race: 1 run(s): 1 finished" in out

    data = read_json(results / "sweeps" / "race" / "manifest.json")
    (entry,) = data["runs"]
    status = read_json(results / "runs" / entry["run_id"] / "status.json")
    assert status["state"] == "finished" and status["step"] == status["max_steps"] == 2
    steps = [r["step"] for r in read_jsonl(results / "runs" / entry["run_id"] / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2]  # trained once: a second trainer would have logged or failed the run
    assert len(data["submissions"]) == 1 and data["supervisor"]["pid"] == supervisor
    assert entry["job_id"] == status["job_id"]  # the job that trained it, not a losing one
    log = (results / "sweeps" / "race" / "supervisor.log").read_text()
    assert log.count("[supervisor] started") == 1, log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.yaml", "results"]


def test_while_the_sweep_lock_is_held_a_sweep_run_changes_nothing_and_with_wait_waits_for_it(tmp_path):
    import socket

    from abcx.record import RunRecord, now_iso
    from abcx.sweep import command, manifest
    from abcx.sweep.lock import SweepLock

    sweep = tmp_path / "held.yaml"
    sweep.write_text(f"name: held\nfixed: [logger=none, results_dir={tmp_path / 'results'}]\ngrid:\n  seed: [0, 1]\n")
    spec, planned = command.plan_sweep(str(sweep))
    when = now_iso()
    for run in planned:  # submitted on paper: the first run finished under job 111, the second queued as 222
        command._mark_submitted(run, "held", "local", when)
    manifest.update(tmp_path / "results", "held", lambda m: command._record_plan(m, spec, planned, "local", when, planned))
    manifest.update(tmp_path / "results", "held", lambda m: [manifest.upsert_run(m, r.run_id, job_id=j)
                                                             for r, j in zip(planned, ("111", "222"))])
    RunRecord(planned[0].path).set_status("finished", job_id="111", step=4, max_steps=4)
    lock = SweepLock(manifest.sweep_dir(tmp_path / "results", "held"))
    assert lock.acquire()  # as a running `abcx sweep run` (or its supervisor) holds it
    try:
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        out = finish(start("sweep", "run", str(sweep), cwd=tmp_path), timeout=300)
        assert f"sweep held is already being run by abcx sweep run (pid {os.getpid()} on {socket.gethostname()}" in out
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # not a byte changed

        waiting = start("sweep", "run", str(sweep), "--wait", cwd=tmp_path)
        while "already being run by" not in (line := waiting.stdout.readline()):
            assert line, waiting.stderr.read()
        assert waiting.poll() is None  # blocked on the lock, not planning or submitting
    finally:
        lock.release()
    out = waiting.stdout.read()
    assert waiting.wait(timeout=300) == 1  # as --wait returns: not every run finished
    assert "submitting" not in out and "sweep held: 2 run(s): 1 new, 1 finished" in out
    assert manifest.load(tmp_path / "results", "held")["runs"][0]["job_id"] == "111"
