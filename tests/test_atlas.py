"""The atlas spends seeds 1 and 2 only where a seed-0 difference from GRPO needs confirming
(bench/atlas.py), and those seeds are a sweep abcx plans like any other."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import atlas  # noqa: E402


def _runs(correct: list[int], n: int = 64, seeds: int = 1) -> list[dict]:
    """Runs whose per-problem counts are `correct[i]` of n on every problem of both benchmarks."""
    per_problem = [(n, c) for c in correct]
    return [{"per_problem": {b: per_problem for b in atlas.BENCHMARKS}} for _ in range(seeds)]


def test_a_rule_far_from_grpo_gets_more_seeds_and_one_like_it_does_not():
    grpo = _runs([20, 30, 40, 50] * 25)
    assert atlas.needs_more_seeds(_runs([60, 62, 58, 61] * 25), grpo) == list(atlas.BENCHMARKS)
    assert atlas.needs_more_seeds(_runs([20, 30, 40, 50] * 25), grpo) == []


def test_the_more_seeds_are_a_sweep_of_grpo_and_the_chosen_rules_at_seeds_1_and_2(tmp_path):
    from abcx.sweep.command import plan_sweep

    path = atlas.confirm_file(tmp_path, ["icepop", "gpg"])
    _spec, planned = plan_sweep(str(path))
    methods = {(r.cfg.method.name, int(r.cfg.seed)) for r in planned}
    assert methods == {(m, seed) for m in ("grpo", "icepop", "gpg") for seed in (1, 2)}
    # The same settings as the atlas's seed 0: only the seed differs from its points.
    from abcx.config.compose import compose
    from abcx.config.identity import to_dict
    from abcx.sweep.spec import load_sweep

    grpo0 = to_dict(compose([*load_sweep("atlas").fixed, "method=grpo", "seed=0"]))
    grpo2 = next(r for r in planned if r.cfg.method.name == "grpo" and int(r.cfg.seed) == 2).cfg
    assert {k: v for k, v in grpo2.items() if k != "seed"} == {k: v for k, v in grpo0.items() if k != "seed"}


def test_each_phase_reads_only_the_seeds_it_plans():
    """Phase 1 is sweeps/atlas.yaml's seed 0; phase 2 seeds 1 and 2: a run an earlier plan of the same
    sweep left in its manifest (a seed-1 run from when phase 1 had two seeds) is not counted."""
    assert atlas.planned_seeds(atlas.SWEEP) == {0}
    assert atlas.planned_seeds(atlas.CONFIRM) == {1, 2}


def test_rules_that_land_on_one_another_share_one_label_and_distant_ones_do_not():
    points = {"a": (0.0, 0.0), "b": (5.0, 5.0), "c": (100.0, 0.0), "d": (0.0, 100.0), "e": (103.0, 2.0)}
    assert sorted(map(sorted, atlas.clusters(points, 10.0))) == [["a", "b"], ["c", "e"], ["d"]]
