"""`abcx train` end to end on the tiny testbed with the real TRL trainer: run records, quadrant
metrics, W&B offline files, the on-policy lint, and resuming a killed run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from abcx.config.compose import compose
from abcx.record import RunRecord, read_jsonl
from abcx.training.train import train
from tests.helpers import abcx

FAST = ["train.max_steps=4", "train.per_device_train_batch_size=16", "train.steps_per_generation=2",
        "train.save_steps=2", "eval.at_end=false"]


@pytest.fixture(scope="module")
def two_methods(tmp_path_factory, tiny_model_path):
    results = tmp_path_factory.mktemp("results")
    out = {}
    for method in ("grpo", "abc_grpo"):
        cfg = compose(FAST + [f"method={method}", "logger=none", f"results_dir={results}"])
        out[method] = train(cfg, quiet=True)
    return out


def test_a_run_writes_a_complete_self_contained_record(two_methods, tiny_model_path):
    record = two_methods["abc_grpo"]
    for name in ("config.yaml", "meta.json", "status.json", "metrics.jsonl", "summary.json"):
        assert (record.path / name).is_file(), name
    status = record.status()
    assert status["state"] == "finished" and status["step"] == 4 and status["error"] is None
    meta = record.meta()
    assert meta["config_hash"] and meta["versions"]["trl"].startswith("1.16")
    assert meta["trl_args"]["steps_per_generation"] == 2 and meta["trl_args"]["loss_type"] == "dapo"
    assert meta["off_policy"] is True
    assert meta["quadrants"] == "A != 0"  # its Q1..Q4 count tokens with A > 0 or A < 0, never A = 0
    assert meta["model_build"] == tiny_model_path.name  # the warm start it trained on (test_model_build.py)
    assert meta["logprob_path"] == "chunked"  # train.logprob_path=auto on a CPU: abcx's chunked head
    steps = [row["step"] for row in record.metrics()]
    assert steps == [1, 2, 3, 4]
    assert record.latest_checkpoint() is not None and (record.path / "final" / "config.json").exists()


def test_off_policy_runs_log_quadrants_that_differ_between_grpo_and_abc(two_methods):
    def mean(record, key):
        rows = [r[key] for r in record.metrics() if key in r]
        return sum(rows) / len(rows)

    g, a = two_methods["grpo"], two_methods["abc_grpo"]
    for record in (g, a):
        assert sum(mean(record, f"clip/q{i}") for i in range(1, 5)) > 0
        assert 0 < mean(record, "ratio/max") and mean(record, "ratio/min") < 1 < mean(record, "ratio/max")
        assert "entropy" in record.metrics()[0]
    # GRPO clips only Q1 and Q3 (and A = 0 tokens below its band, which are in no quadrant); ABC clips all four.
    for r in g.metrics():
        assert r["clip/clipped"] <= r["clip/q1"] + r["clip/q3"] + r["clip/zero_adv_out"] + 1e-9
    assert any(r["clip/clipped"] > r["clip/q1"] + r["clip/q3"] + r["clip/zero_adv_out"] + 1e-9 for r in a.metrics())
    for r in a.metrics():  # ABC clips every out-of-band token: the quadrants and the A = 0 ones outside the band
        assert r["clip/clipped"] == pytest.approx(sum(r[f"clip/q{i}"] for i in range(1, 5)) + r["clip/zero_adv_out"])
    assert g.run_id != a.run_id


def test_training_the_same_config_again_does_nothing(two_methods, capsys):
    record = two_methods["grpo"]
    before = (record.path / "metrics.jsonl").read_text()
    cfg = compose(FAST + ["method=grpo", "logger=none", f"results_dir={record.path.parent.parent}"])
    train(cfg, quiet=True)
    assert "already finished" in capsys.readouterr().out
    assert (record.path / "metrics.jsonl").read_text() == before


def test_cli_trains_with_wandb_offline_and_warns_when_on_policy(tmp_path, tiny_model_path):
    result = abcx("train", *FAST[:-1], "train.max_steps=2", "train.steps_per_generation=1", "eval.at_end=false",
                  f"results_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fully on-policy" in result.stderr and "same algorithm" in result.stderr
    assert "reward" in result.stdout and "share of out-of-band events" in result.stdout
    (run,) = (tmp_path / "runs").iterdir()
    assert list(run.glob("wandb/offline-run-*/run-*.wandb")), "W&B offline files next to the record"
    assert not (tmp_path / "wandb").exists()


def test_bad_override_is_a_one_line_error_and_writes_nothing(tmp_path):
    result = abcx("train", "method.eps4=1.5", f"results_dir={tmp_path}", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "method.eps4" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_a_killed_run_is_left_unfinished_and_resumes_without_gaps_or_duplicates(tmp_path, tiny_model_path):
    # Killed at step >= 5 of 40: the margin keeps the kill mid-run however fast the steps are.
    steps = 40
    args = ["train", f"train.max_steps={steps}", "train.save_steps=3", "train.per_device_train_batch_size=16",
            "train.steps_per_generation=2", "eval.at_end=false", f"results_dir={tmp_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "abcx.cli", *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    metrics = None
    while time.time() < deadline:
        found = list(tmp_path.glob("runs/*/metrics.jsonl"))
        if found and len(list(read_jsonl(found[0]))) >= 5:
            metrics = found[0]
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert metrics is not None, "the run never reached step 5"
    record = RunRecord(metrics.parent)
    status = record.status()
    assert status["state"] == "running" and status["step"] < steps, status  # never marked finished
    killed_rows = list(read_jsonl(metrics))
    assert [r["step"] for r in killed_rows] == list(range(1, len(killed_rows) + 1))

    result = abcx(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from checkpoint-" in result.stderr
    rows = record.metrics()
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert record.status()["state"] == "finished" and record.meta()["attempts"] == 2
    resumed_at = int(result.stderr.split("resuming from checkpoint-")[1].split()[0])
    # rows up to the checkpoint are the ones written before the kill, untouched
    assert rows[:resumed_at] == killed_rows[:resumed_at]
    # both attempts logged into the same W&B run (its id is the run id)
    wandb_files = sorted(record.path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 2 and {f.name for f in wandb_files} == {f"run-{record.run_id}.wandb"}


class _State:
    global_step, max_steps, is_world_process_zero = 3, 10, True


def test_non_finite_gradients_stop_the_run_or_skip_the_step_as_configured(tmp_path):
    import torch

    from abcx.training.callbacks import NonFiniteError, RecordCallback

    model = torch.nn.Linear(2, 2)
    model.weight.grad = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    model.bias.grad = torch.ones(2)
    record = RunRecord(tmp_path / "run")
    record.path.mkdir()
    with pytest.raises(NonFiniteError, match="non-finite gradient at step 4"):
        RecordCallback(record, "fail").on_pre_optimizer_step(None, _State(), None, model=model)
    RecordCallback(record, "skip").on_pre_optimizer_step(None, _State(), None, model=model)
    assert torch.all(model.weight.grad == 0) and torch.all(model.bias.grad == 0)
    assert record.metrics()[-1] == {**record.metrics()[-1], "step": 4, "skipped_nonfinite_step": 1.0}
    with pytest.raises(NonFiniteError, match="non-finite loss"):
        RecordCallback(record, "fail").on_log(None, _State(), None, logs={"loss": float("nan")})
    assert record.metrics()[-1]["loss"] == "nan"  # the bad row is kept, as a string JSON can hold


def test_report_reads_the_trainers_own_records_and_trainer_state(two_methods):
    """`abcx report` over records the real trainer wrote, and over the trainer_state.json files of
    the same runs' checkpoints (what a stock-TRL run leaves behind)."""
    from abcx.report.command import run_report

    results = str(two_methods["grpo"].path.parent.parent)
    report = run_report([results], fmt="json", out=str(Path(results) / "report.json"))
    runs = report.per_run.set_index("method")
    assert set(runs.index) == {"grpo", "abc_grpo"} and set(runs["state"]) == {"finished"}
    assert runs.loc["abc_grpo", "entropy_ratio"] > 0 and runs.loc["grpo", "entropy_ratio"] == 1.0
    assert runs[["q1_share", "q2_share", "q3_share", "q4_share"]].sum(axis=1).round(6).eq(1.0).all()
    assert (two_methods["abc_grpo"].path / "metrics.arrow").exists()  # finished runs are compacted

    states = [str(r.path / "checkpoints" / "checkpoint-4" / "trainer_state.json") for r in two_methods.values()]
    from_trl = run_report(states, fmt="json", out=str(Path(results) / "report-trl.json"))
    history = from_trl.runset.metric("entropy")
    assert len(history) == 8 and history["value"].notna().all()
    assert "clip/q4" in from_trl.runset.metrics
