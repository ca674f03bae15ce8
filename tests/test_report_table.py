"""Report summaries on small data whose answers can be worked out by hand."""
import math

import numpy as np
import pytest

from abcx.errors import UserError
from abcx.report import stats
from abcx.report import table as T
from abcx.report.sources.discover import read_sources
from abcx.report.synth import write_record

STEPS = np.array([1, 2, 3, 4])


def run(root, run_id, method, seed, reward, entropy, state="finished", config=None, evals=None, length=None,
        quads=(0.1, 0.0, 0.1, 0.2)):
    metrics = {"reward": reward, "entropy": entropy,
               "completion_length": length if length is not None else [10, 20, 30, 40]}
    for i, q in enumerate(quads, start=1):
        metrics[f"clip/q{i}"] = [q] * 4
    write_record(str(root), run_id, method=method, seed=seed, steps=STEPS, metrics=metrics, state=state,
                 config=config, evals=evals)


def ev(avg, pas):
    return [{"step": 4, "benchmark": "aime", "n": 8, "sampling": {}, "metrics": {"avg@8": avg, "pass@8": pas}, "ci": {}}]


@pytest.fixture
def four_runs(tmp_path):
    run(tmp_path, "grpo-x-s0", "grpo", 0, [.1, .2, .3, .4], [1.0, .8, .6, .4], evals=ev(.40, .60))
    run(tmp_path, "grpo-x-s1", "grpo", 1, [.1, .2, .3, .6], [1.0, .8, .6, .6], evals=ev(.50, .70))
    run(tmp_path, "abc-x-s0", "abc", 0, [.1, .2, .3, .7], [1.0, 1.0, 1.1, 1.1], evals=ev(.50, .80))
    run(tmp_path, "abc-x-s1", "abc", 1, [.1, .2, .3, .9], [1.0, 1.0, 9.0, 9.0], state="failed", evals=ev(.99, .99))
    return read_sources([str(tmp_path)])


def test_per_run_summary_final_reward_last_n_means_ratio_and_quadrant_shares(four_runs):
    pr = T.run_summary(four_runs, last_n=2, baseline="grpo").set_index("run_id")
    assert pr.loc["grpo-x-s0", "reward_final"] == pytest.approx(0.4)
    assert pr.loc["grpo-x-s0", "entropy_last"] == pytest.approx(0.5)  # mean(0.6, 0.4)
    assert pr.loc["grpo-x-s1", "entropy_last"] == pytest.approx(0.6)
    assert pr.loc["grpo-x-s0", "completion_length"] == pytest.approx(35)
    # abc entropy 1.1 over the finished grpo runs' mean 0.55 (the failed run's 9.0 plays no part)
    assert pr.loc["abc-x-s0", "entropy_ratio"] == pytest.approx(2.0)
    shares = pr.loc["grpo-x-s0", ["q1_share", "q2_share", "q3_share", "q4_share"]].tolist()
    assert shares == pytest.approx([0.25, 0.0, 0.25, 0.5])  # Q4 share = q4/(q1+q2+q3+q4)


def test_group_means_use_finished_runs_only_and_count_the_rest(four_runs):
    pr = T.run_summary(four_runs, last_n=2)
    g = T.group_summary(pr, ["method"]).set_index("method")
    assert g.loc["grpo", "reward_final_mean"] == pytest.approx(0.5)
    # two seeds 0.4, 0.6: sd 0.1414, se 0.1, t(0.975, 1) = 12.706
    assert g.loc["grpo", "reward_final_ci"] == pytest.approx(1.2706, rel=1e-4)
    assert (g.loc["abc", "n"], g.loc["abc", "n_other"], g.loc["abc", "other_states"]) == (1, 1, "1 failed")
    assert g.loc["abc", "reward_final_mean"] == pytest.approx(0.7)
    assert math.isnan(g.loc["abc", "reward_final_ci"])


def test_table3_reports_mean_ci_and_gain_marked_not_significant_inside_the_noise(four_runs):
    t3, notes = T.table3(four_runs, baseline="grpo")
    rows = t3.set_index("method")
    assert rows.loc["grpo", "Avg@8_mean"] == pytest.approx(45.0)  # percent
    assert rows.loc["abc", "n"] == 1  # the failed seed is left out ...
    assert any("leaves out 1 unfinished" in n for n in notes)  # ... and said so
    gain = rows.loc["Gain abc vs grpo"]
    assert gain["Avg@8_mean"] == pytest.approx(5.0)
    assert gain["Avg@8_sig"] == "one seed"


def test_gain_is_significant_only_when_outside_the_ci_of_the_difference(tmp_path):
    for s, (a, b) in enumerate([(.80, .40), (.81, .41), (.82, .42)]):
        run(tmp_path, f"abc-y-s{s}", "abc", s, [.1] * 4, [1] * 4, evals=ev(a, .5 + s / 100))
        run(tmp_path, f"grpo-y-s{s}", "grpo", s, [.1] * 4, [1] * 4, evals=ev(b, .5 + (2 - s) / 100 + 0.001))
    t3, _ = T.table3(read_sources([str(tmp_path)]))
    gain = t3.set_index("method").loc["Gain abc vs grpo"]
    assert gain["Avg@8_mean"] == pytest.approx(40.0) and gain["Avg@8_sig"] == "sig"
    assert gain["Avg@8_rel"] == pytest.approx(40.0 / 41.0)  # the Gain row is relative to the baseline
    assert abs(gain["Pass@8_mean"]) < 0.2 and gain["Pass@8_sig"] == "n.s."


def test_epsilon_pivot_is_the_mean_over_seeds_per_cell(tmp_path):
    for e3 in (0.1, 0.2):
        for e4 in (0.1, 0.3):
            for seed in (0, 1):
                final = e3 + e4 + seed / 10
                run(tmp_path, f"abc-{e3}-{e4}-s{seed}", "abc", seed, [0, 0, 0, final], [1] * 4,
                    config={"method": {"eps3": e3, "eps4": e4}})
    rs = read_sources([str(tmp_path)])
    pr = T.run_summary(rs)
    pv = T.pivot(pr, rs, "method.eps3", "cfg.method.eps4")
    assert pv.loc[0.2, 0.3] == pytest.approx(0.2 + 0.3 + 0.05)
    assert pv.shape == (2, 2)
    entropy = T.pivot(pr, rs, "method.eps3", "method.eps4", metric="entropy")  # a logged metric, last-N mean
    assert entropy.loc[0.1, 0.1] == pytest.approx(1.0)
    with pytest.raises(UserError, match="'method.eps9' is not a run field"):
        T.pivot(pr, rs, "method.eps9", "method.eps4")
    with pytest.raises(UserError, match="pivot metric 'nope'"):
        T.pivot(pr, rs, "method.eps3", "method.eps4", metric="nope")


def test_an_eval_pivot_finds_the_one_sampling_setting_its_runs_were_evaluated_with(tmp_path):
    """Runs of another sweep evaluated with other settings rename the benchmark's columns ("aime (n=8)"):
    a pivot over a selection evaluated one way still takes `eval/aime/pass@8`, and refuses when the
    selection itself mixes settings."""
    for e3, e4, seed, passed in ((0.1, 0.1, 0, .6), (0.1, 0.1, 1, .7), (0.2, 0.1, 0, .9), (0.2, 0.1, 1, .5)):
        run(tmp_path, f"abc-{e3}-{e4}-s{seed}", "abc", seed, [0] * 4, [1] * 4, evals=ev(.3, passed),
            config={"method": {"eps3": e3, "eps4": e4}})
    other = ev(.3, .1)
    other[0]["n"], other[0]["sampling"] = 4, {"n": 4}
    run(tmp_path, "grpo-other-s0", "grpo", 0, [0] * 4, [1] * 4, evals=other)
    everything = read_sources([str(tmp_path)])
    assert "eval/aime/pass@8" not in everything.metrics  # two settings: every label says which
    grid = everything.select(everything.runs.index[everything.runs["run_id"].str.startswith("abc")])
    pv = T.pivot(T.run_summary(grid), grid, "method.eps3", "method.eps4", metric="eval/aime/pass@8")
    assert pv.loc[0.1, 0.1] == pytest.approx(0.65) and pv.loc[0.2, 0.1] == pytest.approx(0.7)
    with pytest.raises(UserError, match="several settings"):
        T.pivot(T.run_summary(everything), everything, "method.eps3", "method.eps4", metric="eval/aime/pass@8")


def test_default_group_keys_are_differing_config_fields_without_seeds_ids_or_method_restatements(tmp_path):
    for m, eps in (("grpo", 0.28), ("abc", 0.2)):
        for e3 in ((0.2,) if m == "grpo" else (0.2, 0.3)):
            for seed in (0, 1):
                run(tmp_path, f"{m}-{e3}-s{seed}", m, seed, [0] * 4, [1] * 4,
                    config={"method": {"eps1": eps, "eps3": e3}, "output_dir": f"/out/{m}{e3}{seed}"})
    keys = T.default_group_keys(read_sources([str(tmp_path)]).runs)
    assert keys == ["method", "cfg.method.eps3"]


def test_t_quantiles_and_mean_ci():
    assert stats.t975(1) == pytest.approx(12.706, abs=1e-3) and stats.t975(30) == pytest.approx(2.042, abs=1e-3)
    assert stats.t975(1000) == pytest.approx(1.9623, abs=1e-3)
    mean, hw, n = stats.mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and hw == pytest.approx(4.303 * 1 / math.sqrt(3), rel=1e-4)
    assert math.isnan(stats.mean_ci([5.0])[1])


@pytest.mark.parametrize("a, b", [
    ([1.0, 2.0, 4.5], [0.3, 0.9, 1.7, 2.2]),           # unequal sizes and spreads: Welch's df is fractional
    ([0.41, 0.47, 0.39, 0.52, 0.44], [0.36, 0.38]),     # the smaller side has 2 runs
    ([10.0, 10.5], [3.0, 9.0, 4.0]),
    ([0.0, 10.0], [1.0, 1.1, 1.2, 1.3, 1.4]),           # the 2-run side dominates: Welch's df is just above 1
])
def test_a_gains_interval_is_welchs_t_interval_of_the_difference_of_means(a, b):
    """What the report's gain cells carry, against scipy's own Welch test (ttest_ind, equal_var=False)."""
    from scipy.stats import ttest_ind

    gain, hw = stats.diff_ci(a, b)
    ci = ttest_ind(a, b, equal_var=False).confidence_interval()
    assert gain == pytest.approx(sum(a) / len(a) - sum(b) / len(b), rel=1e-12)
    assert (gain - hw, gain + hw) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert stats.diff_ci(b, a) == pytest.approx((-gain, hw), rel=1e-12)  # the sign is a - b, the width symmetric


def test_a_gain_with_one_run_a_side_has_no_interval_and_one_without_spread_has_zero_width():
    gain, hw = stats.diff_ci([0.7], [0.2, 0.4])
    assert gain == pytest.approx(0.4) and math.isnan(hw)
    assert math.isnan(stats.diff_ci([0.2, 0.4], [0.7])[1])
    assert stats.diff_ci([0.5, 0.5, 0.5], [0.25, 0.25]) == (0.25, 0.0)
    # One side without spread: the interval is the other side's alone (Welch with va = 0).
    gain, hw = stats.diff_ci([0.5, 0.5], [0.1, 0.3, 0.2])
    assert gain == pytest.approx(0.3) and hw == pytest.approx(stats.mean_ci([0.1, 0.3, 0.2])[1], rel=1e-12)


def test_non_finite_values_are_left_out_of_a_gain_as_of_a_mean():
    clean = stats.diff_ci([1.0, 2.0, 4.5], [0.3, 0.9, 1.7, 2.2])
    assert stats.diff_ci([1.0, math.nan, 2.0, 4.5, math.inf], [0.3, 0.9, -math.inf, 1.7, 2.2]) == pytest.approx(clean)
    assert stats.mean_ci([None, 1.0, math.nan, 3.0]) == pytest.approx((2.0, stats.t975(1) * 1.0, 2))
    assert stats.mean_ci([])[2] == 0 and math.isnan(stats.mean_ci([math.nan])[0])
