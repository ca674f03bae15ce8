"""Reports over runs abcx did not train: labels inferred from the source or given by the user,
other loggers' metric names mapped onto abcx's quadrants, and mixed reports beside abcx's own runs.

The foreign runs are made here: stock TRL (bench/stock_trl.py) on the testbed, W&B offline runs in
verl's layout, trainer_state.json files in a fork's layout, and W&B online runs through the one seam."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abcx.errors import UserError
from abcx.report import labels as LB
from abcx.report import metric_map as M
from abcx.report.command import run_report
from abcx.report.sources.discover import read_sources

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent


# --- method inference from a trainer's config -------------------------------------------------

@pytest.mark.parametrize("cfg, method", [
    ({"epsilon": 0.2, "epsilon_high": 0.2, "loss_type": "dapo"}, "grpo"),  # TRL's dapo loss_type is an aggregation
    ({"epsilon": 0.2, "epsilon_high": 0.28, "loss_type": "grpo"}, "dapo"),  # clip-higher
    ({"epsilon": 0.2, "epsilon_high": 0.28, "delta": 1.7}, "two_sided"),
    ({"epsilon": 3e-4, "epsilon_high": 4e-4, "importance_sampling_level": "sequence"}, "gspo"),
    *[({"epsilon": 0.2, "loss_type": t}, t) for t in ("cispo", "sapo", "vespo", "luspo")],
    ({"actor_rollout_ref.actor.policy_loss.loss_mode": "vanilla"}, "dual_clip"),  # verl's vanilla dual-clips at c=3
    ({"actor_rollout_ref.actor.policy_loss.loss_mode": "geo_mean"}, "gmpo"),
    ({"actor_rollout_ref.actor.loss_mode": "clip_cov"}, "clip_cov"),
])
def test_the_method_is_inferred_from_trl_or_verl_config_fields(cfg, method):
    got, why = LB.infer_method(cfg)
    assert got == method and why


def test_a_config_without_clip_fields_says_it_cannot_tell():
    method, why = LB.infer_method({"learning_rate": 1e-6, "model_type": "qwen3"})
    assert method is None and "cannot tell" in why


def test_the_model_is_the_basename_of_its_name_or_path_and_tiny_for_the_testbed(tiny_model_path):
    assert LB.infer_model({"_name_or_path": "Qwen/Qwen3-4B-Base"})[0] == "Qwen3-4B-Base"
    assert LB.infer_model({"actor_rollout_ref.model.path": "/ckpt/Qwen3-1.7B-Base/"})[0] == "Qwen3-1.7B-Base"
    assert LB.infer_model({"_name_or_path": str(tiny_model_path)})[0] == "tiny"
    assert LB.infer_model({"model_type": "qwen3"})[0] == "qwen3"
    assert LB.infer_model({})[0] is None


# --- user rules --------------------------------------------------------------------------------

def test_a_label_rule_parses_glob_and_values_and_refuses_bad_input_in_one_line():
    rule = LB.parse_rule("runs/abc-*=method:abc_grpo,model:4b,seed:3")
    assert (rule.pattern, rule.values) == ("runs/abc-*", {"method": "abc_grpo", "model": "4b", "seed": 3})
    for bad, says in (("method:abc", "GLOB=key:value"), ("x=methd:abc", "unknown label 'methd'"),
                      ("x=seed:one", "seed='one' is not an integer"), ("x=method", "is not key:value"),
                      ("x=model:", "non-empty")):
        with pytest.raises(UserError, match=says) as err:
            LB.parse_rule(bad)
        assert "\n" not in str(err.value) and "--label" in str(err.value)


def test_a_labels_file_holds_rules_in_order(tmp_path):
    f = tmp_path / "labels.yaml"
    f.write_text("'*-a': {method: grpo, seed: 1}\n'*': {model: 4b}\n")
    rules = LB.load_rules(str(f))
    assert [(r.pattern, r.values) for r in rules] == [("*-a", {"method": "grpo", "seed": 1}), ("*", {"model": "4b"})]
    f.write_text("- not a mapping\n")
    with pytest.raises(UserError, match="expected a mapping GLOB"):
        LB.load_rules(str(f))


# --- the metric map -----------------------------------------------------------------------------

def write_state(folder: Path, rows: list[dict], step: int) -> Path:
    folder.mkdir(parents=True)
    path = folder / "trainer_state.json"
    path.write_text(json.dumps({"global_step": step, "max_steps": step, "log_history": rows}))
    return path


FORK_ROWS = [  # a fork that splits clip fractions by the sign of the advantage (fractions, not percent)
    {"step": 1, "reward": 0.25, "entropy": 0.9, "clip_ratio/ppo_style": 0.010, "clip_ratio/ppo_style_pos_adv_pct": 0.7,
     "clip_ratio/ppo_style_neg_adv_pct": 0.3, "clip_ratio/overcorrection": 0.004,
     "clip_ratio/overcorrection_pos_adv_pct": 0.25, "clip_ratio/overcorrection_neg_adv_pct": 0.75},
    {"step": 2, "reward": 0.5, "entropy": 0.8, "clip_ratio/ppo_style": 0.020, "clip_ratio/ppo_style_pos_adv_pct": 0.6,
     "clip_ratio/ppo_style_neg_adv_pct": 0.4, "clip_ratio/overcorrection": 0.008,
     "clip_ratio/overcorrection_pos_adv_pct": 0.5, "clip_ratio/overcorrection_neg_adv_pct": 0.5},
]


def test_a_forks_split_clip_fractions_become_abcx_quadrants_per_step(tmp_path):
    rs = read_sources([str(write_state(tmp_path / "fork", FORK_ROWS, 2))])
    values = {q: rs.metric(f"clip/{q}")["value"].tolist() for q in ("q1", "q2", "q3", "q4")}
    assert values["q1"] == pytest.approx([0.010 * 0.7, 0.020 * 0.6])
    assert values["q3"] == pytest.approx([0.010 * 0.3, 0.020 * 0.4])
    assert values["q2"] == pytest.approx([0.004 * 0.25, 0.008 * 0.5])
    assert values["q4"] == pytest.approx([0.004 * 0.75, 0.008 * 0.5])
    report = run_report([str(tmp_path / "fork")], fmt="json", out=str(tmp_path / "r.json"),
                        label_rules=["fork=method:my_fork"])
    row = report.per_run.iloc[0]
    q = [sum(values[k]) for k in ("q1", "q2", "q3", "q4")]
    assert [row[f"q{i}_share"] for i in range(1, 5)] == pytest.approx([v / sum(q) for v in q])


def test_percent_shares_are_read_as_percent(tmp_path):
    rows = [{**r, **{k: v * 100 for k, v in r.items() if k.endswith("_pct")}} for r in FORK_ROWS]
    rs = read_sources([str(write_state(tmp_path / "fork", rows, 2))])
    assert rs.metric("clip/q1")["value"].tolist() == pytest.approx([0.010 * 0.7, 0.020 * 0.6])
    assert any("read as percent" in n for n in rs.notes)


def test_trl_logs_no_q2_or_q4_so_its_quadrant_shares_are_unknown_not_zero(tmp_path):
    rows = [{"step": s, "reward": 0.1 * s, "clip_ratio/high_mean": 0.01 * s, "clip_ratio/low_mean": 0.02 * s}
            for s in (1, 2, 3)]
    report = run_report([str(write_state(tmp_path / "trl", rows, 3))], fmt="json", out=str(tmp_path / "r.json"))
    assert report.runset.metric("clip/q1")["value"].tolist() == pytest.approx([0.01, 0.02, 0.03])
    assert "clip/q2" not in report.runset.metrics and "clip/q4" not in report.runset.metrics
    assert report.per_run[["q1_share", "q2_share", "q3_share", "q4_share"]].isna().all(axis=None)
    assert any("quadrant shares unknown" in n for n in report.notes)


def test_a_user_metric_map_adds_overrides_and_removes_entries(tmp_path):
    rows = [{"step": 1, "my/q4": 0.03, "my/q2": 0.02, "clip_ratio/high_mean": 0.01, "completions/mean_length": 9.0}]
    src = write_state(tmp_path / "run", rows, 1)
    extra = tmp_path / "map.yaml"
    extra.write_text("rename:\n  clip_ratio/high_mean: clip/q1_trl\n  completions/mean_length: null\n"
                     "layouts:\n  mine: {clip/q4: [my/q4], clip/q2: my/q2}\n")
    mmap = M.load(extra)
    assert list(mmap.layouts)[0] == "mine"  # a user's own layout is tried before the package's
    rs = read_sources([str(src)], metric_map=mmap)
    assert rs.metric("clip/q4")["value"].tolist() == [0.03] and rs.metric("clip/q2")["value"].tolist() == [0.02]
    assert rs.runs.iloc[0]["quadrant_source"] == "mine"
    assert rs.metric("clip/q1_trl")["value"].tolist() == [0.01] and "clip/q1" not in rs.metrics
    assert "completions/mean_length" in rs.metrics and "completion_length" not in rs.metrics
    # Every refusal of a map file: tests/test_metric_map.py.


# --- quadrant layouts: one per run, never mixed --------------------------------------------------
# A TRL fork seen in published logs writes TRL's names `clip_ratio/high_mean` / `low_mean` with its own
# meaning (tokens above / below the band over BOTH signs of A) beside sign-split fields. Eight distinct
# values per step, and high_mean != ppo_style * pos, so quadrants mixed from the two layouts (TRL's names
# for Q1/Q3, the split for Q2/Q4) differ from the right ones, the split's alone.
FORK_LAYOUT_ROWS = [
    {"step": s, "reward": 0.1 * s, "clip_ratio/ppo_style": ppo, "clip_ratio/ppo_style_pos_adv_pct": pos,
     "clip_ratio/ppo_style_neg_adv_pct": 1 - pos, "clip_ratio/overcorrection": over,
     "clip_ratio/overcorrection_pos_adv_pct": opos, "clip_ratio/overcorrection_neg_adv_pct": 1 - opos,
     # above the band over both signs: Q1 + Q4; below: Q3 + Q2
     "clip_ratio/high_mean": ppo * pos + over * (1 - opos), "clip_ratio/low_mean": ppo * (1 - pos) + over * opos}
    for s, ppo, pos, over, opos in ((1, 0.030, 0.55, 0.012, 0.35), (2, 0.040, 0.62, 0.018, 0.27),
                                    (3, 0.026, 0.71, 0.009, 0.44))]


def fork_quadrants(rows):
    """Q1..Q4 per step from the sign-split fields alone (the right answer)."""
    return {"q1": [r["clip_ratio/ppo_style"] * r["clip_ratio/ppo_style_pos_adv_pct"] for r in rows],
            "q2": [r["clip_ratio/overcorrection"] * r["clip_ratio/overcorrection_pos_adv_pct"] for r in rows],
            "q3": [r["clip_ratio/ppo_style"] * r["clip_ratio/ppo_style_neg_adv_pct"] for r in rows],
            "q4": [r["clip_ratio/overcorrection"] * r["clip_ratio/overcorrection_neg_adv_pct"] for r in rows]}


def test_the_fork_rows_have_distinct_fields_and_a_mix_would_differ():
    for r in FORK_LAYOUT_ROWS:
        fields = [v for k, v in r.items() if k.startswith("clip_ratio/")]
        assert len(fields) == 8 and len(set(fields)) == 8
    right, mixed = fork_quadrants(FORK_LAYOUT_ROWS), dict(fork_quadrants(FORK_LAYOUT_ROWS))
    mixed["q1"] = [r["clip_ratio/high_mean"] for r in FORK_LAYOUT_ROWS]
    mixed["q3"] = [r["clip_ratio/low_mean"] for r in FORK_LAYOUT_ROWS]
    share = lambda q: sum(q["q4"]) / sum(sum(v) for v in q.values())  # noqa: E731
    assert abs(share(right) - share(mixed)) > 0.04  # 19% against 15%


FORK_WANDB_SCRIPT = textwrap.dedent("""
    import json, sys, wandb
    rows = json.loads(sys.argv[2])
    run = wandb.init(dir=sys.argv[1], mode="offline", project="fork", config={"epsilon": 0.2, "epsilon_high": 0.28})
    for r in rows:  # as HF's W&B callback logs: `train/` names and the trainer's step as train/global_step
        run.log({"train/global_step": r["step"], **{f"train/{k}": v for k, v in r.items() if k != "step"}})
    run.finish()
""")


def assert_fork_quadrants(report):
    rs, right = report.runset, fork_quadrants(FORK_LAYOUT_ROWS)
    for q, values in right.items():
        assert rs.metric(f"clip/{q}")["value"].tolist() == pytest.approx(values, rel=1e-9)
    # The fork's own both-signs fractions stay under their own names, never taken for Q1 / Q3.
    assert rs.metric("clip_ratio/high_mean")["value"].tolist() == pytest.approx(
        [r["clip_ratio/high_mean"] for r in FORK_LAYOUT_ROWS])
    run = report.per_run.iloc[0]
    assert run["quadrant_source"] == "sign_split"
    total = sum(sum(v) for v in right.values())
    assert [run[f"q{i}_share"] for i in range(1, 5)] == pytest.approx([sum(right[f"q{i}"]) / total for i in range(1, 5)])
    assert any("quadrants from sign_split only; the fields of trl keep their logged names "
               "(clip_ratio/high_mean, clip_ratio/low_mean)" in n for n in report.notes)
    runs_table = next(t for t in report.tables if t.key == "runs")
    assert runs_table.display["quadrants from"].tolist() == ["sign_split"]


def test_a_fork_log_in_trainer_state_takes_all_four_quadrants_from_its_sign_split_fields(tmp_path):
    src = write_state(tmp_path / "fork", FORK_LAYOUT_ROWS, 3)
    assert_fork_quadrants(run_report([str(src)], fmt="json", out=str(tmp_path / "r.json"),
                                     label_rules=["fork=method:my_fork"]))


def test_a_fork_log_in_wandb_offline_files_takes_all_four_quadrants_from_its_sign_split_fields(tmp_path):
    env = {**os.environ, "WANDB_SILENT": "true"}
    script = tmp_path / "fork.py"
    script.write_text(FORK_WANDB_SCRIPT)
    subprocess.run([PY, str(script), str(tmp_path / "fork"), json.dumps(FORK_LAYOUT_ROWS)], env=env, check=True,
                   timeout=120, capture_output=True)
    report = run_report([str(tmp_path / "fork" / "wandb")], fmt="json", out=str(tmp_path / "r.json"))
    assert report.per_run.iloc[0]["step"] == 3
    assert_fork_quadrants(report)


def test_a_run_logging_abcx_names_keeps_them_unless_a_layout_is_named_and_then_only_that_layout_counts(tmp_path):
    rows = [{"step": 1, "clip/q1": 0.011, "clip/q2": 0.012, "clip/q3": 0.013, "clip/q4": 0.014,
             "clip_ratio/high_mean": 0.021, "clip_ratio/low_mean": 0.023}]
    src = write_state(tmp_path / "both", rows, 1)
    rs = read_sources([str(src)])
    assert rs.runs.iloc[0]["quadrant_source"] == "abcx"
    assert [rs.metric(f"clip/q{i}")["value"].tolist() for i in range(1, 5)] == [[0.011], [0.012], [0.013], [0.014]]
    assert rs.metric("clip_ratio/low_mean")["value"].tolist() == [0.023]
    assert any("quadrants from abcx only; the fields of trl keep their logged names" in n for n in rs.notes)
    extra = tmp_path / "map.yaml"
    extra.write_text("use_layout:\n  both: trl\n")
    rs = read_sources([str(src)], metric_map=M.load(extra))
    assert rs.runs.iloc[0]["quadrant_source"] == "trl (--metric-map)"
    assert rs.metric("clip/q1")["value"].tolist() == [0.021] and rs.metric("clip/q3")["value"].tolist() == [0.023]
    assert "clip/q2" not in rs.metrics and "clip/q4" not in rs.metrics  # the run's own Q2/Q4 are not mixed in


def test_metric_map_names_the_layout_for_a_source_and_refuses_an_unknown_one(tmp_path):
    fork = write_state(tmp_path / "fork-a", FORK_LAYOUT_ROWS, 3)
    trl_rows = [{"step": 1, "clip_ratio/high_mean": 0.011, "clip_ratio/low_mean": 0.013}]
    trl = write_state(tmp_path / "trl-b", trl_rows, 1)
    extra = tmp_path / "map.yaml"
    extra.write_text("use_layout:\n  'fork-*': trl\n")
    rs = read_sources([str(fork), str(trl)], metric_map=M.load(extra))
    sources = dict(zip(rs.runs["path"].map(lambda p: Path(p).parent.name), rs.runs["quadrant_source"]))
    assert sources == {"fork-a": "trl (--metric-map)", "trl-b": "trl"}
    fork_id = rs.runs.index[rs.runs["quadrant_source"] == "trl (--metric-map)"][0]
    q1 = rs.metric("clip/q1").query("run_id == @fork_id")["value"].tolist()
    assert q1 == pytest.approx([r["clip_ratio/high_mean"] for r in FORK_LAYOUT_ROWS])  # TRL's names, as asked
    assert rs.metric("clip/q2").query("run_id == @fork_id").empty  # and nothing from the split: no mix
    extra.write_text("use_layout:\n  'fork-*': fork\n")
    with pytest.raises(UserError, match=r"use_layout.fork-\*='fork' is not a layout; known: sign_split, trl, verl, "
                                        r"abcx$") as err:
        M.load(extra)
    assert "\n" not in str(err.value)


# --- pickles ---------------------------------------------------------------------------------------

class _TouchesAFile:
    """Unpickling this creates a file: the kind of code a pickle can run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_training_args_bin_is_never_unpickled_unless_trusted(tmp_path):
    run = tmp_path / "out"
    state = write_state(run / "checkpoint-2", [{"step": 2, "reward": 0.5}], 2)
    marker = tmp_path / "pickle-ran"
    import torch

    torch.save(_TouchesAFile(str(marker)), state.parent / "training_args.bin")  # as HF's Trainer saves it
    report = run_report([str(run)], fmt="json", out=str(tmp_path / "r.json"))
    assert not marker.exists()
    assert any("training_args.bin not read" in n and "--trust-pickles" in n for n in report.notes)
    run_report([str(run)], fmt="json", out=str(tmp_path / "r.json"), trust_pickles=True)
    assert marker.exists()


# --- W&B online, through the seam --------------------------------------------------------------------

class FakeRun:
    def __init__(self, id, config, rows):
        self.id, self.name, self.state, self.group, self.tags, self.config = id, id, "finished", "", [], config
        self._rows = rows
        self.summary = {k: v for r in rows for k, v in r.items()}

    def scan_history(self, keys=None):
        return [{k: r[k] for k in [*keys, "_step"]} for r in self._rows if all(k in r for k in keys)]


class FakeApi:
    def __init__(self, runs):
        self._runs = runs

    def runs(self, path, filters=None):
        return list(self._runs)


def test_wandb_runs_logged_by_trl_get_method_and_model_without_any_label(tmp_path):
    def rows(reward):
        # W&B's _step counts log calls (2 per trainer step here); train/global_step is the trainer's.
        return [{"_step": 2 * s, "train/global_step": s, "train/reward": reward + 0.01 * s,
                 "train/clip_ratio/high_mean": 0.002, "train/clip_ratio/low_mean": 0.004, "train/entropy": 0.5}
                for s in range(1, 6)]

    base = {"epsilon": 0.2, "loss_type": "dapo", "_name_or_path": "Qwen/Qwen3-4B-Base", "seed": 0}
    api = FakeApi([FakeRun("g0", {**base, "epsilon_high": 0.2}, rows(0.3)),
                   FakeRun("g1", {**base, "epsilon_high": 0.2, "seed": 1}, rows(0.32)),
                   FakeRun("d0", {**base, "epsilon_high": 0.28}, rows(0.4)),
                   FakeRun("c0", {**base, "loss_type": "cispo"}, rows(0.35))])
    report = run_report([], wandb_project="lab/grpo", api=api, fmt="json", out=str(tmp_path / "r.json"))
    runs = report.per_run.set_index("run_id")
    assert runs["method"].to_dict() == {"g0": "grpo", "g1": "grpo", "d0": "dapo", "c0": "cispo"}
    assert set(report.runset.runs["cfg.model.name"]) == {"Qwen3-4B-Base"}
    assert runs.loc["d0", "label_source"].startswith("method: inferred (TRL epsilon_high=0.28 > epsilon=0.2")
    assert report.group_keys == ["cfg.model.name", "method"]
    groups = next(t for t in report.tables if t.key == "groups").data.set_index("method")
    assert groups.loc["grpo", "n"] == 2
    assert runs.loc["d0", "entropy_ratio"] == pytest.approx(1.0)  # the baseline (grpo) entropy is the same
    assert runs["step"].tolist() == [5, 5, 5, 5]
    assert report.runset.metric("reward").query("run_id == 'g0'")["step"].tolist() == [1, 2, 3, 4, 5]


def test_a_user_rule_wins_over_inference_and_says_so(tmp_path):
    api = FakeApi([FakeRun("r1", {"epsilon": 0.2, "epsilon_high": 0.28, "seed": 0}, [{"_step": 0, "reward": 0.1}])])
    report = run_report([], wandb_project="lab/p", api=api, fmt="json", out=str(tmp_path / "r.json"),
                        label_rules=["r1=method:abc_grpo,model:4b", "nothing-*=seed:3"])
    run = report.per_run.iloc[0]
    assert (run["method"], run["seed"]) == ("abc_grpo", 0)
    assert report.runset.runs.iloc[0]["cfg.model.name"] == "4b"
    assert "method+model: user rule 'r1'" in run["label_source"] and "seed: W&B config" in run["label_source"]
    assert any("matched no run: nothing-*" in n for n in report.notes)


# --- the project's own foreign runs: stock TRL and verl-layout W&B logs beside abcx runs -----------------

# learning_rate 1e-3 moves the policy far enough in one step that step 4 has tokens outside the band,
# among them tokens with A = 0 (which a clip event excludes): the quadrant comparison below is not of zeros.
FAST = ["train.max_steps=4", "train.per_device_train_batch_size=16", "train.steps_per_generation=2",
        "train.save_steps=2", "train.learning_rate=1e-3", "eval.at_end=false", "seed=0"]

VERL_SCRIPT = textwrap.dedent("""
    import sys, wandb
    run = wandb.init(dir=sys.argv[1], mode="offline", project="verl-test", config={
        "actor_rollout_ref": {"model": {"path": "/models/Qwen3-1.7B-Base"},
                              "actor": {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0,
                                        "policy_loss": {"loss_mode": "vanilla"}}},
        "trainer": {"seed": 5}})
    for s in range(1, 5):
        run.log({"actor/entropy": 1.0 - 0.1 * s, "critic/score/mean": 0.2 * s, "response_length/mean": 100.0 + s,
                 "actor/pg_clipfrac": 0.003 * s, "actor/pg_clipfrac_lower": 0.0005 * s}, step=s)
    run.finish()
""")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, tiny_model_path):
    """A stock-TRL grpo run and abcx grpo + abc_grpo runs with the same settings, and a verl-layout W&B run."""
    from abcx.config.compose import compose
    from abcx.training.train import train

    root = tmp_path_factory.mktemp("mixed")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    subprocess.run([PY, str(REPO / "bench" / "stock_trl.py"), str(root / "stock"), *FAST, "method=grpo"],
                   env=env, check=True, timeout=600, capture_output=True)
    script = root / "verl.py"
    script.write_text(VERL_SCRIPT)
    subprocess.run([PY, str(script), str(root / "verl")], env=env, check=True, timeout=120, capture_output=True)
    for method in ("grpo", "abc_grpo"):
        train(compose(FAST + [f"method={method}", "logger=none", f"results_dir={root / 'results'}"]), quiet=True)
    return root


@pytest.mark.slow
def test_stock_trl_and_abcx_runs_of_the_same_settings_compare_in_one_report(mixed):
    report = run_report([str(mixed / "results"), str(mixed / "stock" / "wandb")], fmt="json",
                        out=str(mixed / "r.json"), plots_dir=str(mixed / "plots"))
    runs = report.per_run
    stock = runs[runs["source"] == "wandb-offline"].iloc[0]
    assert (stock["method"], stock["seed"], stock["step"]) == ("grpo", 0, 4)  # the trainer's steps, not W&B's
    assert stock["label_source"].startswith("method: inferred (TRL epsilon=0.2")
    assert set(report.runset.runs["cfg.model.name"]) == {"tiny"}
    groups = next(t for t in report.tables if t.key == "groups").data.set_index("method")
    assert groups.loc["grpo", "n"] == 2 and groups.loc["abc_grpo", "n"] == 1
    # Same settings, same seed: abcx's grpo preset is TRL's loss, so the logged rewards agree exactly.
    reward = report.runset.metric("reward")
    by_run = {rid: g["value"].tolist() for rid, g in reward.groupby("run_id", observed=True)}
    abcx_grpo = runs[(runs["source"] == "abcx") & (runs["method"] == "grpo")]["run_id"].iloc[0]
    assert by_run[stock["run_id"]] == by_run[abcx_grpo] and len(by_run[abcx_grpo]) == 2
    # One clip-event definition (A != 0): TRL's high_mean / low_mean are abcx's Q1 / Q3 at every step.
    assert stock["quadrant_source"] == "trl"
    for q in ("clip/q1", "clip/q3"):
        steps = {rid: g.set_index("step")["value"] for rid, g in report.runset.metric(q).groupby("run_id", observed=True)}
        assert list(steps[stock["run_id"]].index) == list(steps[abcx_grpo].index) == [1, 2, 3, 4]
        assert steps[stock["run_id"]].tolist() == pytest.approx(steps[abcx_grpo].tolist(), rel=1e-6, abs=1e-9)
    zero_out = report.runset.metric("clip/zero_adv_out").query("run_id == @abcx_grpo")["value"]
    assert report.runset.metric("clip/q3").query("run_id == @abcx_grpo")["value"].max() > 0 and zero_out.max() > 0
    assert pd_isnan(stock["q1_share"]) and not pd_isnan(runs.loc[runs["run_id"] == abcx_grpo, "q1_share"].iloc[0])
    assert report.plots


@pytest.mark.slow
def test_trainer_state_and_verl_logs_are_labelled_and_mapped(mixed):
    report = run_report([str(mixed / "stock"), str(mixed / "verl")], fmt="json", out=str(mixed / "r2.json"),
                        trust_pickles=True)
    runs = report.per_run.set_index("source")
    assert runs.loc["trainer_state", "method"] == "grpo"  # from training_args.bin, trusted on request
    verl = runs.loc["wandb-offline"]
    assert verl["method"] == "dual_clip" and "loss_mode=vanilla" in verl["label_source"]
    assert verl["reward_final"] == pytest.approx(0.8)
    rs = report.runset
    verl_id = verl["run_id"]
    assert rs.metric("clip/q1_q3").query("run_id == @verl_id")["value"].tolist() == pytest.approx([0.003, 0.006, 0.009, 0.012])
    assert rs.metric("clip/q4_dual").query("run_id == @verl_id")["value"].tolist() == pytest.approx([0.0005, 0.001, 0.0015, 0.002])
    models = rs.runs.set_index("source")["cfg.model.name"]
    assert models["wandb-offline"] == "Qwen3-1.7B-Base"


def pd_isnan(value) -> bool:
    return value != value
