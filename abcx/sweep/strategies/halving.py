"""`halving`: asynchronous successive halving (ASHA, Li et al. 2018) over the sweep's points.

    strategy: {name: halving, rungs: [50, 100, 200], eta: 3, metric: eval/chain/avg@16, mode: max, window: 5}
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from abcx.errors import UserError
from abcx.record import RunRecord
from abcx.record.states import State
from abcx.sweep.plan import user_stopped
from abcx.sweep.strategies.base import Decisions, Start, StrategySpec, metric_at, parse_metric, whole
from abcx.record.states import StopKind


def parse_halving(raw: dict, spec: StrategySpec, where: str) -> StrategySpec:
    rungs = raw.get("rungs")
    if not isinstance(rungs, list) or not rungs or not all(whole(r, 1) for r in rungs) or rungs != sorted(set(rungs)):
        raise UserError(f"{where}.rungs={rungs!r} must be increasing training steps, e.g. [50, 100, 200]")
    eta = raw.get("eta", 3)
    if not whole(eta, 2):
        raise UserError(f"{where}.eta={eta!r} must be a whole number >= 2 (the top 1/eta go on)")
    metric, mode, window = parse_metric(raw, where)
    return replace(spec, name="halving", rungs=tuple(rungs), eta=eta, metric=metric, mode=mode, window=window)


def check_rungs(spec: StrategySpec, planned: list, where: str) -> None:
    """Each rung within max_steps and at a generation boundary; for an eval metric, an evaluation at
    every rung and at the end."""
    from abcx.config.rollout import generation_cycle

    for run in planned:
        train, ev = run.cfg.train, run.cfg.eval
        point = f"point {run.index + 1} [{' '.join(run.overrides)}]"
        if spec.rungs[-1] > train.max_steps:
            raise UserError(f"{where}.rungs: rung {spec.rungs[-1]} is beyond train.max_steps={train.max_steps} of {point}")
        # TRL keeps a rollout only in memory: a run paused inside one regenerates it when it resumes,
        # and from there trains on other samples than the uninterrupted run would (measured: notes #16).
        cycle = generation_cycle(train)
        off = [r for r in spec.rungs if r % cycle]
        if off:
            raise UserError(f"{where}.rungs: rung {off[0]} is inside a rollout of {point}: it generates once per "
                            f"{cycle} optimizer steps (train.steps_per_generation={train.steps_per_generation} x "
                            f"num_iterations={train.num_iterations} / gradient_accumulation_steps="
                            f"{train.gradient_accumulation_steps}); use rungs that are multiples of {cycle}")
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


def _eval_metric_ok(name: str, n: int) -> bool:
    kind, _, k = name.partition("@")
    return kind in ("avg", "pass") and k.isdigit() and 1 <= int(k) <= n


class Halving:
    """Asynchronous successive halving: a run trains to the next rung and pauses there (state
    `stopped`, at a checkpoint). Whenever a worker is free, the run ranked highest at the highest
    rung that is in the top floor(n/eta) of the n runs that reached that rung and has not gone on
    yet is promoted (resumes from its checkpoint to the next rung); if none is, a new point starts.
    No worker waits for a rung to fill. When nothing is left, the paused runs stay `stopped` with
    the rung, their value, rank and the cut in their record and in decisions.jsonl."""

    def __init__(self, spec: StrategySpec, planned: list, decisions: Decisions, todo: list | None = None,
                 plan=None) -> None:
        self.spec, self.planned, self.decisions = spec, list(planned), decisions
        max_steps = max(r.cfg.train.max_steps for r in planned)
        self.rungs = rungs_to(spec, max_steps)
        self.tried: set[tuple[str, int | None]] = set()  # (run, target) started by this supervisor
        self.values: dict[tuple[str, int], float | None] = {}

    @classmethod
    def reader(cls, spec: StrategySpec, runs: list, max_steps: int) -> "Halving":
        """Only its readers (value, ranking): no planning, no decisions (`abcx sweep status`, the report)."""
        halving = cls.__new__(cls)
        halving.spec, halving.planned, halving.values = spec, list(runs), {}
        halving.rungs = rungs_to(spec, max_steps)
        return halving

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
        if status.get("state") != State.STOPPED or stop.get("kind") not in (StopKind.RUNG, StopKind.CUT):
            return None
        step = int(status.get("step") or 0)
        return self.rungs.index(step) if step in self.rungs[:-1] else None

    def next(self, active: set[str]) -> Start | None:
        return self._promotion(active) or self._fresh(active)

    def _promotion(self, active: set[str]) -> Start | None:
        """The best paused run within the cut of the highest rung that has one."""
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
        return None

    def _fresh(self, active: set[str]) -> Start | None:
        """A point not started yet (or one whose job died), to its next rung."""
        for run in self.planned:
            state = self._record(run).state()
            step = int(self._record(run).status().get("step") or 0)
            startable = state in (State.PENDING, State.FAILED, State.CANCELLED, State.NEW) or \
                user_stopped(state, self._record(run).status())
            if run.run_id in active or not startable:
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
            self._cut(k, ranking)
        if best is not None:
            self.decisions.add("best", metric=self.spec.metric, mode=self.spec.mode, **best)

    def _cut(self, k: int, ranking: list[tuple[float, Any]]) -> None:
        """Record the runs paused at rung k as stopped below its cut (once: a restart says nothing again)."""
        cut = len(ranking) // self.spec.eta
        for rank, (value, run) in enumerate(ranking, start=1):
            if self._paused_at(run) != k:
                continue
            record = self._record(run)
            detail = {"rung": k, "step": self.rungs[k], "value": value, "rank": rank, "of": len(ranking),
                      "cut": cut, "metric": self.spec.metric}
            if (record.status().get("stop") or {}).get("kind") == StopKind.CUT:
                continue  # said already (a restarted supervisor)
            reason = (f"below the cut at rung {k + 1} (step {self.rungs[k]}): {self.spec.metric} {value:.4g}, "
                      f"rank {rank} of {len(ranking)}; the cut is the top {cut} (ASHA may have promoted more earlier)")
            record.stop(reason, kind=StopKind.CUT.value, **detail)
            self.decisions.add("stopped", run_id=run.run_id, reason=reason, **detail)


def rungs_to(spec: StrategySpec, max_steps: int) -> list[int]:
    """The rung steps, with max_steps as the last one."""
    return list(spec.rungs) + ([max_steps] if spec.rungs[-1] < max_steps else [])


def reader_for(spec: StrategySpec, runs: list) -> Halving:
    """A read-only Halving over runs of a finished or running sweep (its rungs up to the runs' max_steps)."""
    max_steps = max((int(RunRecord(r.path).status().get("max_steps") or 0) for r in runs), default=0)
    return Halving.reader(spec, runs, max(max_steps, spec.rungs[-1] if spec.rungs else 0))


def _ranks(halving: Halving) -> dict[int, dict[str, int]]:
    return {k: {r.run_id: i for i, (_v, r) in enumerate(halving.ranking(k), start=1)} for k in range(len(halving.rungs))}


def rung_table(spec: StrategySpec, sweep_dir: Path, runs: list, fmt) -> tuple:
    """Each run's metric at each rung it reached (its rank there), its state and why it stopped:
    (name, title, rows, shown, notes) for the report."""
    halving = reader_for(spec, runs)
    ranks = _ranks(halving)
    rows, shown = [], []
    for run in runs:
        status = RunRecord(run.path).status()
        values = {f"step {s}": halving.value(run, k) for k, s in enumerate(halving.rungs)}
        cells = {f"step {s}": "–" if values[f"step {s}"] is None else
                 f"{fmt(values[f'step {s}'], 4)} (#{ranks[k][run.run_id]}/{len(ranks[k])})"
                 for k, s in enumerate(halving.rungs)}
        why = (status.get("stop") or {}).get("reason", "") if status.get("state") == State.STOPPED else ""
        rows.append({"run_id": run.run_id, **values, "state": status.get("state"), "stop": why})
        shown.append({"run": run.run_id, **cells, "state": status.get("state") or State.NEW.value, "why it stopped": why})
    notes = [f"{spec.metric} at each rung ({spec.mode}, eta {spec.eta}): value (#rank/of the runs that reached it)"]
    return "rungs", f"Halving: {spec.metric} at the rungs", rows, shown, notes


def rung_status(spec: StrategySpec, sweep_dir: Path, runs: list) -> list[str]:
    """Per run, its metric at each rung it reached (rank there in brackets): what halving decided on."""
    halving = reader_for(spec, runs)
    ranks = _ranks(halving)
    table = [("rungs: " + spec.metric + f" ({spec.mode}, eta {spec.eta})", *[f"step {s}" for s in halving.rungs])]
    for r in runs:
        cells = []
        for k in range(len(halving.rungs)):
            v = halving.value(r, k)
            cells.append("-" if v is None else f"{v:.4g} (#{ranks[k][r.run_id]}/{len(ranks[k])})")
        table.append((r.run_id, *cells))
    widths = [max(len(row[k]) for row in table) for k in range(len(table[0]))]
    return ["  ".join(f"{c:<{w}}" for c, w in zip(row, widths)).rstrip() for row in table]
