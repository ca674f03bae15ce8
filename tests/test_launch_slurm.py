"""The SLURM backend against a real single-node cluster (slurm/cluster_up.sh): job arrays, cancel,
a failing job's error in `sweep status`, and a requeued job that resumes from its checkpoint."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from abcx.launch import slurm
from abcx.record import RunRecord, read_jsonl
from abcx.sweep import command, manifest
from tests.optuna_checks import three_trials_each_asked_once
from tests.helpers import call, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SLURM = ["launcher=slurm", "launcher.profile=local"]
# Steps that take the same short time whatever the default task: what is tested is the record, not learning.
QUICK_STEPS = ["train.per_device_train_batch_size=16", "train.max_completion_length=16"]


def runs_of(results: Path) -> list[RunRecord]:
    return [RunRecord(results / "runs" / e["run_id"]) for e in manifest.load(results, "smoke")["runs"]]


def test_profile_resources_follow_profile_then_model_size_then_launcher():
    profile = {"partition": "gpu", "time_min": 100, "gpus_per_node": 8, "mem_gb": 10,
               "resources_by_model": {"1.7b": {"gpus_per_node": 4, "time_min": 200}}}
    from abcx.config.compose import compose

    cfg = compose(["model=qwen3_1.7b_base", "launcher=slurm"])
    res = slurm.resources(profile, cfg)
    assert (res["gpus_per_node"], res["time_min"], res["partition"]) == (4, 200, "gpu")
    res = slurm.resources(profile, compose(["model=qwen3_1.7b_base", "launcher=slurm", "launcher.gpus_per_job=2"]))
    params = slurm.executor_parameters(res, job_name="abcx-x", num_processes=1)
    assert params["gpus_per_node"] == 2 and params["mem"] == "10240MB" and params["time"] == 200
    with pytest.raises(Exception, match="launcher.profile=nope"):
        slurm.load_profile("nope")


def test_two_point_sweep_runs_as_one_job_array_and_writes_run_records(slurm_cluster, tmp_path, tiny_model_path):
    results = tmp_path / "results"
    code, out = call(command.sweep_run, "smoke", [*SLURM, f"results_dir={results}"], wait=True)
    assert code == 0, out
    records = runs_of(results)
    job_ids = [r.status()["job_id"] for r in records]
    assert len({j.split("_")[0] for j in job_ids}) == 1 and sorted(j.split("_")[1] for j in job_ids) == ["0", "1"]
    for record in records:
        status = record.status()
        assert status["state"] == "finished" and status["step"] == 4 and status["backend"] == "slurm"
    assert "2 finished" in out
    code, out = call(command.sweep_run, "smoke", [*SLURM, f"results_dir={results}"])
    assert "nothing to submit (2 finished)" in out


def test_failing_job_error_is_shown_by_sweep_status(slurm_cluster, tmp_path, tiny_model_path):
    results = tmp_path / "results"
    # Passes validation (a hub id or a folder on the cluster), fails in the job when the model is loaded.
    bad = "model.path=/nonexistent/abcx-missing-model"
    code, _out = call(command.sweep_run, "smoke", [*SLURM, f"results_dir={results}", "method=grpo", bad], wait=True)
    assert code == 1
    code, out = call(command.sweep_status, "smoke", results_dir=str(results))
    assert "failed" in out and "abcx-missing-model" in out
    assert "1 failed" in out


def test_cancel_stops_queued_and_running_jobs(slurm_cluster, tmp_path, tiny_model_path):
    results = tmp_path / "results"
    code, out = call(command.sweep_run, "smoke", [*SLURM, f"results_dir={results}", "train.max_steps=500"])
    assert code == 0, out
    wait_until(lambda: any(r.state() == "running" for r in runs_of(results)), 180, "a trainer running")
    job_ids = [r.status()["job_id"] for r in runs_of(results)]
    code, out = call(command.sweep_cancel, "smoke", results_dir=str(results))
    assert code == 0
    assert [r.state() for r in runs_of(results)] == ["cancelled", "cancelled"]
    live = slurm.queue_states()
    assert not any(live.get(j) in slurm.ALIVE for j in job_ids)


def test_requeued_job_resumes_from_its_checkpoint_without_lost_or_duplicated_rows(slurm_cluster, tmp_path,
                                                                                 tiny_model_path):
    results = tmp_path / "results"
    # The requeue kills only after KillWait (5 s; submitit ignores SIGTERM): it must land mid-training, so
    # the run is made long enough (0.05-0.2 s/step with 16 completions of 16 tokens, by machine) to outlast it.
    steps = 300
    cli = [*SLURM, f"results_dir={results}", "method=grpo", f"train.max_steps={steps}", "train.save_steps=10",
           *QUICK_STEPS]
    code, out = call(command.sweep_run, "smoke", cli)
    assert code == 0, out
    (record,) = runs_of(results)
    wait_until(lambda: record.state() == "running" and record.latest_checkpoint() is not None
               and record.status().get("step", 0) >= 4, 240, "a checkpoint of the running job")
    job_id = record.status()["job_id"]
    assert record.state() == "running" and record.status()["step"] < steps
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, timeout=30)
    wait_until(lambda: record.state() == "finished", 300, "the requeued run to finish")
    rows = [r["step"] for r in read_jsonl(record.metrics_path) if "loss" in r]
    assert rows == list(range(1, steps + 1))
    assert record.meta()["attempts"] >= 2 and record.status()["job_id"] == job_id
    log = "\n".join(p.read_text() for p in (results / "sweeps" / "smoke" / "jobs").glob(f"{job_id}/*.err"))
    assert "resuming from checkpoint-" in log


def test_a_job_requeued_before_its_first_checkpoint_starts_over_without_duplicated_rows(slurm_cluster, tmp_path,
                                                                                       tiny_model_path):
    """The requeued job finds rows but no checkpoint: it trains from step 1 and the record holds each
    step once (it used to append the steps of the first attempt a second time)."""
    results = tmp_path / "results"
    # No checkpoint before the end; long enough to outlast KillWait (5 s) after the requeue.
    steps = 200
    cli = [*SLURM, f"results_dir={results}", "method=grpo", f"train.max_steps={steps}", f"train.save_steps={steps}",
           *QUICK_STEPS]
    code, out = call(command.sweep_run, "smoke", cli)
    assert code == 0, out
    (record,) = runs_of(results)
    wait_until(lambda: record.state() == "running" and record.status().get("step", 0) >= 4, 240,
               "the job's first steps")
    job_id = record.status()["job_id"]
    assert record.latest_checkpoint() is None
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, timeout=30)
    wait_until(lambda: record.state() == "finished", 300, "the requeued run to finish")
    assert [r["step"] for r in read_jsonl(record.metrics_path)] == list(range(1, steps + 1))
    assert record.meta()["attempts"] >= 2 and record.status()["job_id"] == job_id
    log = "\n".join(p.read_text() for p in (results / "sweeps" / "smoke" / "jobs").glob(f"{job_id}/*.err"))
    assert "resuming from checkpoint-" not in log


def test_a_preempted_job_is_requeued_by_submitit_and_resumes(slurm_cluster, tmp_path, tiny_model_path):
    """SLURM's preemption signal (USR2, what `--signal` sends before a preemption or the time limit)
    goes to submitit, which checkpoints and requeues the job: train() records the interruption and
    leaves submitit's exit alone, and the requeued job resumes without lost or duplicated rows."""
    results = tmp_path / "results"
    steps = 200
    cli = [*SLURM, f"results_dir={results}", "method=grpo", f"train.max_steps={steps}", "train.save_steps=10",
           *QUICK_STEPS]
    code, out = call(command.sweep_run, "smoke", cli)
    assert code == 0, out
    (record,) = runs_of(results)
    wait_until(lambda: record.state() == "running" and record.latest_checkpoint() is not None, 240,
               "a checkpoint of the running job")
    job_id = record.status()["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, capture_output=True, timeout=30)
    wait_until(lambda: record.state() == "finished", 300, "the preempted run to finish")
    assert [r["step"] for r in read_jsonl(record.metrics_path)] == list(range(1, steps + 1))
    assert record.meta()["attempts"] >= 2 and record.status()["job_id"] == job_id
    log = "\n".join(p.read_text() for p in (results / "sweeps" / "smoke" / "jobs").glob(f"{job_id}/*.err"))
    assert "this job is preempted" in log and "resuming from checkpoint-" in log


def test_a_two_process_point_runs_under_accelerate_inside_its_slurm_job(slurm_cluster, tmp_path, tiny_model_path):
    results = tmp_path / "results"
    cli = [*SLURM, f"results_dir={results}", "method=grpo", "launcher.num_processes=2",
           "launcher.accelerate_config=cpu"]
    code, out = call(command.sweep_run, "smoke", cli, wait=True)
    assert code == 0, out
    for record in runs_of(results):
        assert record.state() == "finished" and record.meta()["world_size"] == 2
        assert [r["step"] for r in read_jsonl(record.metrics_path) if "loss" in r] == [1, 2, 3, 4]
        assert record.status()["job_id"].split("_")[0].isdigit()  # a SLURM array task, not a local pid


def test_a_halving_sweep_on_slurm_stops_the_losers_and_resumes_the_promoted_run_in_a_new_job(
        slurm_cluster, tmp_path, tiny_model_path):
    """3 points, a rung at step 2 of 4, eta 2: each point is a SLURM job that ends at the rung with a
    checkpoint; the top one is resubmitted as a new job and resumes into the same record."""
    results = tmp_path / "results"
    sweep = tmp_path / "halve.yaml"
    sweep.write_text("name: halve\nfixed: [model=tiny, task=chain, train=testbed, train.max_steps=4, train.save_steps=4,"
                     f" {', '.join(QUICK_STEPS)}, train.steps_per_generation=2, logger=none, eval.at_end=false, launcher=slurm, "
                     f"launcher.profile=local, launcher.max_parallel=2, results_dir={results}]\n"
                     "grid:\n  seed: [0, 1, 2]\n"
                     "strategy:\n  name: halving\n  rungs: [2]\n  eta: 2\n  metric: entropy\n  mode: min\n  window: 2\n")
    code, out = call(command.sweep_run, str(sweep), [], wait=True)
    assert code == 0, out
    decisions = list(read_jsonl(results / "sweeps" / "halve" / "decisions.jsonl"))
    promoted = {d["run_id"] for d in decisions if d["event"] == "promoted"}
    assert 1 <= len(promoted) <= 2  # the final top 1 of 3, and at most one early promotion
    jobs = manifest.load(results, "halve")["runs"]
    live = slurm.queue_states()
    for entry in jobs:
        record = RunRecord(results / "runs" / entry["run_id"])
        status = record.status()
        assert status["backend"] == "slurm" and live.get(status["job_id"]) not in slurm.ALIVE
        steps = [r["step"] for r in read_jsonl(record.metrics_path) if "loss" in r]
        if entry["run_id"] in promoted:  # a second job, the same record, every step once
            assert status["state"] == "finished" and steps == [1, 2, 3, 4]
            assert len(set(entry["jobs"])) == 2 and entry["jobs"][-1] == status["job_id"]
        else:
            assert status["state"] == "stopped" and steps == [1, 2] and status["stop"]["kind"] == "cut"
            assert (record.checkpoints / "checkpoint-2").is_dir() and len(entry["jobs"]) == 1
    log = (results / "sweeps" / "halve" / "supervisor.log")
    assert not log.exists() or "Traceback" not in log.read_text()


def strategy_sweep(tmp_path, name: str, results: Path, strategy: str, fixed: str = "", grid: str = "") -> str:
    """A sweep file of tiny quick runs on the test cluster."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nfixed: [model=tiny, task=chain, train=testbed, {', '.join(QUICK_STEPS)}, "
                    f"logger=none, eval.at_end=false, launcher=slurm, launcher.profile=local, results_dir={results}"
                    f"{fixed}]\n" + (f"grid:\n{grid}\n" if grid else "") + f"strategy:\n{strategy}\n")
    return str(path)


def test_a_halving_run_requeued_before_its_rung_resumes_into_the_same_record_and_is_ranked_once(
        slurm_cluster, tmp_path, tiny_model_path):
    """One point, rung at step 160 of 164: the job is requeued mid-rung after a checkpoint; it resumes
    from the checkpoint in the same job and record, pauses at the rung, and the rung decision is made
    once. (One run of eta 2: the cut is 0, so it stays stopped there.)"""
    results = tmp_path / "results"
    path = strategy_sweep(tmp_path, "rq", results,
                          "  name: halving\n  rungs: [160]\n  eta: 2\n  metric: entropy\n  mode: min\n  window: 2",
                          ", train.max_steps=164, train.save_steps=20, launcher.max_parallel=1", "  seed: [0]")
    code, out = call(command.sweep_run, path, [])
    assert code == 0 and "supervisor pid" in out, out
    record = RunRecord(results / "runs" / manifest.load(results, "rq")["runs"][0]["run_id"])
    wait_until(lambda: record.state() == "running" and record.latest_checkpoint() is not None
               and record.status().get("step", 0) >= 4, 240, "a checkpoint of the running job")
    job_id = record.status()["job_id"]
    assert record.status()["step"] < 160
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, timeout=30)
    wait_until(lambda: not command.SUP.alive(manifest.load(results, "rq")), 400, "the supervisor to finish")
    status = record.status()
    assert status["state"] == "stopped" and status["step"] == 160 and status["job_id"] == job_id
    assert status["stop"]["kind"] == "cut" and record.meta()["attempts"] >= 2
    assert [r["step"] for r in read_jsonl(record.metrics_path) if "loss" in r] == list(range(1, 161))
    decisions = list(read_jsonl(results / "sweeps" / "rq" / "decisions.jsonl"))
    assert [d["event"] for d in decisions] == ["rung", "stopped", "best"]  # ranked once, whatever the requeue
    assert decisions[0]["run_id"] == record.run_id and decisions[0]["step"] == 160
    assert manifest.load(results, "rq")["runs"][0]["jobs"] == [job_id]  # the same job, not a resubmission
    log = "\n".join(p.read_text() for p in (results / "sweeps" / "rq" / "jobs").glob(f"{job_id}/*.err"))
    assert "resuming from checkpoint-" in log


def test_an_optuna_search_whose_supervisor_is_killed_resumes_on_slurm_with_no_trial_lost_or_duplicated(
        slurm_cluster, tmp_path, tiny_model_path):
    """3 trials, one job each; the supervisor is SIGKILLed while the second trial's SLURM job trains
    (the job lives on). The restarted supervisor watches that job again (or, if it has finished by
    then, tells the study its value) instead of submitting the trial twice, then asks the third."""
    import os
    import signal

    results = tmp_path / "results"
    path = strategy_sweep(tmp_path, "search", results,
                          "  name: optuna\n  sampler: TPESampler\n  sampler_seed: 3\n  trials: 3\n"
                          "  space: {train.learning_rate: {low: 5.0e-5, high: 2.0e-4, log: true}}\n"
                          "  metric: learning_rate\n  window: 1",
                          ", train.max_steps=24, train.save_steps=8, launcher.max_parallel=1")
    code, out = call(command.sweep_run, path, [])
    assert code == 0 and "supervisor pid" in out, out
    decisions = results / "sweeps" / "search" / "decisions.jsonl"

    def second_trial():
        rows = list(read_jsonl(decisions)) if decisions.exists() else []
        second = [d for d in rows if d["event"] == "trial" and d["trial"] == 1]
        record = second and RunRecord(results / "runs" / second[0]["run_id"])
        return record if record and record.state() == "running" and record.status().get("step", 0) >= 1 else None
    try:
        record = wait_until(second_trial, 400, "the second trial's job training")
    except TimeoutError:
        call(command.sweep_cancel, "search", results_dir=str(results))  # leave no supervisor or job behind
        raise
    os.kill(manifest.load(results, "search")["supervisor"]["pid"], signal.SIGKILL)
    job_id = record.status()["job_id"]

    code, out = call(command.sweep_run, path, [], wait=True)
    assert code == 0, out
    asked, resumed = three_trials_each_asked_once(results)
    assert resumed["run_id"] == record.run_id
    for d in asked:  # every trial one run trained once, each step once
        trial_record = RunRecord(results / "runs" / d["run_id"])
        assert trial_record.state() == "finished"
        assert [r["step"] for r in read_jsonl(trial_record.metrics_path) if "loss" in r] == list(range(1, 25))
    entry = next(e for e in manifest.load(results, "search")["runs"] if e["run_id"] == record.run_id)
    assert entry["jobs"] == [job_id]  # watched again, never submitted a second time


def test_a_health_stop_and_a_budget_counted_by_sacct_on_slurm(slurm_cluster, tmp_path, tiny_model_path):
    """Two points, one job at a time: the first is stopped by an entropy floor no tiny policy reaches
    (at step 2, at a checkpoint); the budget (0.36 core-seconds) is spent by it, counted from sacct,
    so the second never starts."""
    results = tmp_path / "results"
    path = strategy_sweep(tmp_path, "hb", results,
                          "  name: grid\n  health: {entropy_floor: 100.0, steps: 2}\n  budget: {device_hours: 0.0001}",
                          ", train.max_steps=8, launcher.max_parallel=1", "  seed: [0, 1]")
    code, out = call(command.sweep_run, path, [], wait=True)
    runs = [RunRecord(results / "runs" / e["run_id"]) for e in manifest.load(results, "hb")["runs"]]
    first, second = runs
    status = first.status()
    assert status["state"] == "stopped" and status["step"] == 2 and status["stop"]["kind"] == "health", out
    assert "under entropy_floor=100.0 for 2 logged step(s)" in status["stop"]["reason"]
    assert (first.checkpoints / "checkpoint-2").is_dir() and status["backend"] == "slurm"
    assert second.state() == "pending" and not second.metrics()
    decisions = list(read_jsonl(results / "sweeps" / "hb" / "decisions.jsonl"))
    events = {d["event"]: d for d in decisions}
    assert events["health_stop"]["run_id"] == first.run_id and events["health_stop"]["step"] == 2
    assert events["budget"]["source"] == "sacct" and events["budget"]["spent"] >= 0.0001
    usage = slurm.sacct_usage([status["job_id"]])
    # The decision rounds to 6 decimals; sacct's own figure is at least what it says was spent.
    assert usage and usage[status["job_id"]] >= events["budget"]["spent"] - 1e-6
    assert "(sacct)" in out and "budget 0.0001 device-hours:" in out


def test_sequential_seeds_on_slurm_add_a_seed_to_an_undecided_pair_up_to_max(slurm_cluster, tmp_path, tiny_model_path):
    """One compared pair at the same learning rate, ranked by the logged learning rate: the difference
    is 0 on every seed, so the interval [0, 0] covers 0 at min=2 and one seed is added, up to max=3,
    each a SLURM job; the decisions file says so and the report shows the final interval."""
    from abcx.report.command import run_report

    results = tmp_path / "results"
    path = tmp_path / "seq.yaml"
    path.write_text(f"name: seq\nfixed: [model=tiny, task=chain, train=testbed, {', '.join(QUICK_STEPS)}, "
                    "train.max_steps=1, train.learning_rate=3.0e-4, logger=none, eval.at_end=false, launcher=slurm, "
                    f"launcher.profile=local, results_dir={results}]\n"
                    "points:\n  - [method=abc_grpo]\n  - [method=grpo]\n"
                    "strategy:\n  name: seeds\n  min: 2\n  max: 3\n  compare: [abc_grpo, grpo]\n"
                    "  metric: learning_rate\n  window: 1\n")
    code, out = call(command.sweep_run, str(path), [], wait=True)
    assert code == 0, out
    decisions = list(read_jsonl(results / "sweeps" / "seq" / "decisions.jsonl"))
    added = [(d["pair"], d["seed"], d["n"]) for d in decisions if d["event"] == "seed_added"]
    (final,) = [d for d in decisions if d["event"] in ("decided", "undecided")]
    assert added == [(0, 2, 2)] and final["event"] == "undecided" and final["n"] == 3
    assert final["low"] <= 0 <= final["high"]
    runs = [RunRecord(results / "runs" / e["run_id"]) for e in manifest.load(results, "seq")["runs"]]
    assert len(runs) == 6 and all(r.state() == "finished" and r.status()["backend"] == "slurm" for r in runs)
    report = run_report([str(results)], sweep="seq", fmt="markdown", out=str(tmp_path / "report.md"))
    (seeds,) = [t for t in report.tables if t.key == "seeds"]
    assert list(seeds.data["decision"]) == ["undecided"] and list(seeds.data["n"]) == [3]
