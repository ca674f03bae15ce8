"""The metric map (abcx/report/metric_map.py), function by function, on RunSets built in memory: what a
renamed or derived name becomes, which layout each run's quadrants come from, and that a run's rows
hold that layout's values alone. tests/test_report_foreign.py reads the same map through real logs
(trainer_state.json, W&B offline files); these pin the rules themselves (`make mutate` runs them).

Every value is distinct, so a value taken from the wrong field, the wrong run or the wrong layout
shows up as a wrong number, not as a coincidence."""
from __future__ import annotations

import pytest

from abcx.errors import UserError
from abcx.report import metric_map as M
from abcx.report.runset import RunSet, make_runs, wide_from_records

# The fork's sign-split fields and TRL's names (the fork's meaning: both signs of A), distinct values.
SPLIT = {"clip_ratio/ppo_style": 0.030, "clip_ratio/ppo_style_pos_adv_pct": 0.55,
         "clip_ratio/ppo_style_neg_adv_pct": 0.45, "clip_ratio/overcorrection": 0.012,
         "clip_ratio/overcorrection_pos_adv_pct": 0.35, "clip_ratio/overcorrection_neg_adv_pct": 0.65}
FORK = {**SPLIT, "clip_ratio/high_mean": 0.0241, "clip_ratio/low_mean": 0.0177}
STOCK = {"clip_ratio/high_mean": 0.0051, "clip_ratio/low_mean": 0.0073, "clip_ratio/region_mean": 0.0124}


def runset(runs: dict[str, list[dict]]) -> RunSet:
    """{run_id: [{"step": s, metric: value, ...}, ...]}, each run at /logs/<run_id>."""
    records = [(rid, row["step"], k, v) for rid, rows in runs.items() for row in rows for k, v in row.items()
               if k != "step"]
    return RunSet(make_runs([{"run_id": rid, "path": f"/logs/{rid}"} for rid in runs]), wide_from_records(records))


def values(rs: RunSet, name: str, rid: str) -> list[float]:
    rows = rs.metric(name)
    return rows[rows["run_id"].astype(str) == rid]["value"].tolist()


def user_map(tmp_path, text: str) -> M.MetricMap:
    path = tmp_path / "map.yaml"
    path.write_text(text)
    return M.load(path)


# --- one layout per run ----------------------------------------------------------------------------

def test_two_runs_of_two_layouts_in_one_set_each_take_their_own_layout_and_nothing_of_the_other():
    """The fork run's quadrants are the split's products and its high_mean/low_mean keep their names;
    the stock TRL run's high_mean/low_mean become its Q1/Q3 (moved, not copied), its Q2/Q4 unknown."""
    rs = M.apply(runset({"fork": [{"step": 1, **FORK}], "stock": [{"step": 1, **STOCK}]}), M.load())
    assert dict(zip(rs.runs.index, rs.runs["quadrant_source"])) == {"fork": "sign_split", "stock": "trl"}
    s = SPLIT
    assert values(rs, "clip/q1", "fork") == pytest.approx([s["clip_ratio/ppo_style"] * 0.55])
    assert values(rs, "clip/q2", "fork") == pytest.approx([s["clip_ratio/overcorrection"] * 0.35])
    assert values(rs, "clip/q3", "fork") == pytest.approx([s["clip_ratio/ppo_style"] * 0.45])
    assert values(rs, "clip/q4", "fork") == pytest.approx([s["clip_ratio/overcorrection"] * 0.65])
    assert values(rs, "clip_ratio/high_mean", "fork") == [0.0241] and values(rs, "clip_ratio/low_mean", "fork") == [0.0177]
    assert values(rs, "clip/q1", "stock") == [0.0051] and values(rs, "clip/q3", "stock") == [0.0073]
    assert values(rs, "clip/q1_q3", "stock") == [0.0124] and values(rs, "clip/q1_q3", "fork") == []
    assert values(rs, "clip/q2", "stock") == [] and values(rs, "clip/q4", "stock") == []
    assert values(rs, "clip_ratio/high_mean", "stock") == [] and values(rs, "clip_ratio/region_mean", "stock") == []
    assert "clip_ratio/region_mean" not in rs.metrics  # renamed on every row that had it: the column goes


def test_a_run_that_logs_a_layout_only_at_some_steps_has_no_other_layouts_values_at_the_others():
    """Step 2 logs only TRL's names: under the run's layout (sign_split) they are not quadrants, so
    step 2's quadrants are unknown rather than TRL's."""
    rs = M.apply(runset({"fork": [{"step": 1, **FORK}, {"step": 2, "clip_ratio/high_mean": 0.0311}]}), M.load())
    assert rs.runs.loc["fork", "quadrant_source"] == "sign_split"
    assert values(rs, "clip/q1", "fork") == pytest.approx([0.030 * 0.55])  # step 1 only
    assert values(rs, "clip_ratio/high_mean", "fork") == [0.0241, 0.0311]


def test_the_first_layout_in_the_maps_order_that_a_run_logs_wins_and_the_note_names_the_others_fields():
    rs = M.apply(runset({"fork": [{"step": 1, **FORK}]}), M.load())
    assert ("1 run(s) log more than one quadrant layout: quadrants from sign_split only; the fields of trl "
            "keep their logged names (clip_ratio/high_mean, clip_ratio/low_mean)") in rs.notes
    three = M.apply(runset({"fork": [{"step": 1, **FORK, "actor/pg_clipfrac": 0.0093}]}), M.load())
    assert ("1 run(s) log more than one quadrant layout: quadrants from sign_split only; the fields of trl, verl "
            "keep their logged names (actor/pg_clipfrac, clip_ratio/high_mean, clip_ratio/low_mean)") in three.notes
    alone = M.apply(runset({"stock": [{"step": 1, **STOCK}]}), M.load())
    assert not any("more than one quadrant layout" in n for n in alone.notes)


def test_abcx_own_quadrant_names_win_and_a_run_with_no_layout_is_none():
    own = {"clip/q1": 0.011, "clip/q2": 0.012, "clip/q3": 0.013, "clip/q4": 0.014}
    rs = M.apply(runset({"own": [{"step": 1, **own, **STOCK}], "bare": [{"step": 1, "reward": 0.5}], "empty": [],
                         "stock": [{"step": 1, "clip_ratio/high_mean": 0.0057}]}), M.load())
    assert dict(zip(rs.runs.index, rs.runs["quadrant_source"])) == {"own": "abcx", "bare": "none", "empty": "none",
                                                                     "stock": "trl"}
    assert values(rs, "clip/q1", "stock") == [0.0057]  # a run after one of abcx's own still gets its layout
    assert [values(rs, f"clip/q{i}", "own") for i in range(1, 5)] == [[0.011], [0.012], [0.013], [0.014]]
    assert values(rs, "clip_ratio/low_mean", "own") == [0.0073]
    assert any(n.startswith("1 run(s) log more than one quadrant layout: quadrants from abcx only; the fields of "
                            "trl keep") for n in rs.notes)


def test_use_layout_names_a_runs_layout_and_says_so_when_the_run_logs_none_of_its_fields(tmp_path):
    mmap = user_map(tmp_path, "use_layout:\n  'fork*': trl\n  'bare': verl\n  'own': abcx\n")
    own = {"clip/q1": 0.011, "clip/q2": 0.012, "clip/q3": 0.013, "clip/q4": 0.014}
    rs = M.apply(runset({"fork": [{"step": 1, **FORK}], "bare": [{"step": 1, "reward": 0.5}],
                         "own": [{"step": 1, **own, **STOCK}]}), mmap)
    assert dict(zip(rs.runs.index, rs.runs["quadrant_source"])) == {
        "fork": "trl (--metric-map)", "bare": "verl (--metric-map)", "own": "abcx (--metric-map)"}
    assert values(rs, "clip/q1", "fork") == [0.0241] and values(rs, "clip/q2", "fork") == []
    assert values(rs, "clip/q1", "own") == [0.011]  # named abcx: its own names, TRL's untouched
    assert values(rs, "clip_ratio/high_mean", "own") == [0.0051]
    assert "bare: use_layout names verl, but the run logs none of its fields" in rs.notes
    assert not any(n.startswith(("fork:", "own:")) for n in rs.notes)


def test_a_use_layout_glob_matches_a_runs_id_its_path_or_its_folder_name():
    assert M.matches("run-*", "run-7", "/x/y")
    assert M.matches("/logs/*", "a", "/logs/a") and M.matches("deep", "a", "/x/deep")
    assert not M.matches("run-*", "other", "/x/y") and not M.matches("x", "", "")


# --- rename and derive -----------------------------------------------------------------------------

def test_a_renamed_name_fills_abcx_s_name_only_where_abcx_s_own_value_is_missing(tmp_path):
    rs = M.apply(runset({"a": [{"step": 1, "entropy": 0.91, "actor/entropy": 0.37}, {"step": 2, "actor/entropy": 0.42}],
                         "b": [{"step": 1, "completions/mean_length": 17.0}]}), M.load())
    assert values(rs, "entropy", "a") == [0.91, 0.42]  # abcx's name wins where both are logged
    assert values(rs, "completion_length", "b") == [17.0]
    assert "actor/entropy" not in rs.metrics and "completions/mean_length" not in rs.metrics


def test_a_derived_metric_is_the_product_of_its_factors_where_all_are_logged(tmp_path):
    mmap = user_map(tmp_path, "derive:\n  my/both: [a, b]\n  my/half: [a, missing]\n  entropy: [a, c]\n")
    assert mmap.derive == {"my/both": ("a", "b"), "my/half": ("a", "missing"), "entropy": ("a", "c")}
    rs = M.apply(runset({"r": [{"step": 1, "a": 2.0, "b": 3.0, "c": 5.0, "entropy": 0.7},
                               {"step": 2, "a": 7.0, "b": 11.0, "c": 13.0}]}), mmap)
    assert values(rs, "my/both", "r") == [6.0, 77.0]
    assert "my/half" not in rs.metrics
    assert values(rs, "entropy", "r") == [0.7, 91.0]  # the logged value wins; the product fills the gap


def test_a_percent_factor_is_divided_by_100_only_in_a_product_and_only_for_runs_that_log_percent(tmp_path):
    mmap = user_map(tmp_path, "derive:\n  my/x: [base, share_pct]\n  my/raw: [share_pct]\n")
    rs = M.apply(runset({"pct": [{"step": 1, "base": 0.4, "share_pct": 25.0}],
                         "small_pct": [{"step": 1, "base": 0.4, "share_pct": 0.5}, {"step": 2, "base": 0.2, "share_pct": 1.5}],
                         "frac": [{"step": 1, "base": 0.4, "share_pct": 1.0}]}), mmap)
    assert values(rs, "my/x", "pct") == pytest.approx([0.1]) and values(rs, "my/x", "frac") == pytest.approx([0.4])
    # A share above 1 anywhere in a run means the run logs percent: all its values are divided.
    assert values(rs, "my/x", "small_pct") == pytest.approx([0.4 * 0.005, 0.2 * 0.015])
    assert values(rs, "my/raw", "pct") == [25.0]  # a single factor is a rename: kept as logged
    assert "share_pct: values above 1, read as percent" in rs.notes


# --- the map file ----------------------------------------------------------------------------------

def test_a_users_layouts_go_first_update_the_packages_in_place_and_null_removes(tmp_path):
    mmap = user_map(tmp_path, "layouts:\n  verl: null\n  mine: {clip/q2: my/q2}\n"
                              "  trl: {clip/q1_q3: null, clip/q4: [my/q4a, my/q4b]}\n")
    assert list(mmap.layouts) == ["mine", "sign_split", "trl"]
    assert mmap.layouts["mine"] == {"clip/q2": ("my/q2",)}
    assert mmap.layouts["trl"] == {"clip/q1": ("clip_ratio/high_mean",), "clip/q3": ("clip_ratio/low_mean",),
                                   "clip/q4": ("my/q4a", "my/q4b")}
    assert mmap.known_layouts() == ("mine", "sign_split", "trl", "abcx")
    assert mmap.files[-1] == str(tmp_path / "map.yaml") and len(mmap.files) == 2


def test_a_users_rename_or_derive_set_to_null_removes_the_entry(tmp_path):
    assert M.load().rename["actor/entropy"] == "entropy"
    mmap = user_map(tmp_path, "rename:\n  actor/entropy: null\n  my/len: completion_length\n"
                              "derive:\n  nothing/here: null\n")
    assert "actor/entropy" not in mmap.rename and mmap.rename["my/len"] == "completion_length"
    assert mmap.rename["critic/score/mean"] == "reward" and mmap.derive == {}


@pytest.mark.parametrize("text, says", [
    ("- a\n", "expected a mapping with keys rename, derive, percent_like, layouts, use_layout"),
    ("renames: {}\n", "unknown section 'renames'; valid: rename, derive, percent_like, layouts, use_layout"),
    ("percent_like: '*_pct'\n", "percent_like must be a list of name patterns"),
    ("use_layout: [a]\n", "use_layout must map run globs to layout names"),
    ("use_layout: {a: 3}\n", "use_layout must map run globs to layout names"),
    ("rename: [a]\n", "rename must map logged names to abcx names"),
    ("derive:\n  clip/x: 3\n", "derive.clip/x=3; valid: a list of logged metric names (their product)"),
    ("rename:\n  a: [b]\n", "rename.a=['b']; valid: an abcx metric name, or null to remove it"),
    ("derive:\n  a: b\n", "derive.a='b'; valid: a list of logged metric names (their product), or null"),
    ("rename:\n  a: step\n", "rename.a: 'step' is a column of every run's history, not a metric; valid: a metric "
                             "name other than step, run_id"),
    ("rename:\n  a: clip/q4\n", "rename.a: Q1..Q4 come from one layout per run; put it under layouts "
                                "(e.g. layouts: {mine: {clip/q4: [a]}})"),
    ("derive:\n  clip/q2: [a, b]\n", "derive.clip/q2: Q1..Q4 come from one layout per run; put it under layouts "
                                     "(e.g. layouts: {mine: {clip/q2: [...]}})"),
    ("layouts: [a]\n", "layouts must map layout names to {abcx name: [logged names]}"),
    ("layouts:\n  none: {clip/q1: [a]}\n", "layouts.none: 'none' is reserved"),
    ("layouts:\n  abcx: {clip/q1: [a]}\n", "layouts.abcx: 'abcx' is reserved"),
    ("layouts:\n  x: {clip/q1: 3}\n", "layouts.x.clip/q1=3; valid: a list of logged metric names (their product)"),
    ("rename:\n  my/q4: clip/q4\n", "rename.my/q4: Q1..Q4 come from one layout per run"),
    ("layouts:\n  x: [a]\n", "layouts.x must map abcx names to [logged names], or be null"),
    ("layouts:\n  x: {clip/q1: [step]}\n", "layouts.x.clip/q1: step, run_id are columns of every run's history, "
                                           "not metrics; valid: metric names"),
    ("layouts:\n  x: {run_id: a}\n", "layouts.x.run_id: step, run_id are columns"),
    ("layouts:\n  x: {clip/q1: step}\n", "layouts.x.clip/q1: step, run_id are columns"),  # one name, not a list
    ("use_layout: {a: fork}\n", "use_layout.a='fork' is not a layout; known: sign_split, trl, verl, abcx"),
])
def test_a_bad_map_file_is_one_line_naming_the_file_the_entry_and_what_is_valid(tmp_path, text, says):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        M.load(path)
    message = str(err.value)
    assert message.startswith(f"--metric-map {path}: ") and says in message and "\n" not in message


def test_a_layout_set_to_null_in_the_users_file_is_accepted_and_a_missing_file_is_one_line(tmp_path):
    assert "verl" not in user_map(tmp_path, "layouts:\n  verl: null\n").layouts
    # Removing what is not there is no error: a map file can be shared between abcx versions.
    mmap = user_map(tmp_path, "layouts:\n  ghost: null\n  trl: {clip/q9: null}\n")
    assert "ghost" not in mmap.layouts and mmap.layouts["trl"] == M.load().layouts["trl"]
    with pytest.raises(UserError, match=r"^--metric-map /nonexistent/map.yaml: no such file$"):
        M.load("/nonexistent/map.yaml")
    (tmp_path / "bad.yaml").write_text("a: [\n")
    with pytest.raises(UserError, match=r"^--metric-map .*bad.yaml.*; valid: a YAML file with sections rename, "
                                        r"derive, percent_like, layouts, use_layout$"):
        M.load(tmp_path / "bad.yaml")


def test_a_credential_in_a_map_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("rename:\n  a: hf_" + "x" * 34 + "\n")
    with pytest.raises(UserError) as err:
        M.load(path)
    assert str(err.value).startswith(f"--metric-map {path}: rename.a looks like a Hugging Face token")
    assert "credentials never go into the report: " in str(err.value)
    assert "hf_" + "x" * 34 not in str(err.value)

