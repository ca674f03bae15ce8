"""`run_report` end to end: mixed sources, unfinished runs kept visible, filters, outputs."""
import datetime as dt
import json

import numpy as np
import pytest
from rich.console import Console

from abcx.errors import UserError
from abcx.report.command import run_report
from abcx.report.synth import write_record

STEPS = np.arange(1, 6)


def rec(root, run_id, method, seed, final, state="finished", **kw):
    write_record(str(root), run_id, method=method, seed=seed, steps=STEPS, state=state,
                 metrics={"reward": np.linspace(0, final, 5), "entropy": np.full(5, 0.5 if method == "grpo" else 1.0)},
                 **kw)


@pytest.fixture
def results(tmp_path):
    runs = tmp_path / "results" / "runs"
    rec(runs, "grpo-a-s0", "grpo", 0, 0.4, group="sw1")
    rec(runs, "grpo-a-s1", "grpo", 1, 0.6, group="sw1")
    rec(runs, "abc-b-s0", "abc", 0, 0.8, group="sw1")
    rec(runs, "abc-b-s1", "abc", 1, 5.0, state="running", group="sw1",
        updated=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    rec(runs, "abc-b-s2", "abc", 2, 7.0, state="failed", group="other", error="boom")
    return tmp_path / "results"


def test_unfinished_runs_are_listed_with_state_but_left_out_of_means(results):
    report = run_report([str(results)], fmt="json", out=str(results / "report.json"))
    doc = json.loads((results / "report.json").read_text())
    runs = {r["run_id"]: r for r in doc["tables"]["runs"]["rows"]}
    assert runs["abc-b-s1"]["state"] == "running" and runs["abc-b-s1"]["stale"] is True
    assert runs["abc-b-s2"]["state"] == "failed"
    groups = {g["method"]: g for g in doc["tables"]["groups"]["rows"]}
    assert groups["abc"]["reward_final_mean"] == pytest.approx(0.8)  # not dragged to 4.27 by 5.0 and 7.0
    assert groups["abc"]["n"] == 1 and groups["abc"]["n_other"] == 2
    assert any("2 run(s) not finished" in n for n in doc["notes"])
    assert any("stale" in n for n in doc["notes"])
    assert report.group_keys == ["method"]


def test_rich_output_marks_stale_runs(results):
    console = Console(record=True, width=200)
    run_report([str(results)], console=console)
    out = console.export_text()
    assert "running (stale)" in out and "no status update for 48.0 h" in out
    # grpo has two finished seeds, abc one: the header claims an interval only where there is one.
    assert "Groups of finished runs: mean ± 95% CI over seeds where n ≥ 2 (n = 1: no interval)" in out


def test_group_and_tag_filters_apply_to_local_runs(results):
    report = run_report([str(results)], group="sw1", fmt="csv", out=str(results / "r.csv"))
    assert sorted(report.per_run["run_id"]) == ["abc-b-s0", "abc-b-s1", "grpo-a-s0", "grpo-a-s1"]
    with pytest.raises(UserError, match="no runs match"):
        run_report([str(results)], tags=["nope"], fmt="csv", out=str(results / "r.csv"))


def test_user_group_by_accepts_config_paths_and_rejects_unknown_fields(results):
    report = run_report([str(results)], group_by=["method.name"], fmt="markdown", out=str(results / "r.md"))
    assert report.group_keys == ["cfg.method.name"]
    with pytest.raises(UserError, match="'lr' is not a run field"):
        run_report([str(results)], group_by=["lr"], fmt="markdown", out=str(results / "r.md"))


def test_wandb_project_goes_through_the_given_api_seam(results):
    class Run:
        id, name, state, group, tags = "w1", "w1", "finished", "sw1", []
        config = {"method": {"name": "grpo"}, "seed": 3}
        summary = {"reward": 0.5}

        def scan_history(self, keys=None):
            return [{"_step": s, "reward": s / 10} for s in range(6)]

    class Api:
        def runs(self, path, filters=None):
            return [Run()]

    report = run_report([str(results)], wandb_project="me/proj", group="sw1", api=Api(), fmt="json",
                        out=str(results / "r.json"))
    assert report.per_run.set_index("run_id").loc["w1", "reward_final"] == pytest.approx(0.5)


def test_bad_arguments_are_user_errors(results):
    with pytest.raises(UserError, match="--format"):
        run_report([str(results)], fmt="xml")
    with pytest.raises(UserError, match="no sources"):
        run_report([])
    with pytest.raises(UserError, match="--pivot"):
        run_report([str(results)], pivot=("a",))


def test_the_runs_table_shows_seeds_and_steps_as_whole_numbers(results):
    """A seed is 0, 1, 2 and a step 200, never 0.000 or 200.0, whatever dtype the column took."""
    state = results.parent / "trainer" / "trainer_state.json"  # another tool's run: no seed, so NaN in the column
    state.parent.mkdir()
    state.write_text(json.dumps({"log_history": [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]}))
    text = (results / "r.md")
    run_report([str(results), str(state.parent)], fmt="markdown", out=str(text))
    runs = text.read_text().split("### Runs", 1)[1].split("###", 1)[0]
    lines = [line for line in runs.strip().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    seeds, steps = header.index("seed"), header.index("step")
    assert rows and all(r[seeds].isdigit() or r[seeds] == "–" for r in rows), rows
    assert all(r[steps].isdigit() or r[steps] == "–" for r in rows), rows
