"""`seeds`: sequential seeds for a comparison.

    strategy: {name: seeds, min: 2, max: 8, compare: [abc_grpo, grpo], metric: eval/chain/avg@16, alpha: 0.05}
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from abcx.errors import UserError
from abcx.record import RunRecord
from abcx.record.states import State
from abcx.sweep.strategies.base import Decisions, Queue, Start, StrategySpec, metric_at, number, parse_metric, \
    require_metric


def parse_seeds(raw: dict, spec: StrategySpec, where: str) -> StrategySpec:
    lo, hi = raw.get("min", 2), raw.get("max", 8)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not 2 <= lo <= hi:
        raise UserError(f"{where}: min={lo!r}, max={hi!r} must be whole numbers with 2 <= min <= max "
                        f"(a paired interval needs two seeds)")
    compare = raw.get("compare")
    if not isinstance(compare, list) or len(compare) != 2 or not all(isinstance(c, str) for c in compare) \
            or compare[0] == compare[1]:
        raise UserError(f"{where}.compare={compare!r} must name two methods, e.g. [abc_grpo, grpo]")
    metric, _mode, window = parse_metric({**raw, "mode": "max"}, where)
    alpha = raw.get("alpha", 0.05)
    if not number(alpha) or not 0 < alpha < 1:
        raise UserError(f"{where}.alpha={alpha!r} must lie in (0, 1)")
    return replace(spec, name="seeds", metric=metric, min_seeds=lo, max_seeds=hi, compare=tuple(compare),
                   alpha=float(alpha), window=window)


def check_seeds(spec: StrategySpec, planned: list, where: str) -> None:
    """Points that pair up, and an eval metric evaluated at the end."""
    pairs_of(spec, planned, where)
    for run in planned:
        if spec.metric.startswith("eval/") and not run.cfg.eval.at_end:
            raise UserError(f"{where}.metric={spec.metric} is read at the end of each run: set eval.at_end=true")


def seed_points(spec: StrategySpec, points: list[tuple[str, ...]], base: tuple[str, ...] = (), explicit: bool = True,
                where: str = "strategy") -> list[tuple[str, ...]]:
    """The seeds strategy owns the seed axis: each point with seed=0..min-1 (the supervisor adds more)."""
    from abcx.sweep.overrides import override_key

    if any(override_key(o) == "seed" for p in points for o in p):
        raise UserError(f"{where}: strategy seeds adds the seeds itself; remove `seed` from the sweep's grid and fixed")
    return [(*p, f"seed={s}") for p in points for s in range(spec.min_seeds)]


def pairs_of(spec: StrategySpec, planned: list, where: str = "strategy") -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The compared pairs: the k-th point (seed left out) with method compare[0] against the k-th with
    compare[1], in sweep order. Returns their overrides without the seed."""
    from abcx.sweep.overrides import override_key

    sides: dict[str, list[tuple[str, ...]]] = {m: [] for m in spec.compare}
    for run in planned:
        base = tuple(o for o in run.overrides if override_key(o) != "seed")
        method = run.cfg.method.name
        if method not in sides:
            raise UserError(f"{where}: point [{' '.join(base)}] has method {method}, not one of compare={list(spec.compare)}")
        if base not in sides[method]:
            sides[method].append(base)
    a, b = (sides[m] for m in spec.compare)
    if len(a) != len(b):
        raise UserError(f"{where}: {len(a)} point(s) with method {spec.compare[0]} but {len(b)} with "
                        f"{spec.compare[1]}; the k-th of one is compared with the k-th of the other")
    return list(zip(a, b))


def paired_interval(diffs: list[float], alpha: float) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided 1-alpha Student-t interval of the mean paired difference."""
    from scipy import stats

    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


class Seeds(Queue):
    """Sequential seeds for a comparison: every compared pair starts with `min` seeds; once all of a
    pair's runs have ended, the paired t-interval of metric(compare[0]) - metric(compare[1]) over
    its seeds is computed; while it covers 0 and fewer than `max` seeds ran, one seed is added to
    both sides ("seed_added"), else the pair is decided ("decided": the interval excludes 0) or
    left undecided at max ("undecided"). Each decision records n, the mean difference and the interval."""

    def __init__(self, spec: StrategySpec, planned: list, decisions: Decisions, todo: list | None = None,
                 plan=None) -> None:
        self.spec, self.decisions, self.plan = spec, decisions, plan
        self.planned = list(planned)
        self.pairs = pairs_of(spec, planned)
        self.todo = [r for r in (planned if todo is None else todo)]
        self.closed: set[int] = closed_pairs(decisions)
        if plan is not None:
            self._replan_added()

    def _replan_added(self) -> None:
        """The seeds an earlier supervisor added (its `seed_added` decisions): planned again, and those
        not finished started, so a pair goes on from its last decision instead of taking it again."""
        for row in self.decisions.rows("seed_added"):
            i, seed = row.get("pair"), row.get("seed")
            if not isinstance(i, int) or not 0 <= i < len(self.pairs) or not isinstance(seed, int):
                continue
            known = {r.run_id for r in self.planned}
            a, b = self.pairs[i]
            for run in self.plan([(*a, f"seed={seed}"), (*b, f"seed={seed}")], start_index=len(self.planned)):
                if run.run_id not in known:
                    self.planned.append(run)
                    if RunRecord(run.path).state() != State.FINISHED:
                        self.todo.append(run)

    def _runs(self, side: tuple[str, ...]) -> dict[int, Any]:
        from abcx.sweep.overrides import override_key

        return {int(r.cfg.seed): r for r in self.planned
                if tuple(o for o in r.overrides if override_key(o) != "seed") == side}

    def next(self, active: set[str]) -> Start | None:
        while self.todo:
            run = self.todo.pop(0)
            # One a restarted supervisor watches again (its job outlived the last one) is not started twice.
            if run.run_id not in active and RunRecord(run.path).state() != State.FINISHED:
                return Start(run, None)
        for i, (a, b) in enumerate(self.pairs):
            if i in self.closed:
                continue
            runs_a, runs_b = self._runs(a), self._runs(b)
            if any(r.run_id in active for r in (*runs_a.values(), *runs_b.values())):
                continue
            go = self._judge(i, a, b, runs_a, runs_b)
            if go is not None:
                return go
        return None

    def _judge(self, i: int, a: tuple, b: tuple, runs_a: dict, runs_b: dict) -> Start | None:
        """Pair i has ended: decide it, or add a seed to both sides and start the first of them."""
        ends = [(self._end(runs_a[s]), self._end(runs_b[s])) for s in sorted(set(runs_a) & set(runs_b))]
        diffs = [x - y for x, y in ends if x is not None and y is not None]
        if len(diffs) < 2:
            self.closed.add(i)
            self.decisions.add("undecided", pair=i, compare=list(self.spec.compare), n=len(diffs),
                               reason="fewer than two seeds with the metric on both sides (failed runs?)")
            return None
        mean, lo, hi = paired_interval(diffs, self.spec.alpha)
        numbers = {"pair": i, "compare": list(self.spec.compare), "point": list(a), "metric": self.spec.metric,
                   "n": len(diffs), "mean_diff": mean, "low": lo, "high": hi, "alpha": self.spec.alpha,
                   "diffs": diffs}
        if lo <= 0 <= hi and len(runs_a) < self.spec.max_seeds:
            seed = max(runs_a) + 1
            new = self.plan([(*a, f"seed={seed}"), (*b, f"seed={seed}")], start_index=len(self.planned))
            self.planned += new
            self.todo += new
            self.decisions.add("seed_added", seed=seed, run_ids=[r.run_id for r in new], **numbers)
            return Start(self.todo.pop(0), None)
        self.closed.add(i)
        self.decisions.add("decided" if not lo <= 0 <= hi else "undecided", **numbers)
        return None

    def _end(self, run) -> float | None:
        """The metric a finished run ended with (None for a run that did not finish)."""
        record = RunRecord(run.path)
        if record.state() != State.FINISHED:
            return None
        require_metric(record, self.spec.metric, int(run.cfg.train.max_steps))
        return metric_at(record, self.spec.metric, int(run.cfg.train.max_steps), self.spec.window)


def closed_pairs(decisions: Decisions) -> set[int]:
    """The pairs decided (or left undecided at max): never judged again."""
    return {d.get("pair") for d in decisions.rows("decided", "undecided") if isinstance(d.get("pair"), int)}


def undecided(spec: StrategySpec, decisions: Decisions, planned: list) -> bool:
    """Whether a pair is still open (a supervisor was killed before its decision): a rerun judges it."""
    return len(closed_pairs(decisions)) < len(pairs_of(spec, planned))


def _latest_pairs(sweep_dir: Path) -> dict[int, dict]:
    """Each compared pair's latest decision (decisions.jsonl)."""
    latest: dict[int, dict] = {}
    for d in Decisions(sweep_dir).rows():
        if d.get("event") in ("seed_added", "decided", "undecided") and isinstance(d.get("pair"), int):
            latest[d["pair"]] = d
    return latest


def pair_table(spec: StrategySpec, sweep_dir: Path, runs: list, fmt) -> tuple:
    """Each compared pair's final paired interval and decision: (name, title, rows, shown, notes)."""
    rows, shown = [], []
    for pair, d in sorted(_latest_pairs(sweep_dir).items()):
        decision = {"decided": "decided", "undecided": "undecided", "seed_added": "open"}[d["event"]]
        a, b = d.get("compare") or ("?", "?")
        row = {"pair": pair + 1, "compare": f"{a} - {b}", "point": " ".join(d.get("point") or []),
               "metric": d.get("metric"), "n": d.get("n"), "mean_diff": d.get("mean_diff"), "low": d.get("low"),
               "high": d.get("high"), "alpha": d.get("alpha"), "decision": decision}
        rows.append(row)
        interval = "–" if d.get("low") is None else f"[{fmt(d['low'], 4)}, {fmt(d['high'], 4)}] ({1 - d['alpha']:.0%})"
        shown.append({"pair": str(pair + 1), "compare": row["compare"], "point": row["point"] or "-",
                      "n seeds": str(d.get("n")), "mean diff": fmt(d.get("mean_diff"), 4),
                      "interval": interval, "decision": decision + (f": {d['reason']}" if d.get("reason") else "")})
    notes = ["paired t-interval of metric(first) - metric(second) over the seeds; decided = it excludes 0"]
    return "seeds", "Sequential seeds: each compared pair's final interval", rows, shown, notes


def pair_status(spec: StrategySpec, sweep_dir: Path, runs: list) -> list[str]:
    """Per compared pair, its latest interval and whether it is decided, one line each."""
    lines = []
    for pair, d in sorted(_latest_pairs(sweep_dir).items()):
        if "low" not in d:
            lines.append(f"pair {pair + 1}: {d.get('reason', d['event'])}")
            continue
        verdict = {"decided": "decided", "undecided": f"undecided at {d['n']} seeds"}.get(d["event"], "open: seed added")
        a, b = d["compare"]
        lines.append(f"pair {pair + 1} ({a} - {b} on {d['metric']}, [{' '.join(d.get('point', []))}]): n={d['n']}, "
                     f"mean {d['mean_diff']:.4g}, {1 - d['alpha']:.0%} interval [{d['low']:.4g}, {d['high']:.4g}]: {verdict}")
    return lines
