"""The verdict a report hands a researcher (issues 25 and 29): every Gain carries its interval or (n.s.)
in every format, says what that interval covers (problems, or problems and seeds), never claims seeds
that are not there, and the report starts with a verdict table that fits 80 columns and ends with one
line a newcomer can read. Synthetic records with known per-problem counts, so every number here can be
worked out by hand or with the same bootstrap."""
import json
import re

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from abcx.errors import UserError
from abcx.evaluation.metrics import bootstrap_diff_pooled, summarise
from abcx.report.command import run_report
from abcx.report.synth import write_record

STEPS = np.arange(1, 7)
# Distinct counts per problem: Avg@4 56.25% (abc_grpo) vs 31.25% (grpo), a swapped side flips the sign.
BETTER = [(4, c) for c in (4, 3, 1, 0, 2, 4, 3, 1)]
WORSE = [(4, c) for c in (2, 1, 1, 0, 2, 3, 1, 0)]
# Quadrant fractions with distinct Q4 shares: 40% (abc_grpo), 10% (grpo).
QUADS = {"abc_grpo": (0.1, 0.2, 0.3, 0.4), "grpo": (0.4, 0.1, 0.4, 0.1)}
ENTROPY = {"abc_grpo": 0.9, "grpo": 0.6}  # H/H_base 1.50


def evaluation(per_problem):
    return {"step": 6, "benchmark": "chain", "n": 4, "problems": len(per_problem),
            "sampling": {"n": 4, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 96, "seed": 7},
            "metrics": summarise(per_problem, [1, 2, 4]), "ci": {}, "per_problem": [list(p) for p in per_problem]}


def comparison(tmp_path, seeds: int, abc=BETTER, grpo=WORSE, grpo_seeds: int | None = None):
    """grpo and abc_grpo, `seeds` seeds each (grpo: `grpo_seeds` if given), run by the sweep `demo`, each
    evaluated on the same 8 problems."""
    runs = tmp_path / "results" / "runs"
    for method, problems, n in (("grpo", grpo, grpo_seeds or seeds), ("abc_grpo", abc, seeds)):
        for seed in range(n):
            metrics = {"reward": np.linspace(0.1, 0.5, 6), "entropy": np.full(6, ENTROPY[method]),
                       **{f"clip/q{i + 1}": np.full(6, q) for i, q in enumerate(QUADS[method])}}
            write_record(str(runs), f"{method}-s{seed}-0000cafe", method=method, seed=seed, steps=STEPS,
                         config={"train": {"max_steps": 6}}, metrics=metrics, evals=[evaluation(problems)],
                         sweep="demo")
    return tmp_path / "results"


def rich_text(results, width: int, **kw) -> str:
    console = Console(record=True, width=width)
    run_report([str(results)], console=console, **kw)
    return console.export_text()


def interval(a, b, k=None):
    _, lo, hi = bootstrap_diff_pooled(a, b, k, iters=1000)
    return f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"


@pytest.mark.parametrize("fmt", ["rich", "markdown", "latex", "csv", "json"])
def test_every_gain_cell_shows_its_interval_or_ns_in_every_format(tmp_path, fmt):
    results = comparison(tmp_path, seeds=1)
    out = tmp_path / f"report.{fmt}"
    report = run_report([str(results)], fmt=fmt, out=str(out))
    text = out.read_text()
    t3 = run_report([str(results)], fmt="json", out=str(tmp_path / "t3.json")).table("table3").data
    gain = t3.set_index("method").loc["Gain abc_grpo vs grpo"]
    assert (gain["Avg@4_sig"], gain["Pass@4_sig"]) == ("sig", "n.s.")  # one of each, so both spellings are seen
    if fmt == "csv":
        long = pd.read_csv(out)
        rows = long[long["metric"].str.startswith("gain_vs_grpo/chain/")].set_index("metric")
        assert set(rows.index) == {"gain_vs_grpo/chain/avg@4", "gain_vs_grpo/chain/pass@2", "gain_vs_grpo/chain/pass@4"}
        for col in ("Avg@4", "Pass@2", "Pass@4"):
            row = rows.loc[f"gain_vs_grpo/chain/{col.lower()}"]
            assert (row["low"], row["high"]) == pytest.approx((gain[f"{col}_lo"], gain[f"{col}_hi"]))
            assert row["significance"] == gain[f"{col}_sig"] and row["interval_over"] == "problems only"
        return
    if fmt == "json":
        doc = json.loads(text)
        verdict = {r["method"]: r for r in doc["tables"]["verdict"]["rows"]}
        assert (verdict["abc_grpo"]["diff_lo"], verdict["abc_grpo"]["diff_hi"]) == pytest.approx(
            (gain["Avg@4_lo"], gain["Avg@4_hi"]))
        assert doc["verdict"] and doc["verdict"][0].startswith("Verdict: on chain, abc_grpo")
        return
    avg = interval([BETTER], [WORSE])
    text = text.replace("\\%", "%")  # LaTeX's escape
    assert f"+80.0% (+25.0 pp) {avg}" in text  # Table 3's cell: relative Gain, the difference, its interval
    assert f"+16.7% (+12.5 pp) {interval([BETTER], [WORSE], 4)} (n.s.)" in text  # Pass@4: the interval holds 0
    assert report.table("verdict").display.set_index("method").loc["abc_grpo", "vs grpo"] == f"+25.0 {avg}"


def test_a_one_seed_report_says_1_seed_and_what_its_intervals_cover_and_how_to_add_seeds(tmp_path):
    text = rich_text(comparison(tmp_path, seeds=1), 250, sweep="demo")
    assert "over seeds" not in text  # no header claims seeds that are not there
    assert "Evaluation (Table 3 layout): one run each, so no interval (1 seed)" in text
    assert "paired bootstrap over problems only (seed-to-seed variation not in it), 1 seed each" in text
    assert ("1 seed a side: seed-to-seed variation is not measured: the intervals cover problems only. "
            "Add seeds: abcx sweep run demo seed=0,1,2 (or a `seeds` strategy") in text


@pytest.mark.parametrize("seeds, note", [(2, "2 seeds a side: seed-to-seed variation is barely measured"),
                                         (3, None)])
def test_with_seeds_on_both_sides_the_interval_covers_problems_and_seeds(tmp_path, seeds, note):
    results = comparison(tmp_path, seeds=seeds)
    report = run_report([str(results)], fmt="json", out=str(tmp_path / "r.json"))
    gain = report.table("table3").data.set_index("method").loc["Gain abc_grpo vs grpo"]
    assert gain["Avg@4_covers"] == "problems and seeds" and (gain["n"], gain["n_base"]) == (seeds, seeds)
    notes = report.table("verdict").notes
    assert f"paired two-level bootstrap over problems and seeds, {seeds} seeds each" in " ".join(notes)
    assert any(note in n for n in notes) if note else not any("seed-to-seed" in n for n in notes)
    assert "Evaluation (Table 3 layout): mean ± 95% CI over seeds" == report.table("table3").title


def test_a_side_with_one_seed_leaves_seed_variation_out_however_many_the_other_has(tmp_path):
    report = run_report([str(comparison(tmp_path, seeds=3, grpo_seeds=1))], fmt="json", out=str(tmp_path / "r.json"))
    gain = report.table("table3").data.set_index("method").loc["Gain abc_grpo vs grpo"]
    assert (gain["Avg@4_covers"], gain["n"], gain["n_base"]) == ("problems only", 3, 1)
    notes = " ".join(report.table("verdict").notes)
    assert "paired bootstrap over problems only (seed-to-seed variation not in it), 3 vs 1 seeds" in notes
    assert "1 seed a side: seed-to-seed variation is not measured" in notes
    assert report.verdict[0].endswith("to decide: abcx sweep run demo seed=0,1,2")  # every run is of demo


def test_the_report_ends_with_one_verdict_line_a_newcomer_can_read(tmp_path):
    text = rich_text(comparison(tmp_path, seeds=1), 400)
    last = text.strip().splitlines()[-1]
    assert last.startswith("Verdict: on chain, abc_grpo scores 25.0 pp higher than grpo (Avg@4 56.2% vs 31.2%); ")
    assert f"95% CI {interval([BETTER], [WORSE])} pp over 8 problems only (1 seed each), excludes 0." in last
    assert last.endswith("Seed-to-seed variation is not measured; to decide: abcx sweep run demo seed=0,1,2")


def test_the_verdict_line_turns_with_the_sign_and_says_when_the_interval_holds_0(tmp_path):
    worse = comparison(tmp_path / "a", seeds=3, abc=WORSE, grpo=BETTER)
    last = rich_text(worse, 400).strip().splitlines()[-1]
    assert last.startswith("Verdict: on chain, abc_grpo scores 25.0 pp lower than grpo (Avg@4 31.2% vs 56.2%)")
    assert "problems and seeds (3 seeds each), excludes 0." in last and last.endswith("excludes 0.")  # decided
    same = comparison(tmp_path / "b", seeds=3, abc=BETTER, grpo=BETTER[::-1])  # the same counts, reordered
    last = rich_text(same, 400).strip().splitlines()[-1]
    assert "abc_grpo scores the same as grpo" in last and "holds 0: no difference measured" in last
    assert last.endswith("To narrow it: abcx sweep run demo seed=0,1,2,3,4,5")


def test_at_80_columns_the_verdict_table_is_first_and_fits(tmp_path):
    text = rich_text(comparison(tmp_path, seeds=1), 80)
    lines = text.splitlines()
    assert lines[0] == "Verdict: Avg@4 in %, difference from grpo with its 95% CI"
    block = lines[:lines.index("")]
    rows = {line.split()[1]: line for line in block if line.startswith("chain ")}
    assert set(rows) == {"grpo", "abc_grpo"}
    assert rows["abc_grpo"].split()[2:] == ["1", "56.2", *f"+25.0 {interval([BETTER], [WORSE])}".split(), "1.50", "40%"]
    assert rows["grpo"].split()[2:] == ["1", "31.2", "1.00", "10%"]
    assert max(len(line) for line in lines) <= 80 and "…" not in text  # every line, titles and notes too
    assert "Evaluation (Table 3 layout): one run each, so no interval (1 seed)" in lines  # a title on one line


def test_numbers_in_prose_are_not_coloured_by_rich_highlighter(tmp_path):
    console = Console(record=True, width=80, force_terminal=True, color_system="truecolor")
    run_report([str(comparison(tmp_path, seeds=1))], console=console)
    styled = console.export_text(styles=True)
    prose = [line for line in styled.splitlines() if "note:" in line or "Pass@1" in line]
    assert prose and all("\x1b" not in line for line in prose if line.startswith("note:"))
    assert not re.search(r"\x1b\[[0-9;]*36m\d", styled)  # the highlighter's cyan numbers


def test_no_runs_match_names_the_filters_given_and_what_is_there(tmp_path):
    results = comparison(tmp_path, seeds=1)
    with pytest.raises(UserError) as err:
        run_report([str(results)], sweep="nosuch", fmt="json", out=str(tmp_path / "r.json"))
    assert str(err.value) == "no runs match --sweep nosuch (sweeps here: demo)"
