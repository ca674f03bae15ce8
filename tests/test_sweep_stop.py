"""`abcx sweep stop` on the local backend with real training: a running run is stopped at its next
rollout boundary with a checkpoint (Backend.stop through the run's control.json), the supervisor
starts nothing more, and the next `abcx sweep run` resumes it onto exactly the path an
uninterrupted run takes; bad input is one line."""
from __future__ import annotations


import pytest

from abcx.errors import UserError
from abcx.launch.local import pid_alive
from abcx.record import RunRecord, read_jsonl
from abcx.sweep import command, manifest
from tests.helpers import call, tree, wait_until

# 8 optimizer steps per rollout (steps_per_generation 8, GA 1): a stop can only land on 8, 16, 24.
CYCLE = 8
FIXED = ("model=tiny, task=chain, train=testbed, train.max_steps=32, train.save_steps=100, "
         f"train.steps_per_generation={CYCLE}, train.per_device_train_batch_size=16, logger=none, "
         "eval.at_end=false, launcher.max_parallel=1")
TIMING = {"step_time", "time"}  # wall-clock: the only fields a resumed run may log differently


def sweep_file(tmp_path, name: str, results, grid: str = "  seed: [0, 1]") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nfixed: [{FIXED}, results_dir={results}]\ngrid:\n{grid}\n")
    return str(path)


def records(results, name: str) -> list[RunRecord]:
    return [RunRecord(results / "runs" / e["run_id"]) for e in manifest.load(results, name)["runs"]]


def logged(record: RunRecord) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_jsonl(record.metrics_path)]


@pytest.mark.slow
def test_a_stopped_run_pauses_at_a_rollout_boundary_and_resumes_onto_the_uninterrupted_path(tmp_path, tiny_model_path):
    results = tmp_path / "results"
    path = sweep_file(tmp_path, "live", results)
    code, out = call(command.sweep_run, path, [])
    assert code == 0 and "supervisor pid" in out, out
    first = wait_until(lambda: next((r for r in records(results, "live") if r.status().get("step", 0) >= 1), None),
                       600, "the first run's first step")
    code, out = call(command.sweep_stop, "live", results_dir=str(results), reason="testing stop")
    assert code == 0, out
    status = first.status()
    # At a rollout boundary (never inside one), with the checkpoint it resumes from.
    assert status["state"] == "stopped" and status["step"] % CYCLE == 0 and 0 < status["step"] < 32, status
    assert status["stop"]["kind"] == "user" and "testing stop" in status["stop"]["reason"]
    assert (first.checkpoints / f"checkpoint-{status['step']}").is_dir()
    assert f"stopped 1 run(s) at a checkpoint: {first.run_id} at step {status['step']}" in out
    data = manifest.load(results, "live")
    wait_until(lambda: not pid_alive(data["supervisor"]["pid"]), 120, "the supervisor to exit")
    second = next(r for r in records(results, "live") if r.run_id != first.run_id)
    assert second.status().get("state") in (None, "pending") and not second.metrics()  # never started
    decisions = list(read_jsonl(results / "sweeps" / "live" / "decisions.jsonl"))
    assert [d["event"] for d in decisions] == ["stop"] and data["stop"]["reason"] == "testing stop"

    with pytest.raises(UserError) as err:  # the run is stopped now, not running: one line, nothing written
        command.sweep_stop("live", run_ids=[first.run_id], results_dir=str(results), out=lambda _l: None)
    assert f"--run {first.run_id} is stopped, not running" in str(err.value) and "\n" not in str(err.value)

    code, out = call(command.sweep_run, path, [], wait=True)  # resumes the stopped run, starts the other
    assert code == 0, out
    assert [r.state() for r in records(results, "live")] == ["finished", "finished"]
    reference = tmp_path / "reference"  # the same point trained in one go
    code, out = call(command.sweep_run, sweep_file(tmp_path, "whole", reference, f"  seed: [{first.meta()['seed']}]"), [],
                     wait=True)
    assert code == 0, out
    (whole,) = records(reference, "whole")
    assert [r["step"] for r in logged(first)] == list(range(1, 33))
    assert logged(first) == logged(whole)  # every logged number of every step, bit for bit


HF_TOKEN_SHAPED = "hf_" + "Ab3" * 12  # shaped like a Hugging Face token, not one


def test_stop_names_a_bad_run_grace_or_reason_in_one_line_before_anything_is_written(tmp_path):
    results = tmp_path / "results"
    (results / "sweeps" / "s").mkdir(parents=True)
    manifest.update(results, "s", lambda m: m.update(name="s", backend="local", runs=[
        {"run_id": "grpo-s0-abc", "overrides": ["seed=0"], "index": 0}]))
    before = tree(results)
    for kwargs, message in (({"run_ids": ["nope"]}, "--run nope is not a run of sweep s; its runs: grpo-s0-abc"),
                            ({"run_ids": ["grpo-s0-abc"]}, "--run grpo-s0-abc is new, not running"),
                            ({"grace_s": -1}, "--grace -1: valid: seconds from 0 to 86400"),
                            ({"grace_s": float("inf")}, "--grace inf: valid: seconds from 0 to 86400"),
                            ({"grace_s": float("nan")}, "--grace nan: valid"),
                            ({"reason": f"because {HF_TOKEN_SHAPED}"}, "--reason looks like a Hugging Face token")):
        with pytest.raises(UserError) as err:
            command.sweep_stop("s", results_dir=str(results), out=lambda _l: None, **kwargs)
        assert message in str(err.value) and "\n" not in str(err.value) and HF_TOKEN_SHAPED not in str(err.value)
    assert tree(results) == before
