"""A sweep's decisions are durable (docs/architecture.md, "Sweep strategies and the supervisor").

Real sweeps of the tiny testbed whose supervisor is killed with SIGKILL at named points (ABCX_FAULT,
abcx.record.fault_occurrence: the supervisor signals itself when it gets there), then taken up by
`abcx sweep run` again, as a user would. Whatever the point, the sweep ends with the decisions (not
their times) and every run's final step of an uninterrupted sweep of the same file: a pause is ranked
once whether or not its supervisor survived, a promotion or cut is decided once and carried out, a
cut run stays cut on every rerun, `best` is said once, an optuna trial is told its value once and a
seeds pair's decision is not taken again. A metric no run logs fails the sweep in one line.
"""
from __future__ import annotations

import os

import pytest

from abcx.record import RunRecord, read_jsonl
from abcx.sweep import command, manifest
from tests.helpers import call, supervisor_killed_at

pytestmark = pytest.mark.slow

# Three seeds, a rung at step 4 of 8 (a rollout every 4 steps), eta 2, one job at a time so that the
# order of events, and so every decision, is the same in every sweep of this file.
FIXED = ("model=tiny, task=chain, train=testbed, train.max_steps=8, train.save_steps=4, "
         "train.per_device_train_batch_size=16, train.max_completion_length=16, logger=none, "
         "eval.at_end=false, launcher.max_parallel=1")
HALVING = "  name: halving\n  rungs: [4]\n  eta: 2\n  metric: entropy\n  mode: min\n  window: 2"


def sweep_file(folder, results, name: str = "halve", strategy: str = HALVING, grid: str = "  seed: [0, 1, 2]",
               fixed: str = FIXED) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nfixed: [{fixed}, results_dir={results}]\n"
                    + (f"grid:\n{grid}\n" if grid else "") + f"strategy:\n{strategy}\n")
    return str(path)


def killed_at(fault: str, path: str, results, name: str = "halve") -> list[dict]:
    """The decisions a supervisor killed at `fault` left (tests.helpers.supervisor_killed_at)."""
    supervisor_killed_at(fault, path, results, name)
    return decisions(results, name)


def decisions(results, name: str = "halve", *, recovery: bool = True) -> list[dict]:
    """The sweep's decisions without their times (and without `trial_resumed`, a note of a recovery)."""
    rows = read_jsonl(results / "sweeps" / name / "decisions.jsonl")
    return [{k: v for k, v in d.items() if k != "time"} for d in rows if recovery or d["event"] != "trial_resumed"]


def final_steps(results, name: str = "halve") -> dict[str, tuple]:
    """Per run: state, step, why it stopped and the steps it trained (each once)."""
    out = {}
    for entry in manifest.load(results, name)["runs"]:
        record = RunRecord(results / "runs" / entry["run_id"])
        status = record.status()
        trained = [r["step"] for r in record.metrics() if "loss" in r]
        out[entry["run_id"]] = (status.get("state"), status.get("step"), (status.get("stop") or {}).get("kind"), trained)
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_path):
    """The halving sweep run once, uninterrupted, in-process: the reference every other sweep must match."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    results = folder / "results"
    path = sweep_file(folder, results)
    os.environ.pop("ABCX_FAULT", None)
    code, out = call(command.sweep_run, path, [], wait=True)
    assert "Traceback" not in out, out
    return path, results


def test_a_rerun_after_a_cut_changes_nothing(uninterrupted):
    """The README's promise: a cut run stays cut on every rerun; nothing is decided twice."""
    path, results = uninterrupted
    before, steps = decisions(results), final_steps(results)
    events = [d["event"] for d in before]
    assert events.count("rung") == 3 and events.count("best") == 1 and "stopped" in events, events
    cut = {d["run_id"] for d in before if d["event"] == "stopped"}
    assert all(steps[r][:3] == ("stopped", 4, "cut") and steps[r][3] == [1, 2, 3, 4] for r in cut)
    code, out = call(command.sweep_run, path, [], wait=True)
    assert code == 0 and "nothing to submit" in out, out
    assert decisions(results) == before and final_steps(results) == steps


def test_a_supervisor_killed_at_each_decision_point_in_turn_ends_as_the_uninterrupted_sweep(
        uninterrupted, tmp_path):
    """One sweep, its supervisor killed at every decision point in turn, each rerun taking up what the
    last one left: the first kill is the issue's (two runs paused at step 4, the second not ranked)."""
    _path, reference = uninterrupted
    results = tmp_path / "results"
    path = sweep_file(tmp_path, results)
    # After the second pause is seen, before it is ranked: seed 0 ranked, seed 1 paused unranked.
    left = killed_at("supervisor.ended@2", path, results)
    assert [(d["event"], d["of"]) for d in left] == [("rung", 1)]
    assert [s[:3] for s in final_steps(results).values()].count(("stopped", 4, "rung")) == 2
    # The restarted supervisor ranks seed 1 (once) and is killed before promoting anyone.
    assert [d["event"] for d in killed_at("decision.rung@1", path, results)] == ["rung", "rung"]
    # It promotes the better one and is killed before the promoted run's job starts.
    promoted = killed_at("decision.promoted@1", path, results)[-1]
    assert promoted["event"] == "promoted" and final_steps(results)[promoted["run_id"]][:2] == ("stopped", 4)
    # The promotion is carried out (not decided again); the first cut is decided, not yet in its record.
    cut = killed_at("decision.stopped@1", path, results)[-1]
    assert cut["event"] == "stopped" and final_steps(results)[cut["run_id"]][2] == "rung"
    # The cut reaches the record; killed right after `best`.
    assert killed_at("decision.best@1", path, results)[-1]["event"] == "best"
    code, out = call(command.sweep_run, path, [], wait=True)
    assert "nothing to submit" in out, out
    assert decisions(results) == decisions(reference)
    assert final_steps(results) == final_steps(reference)


def test_a_ranking_metric_no_run_logs_fails_the_sweep_at_the_first_rung_in_one_line(tmp_path, tiny_model_path):
    """`kl` is a metric TRL logs, but only with a KL term (beta > 0; the testbed's is 0): that cannot be
    read from the name, so the first rung that needs it fails the sweep, naming what the run did log."""
    from abcx.errors import UserError

    results = tmp_path / "results"
    path = sweep_file(tmp_path, results, strategy=HALVING.replace("entropy", "kl"), grid="  seed: [0, 1]")
    with pytest.raises(UserError) as err:
        command.sweep_run(path, [], wait=True, out=lambda _line: None)
    message = str(err.value)
    assert "\n" not in message and message.startswith("strategy.metric=kl: run ")
    assert "logged no kl up to step 4; it logged: " in message and "entropy" in message and "reward" in message
    (failed,) = [d for d in decisions(results) if d["event"] == "failed"]
    assert failed["reason"] == message and [d["event"] for d in decisions(results)] == ["failed"]
    first, second = final_steps(results).values()
    assert first[:3] == ("stopped", 4, "rung") and second[0] == "cancelled" and not second[3]  # never started
    code, out = call(command.sweep_status, "halve", results_dir=str(results))
    assert f"sweep halve failed: {message}" in out


def test_an_optuna_trial_is_reported_at_its_rung_once_and_told_its_value_once(tmp_path, tiny_model_path):
    """One trial over the learning rate (the metric is the logged learning rate: its value is its own
    parameter), paused at step 4 for the pruner. Killed after the pause is seen (not yet reported), then
    after the trial's value is decided but before the study is told it; the second trial of a search
    after a restart is asked as ever (test_sweep_strategies.py's optuna test)."""
    import optuna

    results = tmp_path / "results"
    path = sweep_file(tmp_path, results, "search", "  name: optuna\n  sampler: TPESampler\n  sampler_seed: 3\n"
                      "  trials: 1\n  rungs: [4]\n  space: {train.learning_rate: {low: 5.0e-5, high: 2.0e-4, log: true}}\n"
                      "  metric: learning_rate\n  window: 1", grid="")
    assert [d["event"] for d in killed_at("supervisor.ended@1", path, results, "search")] == ["trial"]
    assert killed_at("decision.trial_complete@1", path, results, "search")[-1]["event"] == "trial_complete"
    code, out = call(command.sweep_run, path, [], wait=True)
    assert code == 0, out
    rows = decisions(results, "search", recovery=False)
    assert [(d["event"], d.get("step")) for d in rows] == [("trial", None), ("rung", 4), ("trial_complete", None),
                                                          ("best", None)]
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{results / 'sweeps' / 'search' / 'optuna.db'}")
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.intermediate_values == {4: trial.value}
    assert trial.value == pytest.approx(trial.params["train.learning_rate"], rel=1e-9) == rows[2]["value"]
    assert list(final_steps(results, "search").values()) == [("finished", 8, None, list(range(1, 9)))]
    code, out = call(command.sweep_run, path, [], wait=True)  # a rerun of the finished search decides nothing
    assert code == 0 and decisions(results, "search", recovery=False) == rows, out


@pytest.mark.slurm
def test_on_slurm_a_job_that_outlives_its_killed_supervisor_is_watched_and_ranked_once(
        uninterrupted, slurm_cluster, tmp_path):
    """The same sweep on SLURM, where a job outlives its supervisor: killed right after submitting
    seed 1's job (which trains on and pauses at step 4 with no supervisor), then after the promotion
    that follows. The reruns watch that job again instead of submitting it twice, rank its pause once,
    carry out the promotion, and end with the local uninterrupted sweep's decisions and steps."""
    _path, reference = uninterrupted
    results = tmp_path / "results"
    path = sweep_file(tmp_path, results, fixed=FIXED + ", launcher=slurm, launcher.profile=local")
    left = killed_at("supervisor.submitted@2", path, results)
    assert [d["event"] for d in left] == ["rung"]
    second = next(e for e in manifest.load(results, "halve")["runs"] if e["index"] == 1)
    job = RunRecord(results / "runs" / second["run_id"]).status()["job_id"]
    assert killed_at("decision.promoted@1", path, results)[-1]["event"] == "promoted"
    code, out = call(command.sweep_run, path, [], wait=True)
    assert "Traceback" not in out, out
    assert decisions(results) == decisions(reference)
    assert final_steps(results) == final_steps(reference)
    jobs = {e["run_id"]: e.get("jobs", []) for e in manifest.load(results, "halve")["runs"]}
    assert jobs[second["run_id"]][0] == job and len(jobs[second["run_id"]]) == len(set(jobs[second["run_id"]]))
    assert all(RunRecord(results / "runs" / r).status()["backend"] == "slurm" for r in jobs)
