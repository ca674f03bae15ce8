"""Evaluation on the testbed: the training-time callback writes Avg@k / Pass@k curves into the run
record, and `abcx eval` scores a finished run (and each checkpoint) with confidence intervals."""
import subprocess
import sys

import pytest

from abcx.config.compose import compose
from abcx.errors import UserError
from abcx.evaluation.command import resolve_target
from abcx.training.train import train


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, tiny_model_path):
    results = tmp_path_factory.mktemp("results")
    cfg = compose(["train.max_steps=4", "train.per_device_train_batch_size=16", "train.steps_per_generation=2",
                   "train.save_steps=2", "eval.every_steps=2", "eval.n=8", "eval.max_problems=20", "eval.benchmarks=[chain]", "eval.seed=99",
                   "logger=none",
                   f"results_dir={results}"])
    return train(cfg, quiet=True)


def test_periodic_evaluation_records_a_curve_over_steps(evaluated_run):
    rows = evaluated_run.evals()
    assert [r["step"] for r in rows] == [2, 4]  # every 2 steps; the final step is not evaluated twice
    for row in rows:
        assert row["n"] == 8 and row["problems"] == 20 and row["benchmark"] == "chain"
        assert set(row["metrics"]) == {"avg@8", "pass@1", "pass@2", "pass@4", "pass@8"}
        m = row["metrics"]
        assert m["pass@1"] == pytest.approx(m["avg@8"])
        assert m["pass@1"] <= m["pass@2"] <= m["pass@4"] <= m["pass@8"] <= 1
        lo, hi = row["ci"]["pass@8"]
        assert lo <= m["pass@8"] <= hi
        assert sum(c for _, c in row["per_problem"]) / (8 * 20) == pytest.approx(m["avg@8"])
        # The testbed evaluates the policy as it is trained: T = 1, no top-p/top-k cut (conf/eval/testbed.yaml).
        assert row["sampling"]["temperature"] == 1.0 and row["sampling"]["top_k"] == 0


def test_abcx_eval_scores_every_checkpoint_of_a_run(evaluated_run):
    out = subprocess.run(
        [sys.executable, "-m", "abcx.cli", "eval", str(evaluated_run.path), "--all-checkpoints", "eval.n=4",
         "eval.max_problems=10", f"results_dir={evaluated_run.path.parent.parent}"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [r for r in evaluated_run.evals() if r["n"] == 4]
    # The run's own benchmark only (it was configured with eval.benchmarks=[chain]), at each checkpoint.
    assert [(r["step"], r["benchmark"], r["problems"]) for r in rows] == [(2, "chain", 10), (4, "chain", 10),
                                                                           (4, "chain", 10)]  # ckpt-2, ckpt-4, final
    assert all(r["sampling"]["seed"] == 99 and r["overridden"] == {"n": 4, "max_problems": 10} for r in rows)
    assert "pass@4" in out.stdout and "95% CI" in out.stdout
    assert "overridden: eval.n=4, eval.max_problems=10" in out.stderr


def test_abcx_eval_of_a_run_keeps_its_benchmarks_sampling_and_problem_count(evaluated_run):
    from abcx.evaluation.command import run_eval

    rows = run_eval(str(evaluated_run.path), ["eval.n=2", f"results_dir={evaluated_run.path.parent.parent}"])
    # The run's config: chain only (not the eval group's chain and chain_hard), 20 problems (not 200),
    # its sampling seed (not 1234); only n comes from the command line, and the row says so.
    assert [(r["benchmark"], r["problems"], r["n"], r["sampling"]["seed"]) for r in rows] == [("chain", 20, 2, 99)]
    assert rows[0]["overridden"] == {"n": 2}
    assert evaluated_run.evals()[-1]["overridden"] == {"n": 2}  # recorded in eval.jsonl


def test_eval_refuses_k_larger_than_n_and_unknown_targets(tmp_path):
    from abcx.evaluation.metrics import summarise

    with pytest.raises(UserError, match="k=16"):
        summarise([(8, 3)], ks=[16])
    with pytest.raises(UserError, match="no such run"):
        resolve_target(str(tmp_path / "nope"), str(tmp_path))


def test_abcx_eval_tiny_scores_the_warm_start_as_step_zero(tmp_path, tiny_model_path):
    out = subprocess.run(
        [sys.executable, "-m", "abcx.cli", "eval", "tiny", "eval.n=2", "eval.max_problems=5", "eval.benchmarks=[chain]",
         f"results_dir={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    rows = [json.loads(line) for line in (tmp_path / "evals" / "tiny" / "eval.jsonl").read_text().splitlines()]
    assert [(r["step"], r["benchmark"], r["problems"]) for r in rows] == [(0, "chain", 5)]
    assert rows[0]["model_path"] == str(tiny_model_path)
