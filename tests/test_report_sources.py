"""Report sources: every reader is fed real files made by the real tool (abcx's record format, a real
W&B offline run, a real TRL trainer_state.json) and must give the same RunSet shape."""
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from abcx.errors import UserError
from abcx.report.sources import wandb_online
from abcx.report.sources.discover import discover, read_sources
from abcx.report.sources.wandb_log import iter_records
from abcx.report.synth import write_record

PY = sys.executable


def record(root, run_id="abc-aaaa-s0", method="abc", seed=0, n=5, **kw):
    steps = np.arange(1, n + 1)
    metrics = kw.pop("metrics", {"reward": steps / 10, "entropy": 1 - steps / 10})
    return write_record(str(root), run_id, method=method, seed=seed, steps=steps, metrics=metrics, **kw)


# --- abcx run records -------------------------------------------------------------------------

def test_abcx_record_gives_run_row_config_columns_and_history(tmp_path):
    record(tmp_path, config={"method": {"eps3": 0.3}, "task": {"name": "arith", "ops": ["+", "-"]}},
           evals=[{"step": 5, "benchmark": "arith", "n": 8, "sampling": {}, "metrics": {"avg@8": 0.5, "pass@8": 0.75},
                   "ci": {}}])
    rs = read_sources([str(tmp_path)])
    run = rs.runs.loc["abc-aaaa-s0"]
    assert (run["source"], run["state"], run["method"], run["seed"]) == ("abcx", "finished", "abc", 0)
    assert run["cfg.method.eps3"] == 0.3 and run["cfg.task.ops"] == '["+", "-"]'
    reward = rs.metric("reward")
    assert reward["step"].tolist() == [1, 2, 3, 4, 5]
    assert reward["value"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    h = rs.history
    assert set(h.columns) == {"run_id", "step", "metric", "value"}
    ev = h[h["metric"] == "eval/arith/pass@8"]
    assert ev["step"].tolist() == [5] and ev["value"].tolist() == [0.75]


def test_a_record_from_before_quadrants_left_out_zero_advantages_is_read_with_a_note(tmp_path):
    from abcx.report.command import run_report

    quads = {f"clip/q{i}": np.full(5, 0.01 * i) for i in range(1, 5)}
    record(tmp_path, "grpo-aaaa-s0", method="grpo", metrics=quads, quadrants=None)  # meta.json without "quadrants"
    record(tmp_path, "grpo-bbbb-s1", method="grpo", seed=1, metrics=quads)
    report = run_report([str(tmp_path)], fmt="json", out=str(tmp_path / "r.json"))
    assert dict(zip(report.per_run["run_id"], report.per_run["quadrant_source"])) == {
        "grpo-aaaa-s0": "abcx (A=0 in Q3/Q4)", "grpo-bbbb-s1": "abcx"}
    assert any(n.startswith("1 abcx run(s) recorded before Q3/Q4 left out tokens with A = 0") for n in report.notes)
    runs_table = next(t for t in report.tables if t.key == "runs")
    assert runs_table.display["quadrants from"].tolist() == ["abcx (A=0 in Q3/Q4)", "abcx"]
    # Today's records alone: nothing to note, no column to show.
    new = run_report([str(tmp_path / "grpo-bbbb-s1")], fmt="json", out=str(tmp_path / "r2.json"))
    assert not any("A = 0" in n for n in new.notes)
    assert "quadrants from" not in next(t for t in new.tables if t.key == "runs").display.columns


def test_torn_last_line_of_metrics_is_ignored(tmp_path):
    record(tmp_path, torn_tail=True)
    with open(tmp_path / "abc-aaaa-s0" / "metrics.jsonl") as fh:
        assert not fh.read().endswith("\n")
    rs = read_sources([str(tmp_path)])
    assert rs.metric("reward")["step"].tolist() == [1, 2, 3, 4, 5]


def test_one_torn_run_does_not_disturb_the_others(tmp_path):
    record(tmp_path, run_id="a-1-s0", torn_tail=True)
    record(tmp_path, run_id="b-1-s0", n=3)
    rs = read_sources([str(tmp_path)])
    counts = rs.metric("reward").groupby("run_id", observed=True).size().to_dict()
    assert counts == {"a-1-s0": 5, "b-1-s0": 3}


def test_nan_values_written_by_python_json_are_read_as_missing(tmp_path):
    path = record(tmp_path)
    with open(os.path.join(path, "metrics.jsonl"), "a") as fh:
        fh.write(json.dumps({"step": 6, "reward": float("nan"), "entropy": 0.3}) + "\n")
    rs = read_sources([str(tmp_path)])
    assert rs.metric("reward")["step"].max() == 5
    assert rs.metric("entropy")["step"].max() == 6


def test_a_step_logged_twice_after_resume_keeps_the_later_value(tmp_path):
    path = record(tmp_path, n=3)
    with open(os.path.join(path, "metrics.jsonl"), "a") as fh:
        fh.write('{"step": 3, "reward": 9.0}\n{"step": 4, "reward": 10.0}\n')
    reward = read_sources([str(tmp_path)]).metric("reward")
    assert reward["step"].tolist() == [1, 2, 3, 4] and reward["value"].tolist()[2:] == [9.0, 10.0]


def test_running_record_without_recent_update_stays_listed_as_stale(tmp_path):
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=5)
    record(tmp_path, state="running", updated=old)
    record(tmp_path, run_id="abc-bbbb-s1", state="running")
    runs = read_sources([str(tmp_path)]).runs
    assert runs.loc["abc-aaaa-s0", "state"] == "running" and runs.loc["abc-aaaa-s0", "stale"]
    assert "5.0 h" in runs.loc["abc-aaaa-s0", "detail"]
    assert runs.loc["abc-bbbb-s1", "state"] == "running" and not runs.loc["abc-bbbb-s1", "stale"]


def test_cancelled_stopped_and_failed_records_keep_their_state_and_reason(tmp_path):
    import json

    record(tmp_path, run_id="a-1-s0", state="cancelled", error="interrupted by SIGINT")
    record(tmp_path, run_id="a-2-s0", state="failed", error="CUDA out of memory\ntraceback...")
    stopped = record(tmp_path, run_id="a-3-s0", state="stopped")
    status = json.load(open(os.path.join(stopped, "status.json")))
    status["stop"] = {"kind": "cut", "reason": "below the cut at rung 1 (step 2)"}
    json.dump(status, open(os.path.join(stopped, "status.json"), "w"))
    runs = read_sources([str(tmp_path)]).runs
    assert runs.loc["a-1-s0", ["state", "detail"]].tolist() == ["cancelled", "interrupted by SIGINT"]
    assert runs.loc["a-2-s0", ["state", "detail"]].tolist() == ["failed", "CUDA out of memory"]
    assert runs.loc["a-3-s0", ["state", "detail"]].tolist() == ["stopped", "below the cut at rung 1 (step 2)"]


@pytest.mark.parametrize("breakage, message", [
    (lambda p: open(os.path.join(p, "meta.json"), "w").write("{not json"), "meta.json: not valid JSON"),
    (lambda p: os.remove(os.path.join(p, "status.json")), "status.json missing"),
    (lambda p: open(os.path.join(p, "status.json"), "w").write('{"state": "exploded"}'), "state 'exploded'"),
    (lambda p: open(os.path.join(p, "metrics.jsonl"), "a").write('{"reward": 1.0}\n'), "line 6: no 'step'"),
])
def test_a_malformed_record_is_listed_with_its_fault_and_the_others_still_report(tmp_path, breakage, message):
    path = record(tmp_path, run_id="grpo-1-s0")
    record(tmp_path, run_id="grpo-2-s0")
    breakage(path)
    rs = read_sources([str(tmp_path)])
    broken = rs.runs.loc["grpo-1-s0"]
    assert broken["state"] != "finished" and message in broken["detail"]
    assert rs.runs.loc["grpo-2-s0", "state"] == "finished"
    assert rs.metric("reward")["run_id"].unique().tolist() == ["grpo-2-s0"]  # its history is not used
    assert [n for n in rs.notes if path in n and message in n and "left out of the aggregates" in n]


def test_a_record_whose_config_yaml_cannot_be_read_is_listed_with_a_note(tmp_path):
    broken = record(tmp_path, run_id="a-1-s0")
    record(tmp_path, run_id="a-2-s0")
    open(os.path.join(broken, "config.yaml"), "w").write("a: [1,")
    rs = read_sources([str(tmp_path)])
    assert rs.runs.loc["a-1-s0", "state"] == "unknown" and "not valid YAML" in rs.runs.loc["a-1-s0", "detail"]
    assert rs.metric("reward")["run_id"].unique().tolist() == ["a-2-s0"]
    assert [n for n in rs.notes if broken in n and "not valid YAML" in n]


def test_a_run_cancelled_while_queued_has_no_config_and_is_listed_as_never_started(tmp_path):
    path = record(tmp_path, run_id="grpo-1-s0")
    record(tmp_path, run_id="grpo-2-s0", method="grpo")
    os.remove(os.path.join(path, "config.yaml"))
    os.remove(os.path.join(path, "metrics.jsonl"))
    open(os.path.join(path, "status.json"), "w").write('{"state": "cancelled", "step": 0}')
    rs = read_sources([str(tmp_path)])
    assert "never started" in rs.runs.loc["grpo-1-s0", "detail"]
    assert not rs.runs.loc["grpo-1-s0", "has_config"] and rs.runs.loc["grpo-2-s0", "has_config"]


@pytest.mark.parametrize("junk", [b'{"step": 9, "reward": }\n', b"\x00\xff\xfe binary\n", b"[1, 2]\n"])
def test_unreadable_metric_lines_anywhere_are_skipped_with_a_warning(tmp_path, capsys, junk):
    path = record(tmp_path, compact=False)
    lines = open(os.path.join(path, "metrics.jsonl"), "rb").read().splitlines(keepends=True)
    open(os.path.join(path, "metrics.jsonl"), "wb").write(b"".join(lines[:2]) + junk + b"".join(lines[2:]))
    assert read_sources([str(tmp_path)]).metric("reward")["step"].tolist() == [1, 2, 3, 4, 5]
    assert "metrics.jsonl: skipped 1 unreadable line(s) (line 3:" in capsys.readouterr().err


def test_discovery_walks_results_dirs_and_globs_and_rejects_empty_paths(tmp_path):
    runs = tmp_path / "results" / "runs"
    for i in range(3):
        record(runs, run_id=f"grpo-{i}-s0", method="grpo")
    assert len(discover([str(tmp_path / "results")])["abcx"]) == 3
    assert len(discover([str(runs / "grpo-1-s0")])["abcx"]) == 1
    assert len(discover([str(runs / "grpo-[01]-*")])["abcx"]) == 2
    with pytest.raises(UserError, match="no path matches"):
        discover([str(tmp_path / "nothing-*")])
    with pytest.raises(UserError, match="no such file"):
        discover([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no runs found"):
        discover([str(tmp_path / "empty")])


# --- W&B offline ------------------------------------------------------------------------------

WANDB_SCRIPT = textwrap.dedent("""
    import sys, time, wandb
    root, mode = sys.argv[1], sys.argv[2]
    run = wandb.init(dir=root, mode="offline", project="abcx-test", group="sweep-a", tags=["t1", "t2"],
                     config={"method": {"name": "abc", "eps3": 0.3}, "seed": 7})
    for s in range(6):
        run.log({"reward": s / 10, "entropy": 1 - s / 10, "clip/q4": 0.01 * s,
                 "train/completions/mean_length": 12.0 + s}, step=s)
    run.summary["best"] = 0.5
    if mode == "finish":
        run.finish()
    else:
        print("ready", flush=True)
        time.sleep(120)
""")


@pytest.fixture(scope="module")
def wandb_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb")
    script = root / "log.py"
    script.write_text(WANDB_SCRIPT)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    subprocess.run([PY, str(script), str(root), "finish"], env=env, check=True, timeout=120)
    proc = subprocess.Popen([PY, str(script), str(root), "kill"], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    killed_file = None
    deadline = time.time() + 30
    while time.time() < deadline:  # wandb-core writes asynchronously: wait until some history is on disk
        runs = [d for d in (root / "wandb").glob("offline-run-*") if not (d / "files" / "wandb-summary.json").exists()]
        files = [f for d in runs for f in d.glob("run-*.wandb")]
        newest = max(files, key=os.path.getmtime) if len(files) == 2 else None
        if newest and sum(r.WhichOneof("record_type") == "history" for r in iter_records(str(newest))) >= 3:
            killed_file = newest
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert killed_file is not None
    return root, killed_file.parent.name


def test_wandb_offline_runs_are_read_with_config_group_tags_history_and_state(wandb_runs):
    root, killed = wandb_runs
    rs = read_sources([str(root / "wandb")])  # includes the latest-run symlink, which must not count twice
    assert len(rs.runs) == 2
    states = dict(zip(rs.runs["path"].map(os.path.basename), rs.runs["state"]))
    assert states.pop(killed) == "crashed"
    assert list(states.values()) == ["finished"]
    done = rs.runs[rs.runs["state"] == "finished"].iloc[0]
    assert (done["method"], done["seed"], done["group"], done["tags"]) == ("abc", 7, "sweep-a", "t1,t2")
    assert done["cfg.method.eps3"] == 0.3
    reward = rs.metric("reward")
    reward = reward[reward["run_id"] == done["run_id"]]
    assert reward["step"].tolist() == [0, 1, 2, 3, 4, 5]
    assert reward["value"].tolist() == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert "completion_length" in rs.metrics  # HF's train/ prefix and TRL's name mapped to abcx's
    assert rs.summaries[done["run_id"]]["best"] == 0.5
    crashed = rs.runs[rs.runs["state"] == "crashed"].iloc[0]
    assert "no exit record" in crashed["detail"]
    assert len(rs.metric("reward").query("run_id == @crashed.run_id")) >= 3


def test_wandb_log_reader_agrees_with_wandb_leet_inspect(wandb_runs):
    root, killed = wandb_runs
    run_dir = next(d for d in (root / "wandb").glob("offline-run-*") if d.name != killed)
    wandb_bin = os.path.join(os.path.dirname(PY), "wandb")
    out = subprocess.run([wandb_bin, "leet", "inspect", "--json", str(run_dir)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    leet = [json.loads(line) for line in out.splitlines() if line.strip()]
    ours = list(iter_records(str(next(run_dir.glob("run-*.wandb")))))
    assert [r["type"] for r in leet] == [r.WhichOneof("record_type") for r in ours]
    leet_rewards = [r["history"]["item"]["reward"] for r in leet if r["type"] == "history"]
    our_rewards = [json.loads(i.value_json) for r in ours if r.WhichOneof("record_type") == "history"
                   for i in r.history.item if (i.key or "/".join(i.nested_key)) == "reward"]
    assert leet_rewards == our_rewards


def test_a_wandb_file_that_is_not_a_transaction_log_is_a_user_error(tmp_path):
    d = tmp_path / "offline-run-x"
    d.mkdir()
    (d / "run-x.wandb").write_bytes(b"hello world")
    with pytest.raises(UserError, match="not a W&B"):
        read_sources([str(d)])


# --- W&B online (the one fake: the cloud cannot be reached here) -----------------------------------

class FakeRun:
    def __init__(self, id, state, config, group, tags, rows):
        self.id, self.name, self.state, self.config, self.group, self.tags = id, f"name-{id}", state, config, group, tags
        self._rows = rows
        self.summary = {k: v for r in rows for k, v in r.items()}
        self.scanned = []

    def scan_history(self, keys=None):
        self.scanned.append(tuple(keys))
        # Like W&B: only rows holding all requested keys come back.
        return [{k: r[k] for k in [*keys, "_step"]} for r in self._rows if all(k in r for k in keys)]


class FakeApi:
    def __init__(self, runs):
        self._runs, self.calls = runs, []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return list(self._runs)


def test_wandb_online_scans_each_key_with_the_trainer_step_and_maps_state_and_config():
    # W&B's _step counts every log call (evals too); TRL logs the trainer's step as train/global_step.
    rows = [{"_step": 0, "train/reward": 0.1, "train/global_step": 1}, {"_step": 1, "train/reward": 0.2, "train/global_step": 2},
            {"_step": 2, "eval/arith/avg@8": 0.4, "train/global_step": 2},
            {"_step": 3, "train/reward": 0.3, "_runtime": 5, "train/global_step": 3}]
    fake_run = FakeRun("r1", "crashed", {"method": {"value": {"name": "grpo"}}, "seed": {"value": 1}},
                       "g", ["x"], rows)
    no_trainer_step = [{k: v for k, v in r.items() if k != "train/global_step"} for r in rows[:2]]
    api = FakeApi([fake_run, FakeRun("r2", "finished", {"method": {"name": "abc"}, "seed": 2}, None, [], no_trainer_step)])
    assert isinstance(api, wandb_online.WandbApi) and isinstance(fake_run, wandb_online.WandbRun)
    rs = wandb_online.read_project(api, "ent/proj", sweep="sw1", group="g", tags=["x", "y"])
    assert api.calls == [("ent/proj", {"$and": [{"sweep": "sw1"}, {"group": "g"},
                                                 {"tags": {"$in": ["x"]}}, {"tags": {"$in": ["y"]}}]})]
    assert sorted(fake_run.scanned) == [("eval/arith/avg@8", "train/global_step"), ("train/reward", "train/global_step")]
    r1 = rs.runs.loc["r1"]
    assert (r1["state"], r1["method"], r1["seed"], r1["source"], r1["step"]) == ("crashed", "grpo", 1, "wandb", 3)
    reward = rs.metric("reward")
    assert reward[reward["run_id"] == "r1"]["step"].tolist() == [1, 2, 3]
    assert reward[reward["run_id"] == "r1"]["value"].tolist() == [0.1, 0.2, 0.3]
    assert reward[reward["run_id"] == "r2"]["step"].tolist() == [0, 1]  # no trainer step logged: W&B's
    assert rs.metric("eval/arith/avg@8")["step"].tolist() == [2]
    with pytest.raises(UserError, match="entity/project"):
        wandb_online.read_project(api, "justproject")


# --- HF / TRL trainer_state.json ------------------------------------------------------------------

TRL_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from datasets import Dataset
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from trl import GRPOConfig, GRPOTrainer
    from abcx.testbed.tokenizer import build_tokenizer

    out = sys.argv[1]
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    model = Qwen3ForCausalLM(cfg)
    data = Dataset.from_dict({"prompt": ["1+2=", "3+4=", "5+1=", "2+2="] * 4})
    def length_reward(completions, **kw):
        return [float(len(c)) / 8 for c in completions]
    args = GRPOConfig(output_dir=out, max_steps=3, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=6, logging_steps=1, save_strategy="steps", save_steps=3,
                      report_to=[], use_cpu=True, bf16=False, learning_rate=1e-3, seed=0)
    GRPOTrainer(model=model, args=args, reward_funcs=[length_reward], train_dataset=data,
                processing_class=tok).train()
""")


@pytest.fixture(scope="module")
def trl_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("trl") / "out"
    script = out.parent / "train.py"
    script.write_text(TRL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    subprocess.run([PY, str(script), str(out)], env=env, check=True, timeout=300, capture_output=True)
    return out


def test_trl_trainer_state_is_read_with_abcx_metric_names(trl_output):
    assert (trl_output / "checkpoint-3" / "trainer_state.json").exists()
    rs = read_sources([str(trl_output)])  # an output dir: its latest checkpoint's trainer_state.json
    run = rs.runs.iloc[0]
    assert (run["source"], run["state"], run["step"]) == ("trainer_state", "finished", 3)
    # TRL's names mapped onto abcx's (abcx/report/metric_map.yaml); TRL logs no Q2/Q4: they stay unknown.
    assert {"reward", "entropy", "completion_length", "rewards/length_reward/mean",
            "clip/q1", "clip/q3", "clip/q1_q3"} <= set(rs.metrics)
    assert not {"completions/mean_length", "clip_ratio/high_mean", "clip_ratio/low_mean", "clip/q2",
                "clip/q4"} & set(rs.metrics)
    assert rs.metric("reward")["step"].tolist() == [1, 2, 3]
    state = json.loads((trl_output / "checkpoint-3" / "trainer_state.json").read_text())
    for trl_name, abcx_name in (("completions/mean_length", "completion_length"), ("clip_ratio/high_mean", "clip/q1"),
                                ("clip_ratio/low_mean", "clip/q3")):
        logged = [e[trl_name] for e in state["log_history"] if trl_name in e]
        assert rs.metric(abcx_name)["value"].tolist() == pytest.approx(logged)


def test_trainer_state_without_log_history_is_a_user_error(tmp_path):
    (tmp_path / "trainer_state.json").write_text('{"global_step": 3}')
    with pytest.raises(UserError, match="no 'log_history'"):
        read_sources([str(tmp_path / "trainer_state.json")])


def test_a_finished_runs_columnar_copy_is_used_only_while_it_matches_the_json_lines(tmp_path):
    from abcx.record import compact_metrics
    from abcx.record.columns import compacted, read_many_compacted

    path = record(tmp_path, "abc-c-s0", n=3, metrics={"reward": np.array([0.1, 0.2, 0.3])}, compact=False)
    assert not os.path.exists(os.path.join(path, "metrics.arrow"))
    lines = os.path.join(path, "metrics.jsonl")
    assert compact_metrics(path) and compacted(lines) is not None
    counts, cols = read_many_compacted([lines])
    assert counts == [3] and cols["reward"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    with open(lines, "a") as fh:  # the record grew after the copy was made (e.g. a resumed run)
        fh.write('{"step": 4, "reward": 0.4}\n')
    assert compacted(lines) is None
    counts, cols = read_many_compacted([lines])
    assert counts == [4] and cols["reward"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
