"""Sweep strategies: which run a sweep's supervisor starts next, and how far (the `strategy:` block
of sweeps/<name>.yaml; default `grid`).

    strategy:
      name: halving                 # grid (every point to the end) | halving (asynchronous successive halving)
      rungs: [50, 100, 200]         # halving: steps where runs are ranked; max_steps is the last rung
      eta: 3                        # halving: the top 1/eta of the runs that reached a rung go on
      metric: eval/chain/avg@16     # halving: eval/<benchmark>/<avg@k|pass@k> or a training metric (reward, entropy)
      mode: max                     # halving: max or min
      window: 5                     # halving, training metric: mean of its last N logged values up to the rung
      health: {entropy_floor: 0.001, zero_std_frac: 0.95, steps: 5, nonfinite: true}   # any strategy
      budget: {device_hours: 2.0}   # any strategy: no new work once the sweep's runs spent this

One registry (STRATEGIES) gives the names, their keys and the validation; every check runs on the
planned points before anything is written. A strategy's state is read back from the run records
(steps reached, eval rows at rung steps), so a restarted supervisor continues where one stopped.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abcx.errors import UserError
from abcx.record import RunRecord, now_iso, read_json, read_jsonl
from abcx.states import State

COMMON_KEYS = {"name", "health", "budget"}
HEALTH_KEYS = {"entropy_floor", "zero_std_frac", "steps", "nonfinite"}
BUDGET_KEYS = {"device_hours"}
HALVING_KEYS = {"rungs", "eta", "metric", "mode", "window"}
SEEDS_KEYS = {"min", "max", "compare", "metric", "alpha", "window"}
OPTUNA_KEYS = {"space", "trials", "sampler", "sampler_seed", "pruner", "rungs", "metric", "mode", "window"}
STRATEGIES = {"grid": set(), "halving": HALVING_KEYS, "seeds": SEEDS_KEYS, "optuna": OPTUNA_KEYS}
OPTUNA_DB = "optuna.db"
DECISIONS_FILE = "decisions.jsonl"


@dataclass(frozen=True)
class StrategySpec:
    name: str = "grid"
    health: dict = field(default_factory=dict)
    device_hours: float | None = None
    rungs: tuple[int, ...] = ()
    eta: int = 3
    metric: str = ""
    mode: str = "max"
    window: int = 5
    min_seeds: int = 2
    max_seeds: int = 8
    compare: tuple[str, ...] = ()
    alpha: float = 0.05
    space: dict = field(default_factory=dict)  # optuna: key -> {low, high, log} or {choices: [...]}
    trials: int = 0
    sampler: str = "TPESampler"
    sampler_seed: int | None = None
    pruner: str = "MedianPruner"

    def to_json(self) -> dict:
        """The block as a sweep file would give it (parse(to_json()) == self)."""
        out: dict = {"name": self.name, "health": self.health or None,
                     "budget": None if self.device_hours is None else {"device_hours": self.device_hours}}
        if self.name == "halving":
            out.update(rungs=list(self.rungs), eta=self.eta, metric=self.metric, mode=self.mode, window=self.window)
        if self.name == "optuna":
            out.update(space=self.space, trials=self.trials, sampler=self.sampler, sampler_seed=self.sampler_seed,
                       pruner=self.pruner, rungs=list(self.rungs) or None, metric=self.metric, mode=self.mode,
                       window=self.window)
        if self.name == "seeds":
            out.update({"min": self.min_seeds, "max": self.max_seeds, "compare": list(self.compare),
                        "metric": self.metric, "alpha": self.alpha, "window": self.window})
        return out


def parse(raw: Any, where: str = "strategy") -> StrategySpec:
    """The `strategy:` block (or its to_json) -> StrategySpec; one UserError line naming the bad key."""
    if raw is None:
        return StrategySpec()
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping with name: {' | '.join(STRATEGIES)}")
    name = raw.get("name", "grid")
    if name not in STRATEGIES:
        raise UserError(f"{where}.name={name!r} is not a strategy; valid: {', '.join(STRATEGIES)}")
    unknown = sorted(set(raw) - COMMON_KEYS - STRATEGIES[name])
    if unknown:
        raise UserError(f"{where}.{unknown[0]} is not a key of strategy {name}; valid: "
                        f"{', '.join(sorted(COMMON_KEYS | STRATEGIES[name]))}")
    health = _health(raw.get("health"), f"{where}.health")
    budget = raw.get("budget") or {}
    if not isinstance(budget, dict) or set(budget) - BUDGET_KEYS:
        raise UserError(f"{where}.budget must be {{device_hours: <hours>}}")
    hours = budget.get("device_hours")
    if hours is not None and (not _number(hours) or hours <= 0):
        raise UserError(f"{where}.budget.device_hours={hours!r} must be a positive number of hours")
    spec = StrategySpec(name=name, health=health, device_hours=None if hours is None else float(hours))
    if name == "halving":
        return _halving(raw, spec, where)
    if name == "optuna":
        return _optuna(raw, spec, where)
    return _seeds(raw, spec, where) if name == "seeds" else spec


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _health(raw: Any, where: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - HEALTH_KEYS:
        bad = sorted(set(raw) - HEALTH_KEYS)[0] if isinstance(raw, dict) else None
        raise UserError(f"{where}{'.' + bad if bad else ''}: health takes {', '.join(sorted(HEALTH_KEYS))}")
    for key in ("entropy_floor", "zero_std_frac"):
        if raw.get(key) is not None and not _number(raw[key]):
            raise UserError(f"{where}.{key}={raw[key]!r} must be a number")
    if raw.get("zero_std_frac") is not None and not 0 <= raw["zero_std_frac"] <= 1:
        raise UserError(f"{where}.zero_std_frac={raw['zero_std_frac']!r} must lie in [0, 1]")
    steps = raw.get("steps", 5)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise UserError(f"{where}.steps={steps!r} must be a whole number >= 1")
    if not isinstance(raw.get("nonfinite", True), bool):
        raise UserError(f"{where}.nonfinite must be true or false")
    return {"steps": steps, "nonfinite": raw.get("nonfinite", True),
            **{k: float(raw[k]) for k in ("entropy_floor", "zero_std_frac") if raw.get(k) is not None}}


def _halving(raw: dict, spec: StrategySpec, where: str) -> StrategySpec:
    rungs = raw.get("rungs")
    if not isinstance(rungs, list) or not rungs or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0
                                                              for r in rungs) or rungs != sorted(set(rungs)):
        raise UserError(f"{where}.rungs={rungs!r} must be increasing training steps, e.g. [50, 100, 200]")
    eta = raw.get("eta", 3)
    if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
        raise UserError(f"{where}.eta={eta!r} must be a whole number >= 2 (the top 1/eta go on)")
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric:
        raise UserError(f"{where}.metric is required: eval/<benchmark>/<avg@k|pass@k> or a training metric (reward)")
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise UserError(f"{where}.mode={mode!r}; valid: max, min")
    window = raw.get("window", 5)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise UserError(f"{where}.window={window!r} must be a whole number >= 1")
    return StrategySpec(name="halving", health=spec.health, device_hours=spec.device_hours, rungs=tuple(rungs),
                        eta=eta, metric=metric, mode=mode, window=window)


def _optuna(raw: dict, spec: StrategySpec, where: str) -> StrategySpec:
    import optuna

    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise UserError(f"{where}.space must map override keys to ranges, e.g. {{method.eps3: {{low: 0.1, high: 2.0, log: true}}}}")
    clean = {}
    for key, dom in space.items():
        if isinstance(dom, dict) and "choices" in dom and set(dom) == {"choices"} and isinstance(dom["choices"], list) \
                and dom["choices"]:
            clean[str(key)] = {"choices": list(dom["choices"])}
        elif isinstance(dom, dict) and {"low", "high"} <= set(dom) <= {"low", "high", "log"} and _number(dom["low"]) \
                and _number(dom["high"]) and dom["low"] < dom["high"] and isinstance(dom.get("log", False), bool) \
                and not (dom.get("log") and dom["low"] <= 0):
            clean[str(key)] = {"low": dom["low"], "high": dom["high"], "log": dom.get("log", False)}
        else:
            raise UserError(f"{where}.space.{key}={dom!r}: give {{low: L, high: H[, log: true]}} (L < H, L > 0 "
                            f"with log) or {{choices: [a, b, ...]}}")
    trials = raw.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise UserError(f"{where}.trials={trials!r} must be a whole number >= 1")
    samplers = sorted(n for n in dir(optuna.samplers) if n.endswith("Sampler") and not n.startswith("Base"))
    pruners = sorted(n for n in dir(optuna.pruners) if n.endswith("Pruner") and not n.startswith("Base"))
    sampler, pruner = raw.get("sampler", "TPESampler"), raw.get("pruner", "MedianPruner")
    if sampler not in samplers:
        raise UserError(f"{where}.sampler={sampler!r}; valid: {', '.join(samplers)}")
    if pruner not in pruners:
        raise UserError(f"{where}.pruner={pruner!r}; valid: {', '.join(pruners)}")
    seed = raw.get("sampler_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise UserError(f"{where}.sampler_seed={seed!r} must be a whole number")
    rungs = raw.get("rungs")
    base = _halving({**raw, "rungs": rungs or [1], "eta": 2}, spec, where) if raw.get("metric") else None
    if base is None:
        raise UserError(f"{where}.metric is required: eval/<benchmark>/<avg@k|pass@k> or a training metric")
    return StrategySpec(name="optuna", health=spec.health, device_hours=spec.device_hours,
                        rungs=tuple(rungs or ()), metric=base.metric, mode=base.mode, window=base.window,
                        space=clean, trials=trials, sampler=sampler, sampler_seed=seed, pruner=pruner)


def _seeds(raw: dict, spec: StrategySpec, where: str) -> StrategySpec:
    lo, hi = raw.get("min", 2), raw.get("max", 8)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not 2 <= lo <= hi:
        raise UserError(f"{where}: min={lo!r}, max={hi!r} must be whole numbers with 2 <= min <= max "
                        f"(a paired interval needs two seeds)")
    compare = raw.get("compare")
    if not isinstance(compare, list) or len(compare) != 2 or not all(isinstance(c, str) for c in compare) \
            or compare[0] == compare[1]:
        raise UserError(f"{where}.compare={compare!r} must name two methods, e.g. [abc_grpo, grpo]")
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric:
        raise UserError(f"{where}.metric is required: eval/<benchmark>/<avg@k|pass@k> or a training metric")
    alpha = raw.get("alpha", 0.05)
    if not _number(alpha) or not 0 < alpha < 1:
        raise UserError(f"{where}.alpha={alpha!r} must lie in (0, 1)")
    window = raw.get("window", 5)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise UserError(f"{where}.window={window!r} must be a whole number >= 1")
    return StrategySpec(name="seeds", health=spec.health, device_hours=spec.device_hours, metric=metric,
                        min_seeds=lo, max_seeds=hi, compare=tuple(compare), alpha=float(alpha), window=window)


def points_of(sweep) -> list[tuple[str, ...]]:
    """The planned points of a sweep (abcx.sweep.spec.SweepSpec) under its strategy: an optuna search
    starts from one base point (the fixed overrides, or the one point/grid cell given); seeds adds
    seed=0..min-1 to every point; the others plan the grid."""
    from abcx.sweep import spec as S

    spec, where = sweep.strategy, f"{sweep.source or sweep.name}: strategy"
    if spec.name == "optuna":
        points = S.expand(sweep) if (sweep.grid or sweep.points) else [S.merge_overrides(sweep.fixed, sweep.cli)]
        if len(points) != 1:
            raise UserError(f"{where}: optuna searches space from one base point; the sweep has {len(points)} "
                            f"(put the shared settings in fixed, the searched ones in space)")
        return points
    return seed_points(spec, S.expand(sweep), where)


def seed_points(spec: StrategySpec, points: list[tuple[str, ...]], where: str = "strategy") -> list[tuple[str, ...]]:
    """The seeds strategy owns the seed axis: each point with seed=0..min-1 (the supervisor adds more)."""
    if spec.name != "seeds":
        return points
    from abcx.sweep.spec import override_key

    if any(override_key(o) == "seed" for p in points for o in p):
        raise UserError(f"{where}: strategy seeds adds the seeds itself; remove `seed` from the sweep's grid and fixed")
    return [(*p, f"seed={s}") for p in points for s in range(spec.min_seeds)]


def pairs_of(spec: StrategySpec, planned: list, where: str = "strategy") -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The compared pairs: the k-th point (seed left out) with method compare[0] against the k-th with
    compare[1], in sweep order. Returns their overrides without the seed."""
    from abcx.sweep.spec import override_key

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


def check(spec: StrategySpec, planned: list, where: str = "strategy") -> None:
    """What the points must allow: each rung within max_steps; an eval metric evaluated at every rung;
    for seeds, points that pair up and an eval metric evaluated at the end."""
    if spec.name == "seeds":
        pairs_of(spec, planned, where)
        for run in planned:
            if spec.metric.startswith("eval/") and not run.cfg.eval.at_end:
                raise UserError(f"{where}.metric={spec.metric} is read at the end of each run: set eval.at_end=true")
        return
    if spec.name == "optuna":
        _check_space(spec, planned, where)
    if spec.name not in ("halving", "optuna") or not spec.rungs:
        return
    for run in planned:
        train, ev = run.cfg.train, run.cfg.eval
        point = f"point {run.index + 1} [{' '.join(run.overrides)}]"
        if spec.rungs[-1] > train.max_steps:
            raise UserError(f"{where}.rungs: rung {spec.rungs[-1]} is beyond train.max_steps={train.max_steps} of {point}")
        if not spec.metric.startswith("eval/"):
            continue
        parts = spec.metric.split("/")
        if len(parts) != 3 or parts[1] not in ev.benchmarks or not _eval_metric_ok(parts[2], ev.n):
            raise UserError(f"{where}.metric={spec.metric}: {point} evaluates eval/<benchmark>/<avg@k|pass@k> with "
                            f"benchmark in {list(ev.benchmarks)} and k <= eval.n={ev.n}")
        for rung in (*spec.rungs, train.max_steps):
            at_end = rung == train.max_steps and ev.at_end
            if not at_end and not (ev.every_steps and rung % ev.every_steps == 0):
                raise UserError(f"{where}.metric={spec.metric} needs an evaluation at rung {rung}: eval.every_steps="
                                f"{ev.every_steps} of {point} must divide every rung (e.g. eval.every_steps={spec.rungs[0]})")


def _check_space(spec: StrategySpec, planned: list, where: str) -> None:
    """Every end of every range (every choice) composes and validates on every base point."""
    from abcx.sweep import plan as P
    from abcx.sweep.spec import value_text

    if spec.metric.startswith("eval/") and not all(r.cfg.eval.at_end for r in planned):
        raise UserError(f"{where}.metric={spec.metric} is read at the end of each trial: set eval.at_end=true")
    for key, dom in spec.space.items():
        values = dom["choices"] if "choices" in dom else [dom["low"], dom["high"]]
        for run in planned:
            for value in values:
                try:
                    P.build([(*run.overrides, f"{key}={value_text(value)}")])
                except UserError as err:
                    raise UserError(f"{where}.space.{key}: value {value!r}: {err}") from None


def _eval_metric_ok(name: str, n: int) -> bool:
    kind, _, k = name.partition("@")
    return kind in ("avg", "pass") and k.isdigit() and 1 <= int(k) <= n


class Decisions:
    """results/sweeps/<name>/decisions.jsonl: one line per decision, with the numbers it rested on."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = Path(sweep_dir) / DECISIONS_FILE

    def add(self, event: str, **fields: Any) -> dict:
        row = {"time": now_iso(), "event": event, **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
            f.flush()
        return row

    def rows(self) -> list[dict]:
        return list(read_jsonl(self.path))


def metric_at(record: RunRecord, metric: str, step: int, window: int = 5) -> float | None:
    """The ranking metric of a run at a rung step, from its own record: the eval row at that step
    (eval/<benchmark>/<name>), or the mean of a training metric's last `window` logged values up to it."""
    if metric.startswith("eval/"):
        _, bench, name = metric.split("/")
        rows = [r for r in read_jsonl(record.eval_path) if r.get("step") == step and r.get("benchmark") == bench]
        value = (rows[-1].get("metrics") or {}).get(name) if rows else None
        return float(value) if _number(value) else None
    values = [r[metric] for r in record.metrics() if isinstance(r.get("step"), int) and r["step"] <= step
              and _number(r.get(metric))]
    return sum(values[-window:]) / len(values[-window:]) if values else None


@dataclass
class Start:
    """What the supervisor starts: a run and where it pauses (None: train to the end)."""
    run: Any
    stop_at: int | None
    why: dict = field(default_factory=dict)


class _Queue:
    """A strategy that works through a list of runs (`todo`) and reacts to nothing when one ends."""

    todo: list

    def waiting(self) -> list[str]:
        return [r.run_id for r in self.todo]

    def ended(self, run, record: RunRecord) -> None:
        return None

    def finish(self) -> None:
        return None


class Grid(_Queue):
    """Every point to the end, in order: today's sweep."""

    def __init__(self, spec: StrategySpec, planned: list, decisions: Decisions, todo: list | None = None) -> None:
        self.todo = list(planned if todo is None else todo)

    def next(self, active: set[str]) -> Start | None:
        return Start(self.todo.pop(0), None) if self.todo else None


class Halving:
    """Asynchronous successive halving (ASHA, Li et al. 2018): a run trains to the next rung and pauses
    there (state `stopped`, at a checkpoint). Whenever a worker is free, the run ranked highest at the
    highest rung that is in the top floor(n/eta) of the n runs that reached that rung and has not
    gone on yet is promoted (resumes from its checkpoint to the next rung); if none is, a new point
    starts. No worker waits for a rung to fill. When nothing is left, the paused runs stay `stopped`
    with the rung, their value, rank and the cut in their record and in decisions.jsonl."""

    def __init__(self, spec: StrategySpec, planned: list, decisions: Decisions, todo: list | None = None) -> None:
        self.spec, self.planned, self.decisions = spec, list(planned), decisions
        max_steps = max(r.cfg.train.max_steps for r in planned)
        self.rungs = list(spec.rungs) + ([max_steps] if spec.rungs[-1] < max_steps else [])
        self.tried: set[tuple[str, int | None]] = set()  # (run, target) started by this supervisor
        self.values: dict[tuple[str, int], float | None] = {}

    def _record(self, run) -> RunRecord:
        return RunRecord(run.path)

    def value(self, run, k: int) -> float | None:
        """The run's metric at rung k (None: not reached or not readable); cached once known."""
        key = (run.run_id, k)
        if self.values.get(key) is None:
            status = self._record(run).status()
            if int(status.get("step") or 0) < self.rungs[k]:
                return None
            self.values[key] = metric_at(self._record(run), self.spec.metric, self.rungs[k], self.spec.window)
        return self.values[key]

    def ranking(self, k: int) -> list[tuple[float, Any]]:
        """(value, run) of every run that reached rung k, best first."""
        reached = [(v, r) for r in self.planned if (v := self.value(r, k)) is not None]
        return sorted(reached, key=lambda vr: vr[0], reverse=self.spec.mode == "max")

    def _paused_at(self, run) -> int | None:
        """The rung index a run waits at (stopped there by its rung), None otherwise."""
        status = self._record(run).status()
        stop = status.get("stop") or {}
        if status.get("state") != State.STOPPED or stop.get("kind") not in ("rung", "cut"):
            return None
        step = int(status.get("step") or 0)
        return self.rungs.index(step) if step in self.rungs[:-1] else None

    def next(self, active: set[str]) -> Start | None:
        for k in reversed(range(len(self.rungs) - 1)):
            ranking = self.ranking(k)
            cut = len(ranking) // self.spec.eta
            for rank, (value, run) in enumerate(ranking[:cut], start=1):
                target = self._target(k + 1)
                if run.run_id in active or self._paused_at(run) != k or (run.run_id, target) in self.tried:
                    continue
                self.tried.add((run.run_id, target))
                why = {"rung": k, "step": self.rungs[k], "value": value, "rank": rank, "of": len(ranking), "cut": cut}
                self.decisions.add("promoted", run_id=run.run_id, to_step=self.rungs[k + 1], **why)
                return Start(run, target, why)
        for run in self.planned:
            state = self._record(run).state()
            step = int(self._record(run).status().get("step") or 0)
            if run.run_id in active or state not in (State.PENDING, State.FAILED, State.CANCELLED, State.NEW):
                continue
            k = next((i for i, r in enumerate(self.rungs) if r > step), len(self.rungs) - 1)
            target = self._target(k)
            if (run.run_id, target) not in self.tried:
                self.tried.add((run.run_id, target))
                return Start(run, target)
        return None

    def _target(self, k: int) -> int | None:
        return None if k >= len(self.rungs) - 1 else self.rungs[k]

    def waiting(self) -> list[str]:
        return [r.run_id for r in self.planned if self._record(r).state() in (State.PENDING, State.NEW)
                and not any(t[0] == r.run_id for t in self.tried)]

    def ended(self, run, record: RunRecord) -> None:
        k = self._paused_at(run)
        if k is None:
            return
        ranking = self.ranking(k)
        rank = next((i for i, (_v, r) in enumerate(ranking, start=1) if r.run_id == run.run_id), None)
        self.decisions.add("rung", run_id=run.run_id, rung=k, step=self.rungs[k], value=self.value(run, k),
                           rank=rank, of=len(ranking), cut=len(ranking) // self.spec.eta)

    def finish(self) -> None:
        """Nothing more will be promoted: each paused run is stopped below the cut of its rung."""
        best = None
        for k in reversed(range(len(self.rungs))):
            ranking = self.ranking(k)
            if ranking and best is None:
                best = {"run_id": ranking[0][1].run_id, "rung": k, "step": self.rungs[k], "value": ranking[0][0],
                        "of": len(ranking)}
            cut = len(ranking) // self.spec.eta
            for rank, (value, run) in enumerate(ranking, start=1):
                if self._paused_at(run) != k:
                    continue
                record = self._record(run)
                detail = {"rung": k, "step": self.rungs[k], "value": value, "rank": rank, "of": len(ranking),
                          "cut": cut, "metric": self.spec.metric}
                if (record.status().get("stop") or {}).get("kind") == "cut":
                    continue  # said already (a restarted supervisor)
                reason = (f"below the cut at rung {k + 1} (step {self.rungs[k]}): {self.spec.metric} {value:.4g}, "
                          f"rank {rank} of {len(ranking)}; the cut is the top {cut} (ASHA may have promoted more earlier)")
                record.stop(reason, kind="cut", **detail)
                self.decisions.add("stopped", run_id=run.run_id, reason=reason, **detail)
        if best is not None:
            self.decisions.add("best", metric=self.spec.metric, mode=self.spec.mode, **best)


def paired_interval(diffs: list[float], alpha: float) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided 1-alpha Student-t interval of the mean paired difference."""
    from scipy import stats

    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


class Seeds(_Queue):
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
        self.closed: set[int] = {i for i, _p in enumerate(self.pairs) if self._said(i)}

    def _said(self, i: int) -> bool:
        return any(d.get("pair") == i and d["event"] in ("decided", "undecided") for d in self.decisions.rows())

    def _runs(self, side: tuple[str, ...]) -> dict[int, Any]:
        from abcx.sweep.spec import override_key

        return {int(r.cfg.seed): r for r in self.planned
                if tuple(o for o in r.overrides if override_key(o) != "seed") == side}

    def next(self, active: set[str]) -> Start | None:
        if self.todo:
            return Start(self.todo.pop(0), None)
        for i, (a, b) in enumerate(self.pairs):
            if i in self.closed:
                continue
            runs_a, runs_b = self._runs(a), self._runs(b)
            if any(r.run_id in active for r in (*runs_a.values(), *runs_b.values())):
                continue
            ends = [(self._end(runs_a[s]), self._end(runs_b[s])) for s in sorted(set(runs_a) & set(runs_b))]
            diffs = [x - y for x, y in ends if x is not None and y is not None]
            if len(diffs) < 2:
                self.closed.add(i)
                self.decisions.add("undecided", pair=i, compare=list(self.spec.compare), n=len(diffs),
                                   reason="fewer than two seeds with the metric on both sides (failed runs?)")
                continue
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
        return metric_at(record, self.spec.metric, int(run.cfg.train.max_steps), self.spec.window)


class Optuna:
    """An optuna study (any sampler by name) over `space`, stored in SQLite beside the sweep
    (results/sweeps/<name>/optuna.db, study = the sweep's name), so a supervisor killed at any point
    resumes it: trials left RUNNING are the runs it had started (their params give the same run id)
    and are resumed from their checkpoints, never asked again; new trials are asked only while fewer
    than `trials` exist. Each trial is an ordinary run with its own record. With `rungs`, a trial
    pauses at each, reports the metric there and is pruned (state `stopped`) where the pruner says."""

    def __init__(self, spec: StrategySpec, planned: list, decisions: Decisions, todo: list | None = None,
                 plan=None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec, self.decisions, self.plan, self.base = spec, decisions, plan, planned[0]
        self.optuna = optuna
        storage = f"sqlite:///{decisions.path.parent / OPTUNA_DB}"
        self.study = optuna.create_study(storage=storage, study_name=decisions.path.parent.name, load_if_exists=True,
                                         direction="maximize" if spec.mode == "max" else "minimize",
                                         pruner=getattr(optuna.pruners, spec.pruner)())
        # A seeded sampler restarted with its seed would repeat the draws of the first trials: a
        # resumed study seeds it with the seed plus the trials it holds (still reproducible).
        sampler_cls = getattr(optuna.samplers, spec.sampler)
        held = len(self.study.get_trials(deepcopy=False))
        self.study.sampler = sampler_cls() if spec.sampler_seed is None else sampler_cls(seed=spec.sampler_seed + held)
        self.number: dict[str, int] = {}  # run id -> trial number
        self.queue: list[Start] = []
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            run = self._run_for(trial.params)
            self.number[run.run_id] = trial.number
            self.queue.append(Start(run, self._target(RunRecord(run.path)), {"trial": trial.number}))
            self.decisions.add("trial_resumed", trial=trial.number, run_id=run.run_id, params=trial.params)

    def _run_for(self, params: dict):
        from abcx.sweep.spec import value_text

        (run,) = self.plan([(*self.base.overrides, *(f"{k}={value_text(v)}" for k, v in params.items()))],
                           start_index=None)
        return run

    def _target(self, record: RunRecord) -> int | None:
        step = int(record.status().get("step") or 0)
        return next((r for r in self.spec.rungs if r > step and r < self.base.cfg.train.max_steps), None)

    def _suggest(self, trial) -> dict:
        for key, dom in self.spec.space.items():
            if "choices" in dom:
                trial.suggest_categorical(key, dom["choices"])
            else:
                trial.suggest_float(key, dom["low"], dom["high"], log=dom["log"])
        return trial.params

    def next(self, active: set[str]) -> Start | None:
        if self.queue:
            return self.queue.pop(0)
        while len(self.study.get_trials(deepcopy=False)) < self.spec.trials:
            trial = self.study.ask()
            params = self._suggest(trial)
            run = self._run_for(params)
            self.decisions.add("trial", trial=trial.number, run_id=run.run_id, params=params)
            record = RunRecord(run.path)
            if run.run_id in self.number or record.state() == State.FINISHED:  # params an earlier trial had
                value = self._value(run, record) if record.state() == State.FINISHED else None
                self._tell(trial.number, run, value, "same run as an earlier trial")
                continue
            self.number[run.run_id] = trial.number
            return Start(run, self._target(record), {"trial": trial.number})
        return None

    def _value(self, run, record: RunRecord) -> float | None:
        return metric_at(record, self.spec.metric, int(run.cfg.train.max_steps), self.spec.window)

    def _tell(self, number: int, run, value: float | None, why: str = "", pruned: bool = False) -> None:
        TrialState = self.optuna.trial.TrialState
        if pruned:
            self.study.tell(number, state=TrialState.PRUNED)
        elif value is None:
            self.study.tell(number, state=TrialState.FAIL)
        else:
            self.study.tell(number, value)
        event = "pruned" if pruned else "trial_failed" if value is None else "trial_complete"
        self.decisions.add(event, trial=number, run_id=run.run_id, value=value, **({"why": why} if why else {}))

    def ended(self, run, record: RunRecord) -> None:
        number = self.number.get(run.run_id)
        if number is None:
            return
        state, stop = record.state(), record.status().get("stop") or {}
        if state == State.FINISHED:
            return self._tell(number, run, self._value(run, record))
        if state == State.STOPPED and stop.get("kind") == "rung":
            step = int(stop["step"])
            value = metric_at(record, self.spec.metric, step, self.spec.window)
            trial = self.optuna.trial.Trial(self.study, self.study.get_trials(deepcopy=False)[number]._trial_id)
            if value is not None:
                trial.report(value, step)
            if value is None or trial.should_prune():
                reason = f"pruned at step {step} by {self.spec.pruner}: {self.spec.metric} {value}"
                record.stop(reason, kind="pruned", step=step, value=value, trial=number)
                return self._tell(number, run, value, reason, pruned=True)
            self.decisions.add("rung", trial=number, run_id=run.run_id, step=step, value=value)
            self.queue.append(Start(run, self._target(record), {"trial": number}))
            return None
        if state == State.CANCELLED:
            return None  # the supervisor is being stopped: the trial stays RUNNING and resumes next time
        self._tell(number, run, None, str(record.status().get("error") or state))

    def waiting(self) -> list[str]:
        return [go.run.run_id for go in self.queue]

    def finish(self) -> None:
        done = [t for t in self.study.get_trials(deepcopy=False) if t.value is not None]
        if done:
            best = self.study.best_trial
            self.decisions.add("best", trial=best.number, value=best.value, params=best.params,
                               metric=self.spec.metric, mode=self.spec.mode)


RUNNERS = {"grid": Grid, "halving": Halving, "seeds": Seeds, "optuna": Optuna}


def make(spec: StrategySpec, planned: list, decisions: Decisions, todo: list | None = None, plan=None):
    """The strategy's runner; `plan(points, start_index)` plans runs it adds (seeds)."""
    if spec.name in ("seeds", "optuna"):
        return RUNNERS[spec.name](spec, planned, decisions, todo, plan)
    return RUNNERS[spec.name](spec, planned, decisions, todo)


def spent_device_hours(records: list[RunRecord], usage: dict[str, float] | None = None) -> float:
    """Device-hours a sweep's runs have used: the backend's accounting per job where it has one
    (sacct), else the records' own (status.json `device_hours`)."""
    total = 0.0
    for record in records:
        status = record.status()
        job = str(status.get("job_id") or "")
        if usage and job in usage:
            total += usage[job]
        else:
            total += float(status.get("device_hours") or 0.0)
    return total


def budget_line(spec: StrategySpec, spent: float) -> str:
    if spec.device_hours is None:
        return ""
    left = max(0.0, spec.device_hours - spent)
    return f"budget {spec.device_hours:g} device-hours: {spent:.4f} spent, {left:.4f} left"


def load_strategy(sweep_dir: Path) -> StrategySpec:
    """The strategy a sweep was last run with (its queue file), grid when unknown."""
    queue = read_json(Path(sweep_dir) / "queue.json") or {}
    try:
        return parse(queue.get("strategy"))
    except UserError:
        return StrategySpec()
