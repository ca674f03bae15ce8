"""The local backend: real training jobs through submitit's LocalExecutor under the sweep supervisor."""
from __future__ import annotations

import time

import pytest

from abcx.record import read_json, read_jsonl
from abcx.launch import local
from abcx.sweep import command, manifest, supervisor

pytestmark = pytest.mark.slow


def lines_of(fn, *args, **kwargs) -> tuple[int, str]:
    out: list[str] = []
    code = fn(*args, out=out.append, **kwargs)
    return code, "\n".join(out)


def test_smoke_sweep_trains_one_job_at_a_time_and_a_resubmit_skips_both(tmp_path, tiny_model_path):
    results = tmp_path / "results"
    cli = ["launcher.max_parallel=1", f"results_dir={results}"]
    code, out = lines_of(command.sweep_run, "smoke", cli, wait=True)
    assert code == 0, out
    data = manifest.load(results, "smoke")
    runs = data["runs"]
    assert len(runs) == 2
    for entry in runs:
        status = read_json(results / "runs" / entry["run_id"] / "status.json")
        assert status["state"] == "finished" and status["step"] == status["max_steps"] == 4
        assert status["job_id"] == entry["job_id"] and status["sweep"] == "smoke"
        steps = [r["step"] for r in read_jsonl(results / "runs" / entry["run_id"] / "metrics.jsonl") if "loss" in r]
        assert steps == [1, 2, 3, 4]
    first, second = sorted(runs, key=lambda e: e["started"])
    assert second["started"] >= first["ended"]  # max_parallel=1: the second started after the first ended
    assert not supervisor.alive(data)
    jobs = results / "sweeps" / "smoke" / "jobs"
    assert sorted(p.name for p in jobs.iterdir()) == sorted(e["job_id"] for e in runs)  # no literal `%j/`

    code, out = lines_of(command.sweep_run, "smoke", cli)
    assert code == 0 and "nothing to submit (2 finished)" in out
    assert len(manifest.load(results, "smoke")["submissions"]) == 1


def test_cancel_stops_the_detached_supervisor_and_its_jobs(tmp_path, tiny_model_path):
    results = tmp_path / "results"
    cli = ["launcher.max_parallel=1", f"results_dir={results}", "train.max_steps=500"]
    code, out = lines_of(command.sweep_run, "smoke", cli)
    assert code == 0 and "supervisor pid" in out
    data = manifest.load(results, "smoke")
    supervisor = data["supervisor"]["pid"]
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the first job's trainer runs
        data = manifest.load(results, "smoke")
        states = [(read_json(results / "runs" / r["run_id"] / "status.json") or {}).get("state") for r in data["runs"]]
        if "running" in states and any(r.get("job_id") for r in data["runs"]):
            break
        time.sleep(0.5)
    job = next(r["job_id"] for r in data["runs"] if r.get("job_id"))
    assert local.pid_alive(job)
    code, out = lines_of(command.sweep_status, "smoke", results_dir=str(results))
    assert " running " in out and " queued " in out

    code, out = lines_of(command.sweep_cancel, "smoke", results_dir=str(results))
    assert code == 0 and "cancelled 2 run(s)" in out  # the running one and the queued one
    assert not local.pid_alive(supervisor) and not local.pid_alive(job)
    for entry in manifest.load(results, "smoke")["runs"]:
        assert read_json(results / "runs" / entry["run_id"] / "status.json")["state"] == "cancelled"
    code, out = lines_of(command.sweep_status, "smoke", results_dir=str(results))
    assert "2 cancelled" in out
