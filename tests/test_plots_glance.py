"""Plots a reader takes in at a glance (issue 29, section 3), checked through plots.json, which the
report reads back from the figures' own artists: the quadrant figure is a grid that prints on one
page with every panel readable on its own (its own legend, never over the data, inside the figure);
legend labels say only what differs between the runs a figure shows; captions are true for what is
drawn (no min–max band where a line is one run)."""
import json

import numpy as np

from abcx.report.command import run_report
from tests.test_report_first_hour import PROBLEMS_A, PROBLEMS_B, evaluation, record


def plots(tmp_path, **kwargs) -> dict:
    out = tmp_path / "plots"
    run_report([str(tmp_path / "results")], fmt="json", out=str(tmp_path / "r.json"), plots_dir=str(out), **kwargs)
    return {f["file"]: f for f in json.loads((out / "plots.json").read_text())["figures"]}


def demo_like(tmp_path, seeds=(0,)):
    """The demo's shape: grpo and abc_grpo, evaluated along the way on chain."""
    runs = tmp_path / "results" / "runs"
    for seed in seeds:
        record(runs, "grpo", seed, 0.4, evals=[evaluation(PROBLEMS_B, 4, step=s) for s in (2, 4, 6)])
        record(runs, "abc_grpo", seed, 0.6, evals=[evaluation(PROBLEMS_A, 4, step=s) for s in (2, 4, 6)])


def test_the_quadrant_figure_is_a_one_page_grid_of_panels_each_with_its_own_legend_off_the_data(tmp_path):
    demo_like(tmp_path)
    figure = plots(tmp_path)["quadrant_shares.png"]
    width, height = figure["size_px"]
    assert 0.7 <= height / width <= 1.5, figure["size_px"]  # a page, portrait or landscape; not a 6:1 strip
    bars, *curves = figure["panels"]
    assert bars["bars"] and len(curves) == 4
    for panel in figure["panels"]:
        w, h = panel["size_px"]
        assert w >= 300 and h >= 200, (panel["title"], panel["size_px"])  # readable when printed
        assert panel["legend"], panel["title"]  # each panel reads on its own, the bar panel included
        assert panel["legend_over_data"] is False and panel["legend_in_figure"] is True, panel["title"]
        assert sorted(panel["legend_labels"]) == ["abc_grpo", "grpo"], panel["legend_labels"]


def test_every_figure_keeps_its_legends_inside_the_figure_off_the_data_and_short(tmp_path):
    demo_like(tmp_path, seeds=(0, 1))
    for figure in plots(tmp_path).values():
        for panel in figure["panels"]:
            if panel["legend"]:
                assert panel["legend_over_data"] is False and panel["legend_in_figure"] is True, \
                    (figure["file"], panel["title"])
                assert panel["label_chars"] <= 40, panel["legend_labels"]


def test_legend_labels_show_only_what_differs_between_the_runs_a_figure_shows(tmp_path):
    demo_like(tmp_path)
    # A longer grpo run without evaluations: it differs in max_steps, but only in the figures it is in.
    record(tmp_path / "results" / "runs", "grpo", 0, 0.5, max_steps=12)
    figures = plots(tmp_path)
    avg = figures["eval_chain.png"]["panels"][0]
    assert {s["label"] for s in avg["series"]} == {"grpo", "abc_grpo"}
    reward = figures["reward.png"]["panels"][0]
    assert {s["label"] for s in reward["series"]} == {"grpo max_steps=6", "grpo max_steps=12", "abc_grpo max_steps=6"}


def test_captions_say_a_band_only_where_a_line_averages_several_runs(tmp_path):
    demo_like(tmp_path)
    one = plots(tmp_path)
    for figure in one.values():
        assert "min–max" not in figure["caption"], figure["file"]
    assert "each line: one run" in one["reward.png"]["caption"]
    assert {s["label"] for s in one["reward.png"]["panels"][0]["series"]} == {"grpo", "abc_grpo"}  # no "(n=1)"

    demo_like(tmp_path, seeds=(1,))  # a second seed of each: now each line is a mean with its band
    two = plots(tmp_path)
    assert "min–max over seeds (2 runs per line)" in two["reward.png"]["caption"]
    assert "min–max over seeds" in two["quadrant_shares.png"]["caption"]


def test_the_accuracy_panels_are_curves_when_runs_are_evaluated_along_the_way(tmp_path):
    demo_like(tmp_path)
    avg, passes, by_k = plots(tmp_path)["eval_chain.png"]["panels"]
    assert {s["points"] for s in avg["series"]} == {3}  # steps 2, 4, 6 (no starting model evaluated here)
    assert np.all([p["legend"] for p in (avg, passes, by_k)])
