"""What `abcx sweep run --wait` shows while it waits (issue 29, section 1): a row per run whose job is
starting or running, with step/max and the latest value of the strategy's metric (the reward for a
plain grid); one row for the runs still waiting for a slot; a run that ended leaves once the
supervisor has seen its job end. Read from the run records as a training job writes them."""
from __future__ import annotations

import pytest

from abcx import progress
from abcx.record import RunRecord
from abcx.record.states import State
from abcx.sweep import manifest
from abcx.sweep.watch import QUEUE, Watch


@pytest.fixture
def printed(monkeypatch, capsys):
    """The plain lines the watch prints (on stderr, not a terminal here), one per row at every poll."""
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    monkeypatch.setattr(progress, "_DEFAULT", None)  # a display an earlier test left busy prints elsewhere
    return lambda: capsys.readouterr().err.splitlines()


def run(results, run_id: str, state: State, step: int = 0, job: str | None = None, rewards=()):
    record = RunRecord(results / "runs" / run_id)
    record.mark_submitted(sweep="s", point=[f"seed={run_id[-1]}"], index=0, backend="local", submitted="2026-12-01")
    for i, reward in enumerate(rewards, start=1):
        record.append_metrics({"step": i, "reward": reward})
    record.set_status(state, step=step, max_steps=100, job_id=job)
    return record


def test_rows_for_live_jobs_one_for_the_queue_and_an_ended_run_leaves_when_its_job_has(tmp_path, printed):
    results = tmp_path / "results"
    running = run(results, "grpo-s0", State.RUNNING, step=40, job="101", rewards=[0.31, 0.52])
    run(results, "grpo-s1", State.PENDING)  # in the supervisor's queue: no job yet
    run(results, "grpo-s2", State.PENDING)
    run(results, "grpo-s3", State.FINISHED, step=100, job="99")  # an earlier submission's
    manifest.update(results, "s", lambda m: [manifest.upsert_run(m, rid, index=i, started="t", ended=None if i == 0 else "t")
                                             for i, rid in enumerate(["grpo-s0", "grpo-s1", "grpo-s2", "grpo-s3"])])
    with Watch("s", str(results)) as watch:
        watch.stop()  # its thread: these polls are the test's own
        watch.poll()
        first = printed()  # (the heartbeat may repeat a row, or print it once before its first update)
        assert any(line.startswith("[grpo-s0] 40/100 steps, ") and line.endswith("running  reward 0.520")
                   for line in first), first  # the newest reward, not the first
        assert any(line.startswith("[sweep s] 2 run(s) waiting for a free slot") for line in first), first
        assert not any(f"grpo-s{i}" in line for line in first for i in (1, 2, 3)), first

        running.set_status(State.FINISHED, step=100)  # the trainer is done; its job has not ended yet
        watch.poll()
        assert any(line.startswith("[grpo-s0] 100/100 steps") and "finished, job ending" in line
                   for line in printed())
        manifest.update(results, "s", lambda m: manifest.upsert_run(m, "grpo-s0", ended="t"))  # the supervisor saw it
        watch.poll()
        assert "grpo-s0" not in watch.rows and set(watch.rows) == {QUEUE}  # the queue row stays
    assert watch.rows == {}


def test_a_strategy_metric_from_the_evaluations_is_its_latest_evaluation(tmp_path, printed):
    results = tmp_path / "results"
    record = run(results, "abc-s0", State.RUNNING, step=50, job="7")
    for step, value in ((25, 0.41), (50, 0.47)):
        record.append_eval({"step": step, "benchmark": "chain", "n": 16, "metrics": {"avg@16": value}})
    manifest.update(results, "s", lambda m: manifest.upsert_run(m, "abc-s0", index=0, started="t", ended=None))
    watch = Watch("s", str(results), "eval/chain/avg@16")
    try:
        watch.poll()
        lines = printed()  # (its row may be said once before its first update)
        assert any(line.endswith("running  eval/chain/avg@16 0.470") for line in lines), lines
    finally:
        watch.stop()
