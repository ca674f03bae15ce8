"""Renderers and plots: each output format carries the numbers, and the PNG panels hold real pixels."""
import csv
import io
import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from abcx.errors import UserError
from abcx.report import render as R
from abcx.report.command import run_report
from abcx.report.synth import synth_sweep


def tables():
    data = pd.DataFrame({"method": ["grpo", "abc_v2"], "reward_mean": [0.5, 0.625], "reward_ci": [0.1, float("nan")]})
    display = pd.DataFrame({"method": ["grpo", "abc_v2"], "reward": ["0.500 ± 0.100", "0.625"]})
    return [R.Table("groups", "Groups & 50% means", data, display, ["a table note"])]


def test_markdown_has_a_pipe_table_with_the_formatted_cells():
    text = R.render(tables(), ["a global note"], "markdown")
    assert "| method | reward |" in text and "| grpo | 0.500 ± 0.100 |" in text
    assert "_a table note_" in text and "- a global note" in text


def test_csv_sections_hold_numeric_columns_that_parse_back():
    text = R.render(tables(), [], "csv")
    lines = text.splitlines()
    assert lines[0] == "# groups: Groups & 50% means"
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[1:4]))))
    assert float(rows[1]["reward_mean"]) == 0.625 and rows[1]["reward_ci"] == ""


def test_latex_escapes_specials_and_uses_booktabs():
    text = R.render(tables(), [], "latex")
    assert r"\toprule" in text and r"\caption{Groups \& 50\% means}" in text
    assert r"abc\_v2" in text and r"0.500 $\pm$ 0.100" in text


def test_json_is_valid_with_nan_as_null():
    doc = json.loads(R.render(tables(), ["n"], "json"))
    assert doc["tables"]["groups"]["rows"][1] == {"method": "abc_v2", "reward_mean": 0.625, "reward_ci": None}
    assert doc["notes"] == ["n"]


def test_rich_prints_title_and_cells_to_the_console():
    console = Console(record=True, width=120)
    assert R.render(tables(), ["global"], "rich", console=console) is None
    out = console.export_text()
    assert "Groups & 50% means" in out and "0.500 ± 0.100" in out and "global" in out


def test_unknown_format_is_a_user_error():
    with pytest.raises(UserError, match="valid formats are rich, markdown, csv, latex, json"):
        R.render(tables(), [], "html")


def test_plots_are_written_as_non_trivial_pngs(tmp_path):
    synth_sweep(str(tmp_path / "runs"), 6, 40)
    report = run_report([str(tmp_path / "runs")], fmt="json", out=str(tmp_path / "r.json"),
                        plots_dir=str(tmp_path / "plots"), pivot=("method.eps3", "method"))
    names = sorted(p.rsplit("/", 1)[-1] for p in report.plots)
    assert names == ["completion_length.png", "entropy.png", "eval_arith.png", "pivot_heatmap.png",
                     "quadrant_shares.png", "reward.png"]
    import matplotlib.image as mpimg

    for p in report.plots:
        img = mpimg.imread(p)
        assert img.shape[0] > 200 and img.shape[1] > 300
        assert np.std(img[..., :3]) > 0.05  # not a blank canvas: lines, bands and text were drawn
