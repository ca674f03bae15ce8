"""Sweep strategies on the local backend with real training: successive halving (runs paused at a rung,
the best promoted and resumed into the same record, the rest `stopped` with the numbers), health stops,
the device-hour budget, and the decisions file that says why."""
from __future__ import annotations

import json

import pytest

from abcx.errors import UserError
from abcx.record import RunRecord, read_jsonl
from abcx.report.command import run_report
from abcx.sweep import command, manifest
from abcx.sweep import strategies as ST
from tests.optuna_checks import three_trials_each_asked_once
from tests.helpers import call, supervisor_killed_at

TINY = ("[model=tiny, task=chain, train=testbed, train.max_steps=4, train.save_steps=4, "
        "train.per_device_train_batch_size=16, logger=none, eval.at_end=false, launcher.max_parallel=2")


def sweep_file(tmp_path, name: str, grid: str, strategy: str, fixed: str = "") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nfixed: {TINY}{fixed}, results_dir={tmp_path / 'results'}]\n"
                    f"grid:\n{grid}\nstrategy:\n{strategy}\n")
    return str(path)


def records(results, name: str) -> list[RunRecord]:
    return [RunRecord(results / "runs" / e["run_id"]) for e in manifest.load(results, name)["runs"]]


def trained_steps(record: RunRecord) -> list[int]:
    return [r["step"] for r in record.metrics() if "loss" in r]


@pytest.mark.parametrize("strategy, message", [
    ("  name: halving\n  rungs: [4, 8]\n  metric: reward", "rung 8 is beyond train.max_steps=4"),
    ("  name: halving\n  rungs: [4]\n  metric: eval/chain/avg@4", "needs an evaluation at rung 4"),
    ("  name: halving\n  rungs: [3, 2]\n  metric: reward", "rungs=[3, 2] must be increasing"),
    ("  name: halving\n  rungs: [2]\n  metric: reward\n  eta: 1", "eta=1 must be a whole number >= 2"),
    ("  name: halving\n  rungs: [2]\n  metric: reward", "rung 2 is inside a rollout of point 1"),
    ("  name: hyperband", "name='hyperband' is not a strategy; valid: grid, halving"),
    ("  name: grid\n  health: {entropy_flor: 1}", "health.entropy_flor"),
    ("  name: grid\n  budget: {device_hours: -1}", "device_hours=-1 must be a positive"),
    # A metric the runs never log; a near miss is named.
    ("  name: halving\n  rungs: [4]\n  metric: bogus_metric_that_does_not_exist",
     "metric=bogus_metric_that_does_not_exist is not a metric the runs log; valid: eval/chain/avg@4, "
     "eval/chain/pass@1, eval/chain/pass@2, eval/chain/pass@4, "),
    ("  name: halving\n  rungs: [4]\n  metric: rewards", "metric=rewards is not a metric the runs log "
     "(did you mean reward?)"),
])
def test_a_bad_strategy_is_one_line_naming_the_field_before_anything_is_written(tmp_path, strategy, message):
    path = sweep_file(tmp_path, "bad", "  seed: [0, 1]", strategy, ", eval.n=4, 'eval.benchmarks=[chain]'")
    with pytest.raises(UserError) as err:
        command.sweep_run(path, [], out=lambda _line: None)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("strategy, grid, message", [
    ("  name: seeds\n  compare: [abc_grpo, grpo]\n  metric: bogus_metric_that_does_not_exist",
     "  method: [abc_grpo, grpo]", "metric=bogus_metric_that_does_not_exist is not a metric the runs log; valid: "),
    ("  name: optuna\n  trials: 2\n  space: {train.learning_rate: {low: 1.0e-5, high: 1.0e-4}}\n  metric: entropie",
     "  eval.every_steps: [4]", "metric=entropie is not a metric the runs log (did you mean entropy?); valid: "),
    ("  name: halving\n  rungs: [4]\n  metric: eval/arith/pass@1", "  eval.every_steps: [4]",
     "metric=eval/arith/pass@1 is not a metric the runs log (did you mean eval/chain/pass@1?)"),
    # Evaluated at the rung, but not written: eval.n=4 writes avg@4 and pass@1, pass@2, pass@4.
    ("  name: halving\n  rungs: [4]\n  metric: eval/chain/avg@2", "  eval.every_steps: [4]",
     "metric=eval/chain/avg@2 is not a metric the runs log (did you mean eval/chain/avg@4?)"),
    ("  name: halving\n  rungs: [4]\n  metric: eval/chain/pass@3", "  eval.every_steps: [4]",
     "metric=eval/chain/pass@3 is not a metric the runs log"),
])
def test_a_strategy_metric_no_run_logs_is_refused_by_a_dry_run_for_every_ranking_strategy(tmp_path, strategy, grid,
                                                                                         message):
    """What the runs log is known from the config: abcx's training metrics (read from the code that logs
    them) and eval/<benchmark>/<name> for the benchmarks and eval.n it evaluates (here chain, n=4)."""
    from abcx.training.metric_names import may_log

    path = sweep_file(tmp_path, "bad", grid, strategy, ", eval.n=4, 'eval.benchmarks=[chain]'")
    with pytest.raises(UserError) as err:
        command.sweep_run(path, [], dry_run=True, out=lambda _line: None)
    assert message in str(err.value) and "\n" not in str(err.value)
    valid = str(err.value).split("; valid: ")[1].split(", ")
    # Every name a testbed run logs is offered (seen in a real metrics.jsonl); eval names come first.
    assert valid[:4] == ["eval/chain/avg@4", "eval/chain/pass@1", "eval/chain/pass@2", "eval/chain/pass@4"]
    logged = {"reward", "reward_std", "entropy", "loss", "grad_norm", "learning_rate", "completion_length",
              "frac_reward_zero_std", "clip/q1", "clip/q4", "clip/zero_adv_out", "grad/share_q3", "ratio/max",
              "eps/eps3", "rewards/chain_correct/mean", "num_tokens", "step_time", "epoch"}
    assert all(may_log(name) for name in logged) and {"reward", "entropy", "clip/q2"} <= set(valid)
    assert not may_log("eval/chain/avg@4") and not may_log("step") and not may_log("time")
    assert not (tmp_path / "results").exists()


def test_the_readme_strategies_table_is_the_registry():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("<!-- strategies-table -->\n")[1].split("\n<!-- /strategies-table -->")[0]
    assert table == ST.describe()
    for name, strategy in ST.STRATEGIES.items():  # the keys the parser accepts are the table's
        assert f"`{name}`" in table and all(f"`{key}`" in table for key in strategy.keys)


@pytest.mark.slow
def test_halving_pauses_every_run_at_the_rung_promotes_the_top_half_and_stops_the_rest(tmp_path, tiny_model_path):
    """4 seeds, rung at step 2 of 4 (a rollout every 2 steps), eta 2, ranked by held-out avg@4 evaluated at the rung."""
    results = tmp_path / "results"
    path = sweep_file(tmp_path, "halve", "  seed: [0, 1, 2, 3]",
                      "  name: halving\n  rungs: [2]\n  eta: 2\n  metric: eval/chain/avg@4\n  mode: max",
                      ", train.steps_per_generation=2, eval.every_steps=2, eval.n=4, eval.max_problems=8, "
                      "'eval.benchmarks=[chain]'")
    code, out = call(command.sweep_run, path, [], wait=True)
    assert code == 0, out
    runs = records(results, "halve")
    at_rung = {r.run_id: ST.metric_at(r, "eval/chain/avg@4", 2) for r in runs}
    assert all(v is not None for v in at_rung.values())  # every run reached the rung and was evaluated there
    ranked = sorted(at_rung, key=lambda rid: at_rung[rid], reverse=True)
    decisions = list(read_jsonl(results / "sweeps" / "halve" / "decisions.jsonl"))
    promoted = {d["run_id"] for d in decisions if d["event"] == "promoted"}
    by_id = {r.run_id: r for r in runs}
    # The final top half (4 // eta) went on; an early promotion may add one more (ASHA never waits).
    assert set(ranked[:2]) <= promoted and len(promoted) <= 3
    for d in (d for d in decisions if d["event"] == "promoted"):
        assert d["rank"] <= d["cut"] and d["value"] == at_rung[d["run_id"]]
    for rid, record in by_id.items():
        status = record.status()
        if rid in promoted:  # resumed from checkpoint-2 into the same record: every step once
            assert status["state"] == "finished" and trained_steps(record) == [1, 2, 3, 4]
        else:
            assert status["state"] == "stopped" and status["step"] == 2 and trained_steps(record) == [1, 2]
            assert status["stop"]["kind"] == "cut" and status["stop"]["rank"] > status["stop"]["cut"]
            assert "below the cut at rung 1 (step 2)" in status["stop"]["reason"]
            assert (record.checkpoints / "checkpoint-2").is_dir() and not (record.path / "final").exists()
    stopped = {d["run_id"] for d in decisions if d["event"] == "stopped"}
    assert stopped == set(by_id) - promoted
    best = next(d for d in decisions if d["event"] == "best")
    assert best["step"] == 4 and best["run_id"] in promoted
    # Compute: every run to step 2, only the promoted ones on to 4.
    assert sum(len(trained_steps(r)) for r in runs) == 4 * 2 + 2 * len(promoted) < 4 * 4

    code, out = call(command.sweep_status, "halve", results_dir=str(results))
    assert "rungs: eval/chain/avg@4 (max, eta 2)" in out and "below the cut" in out
    assert f"{len(promoted)} finished" in out and f"{4 - len(promoted)} stopped" in out

    # The report: each run's value and rank at the rung, and the rung curves with the stopped runs marked.
    report = run_report([str(results)], sweep="halve", fmt="markdown", plots_dir=str(tmp_path / "plots"),
                        out=str(tmp_path / "report.md"))
    (rungs,) = [t for t in report.tables if t.key == "rungs"]
    assert list(rungs.data["run_id"]) == [r.run_id for r in runs]
    assert list(rungs.data["step 2"]) == pytest.approx([at_rung[r.run_id] for r in runs])
    assert sorted(rungs.data["state"]) == sorted(r.state() for r in runs)
    assert "Halving: eval/chain/avg@4 at the rungs" in report.text and "below the cut" in report.text
    figures = {f["file"]: f for f in json.loads((tmp_path / "plots" / "plots.json").read_text())["figures"]}
    (panel,) = figures["rungs.png"]["panels"]
    series = {s["label"]: s["points"] for s in panel["series"]}
    assert series.pop("rungs (steps 2, 4)") == 2
    for rid, record in by_id.items():  # eval rows at steps 2 and 4 (promoted) or 2 only (stopped there)
        state = "stopped at step 2" if rid not in promoted else "finished"
        assert series[f"{rid} ({state})"] == (2 if rid in promoted else 1)
    assert len(series) == 4


@pytest.mark.slow
def test_a_health_stop_ends_the_run_at_a_checkpoint_with_its_reason(tmp_path, tiny_model_path):
    """An entropy floor no tiny policy reaches: stopped after 2 logged steps under it, not failed."""
    results = tmp_path / "results"
    path = sweep_file(tmp_path, "health", "  method: [grpo]",
                      "  name: grid\n  health: {entropy_floor: 100.0, steps: 2}")
    code, out = call(command.sweep_run, path, [], wait=True)
    (record,) = records(results, "health")
    status = record.status()
    assert status["state"] == "stopped" and status["step"] == 2 and trained_steps(record) == [1, 2]
    assert status["stop"]["kind"] == "health" and "entropy" in status["stop"]["reason"]
    assert "under entropy_floor=100.0 for 2 logged step(s)" in status["stop"]["reason"]
    assert (record.checkpoints / "checkpoint-2").is_dir()
    (decision,) = [d for d in read_jsonl(results / "sweeps" / "health" / "decisions.jsonl")]
    assert decision["event"] == "health_stop" and decision["step"] == 2 and decision["run_id"] == record.run_id
    assert "stopped" in out and "health stop at step 2" in out
    code, out = call(command.sweep_run, path, [])
    assert "nothing to submit (1 stopped)" in out  # a health-stopped run is not resubmitted as if it had failed


@pytest.mark.slow
def test_no_new_run_starts_once_the_device_hour_budget_is_spent(tmp_path, tiny_model_path):
    """A budget of 0.36 core-seconds: the first run spends it, the other two never start."""
    results = tmp_path / "results"
    path = sweep_file(tmp_path, "budget", "  seed: [0, 1, 2]", "  name: grid\n  budget: {device_hours: 0.0001}",
                      ", launcher.max_parallel=1")
    code, out = call(command.sweep_run, path, [], wait=True)
    runs = records(results, "budget")
    states = sorted(r.state() for r in runs)
    assert states == ["finished", "pending", "pending"], out
    started = [r for r in runs if r.state() == "finished"][0]
    (decision,) = [d for d in read_jsonl(results / "sweeps" / "budget" / "decisions.jsonl")]
    assert decision["event"] == "budget" and decision["spent"] >= 0.0001
    assert decision["spent"] == pytest.approx(started.status()["device_hours"], rel=1e-6)
    assert started.status()["device_hours"] == pytest.approx(started.status()["elapsed_s"] * 1 / 3600, rel=1e-3)
    assert "budget 0.0001 device-hours:" in out and "0.0000 left" in out and "2 new" in out


@pytest.mark.slow
def test_sequential_seeds_stop_once_the_paired_interval_excludes_zero_and_go_to_max_while_it_does_not(
        tmp_path, tiny_model_path):
    """Two pairs ranked by the logged learning rate, so each pair's difference is known exactly:
    pair 0 (2e-4 vs 1e-4) differs by 1e-4 on every seed (decided at min=2), pair 1 (3e-4 vs 3e-4)
    by 0 on every seed (the interval [0, 0] covers 0: a seed is added up to max=3). The supervisor is
    killed at each of its decision points in turn: right after deciding pair 0, right after adding pair
    1's seed (before planning it: the rerun plans it from decisions.jsonl) and right after leaving pair 1
    undecided at max. Each run trains once, and no pair's decision is taken again."""
    results = tmp_path / "results"
    path = tmp_path / "seq.yaml"
    path.write_text(f"name: seq\nfixed: {TINY.replace('max_steps=4', 'max_steps=1')}, results_dir={results}]\n"
                    "points:\n  - [method=abc_grpo, train.learning_rate=2.0e-4]\n"
                    "  - [method=abc_grpo, train.learning_rate=3.0e-4]\n  - [method=grpo]\n"
                    "  - [method=grpo, train.learning_rate=3.0e-4]\n"
                    "strategy:\n  name: seeds\n  min: 2\n  max: 3\n  compare: [abc_grpo, grpo]\n"
                    "  metric: learning_rate\n  window: 1\n")
    for point in ("decision.decided@1", "decision.seed_added@1", "decision.undecided@1"):
        supervisor_killed_at(point, str(path), results, "seq")
    code, out = call(command.sweep_run, str(path), [], wait=True)
    assert code == 0, out
    decisions = list(read_jsonl(results / "sweeps" / "seq" / "decisions.jsonl"))
    ends = [d for d in decisions if d["event"] in ("decided", "undecided")]
    final = {d["pair"]: d for d in ends}
    assert sorted(d["pair"] for d in ends) == [0, 1]  # each pair decided once, kills or not
    added = [d for d in decisions if d["event"] == "seed_added"]
    assert final[0]["event"] == "decided" and final[0]["n"] == 2
    assert final[0]["mean_diff"] == pytest.approx(1e-4) and final[0]["low"] > 0
    assert final[1]["event"] == "undecided" and final[1]["n"] == 3 and final[1]["low"] <= 0 <= final[1]["high"]
    assert [(d["pair"], d["seed"], d["n"]) for d in added] == [(1, 2, 2)]  # only the open pair got a seed
    seeds = sorted((r.meta()["seed"], r.meta()["method"]) for r in records(results, "seq"))
    assert len(seeds) == 4 + 6 and seeds.count((2, "grpo")) == 1 and seeds.count((2, "abc_grpo")) == 1
    assert all(r.state() == "finished" for r in records(results, "seq"))
    assert all([m["step"] for m in r.metrics() if "loss" in m] == [1] for r in records(results, "seq"))
    code, out = call(command.sweep_status, "seq", results_dir=str(results))
    assert "pair 1 (abc_grpo - grpo" in out and "decided" in out and "undecided at 3 seeds" in out

    report = run_report([str(results)], sweep="seq", fmt="markdown", out=str(tmp_path / "report.md"))
    (seeds,) = [t for t in report.tables if t.key == "seeds"]
    assert list(seeds.data["decision"]) == ["decided", "undecided"] and list(seeds.data["n"]) == [2, 3]
    assert list(seeds.data["low"]) == pytest.approx([final[0]["low"], final[1]["low"]])
    assert list(seeds.data["high"]) == pytest.approx([final[0]["high"], final[1]["high"]])
    assert "Sequential seeds: each compared pair's final interval" in report.text


@pytest.mark.slow
def test_an_optuna_search_killed_midway_resumes_with_no_trial_lost_or_duplicated(tmp_path, tiny_model_path):
    """3 TPE trials over the learning rate (the metric is the logged learning rate, so each trial's
    value must equal its own sampled parameter). The supervisor and its job are SIGKILLed while the
    second trial trains; a second `abcx sweep run` resumes that trial from its checkpoint."""
    import os
    import signal
    import time

    results = tmp_path / "results"
    path = tmp_path / "search.yaml"
    path.write_text(f"name: search\nfixed: {TINY.replace('save_steps=4', 'save_steps=1')}, results_dir={results},"
                    " launcher.max_parallel=1]\nstrategy:\n  name: optuna\n  sampler: TPESampler\n  sampler_seed: 3\n"
                    "  trials: 3\n  space: {train.learning_rate: {low: 5.0e-5, high: 2.0e-4, log: true}}\n"
                    "  metric: learning_rate\n  window: 1\n")
    code, out = call(command.sweep_run, str(path), [])
    assert code == 0 and "supervisor pid" in out, out
    decisions = results / "sweeps" / "search" / "decisions.jsonl"

    def second_trial_trains():
        rows = list(read_jsonl(decisions)) if decisions.exists() else []
        second = [d for d in rows if d["event"] == "trial" and d["trial"] == 1]
        return second and RunRecord(results / "runs" / second[0]["run_id"]).status().get("step", 0) >= 1
    deadline = time.time() + 600
    while not second_trial_trains():
        assert time.time() < deadline, "the second trial never started training"
        time.sleep(0.3)
    pid = manifest.load(results, "search")["supervisor"]["pid"]
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # the supervisor and its job, as a crash would
    time.sleep(1)

    code, out = call(command.sweep_run, str(path), [], wait=True)
    assert code == 0, out
    asked, resumed = three_trials_each_asked_once(results)
    assert resumed["run_id"] == asked[1]["run_id"]
    for d in asked:  # every trial an ordinary run, each step once (the resumed one from its checkpoint)
        record = RunRecord(results / "runs" / d["run_id"])
        assert record.state() == "finished" and trained_steps(record) == [1, 2, 3, 4]
    assert sum(d["event"] == "trial_complete" for d in read_jsonl(decisions)) == 3
