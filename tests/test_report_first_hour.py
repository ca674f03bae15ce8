"""The report a new user meets in the first hour (issue 15): it never breaks on a partial record, groups
by what was trained, keys evaluations by their sampling settings, says when an interval means little,
and writes CSV/LaTeX/plots that load elsewhere. Records are synthetic here; tests/test_first_hour.py
replays the same hour with real training."""
import io
import json
import os

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from abcx.errors import UserError
from abcx.evaluation.metrics import bootstrap_diff_pooled, summarise
from abcx.report.command import run_report
from abcx.report.synth import write_record

STEPS = np.arange(1, 7)


def evaluation(per_problem, n, step=6, temperature=1.0):
    """An eval.jsonl row as `abcx eval` writes it, from per-problem (n, correct) counts."""
    return {"step": step, "benchmark": "chain", "n": n, "problems": len(per_problem),
            "sampling": {"n": n, "temperature": temperature, "top_p": 1.0, "top_k": 0, "max_new_tokens": 96, "seed": 7},
            "metrics": summarise(per_problem, [1, 2, n]), "ci": {}, "per_problem": [list(p) for p in per_problem]}


def record(root, method, seed, final, *, max_steps=6, logger_project="p", evals=None, eps3=None, eps4=None,
           state="finished", group=""):
    bounds = {k: v for k, v in (("eps3", eps3), ("eps4", eps4)) if v is not None}
    cfg = {"method": {"name": method, **bounds},
           "train": {"max_steps": max_steps}, "logger": {"project": logger_project},
           "launcher": {"name": "local"}, "results_dir": f"/abs/{seed}", "eval": {"n": 4}}
    quads = {f"clip/q{i}": np.full(6, 0.01 * i * (seed + 1)) for i in range(1, 5)}
    run_id = f"{method}-s{seed}-{max_steps:04d}{(eps3 or 0) * 10:.0f}{(eps4 or 0) * 10:.0f}{logger_project}"
    return write_record(str(root), run_id, method=method, seed=seed, steps=STEPS, state=state, config=cfg, group=group,
                        metrics={"reward": np.linspace(0.1, final, 6), "entropy": np.linspace(1.0, 0.5, 6), **quads},
                        evals=evals)


def cancelled_while_queued(root, run_id="grpo-s9-queued0000"):
    """What a run cancelled before it started leaves: meta.json and status.json, no config.yaml."""
    path = os.path.join(str(root), run_id)
    os.makedirs(path)
    json.dump({"run_id": run_id, "method": "grpo", "seed": 9}, open(os.path.join(path, "meta.json"), "w"))
    json.dump({"state": "cancelled", "step": 0}, open(os.path.join(path, "status.json"), "w"))
    return path


PROBLEMS_A = [(4, c) for c in (4, 3, 1, 0, 2, 4, 3, 1)]  # distinct counts: a swapped side changes the sign
PROBLEMS_B = [(4, c) for c in (2, 1, 1, 0, 2, 3, 1, 0)]


@pytest.fixture
def demo(tmp_path):
    """Two methods x two seeds, logged to different W&B projects (not part of what is trained), each
    evaluated on the same problems, plus one run cancelled while queued."""
    runs = tmp_path / "results" / "runs"
    for seed in (0, 1):
        record(runs, "grpo", seed, 0.4 + 0.1 * seed, logger_project=f"proj{seed}", evals=[evaluation(PROBLEMS_B, 4)])
        record(runs, "abc_grpo", seed, 0.6 + 0.1 * seed, logger_project="other", evals=[evaluation(PROBLEMS_A, 4)])
    cancelled_while_queued(runs)
    return tmp_path / "results"


@pytest.mark.parametrize("fmt", ["rich", "markdown", "csv", "latex", "json"])
def test_a_run_cancelled_while_queued_is_listed_and_every_format_still_renders(demo, fmt):
    out = demo / f"report.{fmt}"
    report = run_report([str(demo)], fmt=fmt, out=str(out))
    queued = report.per_run.set_index("run_id").loc["grpo-s9-queued0000"]
    assert queued["state"] != "finished" and "never started" in queued["detail"]
    assert "grpo-s9-queued0000" in out.read_text()
    if fmt == "csv":
        return
    groups = report.table("groups").data.set_index("method")
    assert groups.loc["grpo", "n"] == 2 and groups.loc["grpo", "n_other"] == 1  # listed, not averaged


def test_runs_are_grouped_by_what_was_trained_not_by_logger_or_launcher_fields(demo):
    report = run_report([str(demo)], fmt="json", out=str(demo / "r.json"))
    assert report.group_keys == ["method"]  # logger.project and results_dir differ, but train nothing
    t3 = report.table("table3").data
    gain = t3[t3["kind"] == "gain"]
    assert list(gain["method"]) == ["Gain abc_grpo vs grpo"]


def test_gains_use_the_paired_two_level_bootstrap_over_problems_and_seeds(demo):
    report = run_report([str(demo)], fmt="json", out=str(demo / "r.json"))
    gain = report.table("table3").data.set_index("method").loc["Gain abc_grpo vs grpo"]
    est, lo, hi = bootstrap_diff_pooled([PROBLEMS_A] * 2, [PROBLEMS_B] * 2, None, iters=1000)
    assert gain["Avg@4_mean"] == pytest.approx(100 * est) and est > 0
    assert (gain["Avg@4_lo"], gain["Avg@4_hi"]) == pytest.approx((100 * lo, 100 * hi))
    assert gain["Avg@4_test"] == "paired bootstrap"
    assert "Pass@1_mean" not in report.table("table3").data.columns  # Avg@n = Pass@1: shown once


def test_two_seed_intervals_carry_a_visible_caution(demo):
    console = Console(record=True, width=250)
    run_report([str(demo)], console=console)
    text = console.export_text()
    assert "CAUTION" in text and "t = 12.7" in text


def test_evaluations_with_another_n_get_their_own_rows_and_never_mix(demo):
    run = next(p for p in (demo / "runs").iterdir() if p.name.startswith("grpo-s0"))
    with open(run / "eval.jsonl", "a") as fh:  # `abcx eval <run> eval.n=8`, twice: the last one counts
        fh.write(json.dumps(evaluation([(8, 0)] * 8, 8)) + "\n")
        fh.write(json.dumps(evaluation([(8, 8)] * 8, 8)) + "\n")
    report = run_report([str(demo)], fmt="json", out=str(demo / "r.json"))
    t3 = report.table("table3").data
    rows = t3[t3["kind"] == "value"].set_index(["benchmark", "method"])
    assert rows.loc[("chain (n=8)", "grpo"), "n"] == 1 and rows.loc[("chain (n=8)", "grpo"), "Avg@8_mean"] == 100.0
    assert rows.loc[("chain (n=4)", "grpo"), "n"] == 2
    assert any(n.startswith("chain (n=8): sampled with n=8") for n in report.notes)


def test_groups_table_keeps_eval_n_apart_from_the_runs_count_and_renders_in_rich(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for n in (4, 8):
            path = record(runs, "grpo", seed, 0.5, max_steps=6 + n)
            cfg = open(os.path.join(path, "config.yaml")).read().replace("n: 4", f"n: {n}")
            open(os.path.join(path, "config.yaml"), "w").write(cfg)
    console = Console(record=True, width=250)
    report = run_report([str(tmp_path)], console=console)
    groups = console.export_text().split("Groups of finished runs:")[1]
    header = next(line for line in groups.splitlines() if "eval.n" in line)
    assert "max_steps" in header and " n " in header  # the runs count and eval.n: two columns, two names
    assert "cfg.eval.n" in report.group_keys


def test_a_pivot_cell_averages_seeds_only_and_refuses_mixed_max_steps(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for eps3 in (0.2, 0.4):
            record(runs, "abc_grpo", seed, 0.3 + eps3 + 0.01 * seed, eps3=eps3)
    report = run_report([str(tmp_path)], fmt="json", out=str(tmp_path / "r.json"), pivot=("method.eps3", "seed"))
    assert report.table("pivot").data.loc[0.4, 0] == pytest.approx(0.7)
    pv = run_report([str(tmp_path)], fmt="json", out=str(tmp_path / "r.json"), pivot=("method.eps3", "method.name"))
    assert pv.table("pivot").data.loc[0.2, "abc_grpo"] == pytest.approx(0.505)
    assert pv.table("pivot").notes == []  # every run in the grid: nothing to say
    # Another sweep's run (max_steps 100) would share the cell eps3 = 0.2: the grid of the most cells is
    # taken, and the run left out is named with the selection that would choose otherwise.
    record(runs, "abc_grpo", 2, 0.9, eps3=0.2, max_steps=100)
    pv = run_report([str(tmp_path)], fmt="json", out=str(tmp_path / "r.json"), pivot=("method.eps3", "method.name"))
    assert pv.table("pivot").data.loc[0.2, "abc_grpo"] == pytest.approx(0.505)  # not (0.5 + 0.51 + 0.9) / 3
    assert "1 run(s) of other settings (train.max_steps)" in pv.table("pivot").notes[0]
    # Two grids as large as each other: which one is meant cannot be told; one line says how to choose.
    record(runs, "abc_grpo", 2, 0.9, eps3=0.4, max_steps=100)
    with pytest.raises(UserError, match=r"2 sets of runs fill 2 cell\(s\) each and differ in train.max_steps; "
                                        r"a cell averages seeds only"):
        run_report([str(tmp_path)], fmt="json", out=str(tmp_path / "r.json"), pivot=("method.eps3", "method.name"))


def test_the_readme_pivot_takes_the_eps_grid_when_results_hold_other_runs(tmp_path):
    """`abcx report results --pivot method.eps3,method.eps4,entropy_last --format markdown` beside the
    demo's runs (grpo has no eps3; its abc_grpo trained another max_steps): the eps grid, never a
    `(nan, nan)` cell error."""
    runs = tmp_path / "results" / "runs"
    for eps3, eps4, seed in ((0.2, 0.2, 0), (0.2, 0.4, 0), (9.0, 0.2, 0), (9.0, 0.4, 0), (0.2, 0.2, 1)):
        record(runs, "abc_grpo", seed, 0.3 + eps3 / 100 + eps4 + seed / 10, eps3=eps3, eps4=eps4)
    record(runs, "grpo", 0, 0.5, max_steps=100)
    record(runs, "abc_grpo", 0, 0.5, max_steps=100, eps3=0.2, eps4=0.2)
    out = tmp_path / "pivot.md"
    report = run_report([str(tmp_path / "results")], fmt="markdown", out=str(out),
                        pivot=("method.eps3", "method.eps4", "entropy_last"))
    pivot = report.table("pivot")
    assert pivot.data.shape == (2, 2) and "1 run(s) without method.eps3 or method.eps4" in pivot.notes[0]
    assert "entropy_last: mean over seeds, method.eps3 × method.eps4" in out.read_text()


def test_csv_is_one_tidy_long_table_that_pandas_loads_in_one_call(demo, capsys):
    run_report([str(demo)], fmt="csv", out=str(demo / "r.csv"))
    df = pd.read_csv(demo / "r.csv")
    assert list(df.columns) == ["run_id", "state", "method", "seed", "metric", "step", "value", "low", "high",
                                "significance", "interval_over"]
    one = df[(df["run_id"].str.startswith("abc_grpo-s1")) & (df["metric"] == "reward")]
    assert one["step"].tolist() == [1, 2, 3, 4, 5, 6] and one["value"].iloc[-1] == pytest.approx(0.7)
    assert df.loc[df["metric"] == "eval/chain/avg@4", "value"].nunique() == 2
    assert "note:" in capsys.readouterr().err  # notes go to stderr, never into the table


def test_latex_left_aligns_text_marks_missing_values_and_has_labels(demo):
    run_report([str(demo)], fmt="latex", out=str(demo / "r.tex"))
    tex = (demo / "r.tex").read_text()
    assert r"\label{tab:abcx-runs}" in tex and r"\label{tab:abcx-table3}" in tex
    runs_spec = tex.split(r"\label{tab:abcx-runs}")[1].split("\n")[1]
    assert runs_spec.startswith(r"\begin{tabular}{lll")  # run_id, state, method: text, left
    queued = next(line for line in tex.splitlines() if line.startswith("grpo-s9-queued"))
    assert " & -- & " in queued and "–" not in queued


def test_plots_list_what_they_drew_with_labelled_axes_and_one_heatmap_per_pivot(tmp_path):
    runs = tmp_path / "results" / "runs"
    for seed in (0, 1):
        for eps3 in (0.2, 0.4):
            record(runs, "abc_grpo", seed, 0.5, eps3=eps3, evals=[evaluation(PROBLEMS_A, 4, step=s) for s in (3, 6)])
        record(runs, "grpo", seed, 0.4, evals=[evaluation(PROBLEMS_B, 4, step=s) for s in (3, 6)])
    base = tmp_path / "results" / "evals" / "tiny"
    base.mkdir(parents=True)
    (base / "eval.jsonl").write_text(json.dumps(evaluation([(4, 1)] * 8, 4, step=0)) + "\n")
    plots = tmp_path / "plots"
    report = run_report([str(tmp_path / "results")], fmt="json", out=str(tmp_path / "r.json"), plots_dir=str(plots),
                        plot_format="svg", pivot=[("method.eps3", "seed", "q4_share"), ("method.eps3", "seed")])
    base_row = report.table("table3").data.set_index("method").loc["base (tiny)"]  # Table 3 lists the starting model
    assert (base_row["n"], base_row["Avg@4_mean"]) == (1, pytest.approx(25.0))
    manifest = json.loads((plots / "plots.json").read_text())
    figures = {f["file"]: f for f in manifest["figures"]}
    assert set(figures) == {"reward.svg", "entropy.svg", "eval_chain.svg", "quadrant_shares.svg",
                            "pivot_heatmap.svg", "pivot_heatmap2.svg"}
    assert all(os.path.getsize(p) > 1000 for p in report.plots)
    for figure in figures.values():
        for panel in figure["panels"]:
            assert panel["xlabel"] and panel["ylabel"], (figure["file"], panel["title"])
            assert panel["legend_outside"] in (None, True), (figure["file"], panel["title"])  # never on the data
    assert sum(p["legend"] for f in figures.values() for p in f["panels"]) >= 4
    avg, passes, by_k = figures["eval_chain.svg"]["panels"]
    labels = {s["label"]: s["points"] for s in avg["series"]}
    assert labels == {"abc_grpo eps3=0.2": 3, "abc_grpo eps3=0.4": 3, "grpo": 3}  # 0 (base), 3, 6; n=2 each
    assert by_k["xscale"] == "log" and {"base model (step 0)": 3}.items() <= {s["label"]: s["points"] for s in by_k["series"]}.items()
    bars = figures["quadrant_shares.svg"]["panels"][0]["bars"]
    assert len(bars) == 3 and all(len(b["heights"]) == 4 for b in bars)
    assert all(abs(sum(b["heights"]) - 1) < 1e-9 for b in bars)  # shares of the whole run
    heat = figures["pivot_heatmap.svg"]["panels"][0]
    assert (heat["xlabel"], heat["ylabel"], heat["images"]) == ("seed", "method.eps3", 1)
    assert "min–max over seeds" in figures["reward.svg"]["caption"]


def test_the_run_summary_compares_start_and_end_windows_that_never_overlap():
    from abcx.training.train import summarise as run_summary

    # 20 steps, reward logged on every 4th (TRL logs it on generation steps only): 5 values.
    rows = [{"step": s, "entropy": 1.0, **({"reward": float(s)} if s % 4 == 0 else {})} for s in range(1, 21)]
    s = run_summary(rows, last_n=5)
    assert s["window/reward"] == 2 and s["first/reward"] == pytest.approx(6.0) and s["last/reward"] == pytest.approx(18.0)
    assert s["window/entropy"] == 5
    assert run_summary(rows[:4], last_n=5)["first/reward"] is None  # one value: nothing to compare


def test_a_wide_table_on_an_80_column_terminal_is_shown_in_parts_never_cut(demo):
    console = Console(record=True, width=80)
    run_report([str(demo)], console=console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "(continued, 2/" in text and "…" not in text  # every cell whole
    assert "0.700" in text  # abc_grpo seed 1's final reward, shown in full


def test_the_progress_bar_fits_80_columns_with_the_step_count_whole(monkeypatch):
    import re
    import types

    from abcx.training.callbacks import ProgressCallback

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("COLUMNS", "80")
    out = Terminal()
    progress = ProgressCallback("abc_grpo-s0-9412df9fe3", stream=out)
    state = types.SimpleNamespace(global_step=0, max_steps=100, is_world_process_zero=True)
    progress.on_train_begin(None, state, None)
    state.global_step = 99
    progress.on_log(None, state, None, logs={"reward": 0.5123, "entropy": 0.0481, "clip/clipped": 0.012, "clip/q4": 0.003})
    progress.on_train_end(None, state, None)
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line) for line in out.getvalue().splitlines()]
    last = [line for line in lines if "99/100" in line][-1]
    assert len(last.rstrip()) <= 80 and "abc_grpo-s0" in last and "r 0.512" in last and "clip 1.2%" in last


def test_group_keys_come_from_the_finished_runs_so_a_cancelled_sweep_does_not_lengthen_every_label(demo):
    runs = demo / "runs"
    record(runs, "grpo", 3, 0.1, max_steps=4, state="failed")  # another sweep's run, cancelled: other max_steps
    report = run_report([str(demo)], fmt="json", out=str(demo / "r.json"))
    assert report.group_keys == ["method"]
    assert set(report.table("groups").data["method"]) == {"grpo", "abc_grpo"}
