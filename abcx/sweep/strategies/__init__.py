"""Sweep strategies: which run a sweep's supervisor starts next, and how far (the `strategy:` block
of sweeps/<name>.yaml; default `grid`).

    strategy:
      name: halving                 # grid | halving | seeds | optuna (registry.STRATEGIES)
      rungs: [50, 100, 200]         # halving: steps where runs are ranked; max_steps is the last rung
      eta: 3                        # halving: the top 1/eta of the runs that reached a rung go on
      metric: eval/chain/avg@16     # eval/<benchmark>/<avg@k|pass@k> or a training metric (reward, entropy)
      mode: max                     # max or min
      window: 5                     # a training metric: mean of its last N logged values up to the rung
      health: {entropy_floor: 0.001, zero_std_frac: 0.95, steps: 5, nonfinite: true}   # any strategy
      budget: {device_hours: 2.0}   # any strategy: no new work once the sweep's runs spent this

One registry (registry.STRATEGIES) gives the names, their keys, the parsers, the checks and the
runners; every check runs on the planned points before anything is written. A strategy's state is
read back from decisions.jsonl and the run records (steps reached, eval rows at rung steps), so a
restarted supervisor continues where one stopped and decides nothing twice. Modules: base (the spec, Start, decisions, the metric at a step),
registry, grid, halving, seeds, search (optuna), health, budget.
"""
from abcx.sweep.strategies.base import DECISIONS_FILE, Decisions, MetricMissing, Start, StrategySpec, metric_at
from abcx.sweep.strategies.budget import budget_line, spent_device_hours
from abcx.sweep.strategies.halving import Halving, rungs_to
from abcx.sweep.strategies.registry import (STRATEGIES, check, describe, load_strategy, make, of, parse,
                                            points_of, to_json, undecided)
from abcx.sweep.strategies.search import OPTUNA_DB, Optuna
from abcx.sweep.strategies.seeds import Seeds, paired_interval, pairs_of, seed_points

__all__ = ["DECISIONS_FILE", "Decisions", "MetricMissing", "Start", "StrategySpec", "metric_at", "budget_line", "spent_device_hours",
           "Halving", "rungs_to", "STRATEGIES", "check", "describe", "load_strategy", "make", "of", "parse", "points_of",
           "to_json", "undecided",
           "OPTUNA_DB", "Optuna", "Seeds", "paired_interval", "pairs_of", "seed_points"]
